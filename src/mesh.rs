//! Running services: all of them in one process (`up`), or one (`serve`).

use std::path::Path;

use adminduk_inventory::service::Background;
use adminduk_inventory::{GroupCommit, Inventory, InventoryApi};
use adminduk_kit::config::{
    self, DatabaseConfig, LogFormat, ServerConfig, ServiceConfig, TelemetryConfig, Validate as _,
};
use adminduk_kit::server::{GrpcServer, RunningServer, shutdown_signal};
use adminduk_kit::storage::Db;
use adminduk_population::{PopulationApi, Store};
use adminduk_proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use adminduk_proto::population::v1::population_service_server::PopulationServiceServer;
use anyhow::Context as _;

use crate::{LogFormatArg, ServeArgs, ServiceName, UpArgs};

/// Starts the population service on a connected database.
pub(crate) async fn start_population(db: Db, server: ServerConfig) -> anyhow::Result<RunningServer> {
    let builder = GrpcServer::new(server);
    let limit = builder.max_message_bytes();
    let service = PopulationServiceServer::new(PopulationApi::new(Store::new(db)))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(4 * 1024 * 1024);
    Ok(builder
        .add_service(service)
        .with_descriptors(adminduk_proto::FILE_DESCRIPTOR_SET)
        .start()
        .await?)
}

/// Opens the inventory (rebuilding its core from the database) and starts its service.
pub(crate) async fn start_inventory(
    db: Db,
    server: ServerConfig,
) -> anyhow::Result<(RunningServer, std::sync::Arc<Inventory>, Background)> {
    let (inventory, background, report) = Inventory::open(db, GroupCommit::default())
        .await
        .context("rebuilding the inventory from its database")?;
    tracing::info!(
        buckets = report.buckets,
        policies = report.policies,
        reservations = report.reservations,
        "inventory rebuilt"
    );
    let builder = GrpcServer::new(server);
    let limit = builder.max_message_bytes();
    let service =
        InventoryServiceServer::new(InventoryApi::new(inventory.clone())).max_decoding_message_size(limit);
    let running = builder
        .add_service(service)
        .with_descriptors(adminduk_proto::FILE_DESCRIPTOR_SET)
        .start()
        .await?;
    Ok((running, inventory, background))
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

fn sqlite_url(dir: &Path, name: &str) -> String {
    format!("sqlite:{}", dir.join(format!("{name}.db")).display())
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
        ..TelemetryConfig::default()
    };
    let population_db = DatabaseConfig {
        url: sqlite_url(&data_dir, "population").into(),
        max_connections: 8,
    };
    let population_server = ServerConfig {
        listen: args.population_addr,
        ..ServerConfig::default()
    };
    let inventory_db = DatabaseConfig {
        url: sqlite_url(&data_dir, "inventory").into(),
        max_connections: 8,
    };
    let inventory_server = ServerConfig {
        listen: args.inventory_addr,
        ..ServerConfig::default()
    };
    for server in [&population_server, &inventory_server] {
        if let Err(err) = server.validate() {
            err.exit();
        }
    }

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let _telemetry = adminduk_kit::telemetry::init("adminduk", &telemetry)?;
        let certs = crate::certs::generate(&data_dir.join("certs"), &crate::certs::CertOptions::default())
            .context("writing development certificates")?;

        let db = Db::connect(&population_db, adminduk_population::SCHEMA, adminduk_population::MIGRATIONS)
            .await
            .context("opening the population database")?;
        let store = Store::new(db.clone());
        if store.count_residents().await? == 0 && args.residents > 0 {
            println!("first run: loading {} synthetic residents of Kota Bekasi", args.residents);
            let written = crate::seed::load(&store, "3275", args.residents, 2_026, true).await?;
            println!("{written} residents loaded");
        }
        let stop = shutdown_signal();
        let population = start_population(db.clone(), population_server).await?;
        let addr = population.local_addr();
        let inventory_conn = Db::connect(&inventory_db, adminduk_inventory::SCHEMA, adminduk_inventory::MIGRATIONS)
            .await
            .context("opening the inventory database")?;
        let (inventory_server, inventory, background) = start_inventory(inventory_conn.clone(), inventory_server).await?;
        seed_inventory(&inventory).await?;
        let inventory_addr = inventory_server.local_addr();

        println!();
        println!("adminduk is up (data in {})", data_dir.display());
        println!("  population  grpc://{addr}  (adminduk.population.v1.PopulationService, plaintext on loopback)");
        println!("  inventory   grpc://{inventory_addr}  (adminduk.inventory.v1.InventoryService, plaintext on loopback)");
        println!("  certificates {}", certs.dir.display());
        println!();
        println!("try:");
        println!(
            "  buf curl --protocol grpc --http2-prior-knowledge -d '{{\"nik\":\"3275014101900001\"}}' \\\n    http://{addr}/adminduk.population.v1.PopulationService/ParseNik"
        );
        println!("  buf curl --protocol grpc --http2-prior-knowledge --list-methods http://{addr}");
        println!(
            "  buf curl --protocol grpc --http2-prior-knowledge -d '{{\"region_code\":\"3275\"}}' \\\n    http://{inventory_addr}/adminduk.inventory.v1.InventoryService/GetStock"
        );
        println!();
        println!("Ctrl-C stops it.");

        stop.await;
        inventory.close();
        let (a, b) = tokio::join!(population.shutdown(), inventory_server.shutdown());
        a?;
        b?;
        background.abort();
        db.close().await;
        inventory_conn.close().await;
        anyhow::Ok(())
    })
}

pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config: ServiceConfig = match config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(err) => err.exit(),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let _telemetry = adminduk_kit::telemetry::init(service_label(args.service), &config.telemetry)?;
        match args.service {
            ServiceName::Population => {
                let db = Db::connect(
                    &config.database,
                    adminduk_population::SCHEMA,
                    adminduk_population::MIGRATIONS,
                )
                .await
                .context("opening the population database")?;
                let stop = shutdown_signal();
                let server = start_population(db.clone(), config.server.clone()).await?;
                stop.await;
                server.shutdown().await?;
                db.close().await;
            }
            ServiceName::Inventory => {
                let stop = shutdown_signal();
                let db = Db::connect(
                    &config.database,
                    adminduk_inventory::SCHEMA,
                    adminduk_inventory::MIGRATIONS,
                )
                .await
                .context("opening the inventory database")?;
                let (server, _inventory, background) =
                    start_inventory(db.clone(), config.server.clone()).await?;
                stop.await;
                server.shutdown().await?;
                background.abort();
                db.close().await;
            }
        }
        anyhow::Ok(())
    })
}

fn service_label(service: ServiceName) -> &'static str {
    match service {
        ServiceName::Population => "adminduk-population",
        ServiceName::Inventory => "adminduk-inventory",
    }
}
