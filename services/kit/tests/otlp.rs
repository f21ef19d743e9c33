//! Traces leave over OTLP: a request to a kit server, carrying a W3C
//! `traceparent`, is exported to a collector as a span of the caller's trace,
//! named by its method and nothing else.

use std::time::Duration;

use adminduk_kit::config::{LogFormat, ServerConfig, TelemetryConfig};
use adminduk_kit::server::GrpcServer;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio::sync::mpsc;

/// A collector that hands what it receives to the test.
#[derive(Debug, Clone)]
struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_span_joins_the_callers_trace_in_the_collector() {
    let (tx, mut received) = mpsc::unbounded_channel();
    let collector = GrpcServer::new(ServerConfig::default())
        .add_service(TraceServiceServer::new(Collector(tx)))
        .start()
        .await
        .expect("collector");
    let telemetry = TelemetryConfig {
        log_format: LogFormat::Json,
        log_filter: "info".to_owned(),
        otlp_endpoint: Some(format!("http://{}", collector.local_addr())),
        ..TelemetryConfig::default()
    };
    let guard = adminduk_kit::telemetry::init("adminduk-test", &telemetry).expect("telemetry");

    let server = GrpcServer::new(ServerConfig::default())
        .start()
        .await
        .expect("server");
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.local_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{parent_trace}-00f067aa0ba902b7-01")
            .parse()
            .expect("header"),
    );
    health.check(request).await.expect("health answers");
    server.shutdown().await.expect("shutdown");
    // Dropping the guard flushes the exporter.
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .expect("flush");

    let export = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("the collector hears within 10 s")
        .expect("an export");
    let resource = export
        .resource_spans
        .first()
        .and_then(|r| r.resource.as_ref())
        .expect("a resource");
    let service = resource
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref());
    assert_eq!(service, Some(&Value::StringValue("adminduk-test".to_owned())));
    let spans: Vec<_> = export
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    let span = spans
        .iter()
        .find(|s| s.name == "grpc.health.v1.Health/Check")
        .expect("the request's span");
    let trace_hex: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(trace_hex, parent_trace, "the span continues the caller's trace");
    let method = span
        .attributes
        .iter()
        .find(|kv| kv.key == "rpc.method")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref());
    assert_eq!(method, Some(&Value::StringValue("Check".to_owned())));
    collector.shutdown().await.expect("collector shutdown");
}
