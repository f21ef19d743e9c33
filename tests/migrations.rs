//! Each service's migrations: one source per migration, rendered for each
//! backend. This holds them to what databases have already applied: every
//! `.sql` file in a crate's `migrations/` is one its `MIGRATIONS` lists, and
//! each renders, on each backend, to the text whose checksum
//! `migrations/checksums.txt` records (the checksum sqlx keeps per applied
//! migration, so an edited migration would stop every database that ran it).
//! A new migration fails here until its two lines are added to that file; the
//! failure prints them.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use adminduk_kit::storage::{Backend, Migrations};

/// Every crate that keeps migrations, by its folder in the workspace.
const CRATES: [(&str, Migrations); 5] = [
    ("gateway", adminduk_gateway::MIGRATIONS),
    ("services/ikd", adminduk_ikd::MIGRATIONS),
    ("services/inventory", adminduk_inventory::MIGRATIONS),
    ("services/population", adminduk_population::MIGRATIONS),
    ("services/printing", adminduk_printing::MIGRATIONS),
];

const BACKENDS: [(Backend, &str); 2] = [(Backend::Postgres, "postgres"), (Backend::Sqlite, "sqlite")];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `checksums.txt`: `file backend sha384` per line, `#` comments.
fn recorded(path: &Path) -> BTreeMap<(String, String), String> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [file, backend, sum] = fields[..] else {
                panic!("{}: `file backend sha384`, not {line:?}", path.display());
            };
            ((file.to_owned(), backend.to_owned()), sum.to_owned())
        })
        .collect()
}

#[test]
fn every_migration_is_listed_and_renders_to_what_databases_applied() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for (folder, migrations) in CRATES {
        let dir = root.join(folder).join("migrations");
        let mut files: Vec<String> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = migrations.sources().iter().map(|s| s.file.to_owned()).collect();
        assert_eq!(
            files, listed,
            "{folder}: MIGRATIONS lists every file in migrations/, in order"
        );

        let mut expected = recorded(&dir.join("checksums.txt"));
        let mut missing = Vec::new();
        for (backend, name) in BACKENDS {
            let rendered = migrations
                .render(backend)
                .unwrap_or_else(|e| panic!("{folder} on {name}: {e}"));
            assert_eq!(
                rendered.len(),
                files.len(),
                "{folder} on {name}: one migration a file"
            );
            for (migration, file) in rendered.iter().zip(&files) {
                assert!(
                    !migration.sql.as_str().contains("{{"),
                    "{folder}/{file} on {name}: every phrase is rendered"
                );
                let sum = hex(&migration.checksum);
                match expected.remove(&(file.clone(), name.to_owned())) {
                    Some(want) => assert_eq!(
                        sum, want,
                        "{folder}/{file} on {name} renders to other text than databases applied: \
                         a shipped migration is never edited (add a new one)"
                    ),
                    None => missing.push(format!("{file} {name} {sum}")),
                }
                checked += 1;
            }
        }
        assert!(
            missing.is_empty(),
            "{folder}: new migrations; once they are final, add to migrations/checksums.txt:\n{}",
            missing.join("\n")
        );
        assert!(
            expected.is_empty(),
            "{folder}: checksums.txt names migrations that are gone: {:?}",
            expected.keys().collect::<Vec<_>>()
        );
    }
    assert!(
        checked >= 22,
        "every migration was checked on both backends ({checked})"
    );
}

#[test]
fn the_backends_differ_only_where_a_source_names_a_phrase() {
    // The rendered texts of the whole mesh differ in the phrases and nothing else.
    let mut differing = 0;
    for (folder, migrations) in CRATES {
        let postgres = migrations.render(Backend::Postgres).expect("postgres");
        let sqlite = migrations.render(Backend::Sqlite).expect("sqlite");
        for ((pg, lite), source) in postgres.iter().zip(&sqlite).zip(migrations.sources()) {
            assert_eq!(pg.version, lite.version, "{folder}/{}", source.file);
            assert_eq!(pg.description, lite.description, "{folder}/{}", source.file);
            let marked = source.sql.contains("{{");
            assert_eq!(
                pg.sql.as_str() != lite.sql.as_str(),
                marked,
                "{folder}/{}: the texts differ exactly when the source names a phrase",
                source.file
            );
            differing += usize::from(marked);
        }
    }
    // Every table with a numbering key, and IKD's opaque subjects.
    assert!(differing >= 5, "{differing} migrations differ between backends");
}
