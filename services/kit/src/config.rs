//! Configuration in layers: defaults, then an optional TOML file, then
//! `ADMINDUK_`-prefixed environment variables (`__` separates levels, so
//! `ADMINDUK_SERVER__LISTEN` sets `server.listen`). `DATABASE_URL` is also
//! read, as container platforms set it. Everything is checked before the
//! runtime starts; a bad value ends the process with code 64 (`EX_USAGE`)
//! and a message naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The exit code for bad configuration (`EX_USAGE` from sysexits.h).
pub const EXIT_BAD_CONFIG: i32 = 64;

/// A configuration problem, naming the key it concerns.
#[derive(Debug, thiserror::Error)]
#[error("bad configuration: {key}: {message}")]
pub struct ConfigError {
    /// The dotted key, e.g. `server.listen`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// A problem with one key.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Prints the error and exits with code 64.
    pub fn exit(&self) -> ! {
        eprintln!("adminduk: {self}");
        std::process::exit(EXIT_BAD_CONFIG)
    }
}

/// A configuration that can check its own values beyond their types.
pub trait Validate {
    /// Checks every value; the error names the first bad key.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Loads a configuration: defaults (from `serde(default)`), then the TOML
/// file if given, then the environment; then validates it.
pub fn load<T: DeserializeOwned + Validate>(file: Option<&Path>) -> Result<T, ConfigError> {
    load_with_defaults(file, &[])
}

/// Like [`load`], with some defaults of the caller's laid over the types' own
/// (dotted key, value), e.g. a service's own port: `("server.listen", "127.0.0.1:50061")`.
/// The file and the environment still override them.
pub fn load_with_defaults<T: DeserializeOwned + Validate>(
    file: Option<&Path>,
    defaults: &[(&str, &str)],
) -> Result<T, ConfigError> {
    let mut figment = Figment::new();
    for (key, value) in defaults {
        figment = figment.merge(Serialized::default(key, value));
    }
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::new(
                "config file",
                format!("{} is not a readable file", path.display()),
            ));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment
        .merge(Env::raw().only(&["DATABASE_URL"]).map(|_| "database.url".into()))
        .merge(Env::raw().only(&["REDIS_URL"]).map(|_| "cache.redis_url".into()))
        // Only sectioned keys (`ADMINDUK_SERVER__LISTEN`): single-level names such as
        // `ADMINDUK_CONFIG` or `ADMINDUK_TEST_POSTGRES_URL` belong to the CLI and the tests.
        .merge(
            Env::prefixed("ADMINDUK_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
    let config: T = figment.extract().map_err(|err| {
        let key = if err.path.is_empty() {
            "config".to_owned()
        } else {
            err.path.join(".")
        };
        ConfigError::new(key, err.kind.to_string())
    })?;
    config.validate()?;
    Ok(config)
}

/// How one gRPC server listens and protects itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// TLS; plaintext when absent.
    pub tls: Option<TlsConfig>,
    /// Largest request message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Deadline for one request when the client sets none, in milliseconds.
    pub request_timeout_ms: u64,
    /// Requests in flight at once across all connections; more are shed.
    pub concurrency_limit: usize,
    /// How long in-flight requests may take to finish after SIGTERM, in milliseconds.
    pub drain_timeout_ms: u64,
    /// gRPC-Web for browsers on the same port, with CORS; off when absent.
    pub grpc_web: Option<GrpcWebConfig>,
}

/// gRPC-Web (HTTP/1.1 or HTTP/2, `application/grpc-web`) beside gRPC, so a
/// browser page can call; CORS lets the named origins read the answers and
/// their status (`grpc-status`, `grpc-message`, `grpc-status-details-bin`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcWebConfig {
    /// The origins whose pages may call (`https://stok.example.go.id`), or `["*"]` for any.
    pub allowed_origins: Vec<String>,
}

impl Default for GrpcWebConfig {
    fn default() -> Self {
        Self {
            allowed_origins: vec!["*".to_owned()],
        }
    }
}

