//! Running services: all of them in one process (`up`), or one (`serve`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use adminduk_inventory::{GroupCommit, Inventory};
use adminduk_kit::admin::{AdminServer, ReadyCheck};
use adminduk_kit::cache::{MemoryCache, SharedCache};
use adminduk_kit::config::{
    self, DatabaseConfig, LogFormat, MailConfig, ServerConfig, ServiceConfig, TelemetryConfig, Validate as _,
};
use adminduk_kit::server::shutdown_signal;
use adminduk_kit::storage::{Db, Migrations};
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

/// What the services share (revocations, proof ids, broker counters, rate
/// limits): Redis at `cache.redis_url` / `REDIS_URL`, in process otherwise.
async fn mesh_cache(config: &ServiceConfig) -> anyhow::Result<Arc<dyn SharedCache>> {
    let redis = config
        .cache
        .redis_url
        .as_ref()
        .map(|u| u.expose_secret().to_owned());
    adminduk_kit::cache::from_url(redis.as_deref(), adminduk_kit::cache::MESH)
        .await
        .context("connecting to the cache")
}

/// A channel to an upstream of `serve`: TLS with the service certificate when `[upstreams.tls]` is set.
fn configured_upstream(url: &str, tls: Option<&config::UpstreamTlsConfig>) -> anyhow::Result<Channel> {
    adminduk_kit::upstream::channel_to(url, tls).with_context(|| format!("the upstream address {url}"))
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
/// The demo agency's agreement (its certificate is `adminduk certs`' agency
/// one), written on first run: every field, 1,000 checks a day, paying the fee.
async fn seed_agreement(store: &adminduk_gateway::store::Store) -> anyhow::Result<()> {
    use adminduk_proto::gateway::v1::{AgreementStatus, VerificationField};
    if store.agreement(crate::certs::DEMO_AGENCY).await?.is_some() {
        return Ok(());
    }
    store
        .put_agreement(&adminduk_gateway::store::Agreement {
            agency_code: crate::certs::DEMO_AGENCY.to_owned(),
            name: "Demo bank".to_owned(),
            allowed_fields: vec![
                VerificationField::FullName,
                VerificationField::BirthDate,
                VerificationField::BirthPlace,
                VerificationField::Sex,
                VerificationField::VillageCode,
            ],
            daily_quota: 1_000,
            status: AgreementStatus::Active,
            fee_exempt: false,
            reason: "the demo agreement adminduk up writes on first run".to_owned(),
            updated_at: chrono::Utc::now(),
            updated_by: "adminduk up".to_owned(),
        })
        .await?;
    Ok(())
}

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
    data_key(data_dir, "nik-ref.key", config::MIN_NIK_REF_KEY_CHARS).map(Into::into)
}

/// A key of 32 random bytes kept in the data directory as hex, made on first
/// run (readable by its owner only) and read on every run after.
fn data_key(data_dir: &Path, name: &str, min_chars: usize) -> anyhow::Result<String> {
    let path = data_dir.join(name);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let key = text.trim().to_owned();
        anyhow::ensure!(
            key.len() >= min_chars,
            "{} is too short to be a key; delete it to make a new one",
            path.display()
        );
        return Ok(key);
    }
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("no system randomness for {name}"))?;
    let key = adminduk_kit::hex::encode(&bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{key}\n").as_bytes())?;
    Ok(key)
}

/// The audit's keys of `up`, in the data directory beside (not inside) the
/// gateway's database: `audit-hash.key` and `audit-signing.key`.
pub fn data_dir_audit_keys(data_dir: &Path) -> anyhow::Result<adminduk_gateway::audit::AuditKeys> {
    let hash = data_key(data_dir, "audit-hash.key", 64)?;
    let signing = data_key(data_dir, "audit-signing.key", 64)?;
    Ok(adminduk_gateway::audit::AuditKeys::from_hex(&hash, &signing)?)
}

