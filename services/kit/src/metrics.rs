//! The mesh's metrics, in one registry per process, encoded as Prometheus
//! text on the admin port (see [`crate::admin`]). Every series names the
//! service it is about (`service`), so the five services of `adminduk up`
//! share one process and one scrape.
//!
//! No label carries a NIK, a name or an account id: the labels are the
//! contract's method names, gRPC codes, service points (a few hundred per
//! regency), dates, refusal reasons and fixed kinds. A method a server does
//! not serve is counted as `unknown`, so a client cannot grow the registry
//! by calling made-up paths.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A series about one service and nothing more.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    /// `population`, `inventory`, `printing`, `ikd` or `gateway`.
    pub service: &'static str,
}

/// A gRPC method's answers.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// The server answering.
    pub service: &'static str,
    /// The gRPC service, `adminduk.inventory.v1.InventoryService` (`unknown`
    /// for a path the server does not serve).
    pub rpc_service: &'static str,
    /// The method, `Reserve` (or `unknown`).
    pub rpc_method: &'static str,
    /// The gRPC code's name, `OK` or `FAILED_PRECONDITION`.
    pub code: &'static str,
}

/// The binary's version.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    /// The server.
    pub service: &'static str,
    /// The package version.
    pub version: &'static str,
}

/// A certificate a server presents.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// The server presenting it.
    pub service: &'static str,
    /// `server` (its own port) or `upstream_client` (its calls to others).
    pub certificate: &'static str,
}

/// A service point's quota on one appointment day.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    /// Always `inventory`.
    pub service: &'static str,
    /// The service point, `3275-KEC-01`.
    pub service_point: String,
    /// The appointment day, `2026-12-03`.
    pub date: String,
}

/// A service point.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PointLabels {
    /// The server counting.
    pub service: &'static str,
    /// The service point.
    pub service_point: String,
}

/// A refusal's reason: the contract's `ErrorReason` name, or `CONTENDED`,
/// `UNKNOWN_POINT`, `IDEMPOTENCY_KEY_REUSED` or `UNAVAILABLE` for the
/// refusals that carry none.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The server refusing.
    pub service: &'static str,
    /// `DATE_FULL`, `APPLICANT_HAS_HOLD`, ...
    pub reason: &'static str,
}

/// A print job's state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// Always `printing`.
    pub service: &'static str,
    /// `QUEUED`, `LEASED`, `PRINTED`, `IN_TRANSIT`, `AT_SERVICE_POINT`, `DELIVERED`, `CANCELLED`.
    pub state: &'static str,
}

/// A stage of an IKD activation.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// Always `ikd`.
    pub service: &'static str,
    /// `started`, `completed` or `revoked`.
    pub stage: &'static str,
}

/// The kind of caller a limit refused.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrincipalKindLabels {
    /// Always `gateway`.
    pub service: &'static str,
    /// `resident`, `office`, `agency`, `admin` or `anonymous`.
    pub principal_kind: &'static str,
}

/// What became of an audit row.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Always `gateway`.
    pub service: &'static str,
    /// `written` or `dropped`.
    pub outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A family of histograms, each made by `make`.
fn histograms<L: Clone + std::hash::Hash + Eq>(make: fn() -> Histogram) -> HistogramFamily<L> {
    Family::new_with_constructor(make)
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Answers by method and code.
    pub rpc_requests: Family<RpcLabels, Counter>,
    /// How long answers took, by method and code.
    pub rpc_duration: HistogramFamily<RpcLabels>,
    /// 1, labelled with the version.
    pub build_info: Family<VersionLabels, Gauge>,
    /// When each certificate expires (Unix seconds).
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
    /// 1 when the service's readiness checks pass, else 0.
    pub ready: Family<ServiceLabel, Gauge>,
    /// Blanks left to grant per point and day.
    pub quota_remaining: Family<QuotaLabels, Gauge>,
    /// Holds granted per point.
    pub grants: Family<PointLabels, Counter>,
    /// Reservations refused, by reason.
    pub refusals: Family<ReasonLabels, Counter>,
    /// Holds that lapsed.
    pub expiries: Family<ServiceLabel, Counter>,
    /// Decisions made durable per group commit.
    pub group_commit_batch: HistogramFamily<ServiceLabel>,
    /// How long a group commit took.
    pub group_commit_duration: HistogramFamily<ServiceLabel>,
    /// Print jobs (and their cards) by state.
    pub print_jobs: Family<StateLabels, Gauge>,
    /// Jobs waiting to print.
    pub print_backlog: Family<ServiceLabel, Gauge>,
    /// IKD activations by stage.
    pub ikd_activations: Family<StageLabels, Counter>,
    /// Residents sent to IKD first.
    pub ikd_deflections: Family<ServiceLabel, Counter>,
    /// Requests refused as a broker's.
    pub broker_refusals: Family<ServiceLabel, Counter>,
    /// Accounts flagged as brokers.
    pub broker_flags: Family<ServiceLabel, Counter>,
    /// Requests refused by a rate limit, by kind of caller.
    pub rate_limit_refusals: Family<PrincipalKindLabels, Counter>,
    /// Audit rows written or dropped.
    pub audit_rows: Family<OutcomeLabels, Counter>,
    /// 1 when the last check of the audit chain passed, 0 when it found a break.
    pub audit_chain_ok: Family<ServiceLabel, Gauge>,
    /// When the audit chain was last checked (Unix seconds).
    pub audit_chain_checked: Family<ServiceLabel, Gauge>,
}

