//! The one mesh printing's tests run on: the population and inventory
//! services printing calls ([`Upstreams`]) and printing services on top
//! ([`Printing`]), each started by its crate's `start` on a database of its
//! own, on real sockets (port 0), and ready (health SERVING) before use.
//! [`mesh`] is the two together; a test seeds the policy, the stock and the
//! residents it needs through the handles.

#![allow(dead_code, reason = "each test binary uses part of the mesh")]

use std::sync::Arc;

use adminduk_inventory::{GroupCommit, Inventory};
use adminduk_kit::testing::{self, TestDatabase};
use adminduk_printing::{MIGRATIONS, Store};
use adminduk_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use adminduk_proto::population::v1::population_service_client::PopulationServiceClient;
use adminduk_proto::printing::v1::printing_service_client::PrintingServiceClient;
use adminduk_proto::{inventory::v1 as inventory, printing::v1 as pb};
use chrono::NaiveDate;
use tonic::Status;
use tonic::transport::Channel;

/// The population and inventory services, started and ready.
pub(crate) struct Upstreams {
    /// A population client.
    pub(crate) people: PopulationServiceClient<Channel>,
    /// An inventory client.
    pub(crate) stock: InventoryServiceClient<Channel>,
    /// Population's store, for loading residents directly.
    pub(crate) people_store: adminduk_population::Store,
    /// The inventory the server answers from, for seeding its policy and stock.
    pub(crate) inventory: Arc<Inventory>,
    /// The channel a printing service calls population on.
    pub(crate) people_channel: Channel,
    /// The channel a printing service calls the inventory on.
    pub(crate) inventory_channel: Channel,
    population: adminduk_population::Running,
    inventory_server: adminduk_inventory::Running,
    _dbs: [TestDatabase; 2],
}

impl Upstreams {
    /// Starts population on the first database and the inventory (empty: no policy, no stock) on the second.
    pub(crate) async fn start([people_db, inventory_db]: [TestDatabase; 2]) -> Self {
        let population = adminduk_population::start(
            testing::server_config(),
            people_db.connect(adminduk_population::MIGRATIONS).await,
        )
        .await
        .expect("population starts");
        let inventory_server = adminduk_inventory::start(
            testing::server_config(),
            inventory_db.connect(adminduk_inventory::MIGRATIONS).await,
            GroupCommit::default(),
        )
        .await
        .expect("inventory starts");
        let people = testing::ready(population.local_addr(), adminduk_population::SERVICE_NAME).await;
        let stock = testing::ready(inventory_server.local_addr(), adminduk_inventory::SERVICE_NAME).await;
        Self {
            people: PopulationServiceClient::new(people),
            stock: InventoryServiceClient::new(stock),
            people_store: population.service().clone(),
            inventory: inventory_server.service().clone(),
            // Printing's connections of its own, as across pods, not the test clients'.
            people_channel: testing::channel(population.local_addr()),
            inventory_channel: testing::channel(inventory_server.local_addr()),
            population,
            inventory_server,
            _dbs: [people_db, inventory_db],
        }
    }

    /// Stops the inventory, then population, each cleanly.
    pub(crate) async fn stop(self) {
        self.inventory_server.shutdown().await.expect("clean shutdown");
        self.population.shutdown().await.expect("clean shutdown");
    }
}

/// A printing service calling `Upstreams`, started and ready.
pub(crate) struct Printing {
    /// A printing client.
    pub(crate) client: PrintingServiceClient<Channel>,
    /// Its store.
    pub(crate) store: Store,
    /// Its workflows, for work outside a request.
    pub(crate) api: adminduk_printing::Printing,
    /// `sqlite` or `postgres`, for assertion messages.
    pub(crate) label: &'static str,
    running: adminduk_printing::Running,
    _db: TestDatabase,
}

impl Printing {
    /// Starts printing on `db`, calling the upstreams' services.
    pub(crate) async fn start(upstreams: &Upstreams, db: TestDatabase) -> Self {
        let running = adminduk_printing::start(
            testing::server_config(),
            db.connect(MIGRATIONS).await,
            upstreams.people_channel.clone(),
            upstreams.inventory_channel.clone(),
        )
        .await
        .expect("printing starts");
        Self {
            client: PrintingServiceClient::new(
                testing::ready(running.local_addr(), adminduk_printing::SERVICE_NAME).await,
            ),
            store: running.service().store().clone(),
            api: running.service().clone(),
            label: db.label,
            running,
            _db: db,
        }
    }

    /// Stops it cleanly (and closes its database).
    pub(crate) async fn stop(self) {
        self.running.shutdown().await.expect("clean shutdown");
    }
}

