//! A development PKI written as PEM files: a CA, a server certificate, and client
//! certificates for a demo office device and a demo agency, so `adminduk up` runs
//! with mTLS from the first start. Not for production: the CA key lies next to the
//! certificates it signs.
//!
//! A client's principal travels in a URI SAN (`adminduk://office/<service point>/<device>`,
//! `adminduk://agency/<code>`) rather than in the common name; the kit's
//! [`adminduk_kit::principal`] defines it and parses it back.

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adminduk_kit::principal::{Principal, is_identifier};
use anyhow::{Context as _, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The CA's common name; also how a reloaded CA key is matched to its certificate's subject.
const CA_COMMON_NAME: &str = "adminduk development CA";
/// The organisation in every subject, so a development certificate is recognisable at a glance.
const ORGANIZATION: &str = "adminduk development";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const CA_VALIDITY: Duration = Duration::from_secs(2 * 365 * 24 * 60 * 60);
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Certificates start a day early, so a peer whose clock runs behind still accepts them.
const BACKDATE: Duration = DAY;

/// The files `adminduk certs` (and `adminduk up` on first run) writes.
#[derive(Debug, Clone)]
pub struct DevCerts {
    /// The directory holding them all.
    pub dir: PathBuf,
    /// The CA certificate: the trust root for servers and clients alike.
    pub ca_cert: PathBuf,
    /// The CA private key, kept so missing certificates can be issued later by the same CA.
    pub ca_key: PathBuf,
    /// The server certificate, valid for the configured hosts.
    pub server_cert: PathBuf,
    /// The server private key.
    pub server_key: PathBuf,
    /// The demo office device's client certificate.
    pub office_cert: PathBuf,
    /// The demo office device's private key.
    pub office_key: PathBuf,
    /// The demo agency's client certificate.
    pub agency_cert: PathBuf,
    /// The demo agency's private key.
    pub agency_key: PathBuf,
    /// The demo administrator's client certificate.
    pub admin_cert: PathBuf,
    /// The demo administrator's private key.
    pub admin_key: PathBuf,
    /// The mesh's service certificate: a backend run apart serves with it and
    /// accepts only it (`services_only`), and the services call each other with it.
    pub service_cert: PathBuf,
    /// Its private key.
    pub service_key: PathBuf,
}

impl DevCerts {
    /// The file paths under `dir` (no I/O).
    pub fn paths(dir: &Path) -> DevCerts {
        DevCerts {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            office_cert: dir.join("office.crt"),
            office_key: dir.join("office.key"),
            agency_cert: dir.join("agency.crt"),
            agency_key: dir.join("agency.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            service_cert: dir.join("service.crt"),
            service_key: dir.join("service.key"),
        }
    }

    /// Whether every file exists.
    pub fn exist(&self) -> bool {
        self.files().iter().all(|path| path.is_file())
    }

    fn files(&self) -> [&Path; 12] {
        [
            &self.ca_cert,
            &self.ca_key,
            &self.server_cert,
            &self.server_key,
            &self.office_cert,
            &self.office_key,
            &self.agency_cert,
            &self.agency_key,
            &self.admin_cert,
            &self.admin_key,
            &self.service_cert,
            &self.service_key,
        ]
    }
}

/// What `generate` writes: the server's names and the demo clients' identities.
#[derive(Debug, Clone)]
pub struct CertOptions {
    /// Replace existing files instead of keeping them.
    pub force: bool,
    /// Host names and IP addresses the server certificate is valid for.
    pub hosts: Vec<String>,
    /// The service point code in the office device's certificate.
    pub office_service_point: String,
    /// The device name in the office device's certificate.
    pub office_device: String,
    /// The agency code in the agency's certificate.
    pub agency: String,
    /// The administrator's name in the admin certificate.
    pub admin: String,
}

/// The demo agency's code, in its certificate and its agreement.
pub const DEMO_AGENCY: &str = "demo-bank";

impl Default for CertOptions {
    fn default() -> Self {
        Self {
            force: false,
            hosts: vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()],
            // Kecamatan Bekasi Timur's office, the demo data's first service point.
            office_service_point: "3275-KEC-01".to_owned(),
            office_device: "counter-01".to_owned(),
            agency: DEMO_AGENCY.to_owned(),
            admin: "admin-3275".to_owned(),
        }
    }
}

/// Writes a development CA and certificates into `dir` (created if missing). Existing files are kept unless `force`.
///
/// When the CA is there but a server or client certificate is not (deleted to be
/// reissued, say), the missing one is issued by the existing CA, so peers that
/// already trust it keep working. A certificate without its key (or the reverse), or
/// certificates without their CA, are an error: pass `force` to start afresh.
pub fn generate(dir: &Path, opts: &CertOptions) -> anyhow::Result<DevCerts> {
    let plan = Plan::new(opts)?;
    let paths = DevCerts::paths(dir);
    // The common case on every `adminduk up` after the first: nothing to do.
    if !opts.force && paths.exist() {
        return Ok(paths);
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let now = Now::read()?;

    let leaves = [
        (&paths.server_cert, &paths.server_key, plan.server(now)?),
        (&paths.office_cert, &paths.office_key, plan.office(now)?),
        (&paths.agency_cert, &paths.agency_key, plan.agency(now)?),
        (&paths.admin_cert, &paths.admin_key, plan.admin(now)?),
        (&paths.service_cert, &paths.service_key, plan.service(now)?),
    ];
    let leaf_count = leaves.len();
    let mut to_issue = Vec::new();
    for (cert, key, params) in leaves {
        if opts.force || !pair_exists(cert, key)? {
            to_issue.push((cert, key, params));
        }
    }

    let ca_params = ca_params(now);
    let issuer = if opts.force || !pair_exists(&paths.ca_cert, &paths.ca_key)? {
        if to_issue.len() < leaf_count {
            bail!(
                "{} holds certificates but not the CA that signed them; pass force to replace them all",
                dir.display()
            );
        }
        let key = KeyPair::generate().context("cannot generate the CA key")?;
        let cert = ca_params
            .self_signed(&key)
            .context("cannot sign the CA certificate")?;
        // The CA first: should a later write fail, a rerun issues the rest with this CA.
        write_file(&paths.ca_key, &key.serialize_pem(), Secret::Yes)?;
        write_file(&paths.ca_cert, &cert.pem(), Secret::No)?;
        Issuer::new(ca_params, key)
    } else {
        let pem = fs::read_to_string(&paths.ca_key)
            .with_context(|| format!("cannot read {}", paths.ca_key.display()))?;
        let key = KeyPair::from_pem(&pem)
            .with_context(|| format!("{} is not a private key in PEM", paths.ca_key.display()))?;
        // An issuer needs only the CA's subject and key; the subject is the one this
        // module always writes, so what the reloaded key signs chains to the CA on disk.
        Issuer::new(ca_params, key)
    };

    for (cert_path, key_path, params) in to_issue {
        let key = KeyPair::generate().context("cannot generate a key")?;
        let cert = params
            .signed_by(&key, &issuer)
            .with_context(|| format!("cannot sign {}", cert_path.display()))?;
        write_file(key_path, &key.serialize_pem(), Secret::Yes)?;
        write_file(cert_path, &cert.pem(), Secret::No)?;
    }
    Ok(paths)
}

/// The checked options, turned into what the certificates carry.
struct Plan<'a> {
    hosts: Vec<SanType>,
    opts: &'a CertOptions,
}

impl<'a> Plan<'a> {
    fn new(opts: &'a CertOptions) -> anyhow::Result<Self> {
        for (name, value) in [
            ("office_service_point", &opts.office_service_point),
            ("office_device", &opts.office_device),
            ("agency", &opts.agency),
            ("admin", &opts.admin),
        ] {
            if !is_identifier(value) {
                bail!("{name}: `{value}` must be 1 to 32 letters, digits or hyphens");
            }
        }
        if opts.hosts.is_empty() {
            bail!("hosts: at least one host name or IP address is needed");
        }
        let hosts = opts
            .hosts
            .iter()
            .map(|host| host_san(host))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { hosts, opts })
    }

    fn server(&self, now: Now) -> anyhow::Result<CertificateParams> {
        let mut params = leaf_params("adminduk development server", now);
        params.subject_alt_names = self.hosts.clone();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        Ok(params)
    }

    fn office(&self, now: Now) -> anyhow::Result<CertificateParams> {
        let CertOptions {
            office_service_point: service_point,
            office_device: device,
            ..
        } = self.opts;
        let principal = Principal::Office {
            service_point: service_point.clone(),
            device: device.clone(),
        };
        client_params(&format!("office {service_point} {device}"), &principal, now)
    }

    fn agency(&self, now: Now) -> anyhow::Result<CertificateParams> {
        let code = &self.opts.agency;
        let principal = Principal::Agency { code: code.clone() };
        client_params(&format!("agency {code}"), &principal, now)
    }

    /// Server and client at once, for the hosts and the services' own names
    /// (as a container network or Kubernetes Services name them).
    fn service(&self, now: Now) -> anyhow::Result<CertificateParams> {
        let mut params = client_params(
            "adminduk mesh service",
            &Principal::Service {
                name: "mesh".to_owned(),
            },
            now,
        )?;
        params.subject_alt_names.extend(self.hosts.iter().cloned());
        for name in ["population", "inventory", "printing", "ikd", "gateway"] {
            params.subject_alt_names.push(SanType::DnsName(
                name.try_into().with_context(|| format!("cannot encode {name}"))?,
            ));
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        Ok(params)
    }

    fn admin(&self, now: Now) -> anyhow::Result<CertificateParams> {
        let name = &self.opts.admin;
        let principal = Principal::Admin { name: name.clone() };
        client_params(&format!("admin {name}"), &principal, now)
    }
}

fn host_san(host: &str) -> anyhow::Result<SanType> {
    // `[::1]` is how an IPv6 address appears in a URL; take it as the address.
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if !is_dns_name(host) {
        bail!("hosts: `{host}` is neither an IP address nor a DNS name");
    }
    Ok(SanType::DnsName(
        host.try_into().with_context(|| format!("hosts: `{host}`"))?,
    ))
}

/// A DNS name as certificate verifiers accept it: dot-separated labels of letters,
/// digits and inner hyphens, optionally behind a leading `*.` wildcard.
fn is_dns_name(name: &str) -> bool {
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let name = name.strip_prefix("*.").unwrap_or(name);
    name.len() <= 253 && name.split('.').all(label)
}

/// The current time as an offset from the Unix epoch, read once so every certificate
/// of one run has the same validity period.
#[derive(Debug, Clone, Copy)]
struct Now(Duration);

impl Now {
    fn read() -> anyhow::Result<Self> {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the system clock is set before 1970")?;
        Ok(Self(since_epoch))
    }

    fn set_validity(self, params: &mut CertificateParams, lifetime: Duration) {
        // rcgen's dates come from `time`, which this crate does not name; building them
        // from the epoch keeps it that way.
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        params.not_before = epoch + self.0.saturating_sub(BACKDATE);
        params.not_after = epoch + self.0 + lifetime;
    }
}

fn subject(params: &mut CertificateParams, common_name: &str) {
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, ORGANIZATION);
    params.distinguished_name.push(DnType::CommonName, common_name);
}

