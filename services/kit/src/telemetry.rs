//! Logs and traces, set up in one place: `tracing` with pretty or JSON
//! output, OpenTelemetry export over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set (the other standard `OTEL_*` variables apply), and W3C trace
//! context carried in gRPC metadata across every hop.

use std::io::IsTerminal as _;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use secrecy::ExposeSecret as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{LogFormat, TelemetryConfig};

/// Flushes and shuts down trace export when dropped; keep it alive in `main`.
#[derive(Debug)]
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("adminduk: trace export did not flush: {err}");
        }
    }
}

/// Whether log lines may carry ANSI colours: only on a terminal, and not when
/// `NO_COLOR` is set (<https://no-color.org>). A file or a pipe gets plain text.
pub fn colour_logs(output_is_terminal: bool) -> bool {
    output_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber and propagator, and the key of the NIK
/// references logs carry (see [`crate::mask::log_nik`]). Call once, inside
/// the Tokio runtime (the OTLP exporter's channel lives on it).
pub fn init(service_name: &'static str, config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(key) = &config.nik_ref_key {
        crate::mask::set_reference_key(key.expose_secret().as_bytes());
    }

    // RUST_LOG wins when it is a valid filter.
    let directives = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|d| !d.is_empty() && EnvFilter::try_new(d).is_ok())
        .unwrap_or_else(|| config.log_filter.clone());
    let filter = EnvFilter::try_new(&directives).map_err(|err| TelemetryError(err.to_string()))?;
    // Traces also carry each database statement (sqlx's debug event: the SQL
    // with its parameters bound, never their values) on the span that ran it.
    let traced = EnvFilter::try_new(format!("{directives},sqlx::query=debug"))
        .map_err(|err| TelemetryError(err.to_string()))?;
    // The fmt layer writes to stdout; colour codes would litter a file or a pipe.
    let ansi = colour_logs(std::io::stdout().is_terminal());
    let fmt = match config.log_format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .boxed(),
    };

    let endpoint = config
        .otlp_endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok());
    let provider = endpoint.map(|e| tracer_provider(service_name, e)).transpose()?;
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service_name))
            .with_filter(traced)
    });

    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .map_err(|err| TelemetryError(err.to_string()))?;
    Ok(TelemetryGuard { provider })
}

/// The tracer provider exporting spans over OTLP to `endpoint`.
fn tracer_provider(
    service_name: &'static str,
    endpoint: String,
) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|err| TelemetryError(err.to_string()))?;
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by the
    // builder; the process's own name stands in only when none is given.
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some_and(|name| !name.is_empty());
    let resource = if named {
        opentelemetry_sdk::Resource::builder().build()
    } else {
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service_name)
            .build()
    };
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("telemetry setup failed: {0}")]
pub struct TelemetryError(String);

/// Writes W3C `traceparent`/`tracestate` into gRPC metadata.
struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Reads W3C trace context from HTTP headers (gRPC metadata is carried in them).
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Injects the current span's trace context into outgoing metadata.
pub fn inject_context(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(metadata))
    });
}

/// Extracts a remote parent context from incoming headers.
pub fn extract_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// A client interceptor that carries the caller's trace into every call.
pub fn propagate_trace(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    inject_context(request.metadata_mut());
    Ok(request)
}

/// The current trace's id (32 hex digits), for audit rows; `None` outside a sampled trace.
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    let cx = tracing::Span::current().context();
    let id = cx.span().span_context().trace_id();
    (id != opentelemetry::trace::TraceId::INVALID).then(|| id.to_string())
}

/// The span for one incoming gRPC request, parented on the caller's trace.
/// It names the method only: request bodies (which may hold NIKs) are never recorded.
/// `methods` are the server's own: a path it does not serve is named
/// `unknown`, so nothing a client chose ends up in a span. The server's
/// address is recorded by its observation layer (`crate::observe`).
pub fn request_span<B>(request: &http::Request<B>, methods: &crate::observe::Methods) -> tracing::Span {
    let path = request.uri().path();
    let (service, method) = methods.get(path).unwrap_or(("unknown", "unknown"));
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = methods.span_name(path),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        server.address = tracing::field::Empty,
        server.port = tracing::field::Empty,
        // Which server of the mesh answers (five share a process in `adminduk up`).
        adminduk.server = tracing::field::Empty,
        // The domain's own: the ErrorInfo reason of a refusal, and the service
        // point a reservation is about (recorded by the inventory).
        adminduk.reason = tracing::field::Empty,
        adminduk.service_point = tracing::field::Empty,
    );
    // A request without trace context starts a new trace; that is not an error.
    let _ = span.set_parent(extract_context(request.headers()));
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_round_trips_through_metadata() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let mut headers = http::HeaderMap::new();
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        headers.insert("traceparent", http::HeaderValue::from_static(parent));
        let cx = extract_context(&headers);
        let mut metadata = tonic::metadata::MetadataMap::new();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut MetadataInjector(&mut metadata))
        });
        assert_eq!(
            metadata.get("traceparent").and_then(|v| v.to_str().ok()),
            Some(parent)
        );
    }
}