/// Population, inventory and printing, each on its own database.
pub(crate) struct Mesh {
    /// A printing client.
    pub(crate) printing: PrintingServiceClient<Channel>,
    /// Printing's workflows, for work outside a request.
    pub(crate) api: adminduk_printing::Printing,
    /// A population client.
    pub(crate) people: PopulationServiceClient<Channel>,
    /// An inventory client.
    pub(crate) stock: InventoryServiceClient<Channel>,
    /// Printing's store.
    pub(crate) store: Store,
    /// Population's store, for loading residents directly.
    pub(crate) people_store: adminduk_population::Store,
    /// The inventory, for seeding its policy and stock.
    pub(crate) inventory: Arc<Inventory>,
    /// `sqlite` or `postgres`, for assertion messages.
    pub(crate) label: &'static str,
    service: Printing,
    upstreams: Upstreams,
}

impl Mesh {
    /// Stops printing, then the inventory, then population.
    pub(crate) async fn stop(self) {
        self.service.stop().await;
        self.upstreams.stop().await;
    }
}

/// The mesh on `[population, inventory, printing]` databases, with no policy, stock or residents yet.
pub(crate) async fn mesh([people_db, inventory_db, printing_db]: [TestDatabase; 3]) -> Mesh {
    let upstreams = Upstreams::start([people_db, inventory_db]).await;
    let service = Printing::start(&upstreams, printing_db).await;
    Mesh {
        printing: service.client.clone(),
        api: service.api.clone(),
        people: upstreams.people.clone(),
        stock: upstreams.stock.clone(),
        store: service.store.clone(),
        people_store: upstreams.people_store.clone(),
        inventory: upstreams.inventory.clone(),
        label: service.label,
        service,
        upstreams,
    }
}

/// `region`'s stock level, read through the inventory service.
pub(crate) async fn stock_of(
    stock: &mut InventoryServiceClient<Channel>,
    region: &str,
) -> inventory::StockLevel {
    stock
        .get_stock(inventory::GetStockRequest {
            region_code: region.into(),
        })
        .await
        .expect("stock")
        .into_inner()
        .stock
        .expect("stock")
}

/// Leases up to `n` jobs for `printer`, for the default lease length.
pub(crate) async fn lease(
    client: &mut PrintingServiceClient<Channel>,
    printer: &str,
    n: i32,
) -> Vec<pb::PrintJob> {
    client
        .lease_jobs(pb::LeaseJobsRequest {
            printer_id: printer.into(),
            max_jobs: n,
            lease_seconds: 0,
        })
        .await
        .expect("lease")
        .into_inner()
        .jobs
}

/// Reports `job` printed by `printer` as the card `serial`; returns the job as it now is.
pub(crate) async fn print(
    client: &mut PrintingServiceClient<Channel>,
    job: &str,
    printer: &str,
    serial: &str,
) -> Result<pb::PrintJob, Status> {
    client
        .report_printed(pb::ReportPrintedRequest {
            job_id: job.into(),
            printer_id: printer.into(),
            card_serial: serial.into(),
        })
        .await
        .map(|r| r.into_inner().job.expect("job"))
}

/// Sends `request` (a spoilage report); returns the job as it now is.
pub(crate) async fn report_spoiled(
    client: &mut PrintingServiceClient<Channel>,
    request: pb::ReportSpoiledRequest,
) -> Result<pb::PrintJob, Status> {
    client
        .report_spoiled(request)
        .await
        .map(|r| r.into_inner().job.expect("job"))
}

/// A printed card found damaged, reported by `reported_by` and approved by `approved_by`.
pub(crate) fn damaged(
    job: &str,
    reason: &str,
    reported_by: &str,
    approved_by: &str,
) -> pb::ReportSpoiledRequest {
    pb::ReportSpoiledRequest {
        job_id: job.into(),
        reason: reason.into(),
        reported_by: reported_by.into(),
        approved_by: approved_by.into(),
        ..Default::default()
    }
}

/// Submits a print job for `nik` at `point` on `date`; returns the job.
pub(crate) async fn submit(
    client: &mut PrintingServiceClient<Channel>,
    nik: &str,
    reason: pb::PrintReason,
    point: &str,
    date: NaiveDate,
    ikd: bool,
) -> Result<pb::PrintJob, Status> {
    client
        .submit_print_job(pb::SubmitPrintJobRequest {
            nik: nik.into(),
            reason: reason.into(),
            service_point_code: point.into(),
            date: Some(adminduk_proto::convert::date(date)),
            has_active_ikd: ikd,
        })
        .await
        .map(|r| r.into_inner().job.expect("job"))
}

/// `region`'s funnel, over all days.
pub(crate) async fn funnel_of(
    client: &mut PrintingServiceClient<Channel>,
    region: &str,
) -> pb::GetFunnelResponse {
    client
        .get_funnel(pb::GetFunnelRequest {
            region_code: region.into(),
            ..Default::default()
        })
        .await
        .expect("funnel")
        .into_inner()
}
