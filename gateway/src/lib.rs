//! The gateway: adminduk's one public door. Kecamatan counter apps, residents'
//! phones, other agencies and administrators reach the four services only
//! through it, over TLS: it names the caller (a client certificate, or a
//! session token from IKD), decides by one table ([`access`]) whether the
//! caller may call the method and what they may name in it, writes the facts
//! it knows over the request's own fields, and forwards the call to its
//! service through the kit's upstream client.

pub mod access;
mod caller;
mod door;
pub mod limits;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use adminduk_kit::cache::SharedCache;
use adminduk_kit::config::ServerConfig;
use adminduk_kit::server::{GrpcServer, RunningServer, ServeError};

pub use door::{OVERRIDE_HEADER, PRINCIPAL_HEADER, Upstreams};

use caller::Tokens;
use door::{Door, Gateway, IkdName, InventoryName, PopulationName, PrintingName};

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

/// The gateway, started: its address and a clean stop.
#[derive(Debug)]
pub struct Running {
    server: RunningServer,
}

impl Running {
    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Stops accepting and drains in-flight requests (up to the drain timeout).
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.server.shutdown().await
    }
}

/// Starts the gateway with the kit's server (TLS, health, reflection of the
/// four services, one tower stack) in front of `upstreams`; `cache` is where
/// the IKD service marks revoked devices. `server.tls` must name a client CA:
/// a client certificate is optional (residents present tokens), but one that
/// is presented must be the CA's. Returns once the port is open.
pub async fn start(
    mut server: ServerConfig,
    upstreams: Upstreams,
    cache: Arc<dyn SharedCache>,
) -> Result<Running, StartError> {
    match &mut server.tls {
        Some(tls) if tls.client_ca.is_some() => tls.client_certificate_optional = true,
        _ => return Err(StartError::NoTls),
    }
    let tokens = Tokens::new(upstreams.ikd.clone(), upstreams.population.clone(), cache.clone());
    let builder = GrpcServer::new(server);
    let gateway = Arc::new(Gateway::new(
        upstreams,
        tokens,
        cache,
        builder.max_message_bytes(),
    ));
    let server = builder
        .add_service(Door::<PopulationName>::new(gateway.clone()))
        .add_service(Door::<InventoryName>::new(gateway.clone()))
        .add_service(Door::<PrintingName>::new(gateway.clone()))
        .add_service(Door::<IkdName>::new(gateway))
        .with_descriptors(adminduk_proto::FILE_DESCRIPTOR_SET)
        .start()
        .await?;
    Ok(Running { server })
}