/// The audit's keys as configured (`[audit]` hash_key and signing_key).
pub(crate) fn configured_audit_keys(
    audit: &config::AuditConfig,
) -> anyhow::Result<adminduk_gateway::audit::AuditKeys> {
    let (Some(hash), Some(signing)) = (&audit.hash_key, &audit.signing_key) else {
        config::ConfigError::new(
            "audit.hash_key",
            "the gateway needs audit.hash_key and audit.signing_key (ADMINDUK_AUDIT__HASH_KEY, ADMINDUK_AUDIT__SIGNING_KEY): 64 hex digits each, kept outside the database",
        )
        .exit();
    };
    Ok(adminduk_gateway::audit::AuditKeys::from_hex(
        hash.expose_secret(),
        signing.expose_secret(),
    )?)
}

/// Where the whole mesh listens and keeps its data, for [`start`].
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// SQLite files, certificates and the mailbox.
    pub data_dir: PathBuf,
    /// Synthetic residents to load when the population database is empty.
    pub residents: usize,
    /// The gateway, the one public address (TLS).
    pub gateway: SocketAddr,
    /// The population service (plaintext, loopback).
    pub population: SocketAddr,
    /// The inventory.
    pub inventory: SocketAddr,
    /// Printing.
    pub printing: SocketAddr,
    /// IKD.
    pub ikd: SocketAddr,
    /// Say what first-run loading does on standard output.
    pub verbose: bool,
    /// The cache IKD and the gateway share (Redis in production); in-process when `None`.
    pub cache: Option<Arc<dyn SharedCache>>,
    /// The gateway's allowances per kind of caller.
    pub allowances: adminduk_gateway::limits::Allowances,
    /// Keep every service's records in PostgreSQL instead of SQLite files:
    /// the URL, and a prefix for the services' schemas (`<prefix>_population`, ...).
    pub postgres: Option<(String, String)>,
    /// The admin port (metrics, health, readiness of every service); none when `None`.
    pub admin: Option<SocketAddr>,
}

impl MeshOptions {
    /// Every service on a free loopback port, the data under `data_dir`.
    pub fn on_free_ports(data_dir: &Path, residents: usize) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            data_dir: data_dir.to_path_buf(),
            residents,
            gateway: any,
            population: any,
            inventory: any,
            printing: any,
            ikd: any,
            verbose: false,
            cache: None,
            allowances: Default::default(),
            postgres: None,
            admin: Some(any),
        }
    }
}

/// The whole mesh, running in this process: the gateway in front, the four
/// services behind it on loopback.
#[derive(Debug)]
pub struct Mesh {
    /// The gateway.
    pub gateway: adminduk_gateway::Running,
    /// The population service.
    pub population: adminduk_population::Running,
    /// The inventory.
    pub inventory: adminduk_inventory::Running,
    /// Printing.
    pub printing: adminduk_printing::Running,
    /// IKD.
    pub ikd: adminduk_ikd::Running,
    /// The development certificates (CA, server, demo clients).
    pub certs: crate::certs::DevCerts,
    /// Where mail to residents goes, one `.eml` file each.
    pub mailbox: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The gateway's database (agreements, flags, the audit chain).
    pub gateway_db: Db,
    /// The admin port, when asked for.
    pub admin: Option<AdminServer>,
}

impl Mesh {
    /// Stops the gateway first (no new calls come in), then the services.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if let Some(admin) = self.admin {
            admin.shutdown().await;
        }
        self.gateway.shutdown().await?;
        let (a, b, c, d) = tokio::join!(
            self.population.shutdown(),
            self.inventory.shutdown(),
            self.ikd.shutdown(),
            self.printing.shutdown()
        );
        a?;
        b?;
        c?;
        d?;
        Ok(())
    }
}

fn tls_server(listen: SocketAddr, certs: &crate::certs::DevCerts) -> ServerConfig {
    ServerConfig {
        listen,
        tls: Some(config::TlsConfig {
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            client_ca: Some(certs.ca_cert.clone()),
            client_certificate_optional: true,
            services_only: false,
            check_client_chain_in_service: false,
        }),
        // A page on any origin may call the gateway from a browser (development).
        grpc_web: Some(config::GrpcWebConfig::default()),
        ..ServerConfig::default()
    }
}