impl Validate for GrpcWebConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let key = "server.grpc_web.allowed_origins";
        if self.allowed_origins.is_empty() {
            return Err(ConfigError::new(key, "must name at least one origin, or \"*\""));
        }
        if self.allowed_origins.len() > 1 && self.allowed_origins.iter().any(|o| o == "*") {
            return Err(ConfigError::new(key, "\"*\" stands alone"));
        }
        for origin in &self.allowed_origins {
            let shaped = origin == "*"
                || ((origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.ends_with('/')
                    && http::HeaderValue::from_str(origin).is_ok()
                    && http::Uri::try_from(origin.as_str())
                        .is_ok_and(|u| u.path() == "/" || u.path().is_empty()));
            if !shaped {
                return Err(ConfigError::new(
                    key,
                    format!("{origin:?} is not an origin (scheme://host[:port], no path)"),
                ));
            }
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            max_message_bytes: 64 * 1024,
            request_timeout_ms: 10_000,
            concurrency_limit: 1024,
            drain_timeout_ms: 10_000,
            grpc_web: None,
        }
    }
}

impl ServerConfig {
    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The drain timeout as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

impl Validate for ServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1024..=16 * 1024 * 1024).contains(&self.max_message_bytes) {
            return Err(ConfigError::new(
                "server.max_message_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::new(
                "server.request_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.concurrency_limit == 0 {
            return Err(ConfigError::new(
                "server.concurrency_limit",
                "must be greater than 0",
            ));
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        if let Some(web) = &self.grpc_web {
            web.validate()?;
        }
        Ok(())
    }
}

/// PEM files for a server's TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mTLS).
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: a client may also connect without a certificate (the
    /// gateway, where residents present a token instead); one that presents a
    /// certificate must still present one the CA signed.
    #[serde(default)]
    pub client_certificate_optional: bool,
    /// With `client_ca`: answer only the mesh's own services (a certificate
    /// naming `adminduk://service/...`); any other client, an office's
    /// certificate among them, is PERMISSION_DENIED. For a backend run apart,
    /// which the outside reaches only through the gateway.
    #[serde(default)]
    pub services_only: bool,
    /// With `client_ca`: the handshake takes any client certificate whose key
    /// the client holds, and the service checks its chain against the CA on
    /// each request, so a certificate from another CA is answered (the
    /// gateway: UNAUTHENTICATED, CERTIFICATE_UNTRUSTED) rather than cut off
    /// mid-handshake. Only the gateway sets it, itself (it checks every
    /// chain); no configuration file can, so no service is left unchecked.
    #[serde(skip)]
    pub check_client_chain_in_service: bool,
}

/// How a service reaches the others over TLS: the mesh CA to trust and its
/// own service certificate to present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// The CA that signed the services' certificates.
    pub ca: PathBuf,
    /// This service's certificate (`adminduk certs` writes `service.crt`).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl Validate for TlsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let files = [
            ("server.tls.cert", Some(&self.cert)),
            ("server.tls.key", Some(&self.key)),
            ("server.tls.client_ca", self.client_ca.as_ref()),
        ];
        for (key, path) in files {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(ConfigError::new(
                    key,
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        Ok(())
    }
}

/// Where a service keeps its records.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite:path/to/file.db` or `postgres://user@host/db`; a secret, as it may hold a password.
    pub url: SecretString,
    /// Connections in the pool.
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("sqlite:adminduk.db"),
            max_connections: 10,
        }
    }
}

