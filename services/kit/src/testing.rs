//! Helpers for tests: a fresh database on each backend the machine offers.
//!
//! SQLite always runs (a file in a temporary directory). PostgreSQL runs when
//! `ADMINDUK_TEST_POSTGRES_URL` is set, each test in a schema of its own.
//! With `ADMINDUK_REQUIRE_SERVICES=1` (as in CI) a missing service fails the
//! test instead of skipping it.

use std::sync::atomic::{AtomicU64, Ordering};

use secrecy::SecretString;

use crate::config::DatabaseConfig;

/// One database for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// `sqlite` or `postgres`, for assertion messages.
    pub label: &'static str,
    /// The configuration to connect with.
    pub config: DatabaseConfig,
    /// The schema to use on Postgres; unique per test.
    pub schema: String,
    _dir: Option<tempfile::TempDir>,
}

/// Whether missing services must fail tests rather than skip them.
pub fn services_required() -> bool {
    std::env::var("ADMINDUK_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The Redis URL for tests, when one is configured (panics when required and missing).
pub fn redis_url() -> Option<String> {
    let url = std::env::var("ADMINDUK_TEST_REDIS_URL").ok();
    assert!(
        url.is_some() || !services_required(),
        "ADMINDUK_REQUIRE_SERVICES=1 but ADMINDUK_TEST_REDIS_URL is not set"
    );
    url
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// A fresh SQLite database in a temporary directory.
pub fn sqlite() -> TestDatabase {
    let dir = tempfile::tempdir().expect("a temporary directory for the test database");
    let url = format!("sqlite:{}", dir.path().join("test.db").display());
    TestDatabase {
        label: "sqlite",
        config: DatabaseConfig {
            url: SecretString::from(url),
            max_connections: 4,
        },
        schema: "main".to_owned(),
        _dir: Some(dir),
    }
}

/// A fresh Postgres schema, when `ADMINDUK_TEST_POSTGRES_URL` is set.
pub fn postgres(prefix: &str) -> Option<TestDatabase> {
    let url = std::env::var("ADMINDUK_TEST_POSTGRES_URL").ok();
    assert!(
        url.is_some() || !services_required(),
        "ADMINDUK_REQUIRE_SERVICES=1 but ADMINDUK_TEST_POSTGRES_URL is not set"
    );
    let url = url?;
    Some(TestDatabase {
        label: "postgres",
        config: DatabaseConfig {
            url: SecretString::from(url),
            max_connections: 4,
        },
        schema: format!("t_{prefix}_{}", unique_suffix()),
        _dir: None,
    })
}

/// Every backend available: SQLite, and Postgres when configured.
pub fn databases(prefix: &str) -> Vec<TestDatabase> {
    let mut all = vec![sqlite()];
    all.extend(postgres(prefix));
    all
}