/// Starts the whole mesh on SQLite files under the data directory, with the
/// development certificates (made on first run), demo data on first run, one
/// in-process cache shared by IKD and the gateway, and a local mailbox.
pub async fn start(options: MeshOptions) -> anyhow::Result<Mesh> {
    let data_dir = options.data_dir.clone();
    check_listen(&[
        options.population,
        options.inventory,
        options.printing,
        options.ikd,
    ])
    .map_err(|err| anyhow::anyhow!("{err}"))?;
    let (mailbox, mail) = local_mail(&data_dir);
    let certs = crate::certs::generate(&data_dir.join("certs"), &crate::certs::CertOptions::default())
        .context("writing development certificates")?;

    let dbs = open_backend_databases(&options).await?;
    let gateway_db = open_mesh_database(&options, ServiceName::Gateway).await?;
    seed_agreement(&adminduk_gateway::store::Store::new(gateway_db.clone())).await?;
    seed_population(&options, &dbs).await?;

    let backends = start_backends(&options, dbs, &mail).await?;
    let upstreams = adminduk_gateway::Upstreams {
        population: local_upstream(backends.population.local_addr())?,
        inventory: local_upstream(backends.inventory.local_addr())?,
        printing: local_upstream(backends.printing.local_addr())?,
        ikd: local_upstream(backends.ikd.local_addr())?,
    };
    let records = adminduk_gateway::Records {
        db: gateway_db.clone(),
        audit_keys: data_dir_audit_keys(&data_dir)?,
        audit_chain: config::AuditConfig::default().chain,
        sign_every: std::time::Duration::from_millis(config::AuditConfig::default().sign_interval_ms),
        allowances: options.allowances,
    };
    let checks = mesh_checks(&gateway_db, &upstreams, &backends);
    let gateway = adminduk_gateway::start(
        tls_server(options.gateway, &certs),
        upstreams,
        backends.cache,
        records,
    )
    .await?;
    let admin = match options.admin {
        Some(listen) => Some(
            open_admin(
                listen,
                &["population", "inventory", "printing", "ikd", "gateway"],
                checks,
            )
            .await?,
        ),
        None => None,
    };
    Ok(Mesh {
        admin,
        gateway,
        population: backends.population,
        inventory: backends.inventory,
        printing: backends.printing,
        ikd: backends.ikd,
        certs,
        mailbox,
        data_dir,
        gateway_db,
    })
}

/// The first listen address that is no good (as `server.listen` checks it), if any.
fn check_listen(addrs: &[SocketAddr]) -> Result<(), config::ConfigError> {
    addrs.iter().try_for_each(|&addr| server_at(addr).validate())
}

/// The mesh's mail: where it goes, and the mail configuration that sends it there.
fn local_mail(data_dir: &Path) -> (PathBuf, MailConfig) {
    // Mail to residents goes to a local mailbox a person reads: one file per message.
    let mailbox = data_dir.join("mailbox");
    let mail = MailConfig {
        mailbox_dir: Some(mailbox.clone()),
        poll_interval_ms: 250,
        ..MailConfig::default()
    };
    (mailbox, mail)
}

/// The databases of the four services behind the gateway.
struct BackendDatabases {
    population: Db,
    inventory: Db,
    ikd: Db,
    printing: Db,
}

/// Opens the databases of the services behind the gateway, in this order:
/// population, inventory, IKD, printing.
async fn open_backend_databases(options: &MeshOptions) -> anyhow::Result<BackendDatabases> {
    Ok(BackendDatabases {
        population: open_mesh_database(options, ServiceName::Population).await?,
        inventory: open_mesh_database(options, ServiceName::Inventory).await?,
        ikd: open_mesh_database(options, ServiceName::Ikd).await?,
        printing: open_mesh_database(options, ServiceName::Printing).await?,
    })
}

/// One of the mesh's databases: the service's schema `<prefix>_<schema>` in
/// PostgreSQL when the options name it, `<service>.db` in the data directory otherwise.
async fn open_mesh_database(options: &MeshOptions, service: ServiceName) -> anyhow::Result<Db> {
    let name = service_file_name(service);
    let (schema, migrations) = schema_of(service);
    let (database, schema) = match &options.postgres {
        Some((url, prefix)) => (
            DatabaseConfig {
                url: url.clone().into(),
                max_connections: 4,
            },
            format!("{prefix}_{schema}"),
        ),
        None => (local_database(&options.data_dir, name), schema.to_owned()),
    };
    open_database(&database, &schema, migrations, name).await
}