impl Validate for DatabaseConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.url.expose_secret();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:")) {
            return Err(ConfigError::new(
                "database.url",
                "must start with sqlite: or postgres://",
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new(
                "database.max_connections",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    #[default]
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logs and traces.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Pretty or JSON.
    pub log_format: LogFormat,
    /// A `tracing` filter, e.g. `info,adminduk=debug`; `RUST_LOG` overrides it.
    pub log_filter: String,
    /// Where traces go over OTLP/gRPC; `OTEL_EXPORTER_OTLP_ENDPOINT` when unset; none when neither is.
    pub otlp_endpoint: Option<String>,
    /// The deployment's key for the short reference logged beside a masked NIK
    /// (`3275********0001#1f2e3d4c`), at least 16 characters; the same on every
    /// replica, so one resident has one reference. A random key per process when unset.
    pub nik_ref_key: Option<SecretString>,
}

/// The shortest reference key accepted: a shorter one could be guessed.
pub const MIN_NIK_REF_KEY_CHARS: usize = 16;

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Pretty,
            log_filter: "info".to_owned(),
            otlp_endpoint: None,
            nik_ref_key: None,
        }
    }
}

impl Validate for TelemetryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(key) = &self.nik_ref_key
            && key.expose_secret().chars().count() < MIN_NIK_REF_KEY_CHARS
        {
            return Err(ConfigError::new(
                "telemetry.nik_ref_key",
                format!("must be at least {MIN_NIK_REF_KEY_CHARS} characters"),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_filter)
            .map(drop)
            .map_err(|err| ConfigError::new("telemetry.log_filter", err.to_string()))
    }
}

/// Mail to residents (the IKD activation code): sent from the outbox over SMTP,
/// or written to a local mailbox directory, or left waiting when neither is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// The SMTP relay's host (plain SMTP, as to a relay beside the service); none sends nothing.
    pub smtp_host: Option<String>,
    /// The SMTP relay's port.
    pub smtp_port: u16,
    /// The sender, e.g. `Disdukcapil Kota Bekasi <ikd@disdukcapil.example>`.
    pub from: String,
    /// Instead of SMTP: a directory each sent mail is written to as a file (what `adminduk up` does).
    pub mailbox_dir: Option<PathBuf>,
    /// How often the outbox is looked at, in milliseconds.
    pub poll_interval_ms: u64,
    /// The wait after a first failed attempt, in milliseconds; it doubles with each failure.
    pub retry_initial_ms: u64,
    /// The longest wait between attempts, in milliseconds.
    pub retry_max_ms: u64,
    /// How long one SMTP exchange may take, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            smtp_host: None,
            smtp_port: 25,
            from: "Disdukcapil <ikd@adminduk.localhost>".to_owned(),
            mailbox_dir: None,
            poll_interval_ms: 1_000,
            retry_initial_ms: 5_000,
            retry_max_ms: 600_000,
            timeout_ms: 10_000,
        }
    }
}

impl MailConfig {
    /// The poll interval as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// The wait before attempt `failures + 1`: doubling from `retry_initial_ms`, capped at `retry_max_ms`.
    pub fn retry_after(&self, failures: u32) -> Duration {
        let factor = 1u64.checked_shl(failures.saturating_sub(1)).unwrap_or(u64::MAX);
        Duration::from_millis(
            self.retry_initial_ms
                .saturating_mul(factor)
                .min(self.retry_max_ms),
        )
    }
}

impl Validate for MailConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.smtp_host.as_deref().is_some_and(|h| h.trim().is_empty()) {
            return Err(ConfigError::new("mail.smtp_host", "must not be empty"));
        }
        if self.smtp_port == 0 {
            return Err(ConfigError::new("mail.smtp_port", "must be greater than 0"));
        }
        // The full address check is the mail sender's, at start; this catches the obvious.
        if !self.from.contains('@') {
            return Err(ConfigError::new("mail.from", "must be an e-mail address"));
        }
        for (key, ms) in [
            ("mail.poll_interval_ms", self.poll_interval_ms),
            ("mail.retry_initial_ms", self.retry_initial_ms),
            ("mail.timeout_ms", self.timeout_ms),
        ] {
            if ms == 0 {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        if self.retry_max_ms < self.retry_initial_ms {
            return Err(ConfigError::new(
                "mail.retry_max_ms",
                "must be at least mail.retry_initial_ms",
            ));
        }
        Ok(())
    }
}

/// The cache replicas share.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// `redis://…`; in-process when absent. A secret, as it may hold a password.
    pub redis_url: Option<SecretString>,
}

