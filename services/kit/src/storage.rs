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
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
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

/// A service's migrations, one set per backend (their DDL differs, their tables do not).
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    /// For SQLite.
    pub sqlite: &'static Migrator,
    /// For PostgreSQL.
    pub postgres: &'static Migrator,
}

/// A service's [`Migrations`], from its crate's `migrations/sqlite` and
/// `migrations/postgres` (embedded at build time, paths from the crate's root).
/// `pub const MIGRATIONS: Migrations = adminduk_kit::migrations!();`
#[macro_export]
macro_rules! migrations {
    () => {{
        static SQLITE: ::sqlx::migrate::Migrator = ::sqlx::migrate!("./migrations/sqlite");
        static POSTGRES: ::sqlx::migrate::Migrator = ::sqlx::migrate!("./migrations/postgres");
        $crate::storage::Migrations {
            sqlite: &SQLITE,
            postgres: &POSTGRES,
        }
    }};
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
        let url = config.url.expose_secret();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StorageError::UnsupportedUrl);
        };
        if !schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            || schema.is_empty()
        {
            return Err(StorageError::Connect(sqlx::Error::Configuration(
                "schema names are lowercase ascii".into(),
            )));
        }
        let mut url = url.to_owned();
        if backend == Backend::Sqlite && !url.contains("mode=") && !url.contains(":memory:") {
            url.push_str(if url.contains('?') {
                "&mode=rwc"
            } else {
                "?mode=rwc"
            });
        }
        let options = AnyConnectOptions::from_str(&url).map_err(StorageError::Connect)?;
        let schema = schema.to_owned();
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
                let set_path = format!("SET search_path TO {schema}");
                // A connection that migrates makes its schema; one that only reads finds it.
                if migrations.is_some() {
                    let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
                    let mut first = <sqlx::AnyConnection as sqlx::Connection>::connect_with(&options)
                        .await
                        .map_err(StorageError::Connect)?;
                    first
                        .execute(sqlx::AssertSqlSafe(create))
                        .await
                        .map_err(StorageError::Connect)?;
                    sqlx::Connection::close(first)
                        .await
                        .map_err(StorageError::Connect)?;
                }
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
            let migrator = match backend {
                Backend::Sqlite => migrations.sqlite,
                Backend::Postgres => migrations.postgres,
            };
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

/// An instant as stored: milliseconds since the epoch (BIGINT on both backends).
pub fn millis(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_millis()
}

/// A stored instant back; `None` for a value no instant has.
pub fn from_millis(ms: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_millis(ms)
}

/// Whether a database error is a unique-constraint violation, on either backend.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
