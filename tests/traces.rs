//! One application through the gateway is one trace: the spans an OTLP
//! receiver in this process gets form a tree from the gateway's server span
//! to the inventory's and on to the group commit that made the grant
//! durable, with the semantic conventions' attributes and no NIK.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use adminduk::mesh::MeshOptions;
use adminduk_kit::config::TelemetryConfig;
use adminduk_proto::printing::v1 as printing;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use printing::printing_service_client::PrintingServiceClient;

/// An OTLP/gRPC trace receiver that keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.spans.lock().expect("spans");
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                kept.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A span's attributes as text (numbers written out).
fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(n) => n.to_string(),
                Value::BoolValue(b) => b.to_string(),
                Value::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_application_through_the_gateway_is_one_trace_across_the_services_down_to_its_group_commit() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let otlp = listener.local_addr().expect("addr");
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(receiver.clone()))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    let receiving = tokio::spawn(server);

    let guard = adminduk_kit::telemetry::init(
        "adminduk",
        &TelemetryConfig {
            otlp_endpoint: Some(format!("http://{otlp}")),
            log_filter: "info".to_owned(),
            ..TelemetryConfig::default()
        },
    )
    .expect("telemetry");

    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = adminduk::mesh::start(MeshOptions::on_free_ports(dir.path(), 300))
        .await
        .expect("the mesh starts");
    let niks = common::residents(&mesh, 2).await;
    let (nik, applicant) = (&niks[0], &niks[1]);
    let day = adminduk_kit::time::today_wib() + chrono::Days::new(3);
    common::office_reserve(common::office(&mesh), nik, "3275-KEC-02", day, "trace-1")
        .await
        .expect("a grant");
    let refused = common::office_reserve(common::office(&mesh), nik, "3275-KEC-02", day, "trace-2")
        .await
        .expect_err("one hold per applicant");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);
    // And a card applied for: the gateway calls printing, which calls population and the inventory.
    PrintingServiceClient::new(common::office(&mesh))
        .submit_print_job(common::at_counter(printing::SubmitPrintJobRequest {
            nik: applicant.clone(),
            reason: printing::PrintReason::FirstCard as i32,
            service_point_code: "3275-KEC-01".into(),
            date: Some(adminduk_proto::convert::date(day)),
            has_active_ikd: false,
        }))
        .await
        .expect("a print job");
    mesh.shutdown().await.expect("a clean stop");
    // Dropping the guard flushes the batch exporter (a blocking call).
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .expect("flushed");

    let spans = receiver.spans.lock().expect("spans").clone();
    receiving.abort();
    // The office's Reserve calls at the gateway, by their answer's code, and
    // the inventory's span under each.
    let at_gateway = |code: &str| {
        spans
            .iter()
            .find(|span| {
                let a = attributes(span);
                a.get("rpc.method").map(String::as_str) == Some("Reserve")
                    && a.get("adminduk.server").map(String::as_str) == Some("gateway")
                    && a.get("rpc.grpc.status_code").map(String::as_str) == Some(code)
            })
            .unwrap_or_else(|| {
                panic!(
                    "the gateway's Reserve answered {code} among {} spans",
                    spans.len()
                )
            })
    };
    let under = |parent: &Span| {
        spans
            .iter()
            .find(|span| {
                span.parent_span_id == parent.span_id
                    && attributes(span).get("adminduk.server").map(String::as_str) == Some("inventory")
            })
            .expect("the inventory's span under the gateway's")
    };
    let gateway = at_gateway("0");
    let backend = under(gateway);
    // The refusal names its reason on both spans, and the inventory's spans
    // name the point: the office's own (its certificate's), whatever it asked.
    let refusal = at_gateway("6");
    for span in [refusal, under(refusal)] {
        let a = attributes(span);
        assert_eq!(
            a.get("adminduk.reason").map(String::as_str),
            Some("APPLICANT_HAS_HOLD"),
            "{a:?}"
        );
    }
    assert_eq!(
        attributes(under(refusal))
            .get("adminduk.service_point")
            .map(String::as_str),
        Some("3275-KEC-01")
    );
    assert_eq!(
        attributes(backend)
            .get("adminduk.service_point")
            .map(String::as_str),
        Some("3275-KEC-01")
    );
    assert_eq!(backend.trace_id, gateway.trace_id, "one trace");
    assert_eq!(
        backend.parent_span_id, gateway.span_id,
        "the inventory's span is the gateway's child"
    );
    for span in [gateway, backend] {
        let a = attributes(span);
        assert_eq!(a.get("rpc.system").map(String::as_str), Some("grpc"));
        assert_eq!(
            a.get("rpc.service").map(String::as_str),
            Some("adminduk.inventory.v1.InventoryService")
        );
        assert_eq!(
            a.get("rpc.grpc.status_code").map(String::as_str),
            Some("0"),
            "recorded"
        );
        assert!(a.contains_key("server.address"), "{a:?}");
        assert_eq!(span.name, "adminduk.inventory.v1.InventoryService/Reserve");
    }
    let commit = spans
        .iter()
        .find(|span| span.name == "inventory.group_commit" && span.trace_id == backend.trace_id)
        .expect("the grant's group commit in the same trace");
    let a = attributes(commit);
    assert!(
        commit.parent_span_id == backend.span_id || commit.links.iter().any(|l| l.span_id == backend.span_id),
        "the commit hangs under (or links to) the inventory's span"
    );
    assert_eq!(a.get("db.system").map(String::as_str), Some("sqlite"));
    // The commit's SQL statements are in the trace too, as events of its span.
    let statements: Vec<_> = commit
        .events
        .iter()
        .filter(|event| {
            event.attributes.iter().any(|kv| {
                kv.key == "target"
                    && kv.value.as_ref().and_then(|v| v.value.as_ref())
                        == Some(&Value::StringValue("sqlx::query".to_owned()))
            })
        })
        .collect();
    assert!(!statements.is_empty(), "the commit's statements");
    assert!(
        a.get("adminduk.batch_size").and_then(|n| n.parse::<u64>().ok()) >= Some(1),
        "{a:?}"
    );

    // Gateway → printing → population and inventory: one trace, each call the child of its caller's span.
    let named = |server: &str, method: &str| {
        spans
            .iter()
            .filter(|span| {
                let a = attributes(span);
                a.get("rpc.method").map(String::as_str) == Some(method)
                    && a.get("adminduk.server").map(String::as_str) == Some(server)
            })
            .collect::<Vec<_>>()
    };
    let submitted = named("gateway", "SubmitPrintJob");
    let [at_gateway] = submitted.as_slice() else {
        panic!("one SubmitPrintJob at the gateway, not {}", submitted.len());
    };
    let at_printing = named("printing", "SubmitPrintJob")
        .into_iter()
        .find(|span| span.parent_span_id == at_gateway.span_id)
        .expect("printing's span under the gateway's");
    assert_eq!(at_printing.trace_id, at_gateway.trace_id);
    for (server, method) in [("population", "GetResident"), ("inventory", "Reserve")] {
        let next = named(server, method)
            .into_iter()
            .find(|span| span.parent_span_id == at_printing.span_id)
            .unwrap_or_else(|| panic!("{server}'s {method} under printing's span"));
        assert_eq!(next.trace_id, at_gateway.trace_id, "{server} in the same trace");
        assert_eq!(
            attributes(next).get("rpc.grpc.status_code").map(String::as_str),
            Some("0")
        );
    }

    // No span anywhere carries the NIK.
    for span in &spans {
        let events = span.events.iter().flat_map(|event| &event.attributes);
        for kv in span.attributes.iter().chain(events) {
            if let Some(Value::StringValue(value)) = kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                assert!(
                    !value.contains(nik.as_str()) && !value.contains(applicant.as_str()),
                    "a NIK in {} ({})",
                    span.name,
                    kv.key
                );
            }
        }
        for value in attributes(span).values() {
            assert!(
                !value.contains(nik.as_str()) && !value.contains(applicant.as_str()),
                "a NIK in {}",
                span.name
            );
        }
        assert!(!span.name.contains(nik.as_str()) && !span.name.contains(applicant.as_str()));
    }
}
