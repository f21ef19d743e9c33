//! The `adminduk` command line, as a library: `up` runs the whole mesh in one
//! process on the embedded defaults; `serve` runs one service for containers;
//! `seed` loads synthetic residents; `certs` writes a development PKI; `audit`
//! checks the gateway's audit chain. The binary (`src/main.rs`) parses the
//! arguments and calls [`run`]; tests use the modules (such as [`certs`]) directly.

mod audit;
pub mod certs;
pub mod mesh;
mod peak;
mod phone;
pub mod resident;
mod seed;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Population administration (adminduk) as a gRPC service mesh.
#[derive(Debug, Parser)]
#[command(name = "adminduk", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs every service in one process on SQLite, with demo data on first run.
    Up(UpArgs),
    /// Runs one service from configuration (file and ADMINDUK_* / DATABASE_URL environment).
    Serve(ServeArgs),
    /// Loads synthetic residents (valid NIKs and KKs, in families) into a database.
    Seed(SeedArgs),
    /// Writes a development CA, a server certificate and demo client certificates as PEM files.
    Certs(CertsArgs),
    /// Storms a running inventory as the queue's opening does, then checks the books.
    PeakMorning(PeakArgs),
    /// A phone for trying IKD by hand: makes a device key and signs challenges.
    Phone(phone::PhoneArgs),
    /// Shows the newest mails of the IKD outbox (activation codes), sent or waiting.
    Outbox(phone::OutboxArgs),
    /// Checks the gateway's audit chain, or finds a resident's rows in it.
    Audit(audit::AuditArgs),
}

/// Arguments of `adminduk peak-morning`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PeakArgs {
    /// The inventory service.
    #[arg(long, default_value = "http://127.0.0.1:50062")]
    inventory: String,
    /// Regency whose points are stormed.
    #[arg(long, default_value = "3275")]
    region: String,
    /// Service points to storm; all of the region's when none is given.
    #[arg(long = "point")]
    points: Vec<String>,
    /// The appointment day (YYYY-MM-DD); tomorrow when not given.
    #[arg(long)]
    date: Option<chrono::NaiveDate>,
    /// Applicants, each one request.
    #[arg(long, default_value_t = 20_000)]
    applicants: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Run number: applicants and idempotency keys differ between runs. A fresh
    /// random one when not given; give the number a run printed to repeat it
    /// exactly (its retries are then answered as the first time).
    #[arg(long)]
    run: Option<u64>,
}

/// Arguments of `adminduk up`.
#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Where SQLite files and certificates are kept.
    #[arg(long, default_value = "./adminduk-data")]
    data_dir: PathBuf,
    /// Synthetic residents to load on first run.
    #[arg(long, default_value_t = 20_000)]
    residents: usize,
    /// Address of the gateway, the one public door (TLS).
    #[arg(long, default_value = "127.0.0.1:50051")]
    gateway_addr: SocketAddr,
    /// Address of the population service.
    #[arg(long, default_value = "127.0.0.1:50061")]
    population_addr: SocketAddr,
    /// Address of the inventory service.
    #[arg(long, default_value = "127.0.0.1:50062")]
    inventory_addr: SocketAddr,
    /// Address of the printing service.
    #[arg(long, default_value = "127.0.0.1:50063")]
    printing_addr: SocketAddr,
    /// Address of the IKD service.
    #[arg(long, default_value = "127.0.0.1:50064")]
    ikd_addr: SocketAddr,
    /// Address of the admin port: Prometheus metrics, health and readiness (plaintext).
    #[arg(long, default_value = "127.0.0.1:9464")]
    admin_addr: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormatArg::Pretty)]
    log_format: LogFormatArg,
}

/// Arguments of `adminduk serve`.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The service to run.
    #[arg(value_enum)]
    service: ServiceName,
    /// A TOML configuration file; the environment overrides it.
    #[arg(long, env = "ADMINDUK_CONFIG")]
    config: Option<PathBuf>,
}

/// Arguments of `adminduk seed`.
#[derive(Debug, clap::Args)]
struct SeedArgs {
    /// The database, `sqlite:FILE` or `postgres://...`.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// How many residents (whole families, so a few more may be written).
    #[arg(long, default_value_t = 20_000)]
    residents: usize,
    /// Regency (kabupaten/kota) code whose kelurahan the residents live in.
    #[arg(long, default_value = "3275")]
    regency: String,
    /// Random seed; the same seed gives the same residents, so a re-run adds nothing twice.
    #[arg(long, default_value_t = 2_026)]
    seed: u64,
}

/// Arguments of `adminduk certs`.
#[derive(Debug, clap::Args)]
struct CertsArgs {
    /// Directory for the PEM files.
    #[arg(long, default_value = "./adminduk-data/certs")]
    out: PathBuf,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
    /// Host names and addresses the server certificate is valid for.
    #[arg(long = "host", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])]
    hosts: Vec<String>,
    /// Service point code carried in the office device's certificate.
    #[arg(long, default_value = "3275-KEC-01")]
    service_point: String,
}

/// The services `serve` can run.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ServiceName {
    /// Population records (NIK, KK, residents, families).
    Population,
    /// The e-KTP blank inventory (ledger, quotas, reservations).
    Inventory,
    /// IKD: digital identity activation, device binding, session tokens.
    Ikd,
    /// Printing and delivery of KTP-el cards.
    Printing,
    /// The gateway: the one public door (TLS; needs `[server.tls]` with a client CA).
    Gateway,
}

/// Log output for `up`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    /// For a terminal.
    Pretty,
    /// JSON lines.
    Json,
}

/// Runs the command `cli` names.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => mesh::up(args),
        Command::Serve(args) => mesh::serve(args),
        Command::Seed(args) => seed::run(args),
        Command::Certs(args) => write_certs(&args),
        Command::PeakMorning(args) => peak::run(args),
        Command::Phone(args) => phone::phone(args),
        Command::Outbox(args) => phone::outbox(args),
        Command::Audit(args) => audit::run(args),
    }
}

fn write_certs(args: &CertsArgs) -> anyhow::Result<()> {
    let options = certs::CertOptions {
        force: args.force,
        hosts: args.hosts.clone(),
        office_service_point: args.service_point.clone(),
        ..certs::CertOptions::default()
    };
    let written = certs::generate(&args.out, &options)?;
    println!("development certificates in {}", written.dir.display());
    println!("  CA          {}", written.ca_cert.display());
    println!("  server      {}", written.server_cert.display());
    println!("  office      {}", written.office_cert.display());
    println!("  agency      {}", written.agency_cert.display());
    println!("  admin       {}", written.admin_cert.display());
    println!(
        "  service     {}  (the mesh's own calls, for services run apart)",
        written.service_cert.display()
    );
    Ok(())
}
