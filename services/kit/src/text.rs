//! Free text in requests (names, reasons, references, serials): trimmed,
//! bounded and free of control characters, with one wording for every service.

use crate::Violations;

/// A required text field, trimmed; adds a violation to `out` when it is empty,
/// longer than `max` characters, or holds a control character (NUL, a newline).
pub fn required(field: &str, value: &str, max: usize, out: &mut Violations) -> String {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        out.add(field, "is required");
    } else {
        bounded(field, trimmed, max, out);
    }
    trimmed.to_owned()
}

/// An optional text field, trimmed: empty is fine, otherwise as [`required`].
pub fn optional(field: &str, value: &str, max: usize, out: &mut Violations) -> String {
    let trimmed = value.trim();
    bounded(field, trimmed, max, out);
    trimmed.to_owned()
}

fn bounded(field: &str, value: &str, max: usize, out: &mut Violations) {
    if value.chars().count() > max {
        out.add(field, format!("must be at most {max} characters"));
    } else if value.chars().any(char::is_control) {
        out.add(field, "must not contain control characters");
    }
}

/// The most characters of a card or blank serial.
pub const MAX_SERIAL: usize = 64;

/// A card or blank serial: 1 to 64 ASCII letters, digits, hyphens or slashes,
/// as printed on the blank (`KTP-0000001`). Returned as given.
pub fn serial(field: &str, value: &str, out: &mut Violations) -> String {
    if value.is_empty() {
        out.add(field, "is required");
    } else if value.chars().count() > MAX_SERIAL {
        out.add(field, format!("must be at most {MAX_SERIAL} characters"));
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'/')
    {
        out.add(field, "must be ascii letters, digits, hyphens or slashes");
    }
    value.to_owned()
}

/// A person's name as compared: trimmed, inner runs of white space made one
/// space, lowercase, so that `" ANI "` and `"ani"` are one person.
pub fn person_key(name: &str) -> String {
    name.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether two names given for people name the same person.
pub fn same_person(a: &str, b: &str) -> bool {
    person_key(a) == person_key(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(check: impl FnOnce(&mut Violations)) -> Vec<String> {
        let mut v = Violations::new();
        check(&mut v);
        match v.into_result() {
            Ok(()) => Vec::new(),
            Err(err) => err
                .details()
                .bad_request()
                .map(|b| b.field_violations.iter().map(|f| f.description.clone()).collect())
                .unwrap_or_default(),
        }
    }

    #[test]
    fn text_is_trimmed_bounded_and_free_of_control_characters() {
        let mut v = Violations::new();
        assert_eq!(required("reason", "  rusak  ", 10, &mut v), "rusak");
        assert!(v.is_empty());
        assert_eq!(
            violations(|v| drop(required("reason", "   ", 10, v))),
            ["is required"]
        );
        assert_eq!(
            violations(|v| drop(required("reason", &"x".repeat(11), 10, v))),
            ["must be at most 10 characters"]
        );
        assert_eq!(
            violations(|v| drop(required("reason", "a\0b", 10, v))),
            ["must not contain control characters"]
        );
        assert!(violations(|v| drop(optional("note", "", 10, v))).is_empty());
        // Characters, not bytes: ten letters with accents fit ten characters.
        assert!(violations(|v| drop(required("name", "éééééééééé", 10, v))).is_empty());
    }

    #[test]
    fn serials_are_short_and_plain() {
        assert!(violations(|v| drop(serial("card_serial", "KTP-0000001", v))).is_empty());
        assert_eq!(
            violations(|v| drop(serial("card_serial", "", v))),
            ["is required"]
        );
        assert_eq!(
            violations(|v| drop(serial("card_serial", &"9".repeat(10_000), v))),
            ["must be at most 64 characters"]
        );
        for bad in ["KTP\0-1", "KTP-1\n", " KTP-1", "KTP 1"] {
            assert_eq!(
                violations(|v| drop(serial("card_serial", bad, v))),
                ["must be ascii letters, digits, hyphens or slashes"],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names_of_one_person_compare_equal() {
        assert!(same_person(" ANI ", "ani"));
        assert!(same_person("Siti  Aminah", "siti aminah"));
        assert!(!same_person("ani", "ana"));
        assert_eq!(person_key("\tBudi   Santoso "), "budi santoso");
    }
}
