//! The development PKI end to end: certificates from `certs::generate` on a real
//! mTLS server (the kit's, which always serves `grpc.health.v1.Health`), reached
//! over a real socket by clients holding each certificate, or the wrong one.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use adminduk::certs::{self, CertOptions, DevCerts};
use adminduk_kit::config::{ServerConfig, TlsConfig};
use adminduk_kit::principal::{Principal, parse_principal, principal_of_certificate};
use adminduk_kit::server::{GrpcServer, RunningServer};
use adminduk_kit::tls::client_tls;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Long enough for a loaded CI machine, short enough that a hang fails the test.
const DEADLINE: Duration = Duration::from_secs(10);

async fn start_mtls_server(certs: &DevCerts) -> RunningServer {
    let config = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: Some(TlsConfig {
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            client_ca: Some(certs.ca_cert.clone()),
            client_certificate_optional: false,
            services_only: false,
            check_client_chain_in_service: false,
        }),
        ..ServerConfig::default()
    };
    GrpcServer::new(config).start().await.expect("server starts")
}

/// Calls `Health/Check` for the whole server; an error is whatever failed first,
/// the handshake (on connect, or with TLS 1.3 on the first request) or the call.
async fn health_check(
    server: &RunningServer,
    ca: &Path,
    server_name: &str,
    identity: Option<(&Path, &Path)>,
) -> Result<ServingStatus, String> {
    let tls = client_tls(ca, server_name, identity).map_err(|e| e.to_string())?;
    let uri = format!("https://localhost:{}", server.local_addr().port());
    let endpoint = Endpoint::from_shared(uri)
        .and_then(|e| e.tls_config(tls))
        .map_err(|e| e.to_string())?
        .connect_timeout(DEADLINE)
        .timeout(DEADLINE);
    let call = async {
        let channel = endpoint.connect().await.map_err(|e| format!("connect: {e:?}"))?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|status| format!("call: {status:?}"))?;
        Ok(response.into_inner().status())
    };
    tokio::time::timeout(DEADLINE, call)
        .await
        .map_err(|_| "timed out".to_owned())?
}

fn generate(dir: &Path) -> DevCerts {
    certs::generate(dir, &CertOptions::default()).expect("generate")
}

#[tokio::test]
async fn the_office_device_certificate_is_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = generate(dir.path());
    let server = start_mtls_server(&certs).await;
    let office = Some((certs.office_cert.as_path(), certs.office_key.as_path()));
    let status = health_check(&server, &certs.ca_cert, "localhost", office).await;
    assert_eq!(status, Ok(ServingStatus::Serving));
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_agency_certificate_is_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = generate(dir.path());
    let server = start_mtls_server(&certs).await;
    let agency = Some((certs.agency_cert.as_path(), certs.agency_key.as_path()));
    let status = health_check(&server, &certs.ca_cert, "localhost", agency).await;
    assert_eq!(status, Ok(ServingStatus::Serving));
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_server_certificate_holds_for_its_ip_addresses_and_no_other_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = generate(dir.path());
    let server = start_mtls_server(&certs).await;
    let office = Some((certs.office_cert.as_path(), certs.office_key.as_path()));
    let status = health_check(&server, &certs.ca_cert, "127.0.0.1", office).await;
    assert_eq!(
        status,
        Ok(ServingStatus::Serving),
        "127.0.0.1 is an IP address SAN"
    );
    let status = health_check(&server, &certs.ca_cert, "gateway.example", office).await;
    let err = status.expect_err("a name not in the certificate must be refused");
    assert!(err.contains("NotValidForName"), "{err}");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = generate(dir.path());
    let server = start_mtls_server(&certs).await;
    let status = health_check(&server, &certs.ca_cert, "localhost", None).await;
    let err = status.expect_err("no client certificate must be refused");
    // The server's TLS alert, not some other failure, refused the call.
    assert!(err.contains("fatal alert: CertificateRequired"), "{err}");
    // A refused handshake costs one connection, not the server.
    let office = Some((certs.office_cert.as_path(), certs.office_key.as_path()));
    let status = health_check(&server, &certs.ca_cert, "localhost", office).await;
    assert_eq!(status, Ok(ServingStatus::Serving));
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = generate(dir.path());
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = generate(other_dir.path());
    let server = start_mtls_server(&certs).await;
    // The client trusts the right server; only its own certificate is foreign.
    let foreign = Some((other.office_cert.as_path(), other.office_key.as_path()));
    let status = health_check(&server, &certs.ca_cert, "localhost", foreign).await;
    let err = status.expect_err("a foreign client certificate must be refused");
    // Both CAs have the same name, so the server finds its own and the signature
    // check is what fails: proof that trust rests on the CA's key, not its name.
    assert!(err.contains("fatal alert"), "{err}");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_reissued_server_certificate_chains_to_the_kept_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = generate(dir.path());
    let ca = std::fs::read(&certs.ca_cert).expect("ca");
    // Deleting a certificate is how a user asks for it again, e.g. with more hosts.
    std::fs::remove_file(&certs.server_cert).expect("remove");
    std::fs::remove_file(&certs.server_key).expect("remove");
    let certs = generate(dir.path());
    assert_eq!(std::fs::read(&certs.ca_cert).expect("ca"), ca, "the CA is kept");
    let server = start_mtls_server(&certs).await;
    let office = Some((certs.office_cert.as_path(), certs.office_key.as_path()));
    let status = health_check(&server, &certs.ca_cert, "localhost", office).await;
    assert_eq!(status, Ok(ServingStatus::Serving));
    server.shutdown().await.expect("shutdown");
}