fn ca_params(now: Now) -> CertificateParams {
    let mut params = CertificateParams::default();
    subject(&mut params, CA_COMMON_NAME);
    // Path length 0: this CA signs only end-entity certificates, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    now.set_validity(&mut params, CA_VALIDITY);
    params
}

fn leaf_params(common_name: &str, now: Now) -> CertificateParams {
    let mut params = CertificateParams::default();
    subject(&mut params, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    // TLS 1.3 with an ECDSA key signs the handshake, which needs digitalSignature.
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Lets verifiers pick the issuing key by its identifier rather than by name alone.
    params.use_authority_key_identifier_extension = true;
    now.set_validity(&mut params, LEAF_VALIDITY);
    params
}

fn client_params(common_name: &str, principal: &Principal, now: Now) -> anyhow::Result<CertificateParams> {
    let mut params = leaf_params(common_name, now);
    let uri = principal.to_string();
    let san = uri
        .as_str()
        .try_into()
        .with_context(|| format!("cannot encode {uri}"))?;
    params.subject_alt_names = vec![SanType::URI(san)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

/// Whether both files of a certificate and its key exist; one without the other is an error.
fn pair_exists(cert: &Path, key: &Path) -> anyhow::Result<bool> {
    match (cert.is_file(), key.is_file()) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (true, false) => bail!(
            "{} exists without {}; remove it or pass force",
            cert.display(),
            key.display()
        ),
        (false, true) => bail!(
            "{} exists without {}; remove it or pass force",
            key.display(),
            cert.display()
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secret {
    Yes,
    No,
}

/// Writes through a temporary file and a rename, so an interrupted run never leaves
/// a truncated PEM behind; a secret is readable by its owner only from the start.
fn write_file(path: &Path, contents: &str, secret: Secret) -> anyhow::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret == Secret::Yes {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    // The mode above applies only to a new file; a leftover temporary file keeps its own.
    #[cfg(unix)]
    if secret == Secret::Yes {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", tmp.display()))?;
    }
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_become_dns_names_or_ip_addresses() {
        let dns = |s: &str| SanType::DnsName(s.try_into().expect("ia5"));
        assert_eq!(host_san("localhost").expect("dns"), dns("localhost"));
        assert_eq!(
            host_san("gateway.adminduk.svc").expect("dns"),
            dns("gateway.adminduk.svc")
        );
        assert_eq!(
            host_san("*.adminduk.svc").expect("wildcard"),
            dns("*.adminduk.svc")
        );
        let ip = |s: &str| SanType::IpAddress(s.parse().expect("ip"));
        assert_eq!(host_san("127.0.0.1").expect("v4"), ip("127.0.0.1"));
        assert_eq!(host_san("::1").expect("v6"), ip("::1"));
        assert_eq!(host_san("[::1]").expect("bracketed v6"), ip("::1"));
        for bad in [
            "",
            "local host",
            "-bad.example",
            "bad-.example",
            "a..b",
            "http://x",
            "a.*.b",
        ] {
            let err = host_san(bad).expect_err(bad).to_string();
            assert!(err.starts_with("hosts:"), "{err}");
        }
    }

    #[test]
    fn bad_options_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let defaults = CertOptions::default;
        let cases = [
            (
                "office_service_point",
                CertOptions {
                    office_service_point: String::new(),
                    ..defaults()
                },
            ),
            (
                "office_device",
                CertOptions {
                    office_device: "counter/01".to_owned(),
                    ..defaults()
                },
            ),
            (
                "agency",
                CertOptions {
                    agency: "x".repeat(33),
                    ..defaults()
                },
            ),
            (
                "hosts",
                CertOptions {
                    hosts: Vec::new(),
                    ..defaults()
                },
            ),
            (
                "hosts",
                CertOptions {
                    hosts: vec!["not a host".to_owned()],
                    ..defaults()
                },
            ),
        ];
        for (name, opts) in cases {
            let err = generate(dir.path(), &opts).expect_err(name).to_string();
            assert!(err.starts_with(&format!("{name}:")), "{err}");
        }
        assert!(
            !DevCerts::paths(dir.path()).ca_cert.exists(),
            "nothing is written for bad options"
        );
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_private_and_certificates_readable() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = generate(&dir.path().join("certs"), &CertOptions::default()).expect("generate");
        assert!(certs.exist());
        let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        for key in [
            &certs.ca_key,
            &certs.server_key,
            &certs.office_key,
            &certs.agency_key,
        ] {
            assert_eq!(mode(key), 0o600, "{}", key.display());
        }
        for cert in [
            &certs.ca_cert,
            &certs.server_cert,
            &certs.office_cert,
            &certs.agency_cert,
        ] {
            assert_ne!(mode(cert) & 0o044, 0, "{}", cert.display());
        }
        let leftovers = fs::read_dir(&certs.dir)
            .expect("read_dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn a_missing_leaf_is_reissued_by_the_existing_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = generate(dir.path(), &CertOptions::default()).expect("generate");
        let ca = fs::read(&certs.ca_cert).expect("ca");
        let office = fs::read(&certs.office_cert).expect("office");
        let server = fs::read(&certs.server_cert).expect("server");
        fs::remove_file(&certs.server_cert).expect("remove");
        fs::remove_file(&certs.server_key).expect("remove");
        generate(dir.path(), &CertOptions::default()).expect("regenerate");
        assert_eq!(fs::read(&certs.ca_cert).expect("ca"), ca);
        assert_eq!(fs::read(&certs.office_cert).expect("office"), office);
        assert_ne!(fs::read(&certs.server_cert).expect("server"), server);
    }

    #[test]
    fn half_pairs_and_orphaned_certificates_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = generate(dir.path(), &CertOptions::default()).expect("generate");
        fs::remove_file(&certs.agency_key).expect("remove");
        let err = generate(dir.path(), &CertOptions::default())
            .expect_err("half pair")
            .to_string();
        assert!(err.contains("agency.crt exists without"), "{err}");

        fs::remove_file(&certs.agency_cert).expect("remove");
        fs::remove_file(&certs.ca_cert).expect("remove");
        fs::remove_file(&certs.ca_key).expect("remove");
        let err = generate(dir.path(), &CertOptions::default())
            .expect_err("no CA")
            .to_string();
        assert!(err.contains("not the CA"), "{err}");

        let forced = CertOptions {
            force: true,
            ..CertOptions::default()
        };
        assert!(generate(dir.path(), &forced).expect("force").exist());
    }
}
