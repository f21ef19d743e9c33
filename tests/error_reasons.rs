//! The contract's error reasons and the code agree: every reason a service
//! can send is a value of `adminduk.common.v1.ErrorReason` (the kit's
//! `ApiError::with_reason` takes nothing else), and every value is sent by
//! some service's code, outside its tests.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The values of ErrorReason as written in the contract, without the prefix.
fn contract_reasons() -> Vec<String> {
    let proto =
        std::fs::read_to_string(root().join("proto/adminduk/common/v1/common.proto")).expect("common.proto");
    proto
        .lines()
        .filter_map(|line| line.trim().strip_prefix("ERROR_REASON_"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|name| *name != "UNSPECIFIED")
        .map(str::to_owned)
        .collect()
}

fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_string() + &chars.as_str().to_lowercase()
            })
        })
        .collect()
}

/// The Rust sources of the services and the CLI, each cut before its test module.
fn production_sources() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source");
                let production = text.split("#[cfg(test)]").next().unwrap_or_default();
                out.push(production.to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("src"), &mut out);
    walk(&root().join("gateway/src"), &mut out);
    for service in std::fs::read_dir(root().join("services"))
        .expect("services")
        .flatten()
    {
        walk(&service.path().join("src"), &mut out);
    }
    out
}

#[test]
fn every_error_reason_of_the_contract_is_sent_somewhere() {
    let reasons = contract_reasons();
    assert!(
        reasons.len() > 40,
        "the contract lists the mesh's reasons: {reasons:?}"
    );
    let sources = production_sources();
    let unsent: Vec<&String> = reasons
        .iter()
        .filter(|reason| {
            let used = format!("ErrorReason::{}", camel(reason));
            !sources.iter().any(|s| s.contains(&used))
        })
        .collect();
    assert!(unsent.is_empty(), "reasons no service sends: {unsent:?}");
}

#[test]
fn no_reason_is_sent_as_a_bare_string() {
    for source in production_sources() {
        assert!(
            !source.contains("with_reason(\""),
            "a reason given as a string, not an ErrorReason"
        );
    }
}

#[test]
fn reasons_are_sent_without_the_enum_prefix() {
    use adminduk_kit::error::{ErrorReason, reason_name};
    assert_eq!(reason_name(ErrorReason::DateFull), "DATE_FULL");
    assert_eq!(reason_name(ErrorReason::ApplicantHasHold), "APPLICANT_HAS_HOLD");
}
