//! Helpers for tests (the `testing` feature, for dev-dependencies only): a
//! fresh database on each backend the machine offers, a server configuration
//! on a free port, and a readiness signal, in the manner of zero2prod's
//! `spawn_app`. A service's tests start it with its crate's `start` on a
//! [`TestDatabase`] and [`server_config`], then reach it through [`ready`]:
//!
//! ```ignore
//! for db in testing::databases("search") {
//!     let running = adminduk_population::start(testing::server_config(), db.connect(MIGRATIONS).await).await?;
//!     let channel = testing::ready(running.local_addr(), SERVICE_NAME).await;
//!     // ...
//! }
//! ```
//!
//! SQLite always runs (a file in a temporary directory). PostgreSQL runs when
//! `ADMINDUK_TEST_POSTGRES_URL` is set, each test in a schema of its own.
//! With `ADMINDUK_REQUIRE_SERVICES=1` (as in CI) a missing service fails the
//! test instead of skipping it.
//!
//! Residents for any service's tests: [`registration`] (a made-up resident's
//! request, changed with struct update syntax), [`nik_text`], [`kk_text`],
//! [`record_death`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use adminduk_proto::common::v1 as common;
use adminduk_proto::population::v1::population_service_client::PopulationServiceClient;
use adminduk_proto::population::v1::{self as population, RegisterResidentRequest};
use chrono::NaiveDate;
use secrecy::SecretString;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::{DatabaseConfig, ServerConfig};
use crate::kk::Kk;
use crate::nik::{Nik, Sex};
use crate::storage::{Db, Migrations};

/// Long enough for a loaded CI machine, short enough that a hang fails the test.
const READY_WITHIN: Duration = Duration::from_secs(10);

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

impl TestDatabase {
    /// Connects to this database and applies `migrations` (panics, naming the backend, when it cannot).
    pub async fn connect(&self, migrations: Migrations) -> Db {
        Db::connect(&self.config, &self.schema, migrations)
            .await
            .unwrap_or_else(|err| panic!("{}: connect: {err}", self.label))
    }
}

/// A server for a test: plaintext on loopback, port 0 (a free port, so tests
/// run in parallel), every other setting as in production.
pub fn server_config() -> ServerConfig {
    ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ServerConfig::default()
    }
}

/// A channel to `addr` that connects on first use (as a service's upstream
/// channels do), for a caller that needs a connection of its own.
pub fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a server address is a uri")
        .connect_lazy()
}

/// The readiness signal: connects to a started server and returns the channel
/// once its health service answers that `service` is SERVING (one round trip;
/// no sleeps, no polling). Panics when it does not answer within 10 s.
pub async fn ready(addr: SocketAddr, service: &str) -> Channel {
    let check = async {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("a server address is a uri")
            .connect()
            .await
            .unwrap_or_else(|err| panic!("cannot connect to {service} at {addr}: {err}"));
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|status| panic!("{service} at {addr}: health check failed: {status:?}"))
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service} at {addr}");
        channel
    };
    tokio::time::timeout(READY_WITHIN, check)
        .await
        .unwrap_or_else(|_| panic!("{service} at {addr} not ready within {READY_WITHIN:?}"))
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

/// A name part no other test, nor another run of the tests, uses: the process,
/// a counter and the clock's nanoseconds, joined by `_` (a schema name or a
/// cache prefix, so tests can share one server).
pub fn unique_suffix() -> String {
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

/// `N` fresh databases on each backend available, for a test that starts `N`
/// services (each its own database, as across pods): SQLite, and Postgres when configured.
pub fn database_sets<const N: usize>(prefix: &str) -> Vec<[TestDatabase; N]> {
    let mut all = vec![std::array::from_fn(|_| sqlite())];
    let postgres: [Option<TestDatabase>; N] = std::array::from_fn(|i| postgres(&format!("{prefix}{i}")));
    if postgres.iter().all(Option::is_some) {
        all.push(postgres.map(|db| db.expect("checked above")));
    }
    all
}

/// A day that exists (panics on one that does not, naming it).
pub fn day(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).unwrap_or_else(|| panic!("{year}-{month}-{day} is no day"))
}

