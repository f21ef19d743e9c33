//! Storage: one sqlx pool for either backend, chosen by URL (`sqlite:` for the
//! embedded default, `postgres:` for production), with the service's
//! migrations applied at start.
//!
//! Stores write SQL both backends accept (`$1` placeholders, `RETURNING`,
//! `ON CONFLICT`) and keep to the column types they share (BIGINT, TEXT), so
//! one store and one test suite serve both.

use std::str::FromStr as _;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use sqlx::SqlSafeStr as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor as _};

use crate::config::DatabaseConfig;

/// The two supported backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: a file, no server.
    Sqlite,
    /// Production.
    Postgres,
}

/// A service's migrations: one SQL source each (`migrations/NNNN_what.sql` in
/// its crate, embedded at build time), rendered for the backend at start.
///
/// The backends differ in a few phrases, which a source names in double braces
/// and [`render`] replaces; everything else is SQL both accept:
///
/// | in the source | PostgreSQL | SQLite |
/// |---|---|---|
/// | `{{serial_key}}` | `BIGSERIAL PRIMARY KEY` | `INTEGER PRIMARY KEY AUTOINCREMENT` |
/// | `{{random_hex_128}}` | `replace(gen_random_uuid()::text, '-', '')` | `lower(hex(randomblob(16)))` |
///
/// A migration that has shipped is never edited: the database keeps each applied
/// migration's checksum and refuses to start when the rendered text differs (the
/// workspace's `migrations` test holds every checksum, per backend).
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    sources: &'static [MigrationSource],
}

/// One migration's source: its file name (`0001_what.sql`) and its text.
#[derive(Debug, Clone, Copy)]
pub struct MigrationSource {
    /// The file name, which gives the version and the description.
    pub file: &'static str,
    /// The SQL with its `{{phrase}}` marks.
    pub sql: &'static str,
}

/// What each backend writes for a phrase the two spell differently.
const PHRASES: [(&str, &str, &str); 2] = [
    (
        "serial_key",
        "BIGSERIAL PRIMARY KEY",
        "INTEGER PRIMARY KEY AUTOINCREMENT",
    ),
    (
        "random_hex_128",
        "replace(gen_random_uuid()::text, '-', '')",
        "lower(hex(randomblob(16)))",
    ),
];

/// A migration source that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("migration {file}: {problem}")]
pub struct SourceError {
    /// The migration's file name.
    pub file: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

/// Replaces each `{{phrase}}` in `sql` with what `backend` writes for it.
pub fn render(sql: &str, backend: Backend) -> Result<String, String> {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or("a `{{` is not closed")?;
        let name = &after[..close];
        let (_, postgres, sqlite) = PHRASES
            .iter()
            .find(|(phrase, _, _)| *phrase == name)
            .ok_or_else(|| format!("unknown phrase {{{{{name}}}}}"))?;
        out.push_str(match backend {
            Backend::Postgres => postgres,
            Backend::Sqlite => sqlite,
        });
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Migrations {
    /// Migrations from their sources (use [`migrations!`](crate::migrations)).
    pub const fn new(sources: &'static [MigrationSource]) -> Self {
        Self { sources }
    }

    /// The sources, in the order given.
    pub fn sources(&self) -> &'static [MigrationSource] {
        self.sources
    }

    /// The migrations as `backend` runs them, named as sqlx names a
    /// directory's files (version from the number, description from the rest).
    pub fn render(&self, backend: Backend) -> Result<Vec<Migration>, SourceError> {
        self.sources
            .iter()
            .map(|source| {
                let problem = |problem: String| SourceError {
                    file: source.file,
                    problem,
                };
                let (version, rest) = source
                    .file
                    .split_once('_')
                    .ok_or_else(|| problem("the name is not NNNN_what.sql".into()))?;
                let version: i64 = version
                    .parse()
                    .map_err(|_| problem("the name does not start with a version number".into()))?;
                let migration_type = MigrationType::from_filename(rest);
                if migration_type != MigrationType::Simple || !rest.ends_with(".sql") {
                    return Err(problem("only forward `.sql` migrations are supported".into()));
                }
                let description = rest.trim_end_matches(".sql").replace('_', " ");
                let sql = render(source.sql, backend).map_err(problem)?;
                let no_tx = sql.starts_with("-- no-transaction");
                Ok(Migration::new(
                    version,
                    description.into(),
                    migration_type,
                    sqlx::AssertSqlSafe(sql).into_sql_str(),
                    no_tx,
                ))
            })
            .collect()
    }
}

/// A service's [`Migrations`], from the files named (in its crate's
/// `migrations/` folder, embedded at build time):
/// `pub const MIGRATIONS: Migrations = adminduk_kit::migrations!["0001_what.sql"];`
#[macro_export]
macro_rules! migrations {
    [$($file:literal),+ $(,)?] => {
        $crate::storage::Migrations::new(&[$(
            $crate::storage::MigrationSource {
                file: $file,
                sql: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/", $file)),
            }
        ),+])
    };
}

/// Declares a service's store: a handle on its connected, migrated [`Db`]
/// with `new` and `db`, to which the service adds its queries in an `impl`.
///
/// ```ignore
/// adminduk_kit::store! {
///     /// The IKD store.
///     pub struct Store;
/// }
/// ```
#[macro_export]
macro_rules! store {
    ($(#[$meta:meta])* $vis:vis struct $name:ident;) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        $vis struct $name {
            db: $crate::storage::Db,
        }

        impl $name {
            /// A store over a connected, migrated database.
            pub fn new(db: $crate::storage::Db) -> Self {
                Self { db }
            }

            /// The database.
            pub fn db(&self) -> &$crate::storage::Db {
                &self.db
            }
        }
    };
}

/// A connected, migrated database.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

/// The database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URL names no supported backend.
    #[error("unsupported database URL (use sqlite: or postgres://)")]
    UnsupportedUrl,
    /// Connecting failed.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A migration's source is not one the kit can render.
    #[error("{0}")]
    Source(#[from] SourceError),
}

impl Db {
    /// Connects and migrates. On Postgres, `schema` keeps this service's tables
    /// apart from other services' in a shared database (it is created if missing).
    pub async fn connect(
        config: &DatabaseConfig,
        schema: &str,
        migrations: Migrations,
    ) -> Result<Self, StorageError> {
        Self::open(config, schema, Some(migrations)).await
    }

