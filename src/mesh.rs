//! Running services: all of them in one process (`up`), or one (`serve`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use adminduk_inventory::{GroupCommit, Inventory};
use adminduk_kit::cache::{MemoryCache, SharedCache};
use adminduk_kit::config::{
    self, DatabaseConfig, LogFormat, MailConfig, ServerConfig, ServiceConfig, TelemetryConfig, Validate as _,
};
use adminduk_kit::server::shutdown_signal;
use adminduk_kit::storage::Db;
use adminduk_population::Store;
use adminduk_population::domain::resident::{NewResident, RecordingStatus, Relationship};
use anyhow::Context as _;
use secrecy::ExposeSecret as _;
use tonic::transport::Channel;

use crate::{LogFormatArg, ServeArgs, ServiceName, UpArgs};

/// The kit's channel to an upstream service (it connects on first use, so the
/// services of a mesh can start in any order).
fn upstream(url: &str) -> anyhow::Result<Channel> {
    adminduk_kit::upstream::channel(url).with_context(|| format!("the upstream address {url}"))
}

/// Blanks at the ministry when the demo ledger opens: 16 million minus the
/// 3.3 million already sent to regions (January 2020).
const DEMO_NATIONAL_STOCK: i64 = 12_700_000;
/// Kota Bekasi's demo stock: about a month at its quotas.
const DEMO_BEKASI_STOCK: i64 = 15_000;

/// Kota Bekasi's demo inventory, on first run: its policy, the national pool, its stock.
async fn seed_inventory(inventory: &Inventory) -> anyhow::Result<()> {
    use adminduk_inventory::demo::{KOTA_BEKASI, kota_bekasi_policy};
    use adminduk_inventory::store::NATIONAL;
    if inventory.engine().policy(KOTA_BEKASI).is_some() {
        return Ok(());
    }
    inventory
        .set_policy(kota_bekasi_policy())
        .await
        .map_err(|e| anyhow::anyhow!("demo policy: {e:?}"))?;
    inventory
        .receive_shipment(
            NATIONAL,
            DEMO_NATIONAL_STOCK,
            "demo-national-opening",
            "adminduk up",
        )
        .await?;
    inventory
        .receive_shipment(
            KOTA_BEKASI,
            DEMO_BEKASI_STOCK,
            "demo-bekasi-shipment-1",
            "adminduk up",
        )
        .await?;
    println!(
        "first run: Kota Bekasi's inventory set up (12 kecamatan at 30 a day, 150 shared, {DEMO_BEKASI_STOCK} blanks)"
    );
    Ok(())
}

/// Active identities for a share of each kecamatan's eligible residents,
/// from 8% in the first kecamatan to 30% in the twelfth, so adoption figures
/// have something to show (national adoption was about 3% in late 2023
/// against a 25-30% target).
async fn seed_adoption(ikd: &adminduk_ikd::Store, residents: &[NewResident]) -> anyhow::Result<u64> {
    let now = chrono::Utc::now();
    let mut seeded = 0;
    for (i, r) in residents.iter().enumerate() {
        let eligible = matches!(r.relationship, Relationship::Head | Relationship::Wife)
            && matches!(
                r.recording_status,
                RecordingStatus::Recorded | RecordingStatus::PrintReady
            );
        let district = r.address.district_code().to_owned();
        let kecamatan: u64 = district.get(4..6).and_then(|n| n.parse().ok()).unwrap_or(1);
        let share_percent = 8 + (kecamatan.saturating_sub(1) * 2);
        if !eligible || (i as u64 * 7919) % 100 >= share_percent {
            continue;
        }
        // A stand-in public key: demo identities never sign anything.
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(&r.nik.as_str().as_bytes()[..16]);
        let device = adminduk_ikd::domain::device_id(&key);
        if ikd
            .seed_identity(r.nik.as_str(), &key, &device, &district, now)
            .await?
        {
            seeded += 1;
        }
    }
    Ok(seeded)
}

fn sqlite_url(dir: &Path, name: &str) -> String {
    format!("sqlite:{}", dir.join(format!("{name}.db")).display())
}

fn local_database(dir: &Path, name: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: sqlite_url(dir, name).into(),
        max_connections: 8,
    }
}

