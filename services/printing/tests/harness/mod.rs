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
            people_store: population.store().clone(),
            inventory: inventory_server.inventory().clone(),
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
            store: running.store().clone(),
            api: running.printing().clone(),
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
