//! Every service keeps its migrations twice, `migrations/sqlite` and
//! `migrations/postgres`, because the two dialects differ in a few words. This
//! test holds the copies together: the same files, and in each pair the same
//! text but for the differences listed in [`DIALECT`], so a change made to one
//! copy and not the other fails here rather than in production.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// What may differ between the copies: (SQLite's text, PostgreSQL's text).
/// Anything else must be the same, byte for byte.
const DIALECT: &[(&str, &str)] = &[
    // A 64-bit key that numbers itself.
    ("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY"),
    // 128 random bits as 32 lowercase hex digits (IKD's opaque subject).
    (
        "lower(hex(randomblob(16)))",
        "replace(gen_random_uuid()::text, '-', '')",
    ),
];

/// The crates that keep migrations: the services next to this crate, and the gateway.
fn services() -> Vec<PathBuf> {
    let services = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("services/")
        .to_path_buf();
    let mut found: Vec<PathBuf> = fs::read_dir(&services)
        .expect("read services/")
        .map(|entry| entry.expect("entry").path())
        .chain([services.join("../gateway")])
        .filter(|path| path.join("migrations").is_dir())
        .collect();
    found.sort();
    found
}

fn sql_files(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .collect()
}

/// The text with each listed difference of one side replaced by a marker.
fn neutral(
    text: &str,
    side: fn(&(&'static str, &'static str)) -> &'static str,
    used: &mut [usize],
) -> String {
    let mut text = text.to_owned();
    for (i, pair) in DIALECT.iter().enumerate() {
        let words = side(pair);
        used[i] += text.matches(words).count();
        text = text.replace(words, &format!("<dialect {i}>"));
    }
    text
}

#[test]
fn each_services_migrations_differ_between_backends_only_in_the_listed_words() {
    let services = services();
    let names: Vec<String> = services
        .iter()
        .map(|s| s.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    for expected in ["gateway", "ikd", "inventory", "population", "printing"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} has migrations: {names:?}"
        );
    }

    let mut used = vec![0; DIALECT.len()];
    let mut pairs = 0;
    for service in &services {
        let sqlite_dir = service.join("migrations/sqlite");
        let postgres_dir = service.join("migrations/postgres");
        let sqlite = sql_files(&sqlite_dir);
        let postgres = sql_files(&postgres_dir);
        assert_eq!(
            sqlite,
            postgres,
            "{}: the same migrations for both backends",
            service.display()
        );
        for name in &sqlite {
            let read = |dir: &Path| {
                fs::read_to_string(dir.join(name))
                    .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
            };
            let lite = neutral(&read(&sqlite_dir), |p| p.0, &mut used);
            let pg = neutral(&read(&postgres_dir), |p| p.1, &mut used);
            let mut lines = lite.lines().zip(pg.lines()).enumerate();
            if let Some((n, (l, p))) = lines.find(|(_, (l, p))| l != p) {
                panic!(
                    "{}/migrations/*/{name} line {}: the copies differ beyond the listed dialect words\n  \
                     sqlite:   {l}\n  postgres: {p}",
                    service.display(),
                    n + 1
                );
            }
            assert_eq!(
                lite.lines().count(),
                pg.lines().count(),
                "{}/migrations/*/{name}: the copies have as many lines",
                service.display()
            );
            assert_eq!(lite, pg, "{}/migrations/*/{name}", service.display());
            pairs += 1;
        }
    }
    assert!(pairs >= 10, "every pair was read ({pairs})");
    for (i, pair) in DIALECT.iter().enumerate() {
        assert!(
            used[i] > 0,
            "{pair:?} is listed but no migration uses it: remove it"
        );
    }
}

#[test]
fn a_change_to_one_copy_only_is_caught() {
    let mut used = vec![0; DIALECT.len()];
    let sqlite = "CREATE TABLE t (\n    id INTEGER PRIMARY KEY AUTOINCREMENT,\n    n BIGINT NOT NULL\n);\n";
    let same = "CREATE TABLE t (\n    id BIGSERIAL PRIMARY KEY,\n    n BIGINT NOT NULL\n);\n";
    let drifted = "CREATE TABLE t (\n    id BIGSERIAL PRIMARY KEY,\n    n TEXT NOT NULL\n);\n";
    let lite = neutral(sqlite, |p| p.0, &mut used);
    assert_eq!(lite, neutral(same, |p| p.1, &mut used));
    assert_ne!(lite, neutral(drifted, |p| p.1, &mut used));
    // A dialect word on the wrong side is a difference too.
    assert_ne!(lite, neutral(sqlite, |p| p.1, &mut used));
}
