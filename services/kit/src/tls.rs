//! TLS with rustls on the ring provider, installed once for tonic, sqlx and
//! every other user in the process.

use std::path::Path;
use std::sync::{Arc, Once};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

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

fn invalid(what: &'static str, path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError {
        what,
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_string()),
    }
}

/// A verifier of client certificate chains against the CA in `ca` (PEM), on
/// the ring provider: what a service that checks its clients' chains itself
/// asks of each request's certificate.
pub fn client_chain_verifier(ca: &Path) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    install_crypto_provider();
    let pem = read("client CA", ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|err| invalid("client CA", ca, err))?;
        roots.add(cert).map_err(|err| invalid("client CA", ca, err))?;
    }
    WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|err| invalid("client CA", ca, err))
}

/// The client CA's check of a certificate chain, for a service that checks
/// its clients' chains itself ([`TlsConfig::check_client_chain_in_service`]).
#[derive(Debug, Clone)]
pub struct ClientChain(Arc<dyn ClientCertVerifier>);

impl ClientChain {
    /// The check against the CA in `ca` (PEM).
    pub fn from_ca(ca: &Path) -> Result<Self, TlsError> {
        client_chain_verifier(ca).map(Self)
    }

    /// Whether `chain` (the client's certificate first) is the CA's and valid now.
    pub fn verifies(&self, chain: &[CertificateDer<'_>]) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return false;
        };
        self.0
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .is_ok()
    }
}

/// Takes any client certificate in the handshake, still making the client
/// prove it holds the certificate's key (the handshake's signature is checked
/// as the CA's verifier checks it); the chain is the service's to check.
#[derive(Debug)]
struct AnyClientCertificate {
    chain: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// The server side for [`TlsConfig::check_client_chain_in_service`]: the
/// server's certificate, any client certificate taken (its key proven), and
/// HTTP/2 offered, with HTTP/1.1 beside it when `http1` (gRPC-Web from browsers).
pub fn server_config_checking_chain_in_service(
    config: &TlsConfig,
    http1: bool,
) -> Result<rustls::ServerConfig, TlsError> {
    install_crypto_provider();
    let ca = config
        .client_ca
        .as_deref()
        .ok_or_else(|| invalid("client CA", &config.cert, "a client CA is needed to check chains"))?;
    let chain = client_chain_verifier(ca)?;
    let cert_pem = read("certificate", &config.cert)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| invalid("certificate", &config.cert, err))?;
    let key_pem = read("key", &config.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| invalid("key", &config.key, err))?;
    let mut server =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|err| invalid("certificate", &config.cert, err))?
            .with_client_cert_verifier(Arc::new(AnyClientCertificate { chain }))
            .with_single_cert(certs, key)
            .map_err(|err| invalid("certificate", &config.cert, err))?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    if http1 {
        server.alpn_protocols.push(b"http/1.1".to_vec());
    }
    Ok(server)
}

/// When the first certificate of a PEM file expires (its `notAfter`, Unix
/// seconds), read from the DER without a full X.509 parser: the certificate's
/// first element is the to-be-signed part, whose fifth element (sixth with
/// the explicit version) is the validity, `notBefore` then `notAfter`.
pub fn not_after(pem: &[u8]) -> Option<i64> {
    let cert = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    let (tag, certificate, _) = crate::principal::element(cert.as_ref())?;
    if tag != 0x30 {
        return None;
    }
    let (tag, mut tbs, _) = crate::principal::element(certificate)?;
    if tag != 0x30 {
        return None;
    }
    // [0] version (optional), serial, signature algorithm, issuer, validity.
    let (tag, _, rest) = crate::principal::element(tbs)?;
    if tag == 0xA0 {
        tbs = rest;
        let (_, _, rest) = crate::principal::element(tbs)?;
        tbs = rest;
    } else {
        tbs = rest;
    }
    for _ in 0..2 {
        let (_, _, rest) = crate::principal::element(tbs)?;
        tbs = rest;
    }
    let (tag, validity, _) = crate::principal::element(tbs)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, rest) = crate::principal::element(validity)?;
    let (tag, time, _) = crate::principal::element(rest)?;
    let time = std::str::from_utf8(time).ok()?;
    let format = match tag {
        0x17 => "%y%m%d%H%M%SZ",
        0x18 => "%Y%m%d%H%M%SZ",
        _ => return None,
    };
    chrono::NaiveDateTime::parse_from_str(time, format)
        .ok()
        .map(|t| t.and_utc().timestamp())
}
