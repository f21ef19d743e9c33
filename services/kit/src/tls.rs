//! TLS with rustls on the ring provider, installed once for tonic, sqlx and
//! every other user in the process.

use std::path::Path;
use std::sync::Once;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::TlsConfig;

/// Installs ring as the process-wide rustls provider; later calls do nothing.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another library may have installed ring already; either way one provider serves all.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// TLS files could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {what} from {path}: {source}")]
pub struct TlsError {
    what: &'static str,
    path: String,
    source: std::io::Error,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// The server side: its certificate, and when a client CA is set, required client certificates (mTLS).
pub fn server_tls(config: &TlsConfig) -> Result<ServerTlsConfig, TlsError> {
    install_crypto_provider();
    let identity = Identity::from_pem(read("certificate", &config.cert)?, read("key", &config.key)?);
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &config.client_ca {
        tls = tls
            .client_ca_root(Certificate::from_pem(read("client CA", ca)?))
            .client_auth_optional(config.client_certificate_optional);
    }
    Ok(tls)
}

/// The client side: the CA to trust, the server name to expect, and optionally our own certificate.
pub fn client_tls(
    ca: &Path,
    server_name: &str,
    identity: Option<(&Path, &Path)>,
) -> Result<ClientTlsConfig, TlsError> {
    install_crypto_provider();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("CA", ca)?))
        .domain_name(server_name);
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(read("certificate", cert)?, read("key", key)?));
    }
    Ok(tls)
}
