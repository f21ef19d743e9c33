//! The gateway: adminduk's one public door. Kecamatan counter apps, residents'
//! phones, other agencies and administrators reach the four services only
//! through it, over TLS: it names the caller (a client certificate, or a
//! session token from IKD), decides by one table ([`access`]) whether the
//! caller may call the method and what they may name in it, writes the facts
//! it knows over the request's own fields, and forwards the call to its
//! service through the kit's upstream client.

pub mod access;
mod agency;
pub mod audit;
mod brokers;
mod caller;
mod door;
pub mod edge;
mod ikd_first;
pub mod limits;
mod retry;
pub mod store;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use adminduk_kit::cache::SharedCache;
use adminduk_kit::config::ServerConfig;
use adminduk_kit::server::{GrpcServer, ServeError};
use adminduk_kit::storage::Db;
use adminduk_proto::gateway::v1::agency_service_server::AgencyServiceServer;
use adminduk_proto::gateway::v1::broker_watch_service_server::BrokerWatchServiceServer;
use adminduk_proto::gateway::v1::report_service_server::ReportServiceServer;

pub use agency::FEE_PER_CHECK_RUPIAH;
pub use door::{OVERRIDE_HEADER, PRINCIPAL_HEADER, PURPOSE_HEADER, Upstreams};
pub use store::{MIGRATIONS, SCHEMA};

use agency::{Agencies, AgencyApi};
use audit::{AuditKeys, AuditLog};
use brokers::{BrokerApi, Brokers};
use caller::Tokens;
use door::{
    AgencyName, BrokerWatchName, Door, Gateway, IkdName, InventoryName, OwnParts, PopulationName,
    PrintingName, ReportName,
};
use ikd_first::ReportApi;

/// What the gateway keeps and is given: its database (agreements, flags, the
/// audit chain), the audit's keys (kept outside it), and its callers' allowances.
#[derive(Debug)]
pub struct Records {
    /// The gateway's database, connected and migrated with [`MIGRATIONS`].
    pub db: Db,
    /// The audit's HMAC and signing keys.
    pub audit_keys: AuditKeys,
    /// The audit chain this gateway appends to.
    pub audit_chain: String,
    /// How often the chain's head is signed.
    pub sign_every: Duration,
    /// Each kind of caller's allowance (the defaults of [`limits::Kind::allowance`] unless changed).
    pub allowances: limits::Allowances,
}

/// The door's decisions for a request, without the call it would forward:
/// authentication (a cached token), the table, the allowance, the edge's view
/// of full dates, the proof, the broker checks, IKD first and the facts
/// written. What the policy bench measures, beside Ed25519 alone.
#[derive(Debug, Clone)]
pub struct Policy {
    gateway: Arc<Gateway>,
}

impl Policy {
    /// `Ok` where the door would forward `request`; its refusal otherwise.
    pub async fn decide(
        &self,
        request: http::Request<tonic::body::Body>,
    ) -> Result<(), adminduk_kit::ApiError> {
        self.gateway.decide_only(request).await
    }
}

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The gateway serves only over TLS with client certificates possible.
    #[error(
        "the gateway needs server.tls with cert, key and client_ca (client certificates name offices, agencies and admins)"
    )]
    NoTls,
    /// Its server could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// The gateway, started: its address, its policy (the door's decisions alone,
/// for measuring them), and a clean stop that drains in-flight requests (up to
/// the drain timeout), then writes the audit rows still queued and signs the
/// chain's head (within 10 s).
pub type Running = adminduk_kit::server::Running<Policy>;