/// The schema of a service's database, and the migrations that make it.
fn schema_of(service: ServiceName) -> (&'static str, Migrations) {
    match service {
        ServiceName::Population => (adminduk_population::SCHEMA, adminduk_population::MIGRATIONS),
        ServiceName::Inventory => (adminduk_inventory::SCHEMA, adminduk_inventory::MIGRATIONS),
        ServiceName::Printing => (adminduk_printing::SCHEMA, adminduk_printing::MIGRATIONS),
        ServiceName::Ikd => (adminduk_ikd::SCHEMA, adminduk_ikd::MIGRATIONS),
        ServiceName::Gateway => (adminduk_gateway::SCHEMA, adminduk_gateway::MIGRATIONS),
    }
}

/// Opens (and migrates) a service's database; `name` says which one when it fails.
async fn open_database(
    database: &DatabaseConfig,
    schema: &str,
    migrations: Migrations,
    name: &str,
) -> anyhow::Result<Db> {
    Db::connect(database, schema, migrations)
        .await
        .with_context(|| format!("opening the {name} database"))
}

/// On first run (no residents yet), loads the synthetic residents the options
/// ask for and gives a share of them an active IKD.
async fn seed_population(options: &MeshOptions, dbs: &BackendDatabases) -> anyhow::Result<()> {
    let store = Store::new(dbs.population.clone());
    if store.count_residents().await? == 0 && options.residents > 0 {
        if options.verbose {
            println!(
                "first run: loading {} synthetic residents of Kota Bekasi",
                options.residents
            );
        }
        let (written, residents) =
            crate::seed::load(&store, "3275", options.residents, 2_026, options.verbose).await?;
        let active = seed_adoption(&adminduk_ikd::Store::new(dbs.ikd.clone()), &residents).await?;
        if options.verbose {
            println!("{written} residents loaded");
            println!("{active} of them have an active IKD (8% to 30% by kecamatan)");
        }
    }
    Ok(())
}

/// The four services behind the gateway, running.
struct Backends {
    population: adminduk_population::Running,
    inventory: adminduk_inventory::Running,
    /// The inventory's database, for its readiness check.
    inventory_db: Db,
    ikd: adminduk_ikd::Running,
    printing: adminduk_printing::Running,
    /// The cache IKD and the gateway share.
    cache: Arc<dyn SharedCache>,
}

/// Starts the services behind the gateway, in this order: population, the
/// inventory (its demo stock written on first run), IKD, printing.
async fn start_backends(
    options: &MeshOptions,
    dbs: BackendDatabases,
    mail: &MailConfig,
) -> anyhow::Result<Backends> {
    let population = adminduk_population::start(server_at(options.population), dbs.population).await?;
    let inventory_db = dbs.inventory.clone();
    let inventory = adminduk_inventory::start(
        server_at(options.inventory),
        dbs.inventory,
        GroupCommit::default(),
    )
    .await?;
    seed_inventory(inventory.service()).await?;
    // IKD marks revoked devices here, and the gateway reads the marks.
    let cache: Arc<dyn SharedCache> = options
        .cache
        .clone()
        .unwrap_or_else(|| Arc::new(MemoryCache::new()));
    let ikd = adminduk_ikd::start(
        server_at(options.ikd),
        dbs.ikd,
        local_upstream(population.local_addr())?,
        cache.clone(),
        mail,
    )
    .await?;
    let printing = adminduk_printing::start(
        server_at(options.printing),
        dbs.printing,
        local_upstream(population.local_addr())?,
        local_upstream(inventory.local_addr())?,
    )
    .await?;
    Ok(Backends {
        population,
        inventory,
        inventory_db,
        ikd,
        printing,
        cache,
    })
}

/// A channel to a service of the mesh, plaintext on its loopback address.
fn local_upstream(addr: SocketAddr) -> anyhow::Result<Channel> {
    upstream(&format!("http://{addr}"))
}