#[test]
fn client_certificates_carry_their_principal_as_a_uri_san() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = generate(dir.path());

    let office = read_der(&certs.office_cert);
    let uris = general_names(&office, URI);
    assert_eq!(uris.len(), 1, "one principal per certificate");
    let uri = String::from_utf8(uris[0].clone()).expect("ascii");
    assert_eq!(
        parse_principal(&uri),
        Some(Principal::Office {
            service_point: "3275-KEC-01".to_owned(),
            device: "counter-01".to_owned(),
        })
    );
    assert!(
        contains(&office, b"office 3275-KEC-01 counter-01"),
        "readable common name"
    );

    let agency = read_der(&certs.agency_cert);
    let uris = general_names(&agency, URI);
    let uri = String::from_utf8(uris[0].clone()).expect("ascii");
    assert_eq!(
        parse_principal(&uri),
        Some(Principal::Agency {
            code: "demo-bank".to_owned()
        })
    );
    assert!(contains(&agency, b"agency demo-bank"), "readable common name");

    let server = read_der(&certs.server_cert);
    assert_eq!(general_names(&server, DNS_NAME), [b"localhost".to_vec()]);
    let loopback_v6 = std::net::Ipv6Addr::LOCALHOST.octets().to_vec();
    assert_eq!(
        general_names(&server, IP_ADDRESS),
        [vec![127, 0, 0, 1], loopback_v6]
    );
    assert!(
        general_names(&server, URI).is_empty(),
        "the server is no principal"
    );

    // What the gateway reads from a peer certificate: the same principals.
    assert_eq!(
        principal_of_certificate(&office),
        Some(Principal::Office {
            service_point: "3275-KEC-01".to_owned(),
            device: "counter-01".to_owned(),
        })
    );
    assert_eq!(
        principal_of_certificate(&agency),
        Some(Principal::Agency {
            code: "demo-bank".to_owned()
        })
    );
    assert_eq!(principal_of_certificate(&server), None);
}

#[test]
fn generating_again_keeps_the_files_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = generate(dir.path());
    let files = |c: &DevCerts| {
        [
            &c.ca_cert,
            &c.ca_key,
            &c.server_cert,
            &c.server_key,
            &c.office_cert,
            &c.office_key,
            &c.agency_cert,
            &c.agency_key,
        ]
        .map(|path| std::fs::read(path).expect("read"))
    };
    let first = files(&certs);

    let again = generate(dir.path());
    assert_eq!(again.ca_cert, certs.ca_cert);
    assert_eq!(files(&again), first, "kept byte for byte");

    let forced = CertOptions {
        force: true,
        ..CertOptions::default()
    };
    let replaced = files(&certs::generate(dir.path(), &forced).expect("force"));
    for (before, after) in first.iter().zip(&replaced) {
        assert_ne!(before, after, "every file is replaced");
    }
}

// GeneralName tags (RFC 5280 §4.2.1.6), context-specific and primitive.
const DNS_NAME: u8 = 0x82;
const URI: u8 = 0x86;
const IP_ADDRESS: u8 = 0x87;

/// The DER inside a one-certificate PEM file.
fn read_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(path).expect("read pem");
    let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    base64_decode(&body)
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            other => panic!("not base64: {other:#x}"),
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Splits one DER element off the front: its tag, its contents, and what follows.
fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let (tag, first) = (input[0], input[1]);
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        let len = input[2..2 + n]
            .iter()
            .fold(0, |acc, &b| (acc << 8) | usize::from(b));
        (len, 2 + n)
    };
    (tag, &input[header..header + len], &input[header + len..])
}

/// The values of the subject alternative names with the given tag, in order.
fn general_names(cert: &[u8], wanted: u8) -> Vec<Vec<u8>> {
    const EXTENSIONS: u8 = 0xA3; // [3] in TBSCertificate
    const SUBJECT_ALT_NAME: [u8; 3] = [0x55, 0x1D, 0x11]; // 2.5.29.17
    const BOOLEAN: u8 = 0x01;
    let (_, certificate, _) = tlv(cert);
    let (_, mut tbs_fields, _) = tlv(certificate);
    let mut found = Vec::new();
    while !tbs_fields.is_empty() {
        let (tag, contents, rest) = tlv(tbs_fields);
        tbs_fields = rest;
        if tag != EXTENSIONS {
            continue;
        }
        let (_, mut extensions, _) = tlv(contents);
        while !extensions.is_empty() {
            let (_, extension, rest) = tlv(extensions);
            extensions = rest;
            let (_, oid, mut fields) = tlv(extension);
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            let (mut tag, mut value, after) = tlv(fields);
            if tag == BOOLEAN {
                fields = after;
                (tag, value, _) = tlv(fields);
            }
            assert_eq!(tag, 0x04, "extnValue is an OCTET STRING");
            let (_, mut names, _) = tlv(value);
            while !names.is_empty() {
                let (tag, name, rest) = tlv(names);
                names = rest;
                if tag == wanted {
                    found.push(name.to_vec());
                }
            }
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}