/// A valid NIK's digits.
pub fn nik_text(district: &str, birth: NaiveDate, sex: Sex, serial: u16) -> String {
    Nik::from_parts(district, birth, sex, serial)
        .expect("the parts of a valid NIK")
        .as_str()
        .to_owned()
}

/// A valid KK's digits.
pub fn kk_text(district: &str, issued: NaiveDate, serial: u16) -> String {
    Kk::from_parts(district, issued, serial)
        .expect("the parts of a valid KK")
        .as_str()
        .to_owned()
}

/// The registration of a made-up resident numbered `serial`, born on `birth`,
/// living in `village` (whose first six digits are the district of the NIK and
/// the KK): `Warga {serial}`, born in Bekasi, married, print-ready, on the KK
/// numbered `kk_serial` (issued on 2020-01-01, or at birth if later) as its
/// head when `kk_serial` is `serial`, else as a child. A test changes what it
/// needs with struct update syntax.
pub fn registration(
    village: &str,
    sex: Sex,
    birth: NaiveDate,
    serial: u16,
    kk_serial: u16,
) -> RegisterResidentRequest {
    let district = village.get(..6).expect("a village code of ten digits");
    let relationship = if serial == kk_serial {
        population::FamilyRelationship::Head
    } else {
        population::FamilyRelationship::Child
    };
    RegisterResidentRequest {
        nik: nik_text(district, birth, sex, serial),
        kk: kk_text(district, day(2020, 1, 1).max(birth), kk_serial),
        full_name: format!("Warga {serial}"),
        sex: match sex {
            Sex::Male => common::Sex::Male,
            Sex::Female => common::Sex::Female,
        }
        .into(),
        birth_place: "Bekasi".to_owned(),
        birth_date: Some(adminduk_proto::convert::date(birth)),
        address: Some(population::Address {
            street: "Jl. Melati No. 5".to_owned(),
            rt: "003".to_owned(),
            rw: "007".to_owned(),
            village_code: village.to_owned(),
            ..Default::default()
        }),
        marital_status: population::MaritalStatus::Married.into(),
        relationship: relationship.into(),
        recording_status: population::RecordingStatus::PrintReady.into(),
    }
}

/// Records the death of the resident with `nik`, who must be at version 1
/// (registered and not changed since).
pub async fn record_death(people: &mut PopulationServiceClient<Channel>, nik: &str, died: NaiveDate) {
    people
        .record_death(population::RecordDeathRequest {
            nik: nik.to_owned(),
            death_date: Some(adminduk_proto::convert::date(died)),
            expected_version: 1,
        })
        .await
        .expect("the death recorded");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::GrpcServer;

    #[tokio::test]
    async fn a_started_server_is_ready_on_a_free_port() {
        let server = GrpcServer::new(server_config()).start().await.expect("starts");
        assert_ne!(server.local_addr().port(), 0);
        // The whole server's health ("") is SERVING as soon as `start` returns.
        let _channel = ready(server.local_addr(), "").await;
        server.shutdown().await.expect("stops");
    }

    #[test]
    fn a_mesh_gets_fresh_databases_of_one_backend() {
        let sets = database_sets::<3>("sets");
        assert_eq!(sets[0].each_ref().map(|db| db.label), ["sqlite"; 3]);
        for set in &sets {
            let labels: Vec<_> = set.iter().map(|db| db.label).collect();
            assert!(labels.iter().all(|label| *label == labels[0]), "{labels:?}");
            let configs: std::collections::HashSet<_> = set
                .iter()
                .map(|db| {
                    format!(
                        "{}/{}",
                        secrecy::ExposeSecret::expose_secret(&db.config.url),
                        db.schema
                    )
                })
                .collect();
            assert_eq!(configs.len(), 3, "each service its own database");
        }
    }
}