fn server_at(listen: SocketAddr) -> ServerConfig {
    ServerConfig {
        listen,
        ..ServerConfig::default()
    }
}

/// The data directory's key for the NIK references in logs, made on first run,
/// so one resident keeps one reference across restarts of `up`.
fn reference_key(data_dir: &Path) -> anyhow::Result<secrecy::SecretString> {
    let path = data_dir.join("nik-ref.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let key = text.trim().to_owned();
        anyhow::ensure!(
            key.len() >= config::MIN_NIK_REF_KEY_CHARS,
            "{} is too short to be a key; delete it to make a new one",
            path.display()
        );
        return Ok(key.into());
    }
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("no system randomness for the log reference key"))?;
    let key = adminduk_kit::hex::encode(&bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{key}\n").as_bytes())?;
    Ok(key.into())
}

pub(crate) fn up(args: UpArgs) -> anyhow::Result<()> {
    // Everything that can be checked is checked before the runtime starts.
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create the data directory {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let telemetry = TelemetryConfig {
        log_format: match args.log_format {
            LogFormatArg::Pretty => LogFormat::Pretty,
            LogFormatArg::Json => LogFormat::Json,
        },
        nik_ref_key: Some(reference_key(&data_dir)?),
        ..TelemetryConfig::default()
    };
    let servers = [
        server_at(args.population_addr),
        server_at(args.inventory_addr),
        server_at(args.printing_addr),
        server_at(args.ikd_addr),
    ];
    for server in &servers {
        if let Err(err) = server.validate() {
            err.exit();
        }
    }
    let [population_server, inventory_server, printing_server, ikd_server] = servers;
    // Mail to residents goes to a local mailbox a person reads: one file per message.
    let mailbox = data_dir.join("mailbox");
    let mail = MailConfig {
        mailbox_dir: Some(mailbox.clone()),
        poll_interval_ms: 250,
        ..MailConfig::default()
    };

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let _telemetry = adminduk_kit::telemetry::init("adminduk", &telemetry)?;
        let certs = crate::certs::generate(&data_dir.join("certs"), &crate::certs::CertOptions::default())
            .context("writing development certificates")?;
        let stop = shutdown_signal();

        let population_db =
            Db::connect(&local_database(&data_dir, "population"), adminduk_population::SCHEMA, adminduk_population::MIGRATIONS)
                .await
                .context("opening the population database")?;
        let inventory_db =
            Db::connect(&local_database(&data_dir, "inventory"), adminduk_inventory::SCHEMA, adminduk_inventory::MIGRATIONS)
                .await
                .context("opening the inventory database")?;
        let ikd_db = Db::connect(&local_database(&data_dir, "ikd"), adminduk_ikd::SCHEMA, adminduk_ikd::MIGRATIONS)
            .await
            .context("opening the IKD database")?;
        let printing_db =
            Db::connect(&local_database(&data_dir, "printing"), adminduk_printing::SCHEMA, adminduk_printing::MIGRATIONS)
                .await
                .context("opening the printing database")?;

        let store = Store::new(population_db.clone());
        if store.count_residents().await? == 0 && args.residents > 0 {
            println!("first run: loading {} synthetic residents of Kota Bekasi", args.residents);
            let (written, residents) = crate::seed::load(&store, "3275", args.residents, 2_026, true).await?;
            println!("{written} residents loaded");
            let active = seed_adoption(&adminduk_ikd::Store::new(ikd_db.clone()), &residents).await?;
            println!("{active} of them have an active IKD (8% to 30% by kecamatan)");
        }

        let population = adminduk_population::start(population_server, population_db.clone()).await?;
        let population_addr = population.local_addr();
        let inventory = adminduk_inventory::start(inventory_server, inventory_db.clone(), GroupCommit::default()).await?;
        seed_inventory(inventory.inventory()).await?;
        let inventory_addr = inventory.local_addr();
        let cache: Arc<dyn SharedCache> = Arc::new(MemoryCache::new());
        let population_url = format!("http://{population_addr}");
        let ikd = adminduk_ikd::start(ikd_server, ikd_db.clone(), upstream(&population_url)?, cache, &mail).await?;
        let ikd_addr = ikd.local_addr();
        let printing = adminduk_printing::start(
            printing_server,
            printing_db.clone(),
            upstream(&population_url)?,
            upstream(&format!("http://{inventory_addr}"))?,
        )
        .await?;
        let printing_addr = printing.local_addr();

        println!();
        println!("adminduk is up (data in {})", data_dir.display());
        println!("  population  grpc://{population_addr}  (adminduk.population.v1.PopulationService, plaintext on loopback)");
        println!("  inventory   grpc://{inventory_addr}  (adminduk.inventory.v1.InventoryService, plaintext on loopback)");
        println!("  printing    grpc://{printing_addr}  (adminduk.printing.v1.PrintingService, plaintext on loopback)");
        println!("  ikd         grpc://{ikd_addr}  (adminduk.ikd.v1.IkdService, plaintext on loopback)");
        println!("  certificates {}", certs.dir.display());
        println!("  mailbox      {}  (mail to residents, one .eml file each; `adminduk outbox` shows the newest)", mailbox.display());
        println!();
        println!("try:");
        println!(
            "  buf curl --protocol grpc --http2-prior-knowledge -d '{{\"nik\":\"3275014101900001\"}}' \\\n    http://{population_addr}/adminduk.population.v1.PopulationService/ParseNik"
        );
        println!(
            "  buf curl --protocol grpc --http2-prior-knowledge -d '{{\"region_code\":\"3275\"}}' \\\n    http://{inventory_addr}/adminduk.inventory.v1.InventoryService/GetStock"
        );
        println!(
            "  buf curl --protocol grpc --http2-prior-knowledge -d '{{\"area_code\":\"3275\"}}' \\\n    http://{ikd_addr}/adminduk.ikd.v1.IkdService/GetAdoption"
        );
        let ikd_store = adminduk_ikd::Store::new(ikd_db.clone());
        for nik in store.eligible_niks(adminduk_kit::time::today_wib(), 200).await? {
            if ikd_store.identity(&nik).await?.is_none() && !ikd_store.has_open_activation(&nik, chrono::Utc::now()).await? {
                println!();
                println!("a resident who can activate IKD and whose card can be printed (synthetic): NIK {nik}");
                println!("see the README's IKD and printing walk-throughs");
                break;
            }
        }
        println!();
        println!("Ctrl-C stops it.");

        stop.await;
        let (a, b, c, d) =
            tokio::join!(population.shutdown(), inventory.shutdown(), ikd.shutdown(), printing.shutdown());
        a?;
        b?;
        c?;
        d?;
        anyhow::Ok(())
    })
}