/// Starts the gateway with the kit's server (TLS, health, reflection of the
/// four services, one tower stack) in front of `upstreams`; `cache` is where
/// the IKD service marks revoked devices. `server.tls` must name a client CA:
/// a client certificate is optional (residents present tokens), but one that
/// is presented must be the CA's. Returns once the port is open.
pub async fn start(
    mut server: ServerConfig,
    upstreams: Upstreams,
    cache: Arc<dyn SharedCache>,
    records: Records,
) -> Result<Running, StartError> {
    let client_chain = client_chain(&mut server)?;
    let tokens = Tokens::new(upstreams.ikd.clone(), upstreams.population.clone());
    let builder = GrpcServer::new(server).named("gateway");
    let limit = builder.max_message_bytes();
    let (own, writer) = own_parts(records, &upstreams, &cache, limit);
    let gateway = Arc::new(Gateway::new(upstreams, tokens, cache, own, client_chain, limit));
    let server = builder
        .add_service(Door::<PopulationName>::new(gateway.clone()))
        .add_service(Door::<InventoryName>::new(gateway.clone()))
        .add_service(Door::<PrintingName>::new(gateway.clone()))
        .add_service(Door::<IkdName>::new(gateway.clone()))
        .add_service(Door::<AgencyName>::new(gateway.clone()))
        .add_service(Door::<BrokerWatchName>::new(gateway.clone()))
        .add_service(Door::<ReportName>::new(gateway.clone()))
        .with_descriptors(adminduk_proto::FILE_DESCRIPTOR_SET)
        .start()
        .await;
    let server = match server {
        Ok(server) => server,
        Err(err) => {
            // The writer ends once every handle on the log is gone.
            drop(gateway);
            writer.finish().await;
            return Err(err.into());
        }
    };
    // The writer ends once every handle on the log is gone: the policy's
    // is let go before the last stop.
    Ok(
        Running::new(server, Policy { gateway }).stop_last(move || async move {
            if tokio::time::timeout(Duration::from_secs(10), writer.finish())
                .await
                .is_err()
            {
                tracing::error!("the audit writer did not finish within 10 s");
            }
        }),
    )
}

/// Sets `server.tls` to ask for a client certificate without requiring one,
/// and reads the chain its client CA checks; without a client CA, the gateway
/// does not start.
fn client_chain(server: &mut ServerConfig) -> Result<adminduk_kit::tls::ClientChain, StartError> {
    // A client certificate is optional (residents present tokens), and its
    // chain is checked here, per request, so a certificate of another CA is
    // answered UNAUTHENTICATED rather than cut off in the handshake.
    match &mut server.tls {
        Some(tls) => match tls.client_ca.clone() {
            Some(ca) => {
                tls.client_certificate_optional = true;
                tls.check_client_chain_in_service = true;
                Ok(adminduk_kit::tls::ClientChain::from_ca(&ca).map_err(ServeError::from)?)
            }
            None => Err(StartError::NoTls),
        },
        None => Err(StartError::NoTls),
    }
}

/// The gateway's own parts (agencies, the broker watch, IKD first, the audit
/// log and their services, decoding at most `limit` bytes), and the audit's
/// writer, to finish once the gateway stops.
fn own_parts(
    records: Records,
    upstreams: &Upstreams,
    cache: &Arc<dyn SharedCache>,
    limit: usize,
) -> (OwnParts, audit::Writer) {
    let store = store::Store::new(records.db.clone());
    let agencies = Agencies::new(store.clone());
    let brokers = Brokers::new(store.clone(), cache.clone());
    let ikd_first = ikd_first::IkdFirst::new(
        upstreams.ikd.clone(),
        upstreams.inventory.clone(),
        cache.clone(),
        store,
    );
    let (audit, writer) = AuditLog::start(
        records.db,
        records.audit_keys,
        records.audit_chain,
        records.sign_every,
    );
    let routes = tonic::service::Routes::new(
        AgencyServiceServer::new(AgencyApi::new(agencies.clone())).max_decoding_message_size(limit),
    )
    .add_service(
        BrokerWatchServiceServer::new(BrokerApi::new(brokers.clone())).max_decoding_message_size(limit),
    )
    .add_service(ReportServiceServer::new(ReportApi::new(ikd_first.clone())).max_decoding_message_size(limit))
    .prepare();
    let own = OwnParts {
        agencies,
        brokers,
        audit,
        routes,
        allowances: records.allowances,
        ikd_first,
    };
    (own, writer)
}