impl Validate for CacheConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        match &self.redis_url {
            Some(url)
                if !(url.expose_secret().starts_with("redis://")
                    || url.expose_secret().starts_with("rediss://")) =>
            {
                Err(ConfigError::new(
                    "cache.redis_url",
                    "must start with redis:// or rediss://",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Other services this one calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamsConfig {
    /// The population service, e.g. `http://population:50061`.
    pub population: String,
    /// The inventory service.
    pub inventory: String,
    /// The printing service (the gateway's).
    pub printing: String,
    /// The IKD service.
    pub ikd: String,
    /// TLS to them (mTLS with a service certificate); plaintext when absent.
    pub tls: Option<UpstreamTlsConfig>,
}

impl Default for UpstreamsConfig {
    fn default() -> Self {
        Self {
            population: "http://127.0.0.1:50061".to_owned(),
            inventory: "http://127.0.0.1:50062".to_owned(),
            printing: "http://127.0.0.1:50063".to_owned(),
            ikd: "http://127.0.0.1:50064".to_owned(),
            tls: None,
        }
    }
}

impl Validate for UpstreamsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, url) in [
            ("upstreams.population", &self.population),
            ("upstreams.inventory", &self.inventory),
            ("upstreams.printing", &self.printing),
            ("upstreams.ikd", &self.ikd),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || http::Uri::try_from(url.as_str()).is_err()
            {
                return Err(ConfigError::new(key, "must be an http:// or https:// URL"));
            }
            if self.tls.is_some() && !url.starts_with("https://") {
                return Err(ConfigError::new(
                    key,
                    "must be an https:// URL when upstreams.tls is set",
                ));
            }
        }
        Ok(())
    }
}

/// The gateway's audit chain: its keys, kept outside the database, and its name.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The HMAC key of residents' references in audit rows, at least 64 hex
    /// digits (`ADMINDUK_AUDIT__HASH_KEY`). Required by the gateway.
    pub hash_key: Option<SecretString>,
    /// The Ed25519 seed that signs the chain's head, 64 hex digits
    /// (`ADMINDUK_AUDIT__SIGNING_KEY`). Required by the gateway.
    pub signing_key: Option<SecretString>,
    /// The chain this gateway appends to (replicas may share one).
    pub chain: String,
    /// How often the chain's head is signed, in milliseconds.
    pub sign_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            hash_key: None,
            signing_key: None,
            chain: "gateway".to_owned(),
            sign_interval_ms: 60_000,
        }
    }
}

impl Validate for AuditConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let hex = |value: &SecretString, min: usize, max: usize| {
            let text = value.expose_secret().trim();
            (min..=max).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
        };
        if self.hash_key.as_ref().is_some_and(|k| !hex(k, 64, 256)) {
            return Err(ConfigError::new("audit.hash_key", "must be 64 to 256 hex digits"));
        }
        if self.signing_key.as_ref().is_some_and(|k| !hex(k, 64, 64)) {
            return Err(ConfigError::new(
                "audit.signing_key",
                "must be 64 hex digits (an Ed25519 seed)",
            ));
        }
        if !crate::principal::is_identifier(&self.chain) {
            return Err(ConfigError::new(
                "audit.chain",
                "must be 1 to 32 letters, digits or hyphens",
            ));
        }
        if self.sign_interval_ms < 1_000 {
            return Err(ConfigError::new(
                "audit.sign_interval_ms",
                "must be at least 1000",
            ));
        }
        Ok(())
    }
}

/// The admin port: metrics, health and readiness in plaintext (see
/// [`crate::admin`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where it listens (`ADMINDUK_ADMIN__LISTEN=0.0.0.0:9464`); off when not set.
    pub listen: Option<SocketAddr>,
}

/// The configuration of one service run by `adminduk serve`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// The gRPC server.
    pub server: ServerConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// The shared cache.
    pub cache: CacheConfig,
    /// Services this one calls.
    pub upstreams: UpstreamsConfig,
    /// Mail to residents (IKD).
    pub mail: MailConfig,
    /// The audit chain (the gateway).
    pub audit: AuditConfig,
    /// The admin port.
    pub admin: AdminConfig,
}