/// The mesh is ready when the gateway is and every service's database answers.
fn mesh_checks(
    gateway_db: &Db,
    upstreams: &adminduk_gateway::Upstreams,
    backends: &Backends,
) -> Vec<ReadyCheck> {
    let mut checks = gateway_checks(gateway_db, upstreams);
    checks.extend([
        ReadyCheck::database("population", backends.population.service().db().clone()),
        ReadyCheck::database("inventory", backends.inventory_db.clone()),
        ReadyCheck::database("printing", backends.printing.service().store().db().clone()),
        ReadyCheck::database("ikd", backends.ikd.service().db().clone()),
    ]);
    checks
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
    if let Err(err) = check_listen(&[
        args.admin_addr,
        args.gateway_addr,
        args.population_addr,
        args.inventory_addr,
        args.printing_addr,
        args.ikd_addr,
    ]) {
        err.exit();
    }
    let options = MeshOptions {
        data_dir: data_dir.clone(),
        residents: args.residents,
        gateway: args.gateway_addr,
        population: args.population_addr,
        inventory: args.inventory_addr,
        printing: args.printing_addr,
        ikd: args.ikd_addr,
        verbose: true,
        cache: None,
        allowances: Default::default(),
        postgres: None,
        admin: Some(args.admin_addr),
    };

    run_traced("adminduk", &telemetry, async move {
        let stop = shutdown_signal();
        let mesh = start(options).await?;
        print_addresses(&mesh, &data_dir);
        print_examples(&mesh);
        print_resident_to_try(&mesh).await?;
        println!();
        println!("Ctrl-C stops it.");

        stop.await;
        mesh.shutdown().await
    })
}

/// Runs `work` on a new runtime, with the logs and traces `telemetry` asks
/// for set up first and kept until `work` ends.
fn run_traced(
    service: &'static str,
    telemetry: &TelemetryConfig,
    work: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let _telemetry = adminduk_kit::telemetry::init(service, telemetry)?;
        work.await
    })
}

/// What `up` says once the mesh is up: where each service listens, the
/// certificates and the mailbox.
fn print_addresses(mesh: &Mesh, data_dir: &Path) {
    let gateway_addr = mesh.gateway.local_addr();
    let population_addr = mesh.population.local_addr();
    let inventory_addr = mesh.inventory.local_addr();
    let printing_addr = mesh.printing.local_addr();
    let ikd_addr = mesh.ikd.local_addr();
    let certs = &mesh.certs;

    println!();
    println!("adminduk is up (data in {})", data_dir.display());
    println!(
        "  gateway     https://{gateway_addr}  (the address to use: TLS, the four services' public methods)"
    );
    println!("  population  grpc://{population_addr}  (internal: plaintext on loopback)");
    println!("  inventory   grpc://{inventory_addr}  (internal: plaintext on loopback)");
    println!("  printing    grpc://{printing_addr}  (internal: plaintext on loopback)");
    println!("  ikd         grpc://{ikd_addr}  (internal: plaintext on loopback)");
    if let Some(admin) = &mesh.admin {
        println!(
            "  admin       http://{}/metrics  (Prometheus metrics; /healthz, /readyz)",
            admin.local_addr()
        );
    }
    println!(
        "  certificates {}  (ca.crt to trust; office, agency and admin client certificates)",
        certs.dir.display()
    );
    println!(
        "  mailbox      {}  (mail to residents, one .eml file each; `adminduk outbox` shows the newest)",
        mesh.mailbox.display()
    );
}

/// Two calls to try against the gateway: one anyone may make, one an office makes.
fn print_examples(mesh: &Mesh) {
    let gateway_addr = mesh.gateway.local_addr();
    let certs = &mesh.certs;
    println!();
    println!("try (anyone may parse a NIK; an office presents its certificate):");
    let ca = certs.ca_cert.display();
    println!(
        "  buf curl --protocol grpc --cacert {ca} -d '{{\"nik\":\"3275014101900001\"}}' \\\n    https://localhost:{}/adminduk.population.v1.PopulationService/ParseNik",
        gateway_addr.port()
    );
    println!(
        "  buf curl --protocol grpc --cacert {ca} --cert {} --key {} \\\n    -d '{{\"region_code\":\"3275\"}}' https://localhost:{}/adminduk.inventory.v1.InventoryService/GetStock",
        certs.office_cert.display(),
        certs.office_key.display(),
        gateway_addr.port()
    );
}