/// Latency buckets: 0.5 ms to about 16 s, doubling.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
}

/// Batch-size buckets: 1 to 4096, doubling.
fn batch_sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// Makes each metric, registers a handle on it, and returns the `Metrics`
/// holding them and the registry.
macro_rules! registered {
    ($($field:ident: $make:expr, $name:literal, $help:literal;)*) => {{
        let mut registry = Registry::default();
        $(
            let $field = $make;
            registry.register($name, $help, $field.clone());
        )*
        Self { registry, $($field),* }
    }};
}

impl Metrics {
    fn new() -> Self {
        // Each metric once: its field, how it is made, its name and help.
        // Counters are registered without `_total`: the encoder adds it.
        registered! {
            rpc_requests: Family::default(),
                "adminduk_rpc_server_requests", "gRPC answers by method and code";
            rpc_duration: histograms(latency),
                "adminduk_rpc_server_duration_seconds", "Time to answer, by method and code";
            build_info: Family::default(),
                "adminduk_build_info", "The running version (always 1)";
            certificate_expiry: Family::default(),
                "adminduk_tls_certificate_expiry_timestamp_seconds", "When each certificate in use expires";
            ready: Family::default(),
                "adminduk_ready", "1 when the service's readiness checks pass";
            quota_remaining: Family::default(),
                "adminduk_inventory_quota_remaining", "Blanks left to grant per service point and day";
            grants: Family::default(),
                "adminduk_inventory_grants", "Holds granted";
            refusals: Family::default(),
                "adminduk_inventory_refusals", "Reservations refused, by reason";
            expiries: Family::default(),
                "adminduk_inventory_expiries", "Holds that lapsed unused";
            group_commit_batch: histograms(batch_sizes),
                "adminduk_inventory_group_commit_batch_size", "Decisions made durable in one commit";
            group_commit_duration: histograms(latency),
                "adminduk_inventory_group_commit_duration_seconds", "Time of one group commit";
            print_jobs: Family::default(),
                "adminduk_printing_jobs", "Print jobs and their cards by state";
            print_backlog: Family::default(),
                "adminduk_printing_backlog", "Jobs waiting to print";
            ikd_activations: Family::default(),
                "adminduk_ikd_activations", "IKD activations by stage";
            ikd_deflections: Family::default(),
                "adminduk_gateway_ikd_deflections", "Residents sent to activate IKD first";
            broker_refusals: Family::default(),
                "adminduk_gateway_broker_refusals", "Requests refused as a broker's";
            broker_flags: Family::default(),
                "adminduk_gateway_broker_flags", "Accounts flagged as brokers";
            rate_limit_refusals: Family::default(),
                "adminduk_gateway_rate_limit_refusals", "Requests refused by a rate limit";
            audit_rows: Family::default(),
                "adminduk_gateway_audit_rows", "Audit rows written or dropped";
            audit_chain_ok: Family::default(),
                "adminduk_gateway_audit_chain_ok", "1 when the last check of the audit chain passed";
            audit_chain_checked: Family::default(),
                "adminduk_gateway_audit_chain_checked_timestamp_seconds", "When the audit chain was last checked";
        }
    }

    /// The metrics as Prometheus text (OpenMetrics 1.0).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one of a service's counters that has no label but the service.
    pub fn count(family: &Family<ServiceLabel, Counter>, service: &'static str) {
        family.get_or_create(&ServiceLabel { service }).inc();
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The name of a gRPC code as the metrics and the spec spell it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_end_in_total_and_every_series_names_its_service() {
        let metrics = Metrics::new();
        metrics
            .grants
            .get_or_create(&PointLabels {
                service: "inventory",
                service_point: "3275-KEC-01".to_owned(),
            })
            .inc();
        Metrics::count(&metrics.expiries, "inventory");
        metrics
            .group_commit_batch
            .get_or_create(&ServiceLabel { service: "inventory" })
            .observe(3.0);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"adminduk_inventory_grants_total{service="inventory",service_point="3275-KEC-01"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"adminduk_inventory_expiries_total{service="inventory"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"adminduk_inventory_group_commit_batch_size_bucket{le="4.0",service="inventory"} 1"#
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