    /// Connects to a database another process keeps, changing nothing: no
    /// schema is created and no migration runs (a checking tool's connection;
    /// put `mode=ro` in a SQLite URL to open the file read-only).
    pub async fn connect_existing(config: &DatabaseConfig, schema: &str) -> Result<Self, StorageError> {
        Self::open(config, schema, None).await
    }

    async fn open(
        config: &DatabaseConfig,
        schema: &str,
        migrations: Option<Migrations>,
    ) -> Result<Self, StorageError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = backend_and_url(config.url.expose_secret())?;
        if !schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            || schema.is_empty()
        {
            return Err(StorageError::Connect(sqlx::Error::Configuration(
                "schema names are lowercase ascii".into(),
            )));
        }
        let options = AnyConnectOptions::from_str(&url).map_err(StorageError::Connect)?;
        let pool_options = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_secs(5));
        let pool = match backend {
            Backend::Sqlite => {
                pool_options
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // WAL lets readers run beside the one writer; the busy timeout makes
                            // a second writer wait instead of failing at once.
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA busy_timeout = 5000").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await
            }
            Backend::Postgres => {
                // A connection that migrates makes its schema; one that only reads finds it.
                if migrations.is_some() {
                    create_schema(&options, schema).await?;
                }
                let set_path = format!("SET search_path TO {schema}");
                pool_options
                    .after_connect(move |conn, _| {
                        let set_path = set_path.clone();
                        Box::pin(async move {
                            conn.execute(sqlx::AssertSqlSafe(set_path)).await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await
            }
        }
        .map_err(StorageError::Connect)?;
        if let Some(migrations) = migrations {
            let migrator = Migrator::with_migrations(migrations.render(backend)?);
            migrator.run(&pool).await?;
        }
        Ok(Self { pool, backend })
    }

    /// The pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so two writers queue on the busy timeout instead of
    /// deadlocking when both try to upgrade a read lock.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Whether the database answers a query (readiness).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(self.pool()).await.map(drop)
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The backend a database URL names, and the URL to connect with (a SQLite
/// file is created when missing).
fn backend_and_url(url: &str) -> Result<(Backend, String), StorageError> {
    let backend = if url.starts_with("sqlite:") {
        Backend::Sqlite
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Backend::Postgres
    } else {
        return Err(StorageError::UnsupportedUrl);
    };
    let mut url = url.to_owned();
    if backend == Backend::Sqlite && !url.contains("mode=") && !url.contains(":memory:") {
        url.push_str(if url.contains('?') {
            "&mode=rwc"
        } else {
            "?mode=rwc"
        });
    }
    Ok((backend, url))
}

/// Creates `schema` on a Postgres database if it is not there, on a
/// connection of its own.
async fn create_schema(options: &AnyConnectOptions, schema: &str) -> Result<(), StorageError> {
    let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
    let mut first = <sqlx::AnyConnection as sqlx::Connection>::connect_with(options)
        .await
        .map_err(StorageError::Connect)?;
    first
        .execute(sqlx::AssertSqlSafe(create))
        .await
        .map_err(StorageError::Connect)?;
    sqlx::Connection::close(first)
        .await
        .map_err(StorageError::Connect)
}

/// An instant as stored: milliseconds since the epoch (BIGINT on both backends).
pub fn millis(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_millis()
}

/// A stored instant back; [`Corrupt`] for a value no instant has.
pub fn from_millis(ms: i64) -> Result<chrono::DateTime<chrono::Utc>, Corrupt> {
    chrono::DateTime::from_timestamp_millis(ms).ok_or(Corrupt::new("timestamp"))
}

/// A day as stored: `YYYY-MM-DD` text (the same on both backends, and it sorts).
pub fn day_text(day: chrono::NaiveDate) -> String {
    day.format(DAY_FORMAT).to_string()
}

/// A stored day back; [`Corrupt`] for text that is no day.
pub fn from_day_text(text: &str) -> Result<chrono::NaiveDate, Corrupt> {
    chrono::NaiveDate::parse_from_str(text, DAY_FORMAT).map_err(|_| Corrupt::new("day"))
}

const DAY_FORMAT: &str = "%Y-%m-%d";

/// A stored value that does not read back as what it must be: the row is
/// corrupt (written by something else, or edited by hand). Every store's
/// error wraps it, so a row read checks with `?`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt row: {0}")]
pub struct Corrupt(std::borrow::Cow<'static, str>);

impl Corrupt {
    /// A corrupt row, saying which value did not read back (never the value
    /// itself: it may be personal data).
    pub fn new(what: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Self(what.into())
    }

    /// Which value did not read back.
    pub fn what(&self) -> &str {
        &self.0
    }
}

/// Whether a database error is a unique-constraint violation, on either backend.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_instants_and_days_read_back_or_say_which_value_is_corrupt() {
        let at = chrono::DateTime::from_timestamp_millis(1_764_633_600_123).expect("instant");
        assert_eq!(from_millis(millis(at)), Ok(at));
        assert_eq!(
            from_millis(i64::MAX).map_err(|e| e.to_string()),
            Err("corrupt row: timestamp".into())
        );
        let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 2).expect("day");
        assert_eq!(day_text(day), "2026-12-02");
        assert_eq!(from_day_text(&day_text(day)), Ok(day));
        assert_eq!(
            from_day_text("2026-13-02").map_err(|e| e.what().to_owned()),
            Err("day".into())
        );
    }

    #[test]
    fn a_phrase_renders_as_each_backend_writes_it() {
        let source =
            "CREATE TABLE t (\n    id {{serial_key}},\n    s TEXT DEFAULT ({{random_hex_128}})\n);\n";
        assert_eq!(
            render(source, Backend::Postgres).expect("renders"),
            "CREATE TABLE t (\n    id BIGSERIAL PRIMARY KEY,\n    s TEXT DEFAULT (replace(gen_random_uuid()::text, '-', ''))\n);\n"
        );
        assert_eq!(
            render(source, Backend::Sqlite).expect("renders"),
            "CREATE TABLE t (\n    id INTEGER PRIMARY KEY AUTOINCREMENT,\n    s TEXT DEFAULT (lower(hex(randomblob(16))))\n);\n"
        );
        let plain = "CREATE TABLE t (n BIGINT);";
        assert_eq!(render(plain, Backend::Sqlite).expect("renders"), plain);
    }

    #[test]
    fn an_unknown_or_unclosed_phrase_is_refused() {
        assert_eq!(
            render("id {{serial}},", Backend::Postgres).expect_err("refused"),
            "unknown phrase {{serial}}"
        );
        assert_eq!(
            render("id {{serial_key,", Backend::Sqlite).expect_err("refused"),
            "a `{{` is not closed"
        );
    }

    const SOURCES: &[MigrationSource] = &[
        MigrationSource {
            file: "0001_first_table.sql",
            sql: "CREATE TABLE a (id {{serial_key}});",
        },
        MigrationSource {
            file: "0002_more.sql",
            sql: "-- no-transaction\nCREATE INDEX a_id ON a (id);",
        },
    ];

    #[test]
    fn a_file_name_gives_the_version_and_description_as_sqlx_reads_a_folder() {
        let migrations = Migrations::new(SOURCES).render(Backend::Sqlite).expect("renders");
        assert_eq!(migrations[0].version, 1);
        assert_eq!(migrations[0].description, "first table");
        assert_eq!(
            migrations[0].sql.as_str(),
            "CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT);"
        );
        assert!(!migrations[0].no_tx);
        assert_eq!(migrations[1].version, 2);
        assert!(migrations[1].no_tx);
    }

    #[test]
    fn a_badly_named_source_is_refused_with_its_name() {
        for file in ["first.sql", "x_first.sql", "0001_first.up.sql", "0001_first.txt"] {
            let sources: &'static [MigrationSource] =
                Box::leak(Box::new([MigrationSource { file, sql: "" }]));
            let err = Migrations::new(sources)
                .render(Backend::Postgres)
                .expect_err("refused");
            assert_eq!(err.file, file, "{err}");
        }
    }
}