/// Names a synthetic resident who can activate IKD and whose card can be
/// printed, for the README's walk-throughs, when there is one.
async fn print_resident_to_try(mesh: &Mesh) -> anyhow::Result<()> {
    let store = mesh.population.service();
    let ikd_store = mesh.ikd.service();
    for nik in store.eligible_niks(adminduk_kit::time::today_wib(), 200).await? {
        if ikd_store.identity(&nik).await?.is_none()
            && !ikd_store.has_open_activation(&nik, chrono::Utc::now()).await?
        {
            println!();
            println!("a resident who can activate IKD and whose card can be printed (synthetic): NIK {nik}");
            println!("see the README's IKD and printing walk-throughs");
            break;
        }
    }
    Ok(())
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
        ServiceName::Gateway => 50051,
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
        ServiceName::Gateway => "gateway",
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
    let config = serve_config(&args, &default_db);
    let telemetry = config.telemetry.clone();
    run_traced(service_label(args.service), &telemetry, async move {
        log_database(config.database.url.expose_secret(), &default_db);
        if let Some(tls) = &config.upstreams.tls {
            adminduk_kit::server::record_expiry(metrics_label(args.service), "upstream_client", &tls.cert);
        }
        let stop = shutdown_signal();
        serve_service(args.service, &config, stop).await
    })
}

/// `serve`'s configuration: the file and the environment over the service's
/// own defaults. A configuration that is no good ends the process.
fn serve_config(args: &ServeArgs, default_db: &str) -> ServiceConfig {
    let listen = default_listen(args.service).to_string();
    let defaults = [("server.listen", listen.as_str()), ("database.url", default_db)];
    let config: ServiceConfig = match config::load_with_defaults(args.config.as_deref(), &defaults) {
        Ok(config) => config,
        Err(err) => err.exit(),
    };
    if let Err(err) = adminduk_ikd::mail::check(&config.mail) {
        config::ConfigError::new(err.key, err.message).exit();
    }
    config
}

/// Logs the database `serve` uses, with a warning when none was configured.
fn log_database(url: &str, default_db: &str) {
    if url == default_db {
        tracing::warn!(
            database = %describe_database(url),
            "no database configured (DATABASE_URL or [database] url): using a SQLite file in the working directory"
        );
    } else {
        tracing::info!(database = %describe_database(url), "database");
    }
}

/// Runs one service as `serve` does, until `stop`.
async fn serve_service(
    service: ServiceName,
    config: &ServiceConfig,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let upstreams = &config.upstreams;
    match service {
        ServiceName::Gateway => serve_gateway(config, stop).await,
        ServiceName::Population => {
            serve_backend(config, stop, service, "population", async |db| {
                Ok(adminduk_population::start(config.server.clone(), db).await?)
            })
            .await
        }
        ServiceName::Inventory => {
            serve_backend(config, stop, service, "inventory", async |db| {
                Ok(adminduk_inventory::start(config.server.clone(), db, GroupCommit::default()).await?)
            })
            .await
        }
        ServiceName::Printing => {
            serve_backend(config, stop, service, "printing", async |db| {
                let population = configured_upstream(&upstreams.population, upstreams.tls.as_ref())?;
                let inventory = configured_upstream(&upstreams.inventory, upstreams.tls.as_ref())?;
                Ok(adminduk_printing::start(config.server.clone(), db, population, inventory).await?)
            })
            .await
        }
        ServiceName::Ikd => {
            serve_backend(config, stop, service, "IKD", async |db| {
                let cache = mesh_cache(config).await?;
                let population = configured_upstream(&upstreams.population, upstreams.tls.as_ref())?;
                Ok(adminduk_ikd::start(config.server.clone(), db, population, cache, &config.mail).await?)
            })
            .await
        }
    }
}

/// A service behind the gateway as `serve` runs it, until `stop`: its
/// database opened (`what` names it in an error), then `start` on it, its
/// readiness check on the admin port.
async fn serve_backend<S>(
    config: &ServiceConfig,
    stop: impl Future<Output = ()>,
    service: ServiceName,
    what: &str,
    start: impl AsyncFnOnce(Db) -> anyhow::Result<adminduk_kit::server::Running<S>>,
) -> anyhow::Result<()> {
    let (schema, migrations) = schema_of(service);
    let db = open_database(&config.database, schema, migrations, what).await?;
    let name = metrics_label(service);
    let check = ReadyCheck::database(name, db.clone());
    let running = start(db).await?;
    serve_until(config, name, vec![check], running, stop).await
}