/// Where `serve` listens when `server.listen` is not configured: loopback (a
/// backend is plaintext unless TLS is configured; in a container set
/// `ADMINDUK_SERVER__LISTEN=0.0.0.0:PORT`) on the service's own port.
pub(crate) fn default_listen(service: ServiceName) -> SocketAddr {
    let port = match service {
        ServiceName::Population => 50061,
        ServiceName::Inventory => 50062,
        ServiceName::Printing => 50063,
        ServiceName::Ikd => 50064,
    };
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The database `serve` uses when `database.url` is not configured: a SQLite
/// file named after the service in the working directory.
pub(crate) fn default_database(service: ServiceName) -> String {
    format!("sqlite:{}.db", service_file_name(service))
}

fn service_file_name(service: ServiceName) -> &'static str {
    match service {
        ServiceName::Population => "population",
        ServiceName::Inventory => "inventory",
        ServiceName::Printing => "printing",
        ServiceName::Ikd => "ikd",
    }
}

/// The database a URL names, for a log line: a SQLite file's absolute path, or
/// a server URL without its password.
fn describe_database(url: &str) -> String {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.trim_start_matches("//");
        let file = path.split('?').next().unwrap_or(path);
        let absolute =
            std::env::current_dir().map_or_else(|_| Path::new(file).to_path_buf(), |d| d.join(file));
        return format!("sqlite file {}", absolute.display());
    }
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{host}")
        }
        None => "a database".to_owned(),
    }
}

pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let default_db = default_database(args.service);
    let listen = default_listen(args.service).to_string();
    let defaults = [
        ("server.listen", listen.as_str()),
        ("database.url", default_db.as_str()),
    ];
    let config: ServiceConfig = match config::load_with_defaults(args.config.as_deref(), &defaults) {
        Ok(config) => config,
        Err(err) => err.exit(),
    };
    if let Err(err) = adminduk_ikd::mail::check(&config.mail) {
        config::ConfigError::new(err.key, err.message).exit();
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let _telemetry = adminduk_kit::telemetry::init(service_label(args.service), &config.telemetry)?;
        let url = config.database.url.expose_secret();
        if url == default_db {
            tracing::warn!(
                database = %describe_database(url),
                "no database configured (DATABASE_URL or [database] url): using a SQLite file in the working directory"
            );
        } else {
            tracing::info!(database = %describe_database(url), "database");
        }
        let stop = shutdown_signal();
        match args.service {
            ServiceName::Population => {
                let db = Db::connect(
                    &config.database,
                    adminduk_population::SCHEMA,
                    adminduk_population::MIGRATIONS,
                )
                .await
                .context("opening the population database")?;
                let running = adminduk_population::start(config.server.clone(), db).await?;
                stop.await;
                running.shutdown().await?;
            }
            ServiceName::Inventory => {
                let db = Db::connect(
                    &config.database,
                    adminduk_inventory::SCHEMA,
                    adminduk_inventory::MIGRATIONS,
                )
                .await
                .context("opening the inventory database")?;
                let running =
                    adminduk_inventory::start(config.server.clone(), db, GroupCommit::default()).await?;
                stop.await;
                running.shutdown().await?;
            }
            ServiceName::Printing => {
                let db = Db::connect(
                    &config.database,
                    adminduk_printing::SCHEMA,
                    adminduk_printing::MIGRATIONS,
                )
                .await
                .context("opening the printing database")?;
                let running = adminduk_printing::start(
                    config.server.clone(),
                    db,
                    upstream(&config.upstreams.population)?,
                    upstream(&config.upstreams.inventory)?,
                )
                .await?;
                stop.await;
                running.shutdown().await?;
            }
            ServiceName::Ikd => {
                let db = Db::connect(&config.database, adminduk_ikd::SCHEMA, adminduk_ikd::MIGRATIONS)
                    .await
                    .context("opening the IKD database")?;
                let redis = config
                    .cache
                    .redis_url
                    .as_ref()
                    .map(|u| u.expose_secret().to_owned());
                let cache = adminduk_kit::cache::from_url(redis.as_deref(), "ikd")
                    .await
                    .context("connecting to the cache")?;
                let running = adminduk_ikd::start(
                    config.server.clone(),
                    db,
                    upstream(&config.upstreams.population)?,
                    cache,
                    &config.mail,
                )
                .await?;
                stop.await;
                running.shutdown().await?;
            }
        }
        anyhow::Ok(())
    })
}

fn service_label(service: ServiceName) -> &'static str {
    match service {
        ServiceName::Population => "adminduk-population",
        ServiceName::Inventory => "adminduk-inventory",
        ServiceName::Ikd => "adminduk-ikd",
        ServiceName::Printing => "adminduk-printing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_has_its_documented_port_and_its_own_database_file() {
        let ports: Vec<u16> = [
            ServiceName::Population,
            ServiceName::Inventory,
            ServiceName::Printing,
            ServiceName::Ikd,
        ]
        .into_iter()
        .map(|s| default_listen(s).port())
        .collect();
        assert_eq!(ports, [50061, 50062, 50063, 50064]);
        assert_eq!(default_database(ServiceName::Ikd), "sqlite:ikd.db");
    }

    #[test]
    fn a_database_is_described_without_its_password() {
        assert_eq!(
            describe_database("postgres://adminduk:hunter2@db:5432/adminduk"),
            "postgres://db:5432/adminduk"
        );
        let here = std::env::current_dir().expect("cwd");
        assert_eq!(
            describe_database("sqlite:population.db?mode=rwc"),
            format!("sqlite file {}", here.join("population.db").display())
        );
    }

    #[test]
    fn the_reference_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = reference_key(dir.path()).expect("made");
        let again = reference_key(dir.path()).expect("read");
        assert_eq!(first.expose_secret(), again.expose_secret());
        assert_eq!(first.expose_secret().len(), 64);
    }
}