impl Validate for ServiceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.database.validate()?;
        self.telemetry.validate()?;
        self.cache.validate()?;
        self.upstreams.validate()?;
        self.mail.validate()?;
        self.audit.validate()?;
        if self.admin.listen.is_some_and(|admin| admin == self.server.listen) {
            return Err(ConfigError::new("admin.listen", "must differ from server.listen"));
        }
        Ok(())
    }
}

#[cfg(test)]
// `figment::Jail` closures return `figment::Error`, which is large; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(ServiceConfig::default().validate().is_ok());
    }

    #[test]
    fn grpc_web_origins_are_origins_and_keys_are_hex() {
        let web = |origins: &[&str]| GrpcWebConfig {
            allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
        };
        assert!(web(&["*"]).validate().is_ok());
        assert!(
            web(&["https://stok.example.go.id", "http://localhost:5173"])
                .validate()
                .is_ok()
        );
        for bad in [
            &[][..],
            &["*", "https://a.example"],
            &["stok.example"],
            &["https://a.example/page"],
            &["https://a.example/"],
        ] {
            assert!(web(bad).validate().is_err(), "{bad:?}");
        }
        let audit = |hash: &str, signing: &str| AuditConfig {
            hash_key: Some(hash.to_owned().into()),
            signing_key: Some(signing.to_owned().into()),
            ..AuditConfig::default()
        };
        assert!(audit(&"ab".repeat(32), &"cd".repeat(32)).validate().is_ok());
        assert_eq!(
            audit("xyz", &"cd".repeat(32)).validate().map_err(|e| e.key),
            Err("audit.hash_key".to_owned())
        );
        assert_eq!(
            audit(&"ab".repeat(32), &"cd".repeat(33))
                .validate()
                .map_err(|e| e.key),
            Err("audit.signing_key".to_owned())
        );
    }

    #[test]
    fn file_values_override_defaults_and_bad_values_name_their_key() {
        // In a jail: the environment is shared by tests running in parallel.
        figment::Jail::expect_with(|jail| {
            let path = jail.directory().join("adminduk.toml");
            let write = |text: &str| std::fs::write(&path, text).map_err(|e| e.to_string());
            write("[server]\nlisten = \"127.0.0.1:7000\"\nmax_message_bytes = 8192\n")?;
            let config: ServiceConfig = load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(config.server.listen.port(), 7000);
            assert_eq!(config.server.max_message_bytes, 8192);
            assert_eq!(
                config.server.concurrency_limit,
                ServerConfig::default().concurrency_limit
            );

            jail.set_env("ADMINDUK_SERVER__MAX_MESSAGE_BYTES", "4096");
            let config: ServiceConfig = load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(
                config.server.max_message_bytes, 4096,
                "the environment overrides the file"
            );

            for (text, key) in [
                ("[server]\nlisten = \"not an address\"\n", "server.listen"),
                ("[server]\nmax_message_bytes = 1\n", "server.max_message_bytes"),
                ("[database]\nurl = \"mysql://x\"\n", "database.url"),
                ("[telemetry]\nlog_format = \"xml\"\n", "telemetry.log_format"),
            ] {
                jail.clear_env();
                write(text)?;
                let err = load::<ServiceConfig>(Some(&path)).expect_err(key);
                assert_eq!(err.key, key, "{err}");
            }
            write("[serverr]\n")?;
            let err = load::<ServiceConfig>(Some(&path)).expect_err("unknown section");
            assert!(err.to_string().contains("serverr"), "{err}");
            // No file turns off a service's check of its clients' chains.
            write("[server.tls]\ncert = \"c\"\nkey = \"k\"\ncheck_client_chain_in_service = true\n")?;
            let err = load::<ServiceConfig>(Some(&path)).expect_err("not a setting");
            assert!(err.to_string().contains("check_client_chain_in_service"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn only_sectioned_environment_keys_are_configuration() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ADMINDUK_REQUIRE_SERVICES", "1");
            jail.set_env("ADMINDUK_SERVER__LISTEN", "127.0.0.1:7001");
            jail.set_env("DATABASE_URL", "postgres://db/adminduk");
            let config: ServiceConfig = load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.server.listen.port(), 7001);
            assert_eq!(config.database.url.expose_secret(), "postgres://db/adminduk");
            jail.set_env("ADMINDUK_SERVER__CONCURRENCY_LIMIT", "0");
            let err = load::<ServiceConfig>(None).expect_err("zero limit");
            assert_eq!(err.key, "server.concurrency_limit");
            Ok(())
        });
    }

    #[test]
    fn a_caller_s_defaults_sit_under_the_file_and_the_environment() {
        figment::Jail::expect_with(|jail| {
            let defaults = [
                ("server.listen", "127.0.0.1:50061"),
                ("database.url", "sqlite:population.db"),
            ];
            let config: ServiceConfig = load_with_defaults(None, &defaults).map_err(|e| e.to_string())?;
            assert_eq!(config.server.listen.port(), 50061);
            assert_eq!(config.database.url.expose_secret(), "sqlite:population.db");
            assert_eq!(
                config.server.max_message_bytes,
                ServerConfig::default().max_message_bytes
            );
            let path = jail.directory().join("adminduk.toml");
            std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:7002\"\n").map_err(|e| e.to_string())?;
            let config: ServiceConfig =
                load_with_defaults(Some(&path), &defaults).map_err(|e| e.to_string())?;
            assert_eq!(config.server.listen.port(), 7002, "the file overrides");
            jail.set_env("ADMINDUK_SERVER__LISTEN", "127.0.0.1:7003");
            jail.set_env("DATABASE_URL", "postgres://db/adminduk");
            let config: ServiceConfig =
                load_with_defaults(Some(&path), &defaults).map_err(|e| e.to_string())?;
            assert_eq!(config.server.listen.port(), 7003, "the environment overrides");
            assert_eq!(config.database.url.expose_secret(), "postgres://db/adminduk");
            Ok(())
        });
    }

    #[test]
    fn mail_settings_are_layered_and_checked() {
        figment::Jail::expect_with(|jail| {
            let path = jail.directory().join("adminduk.toml");
            std::fs::write(
                &path,
                "[mail]\nsmtp_host = \"relay\"\nsmtp_port = 2525\nfrom = \"ikd@bekasi.example\"\n",
            )
            .map_err(|e| e.to_string())?;
            let config: ServiceConfig = load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(config.mail.smtp_host.as_deref(), Some("relay"));
            assert_eq!(config.mail.smtp_port, 2525);
            jail.set_env("ADMINDUK_MAIL__SMTP_PORT", "2626");
            let config: ServiceConfig = load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(config.mail.smtp_port, 2626);
            jail.set_env("ADMINDUK_MAIL__FROM", "nobody");
            let err = load::<ServiceConfig>(Some(&path)).expect_err("a sender without @");
            assert_eq!(err.key, "mail.from");
            jail.clear_env();
            jail.set_env("ADMINDUK_TELEMETRY__NIK_REF_KEY", "short");
            let err = load::<ServiceConfig>(None).expect_err("a short key");
            assert_eq!(err.key, "telemetry.nik_ref_key");
            Ok(())
        });
    }

    #[test]
    fn mail_retries_back_off_to_a_cap() {
        let mail = MailConfig {
            retry_initial_ms: 1_000,
            retry_max_ms: 5_000,
            ..MailConfig::default()
        };
        let waits: Vec<u64> = (1..=5).map(|n| mail.retry_after(n).as_millis() as u64).collect();
        assert_eq!(waits, [1_000, 2_000, 4_000, 5_000, 5_000]);
        assert_eq!(mail.retry_after(200).as_millis(), 5_000);
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let err = load::<ServiceConfig>(Some(Path::new("/nonexistent/adminduk.toml"))).expect_err("missing");
        assert_eq!(err.key, "config file");
    }
}