/// The gateway as `serve` runs it: its four upstreams as configured, until `stop`.
async fn serve_gateway(config: &ServiceConfig, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let cache = mesh_cache(config).await?;
    let upstreams = adminduk_gateway::Upstreams {
        population: configured_upstream(&config.upstreams.population, config.upstreams.tls.as_ref())?,
        inventory: configured_upstream(&config.upstreams.inventory, config.upstreams.tls.as_ref())?,
        printing: configured_upstream(&config.upstreams.printing, config.upstreams.tls.as_ref())?,
        ikd: configured_upstream(&config.upstreams.ikd, config.upstreams.tls.as_ref())?,
    };
    let db = Db::connect(
        &config.database,
        adminduk_gateway::SCHEMA,
        adminduk_gateway::MIGRATIONS,
    )
    .await?;
    let checks = gateway_checks(&db, &upstreams);
    let records = adminduk_gateway::Records {
        audit_keys: configured_audit_keys(&config.audit)?,
        db,
        audit_chain: config.audit.chain.clone(),
        sign_every: std::time::Duration::from_millis(config.audit.sign_interval_ms),
        allowances: Default::default(),
    };
    let running = adminduk_gateway::start(config.server.clone(), upstreams, cache, records).await?;
    serve_until(config, "gateway", checks, running, stop).await
}

/// Opens the admin port of a service `serve` started, waits for `stop`, then
/// stops the service and after it the admin port.
async fn serve_until<S>(
    config: &ServiceConfig,
    service: &'static str,
    checks: Vec<ReadyCheck>,
    running: adminduk_kit::server::Running<S>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let admin = admin_port(config, service, checks).await?;
    stop.await;
    running.shutdown().await?;
    stop_admin(admin).await;
    Ok(())
}

/// The admin port of a service run by `serve`, when `[admin] listen` is set.
async fn admin_port(
    config: &ServiceConfig,
    service: &'static str,
    checks: Vec<ReadyCheck>,
) -> anyhow::Result<Option<AdminServer>> {
    let Some(listen) = config.admin.listen else {
        return Ok(None);
    };
    let admin = open_admin(listen, &[service], checks).await?;
    tracing::info!(addr = %admin.local_addr(), "metrics on /metrics, readiness on /readyz");
    Ok(Some(admin))
}

/// Opens the admin port on `listen`: the metrics of `services`, and `checks` for readiness.
async fn open_admin(
    listen: SocketAddr,
    services: &[&'static str],
    checks: Vec<ReadyCheck>,
) -> anyhow::Result<AdminServer> {
    AdminServer::start(listen, services, checks)
        .await
        .context("opening the admin port")
}

async fn stop_admin(admin: Option<AdminServer>) {
    if let Some(admin) = admin {
        admin.shutdown().await;
    }
}

/// The gateway is ready when its database and its four backends answer.
fn gateway_checks(db: &Db, upstreams: &adminduk_gateway::Upstreams) -> Vec<ReadyCheck> {
    vec![
        ReadyCheck::database("gateway", db.clone()),
        ReadyCheck::upstream("gateway", "population", upstreams.population.clone()),
        ReadyCheck::upstream("gateway", "inventory", upstreams.inventory.clone()),
        ReadyCheck::upstream("gateway", "printing", upstreams.printing.clone()),
        ReadyCheck::upstream("gateway", "ikd", upstreams.ikd.clone()),
    ]
}

/// The service's name in its metrics.
fn metrics_label(service: ServiceName) -> &'static str {
    match service {
        ServiceName::Population => "population",
        ServiceName::Inventory => "inventory",
        ServiceName::Ikd => "ikd",
        ServiceName::Printing => "printing",
        ServiceName::Gateway => "gateway",
    }
}

fn service_label(service: ServiceName) -> &'static str {
    match service {
        ServiceName::Population => "adminduk-population",
        ServiceName::Inventory => "adminduk-inventory",
        ServiceName::Ikd => "adminduk-ikd",
        ServiceName::Printing => "adminduk-printing",
        ServiceName::Gateway => "adminduk-gateway",
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
            ServiceName::Gateway,
        ]
        .into_iter()
        .map(|s| default_listen(s).port())
        .collect();
        assert_eq!(ports, [50061, 50062, 50063, 50064, 50051]);
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
