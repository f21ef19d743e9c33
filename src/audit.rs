//! `adminduk audit`: checks the gateway's audit chain and finds a resident's
//! rows, from the data directory of `adminduk up` or the gateway's
//! configuration (`serve gateway`'s file and environment).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::ExposeSecret as _;

use adminduk_gateway::audit::{self, AuditKeys};
use adminduk_kit::config::{self, ServiceConfig};
use adminduk_kit::storage::Db;

/// Arguments of `adminduk audit`.
#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
    /// The data directory of `adminduk up` (its gateway.db and audit keys).
    #[arg(
        long,
        global = true,
        default_value = "./adminduk-data",
        conflicts_with = "config"
    )]
    data_dir: PathBuf,
    /// The gateway's configuration instead (`[database]` and `[audit]`, and the environment).
    #[arg(long, global = true, env = "ADMINDUK_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum AuditCommand {
    /// Checks every chain (or one): each row's hash, each link, the head, and
    /// each signature; names the first broken row. Exits 1 if one is broken.
    Verify {
        /// Only this chain.
        #[arg(long)]
        chain: Option<String>,
        /// The audit signing key's public half (hex), as an auditor holds it;
        /// derived from the configured signing key when not given.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// A resident's rows, found by the keyed reference of their NIK (the NIK
    /// itself is in no row).
    Search {
        /// The resident's NIK; read from standard input when not given (so it
        /// is not in the process list or the shell's history).
        #[arg(long)]
        nik: Option<String>,
        /// At most this many rows, oldest first.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

/// What the checks need: the audit's keys in hex (the hash key, the signing
/// key's seed when known), the gateway's database opened without changing
/// it, and the writer's signing interval.
struct Opened {
    hash: String,
    signing: Option<String>,
    db: Db,
    sign_every: Duration,
}

fn open(args: &AuditArgs) -> anyhow::Result<Opened> {
    match &args.config {
        Some(file) => {
            let config: ServiceConfig =
                config::load_with_defaults(Some(file), &[("database.url", "sqlite:gateway.db?mode=ro")])
                    .map_err(|err| anyhow::anyhow!("{err}"))?;
            let hash = config
                .audit
                .hash_key
                .as_ref()
                .map(|k| k.expose_secret().to_owned())
                .context("audit.hash_key is not configured")?;
            let signing = config
                .audit
                .signing_key
                .as_ref()
                .map(|k| k.expose_secret().to_owned());
            Ok(Opened {
                hash,
                signing,
                db: open_blocking(config.database)?,
                sign_every: Duration::from_millis(config.audit.sign_interval_ms),
            })
        }
        None => {
            let dir = &args.data_dir;
            let read = |name: &str| -> anyhow::Result<String> {
                let path = dir.join(name);
                Ok(std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "reading {} (is {} the data directory of `adminduk up`?)",
                            path.display(),
                            dir.display()
                        )
                    })?
                    .trim()
                    .to_owned())
            };
            let file = dir.join("gateway.db");
            anyhow::ensure!(
                file.is_file(),
                "{} does not exist: the gateway has not run there",
                file.display()
            );
            Ok(Opened {
                hash: read("audit-hash.key")?,
                signing: Some(read("audit-signing.key")?),
                db: open_blocking(config::DatabaseConfig {
                    url: format!("sqlite:{}?mode=ro", file.display()).into(),
                    ..config::DatabaseConfig::default()
                })?,
                sign_every: Duration::from_millis(config::AuditConfig::default().sign_interval_ms),
            })
        }
    }
}

/// The gateway's database as it is: nothing created, nothing migrated.
fn open_blocking(database: config::DatabaseConfig) -> anyhow::Result<Db> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        Db::connect_existing(&database, adminduk_gateway::SCHEMA)
            .await
            .context("opening the gateway's database")
    })
}

/// The NIK to search for: the argument, or a line of standard input (so it
/// stays out of the process list and the shell's history).
fn nik_to_search(given: Option<String>) -> anyhow::Result<String> {
    let nik = match given {
        Some(nik) => nik,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the NIK from standard input")?;
            line
        }
    };
    let nik = nik.trim().to_owned();
    anyhow::ensure!(adminduk_kit::is_digits(&nik, 16), "the NIK must be 16 digits");
    Ok(nik)
}

pub(crate) fn run(args: AuditArgs) -> anyhow::Result<()> {
    let opened = open(&args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.command {
        AuditCommand::Verify { chain, public_key } => verify(&runtime, opened, chain, public_key),
        AuditCommand::Search { nik, limit } => search(&runtime, opened, nik, limit),
    }
}

/// `audit verify`: checks every chain (or `chain`) and says how each stands;
/// exits 1 when one is broken.
fn verify(
    runtime: &tokio::runtime::Runtime,
    opened: Opened,
    chain: Option<String>,
    public_key: Option<String>,
) -> anyhow::Result<()> {
    let Opened {
        hash,
        signing,
        db,
        sign_every,
    } = opened;
    let keys = match (public_key, signing) {
        (Some(public), _) => AuditKeys::for_checking(&hash, &public)?,
        (None, Some(seed)) => AuditKeys::from_hex(&hash, &seed)?,
        (None, None) => anyhow::bail!("give --public-key, or configure audit.signing_key"),
    };
    let chains = match chain {
        Some(chain) => vec![chain],
        None => runtime.block_on(audit::chains(&db))?,
    };
    if chains.is_empty() {
        println!("no audit chain yet: the gateway has recorded nothing");
    }
    let mut broken = false;
    for chain in chains {
        let report = runtime.block_on(audit::verify(&db, &keys, &chain, sign_every, chrono::Utc::now()))?;
        match &report.broken {
            None => println!(
                "chain {}: {} rows, whole; signed through row {} (good signatures: {}){}",
                report.chain,
                report.rows,
                report.signed_through,
                report.signatures,
                if report.signed_through < report.rows {
                    format!(
                        "; rows {} to {} not signed yet (the head is signed every minute)",
                        report.signed_through + 1,
                        report.rows
                    )
                } else {
                    String::new()
                }
            ),
            Some((seq, why)) => {
                broken = true;
                println!("chain {}: BROKEN at row {seq}: {why}", report.chain);
            }
        }
    }
    runtime.block_on(db.close());
    if broken {
        std::process::exit(1);
    }
    Ok(())
}

/// `audit search`: the rows of the resident whose NIK is given (or read), at
/// most `limit` of them, oldest first.
fn search(
    runtime: &tokio::runtime::Runtime,
    opened: Opened,
    nik: Option<String>,
    limit: i64,
) -> anyhow::Result<()> {
    let Opened { hash, db, .. } = opened;
    let nik = nik_to_search(nik)?;
    anyhow::ensure!((1..=10_000).contains(&limit), "--limit must be 1 to 10000");
    let keys = AuditKeys::for_search(&hash)?;
    let rows = runtime.block_on(audit::search_nik(&db, &keys, &nik, limit))?;
    println!("{} rows for {}", rows.len(), adminduk_kit::mask_nik(&nik));
    for row in &rows {
        let at = audit::at(row).map_or_else(|| row.at_ms.to_string(), |at| at.to_rfc3339());
        println!(
            "{at}  {}#{}  {}  {}  purpose: {}  outcome: {}  trace: {}",
            row.chain,
            row.seq,
            row.principal,
            row.method,
            row.purpose,
            row.outcome,
            if row.trace_id.is_empty() {
                "-"
            } else {
                &row.trace_id
            }
        );
    }
    runtime.block_on(db.close());
    Ok(())
}
