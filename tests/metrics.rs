//! The admin port of the whole mesh, scraped as Prometheus would: the names
//! and labels of the metrics, the counters a grant and a refusal move, the
//! health service the cluster's probes ask, and no NIK in any label.

use std::collections::HashMap;
use std::net::SocketAddr;

mod common;

use adminduk::mesh::MeshOptions;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A plain HTTP/1.1 GET: the status and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8(raw).expect("text");
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, dechunk(&body))
}

/// The body of a chunked answer, or the body as it is.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_owned();
        };
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_owned();
        };
        if size == 0 {
            return out;
        }
        let Some(chunk) = after.get(..size) else {
            return body.to_owned();
        };
        out.push_str(chunk);
        rest = after.get(size + 2..).unwrap_or_default();
    }
}

/// Every sample of the scrape: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_port_serves_metrics_health_and_readiness_and_a_grant_moves_the_counters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = adminduk::mesh::start(MeshOptions::on_free_ports(dir.path(), 300))
        .await
        .expect("the mesh starts");
    let admin = mesh.admin.as_ref().expect("an admin port").local_addr();

    assert_eq!(get(admin, "/healthz").await.0, 200);
    let (status, body) = get(admin, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    // Kubernetes' grpc probes: plaintext HTTP/2 on the same port.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{admin}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("h2c");
    let mut health = HealthClient::new(channel);
    for service in ["", "liveness"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .expect("health answers")
            .into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
    }

    let before = samples(&get(admin, "/metrics").await.1);
    for service in ["population", "inventory", "printing", "ikd", "gateway"] {
        assert_eq!(
            value(&before, &format!("adminduk_ready{{service=\"{service}\"}}")),
            1.0,
            "{service} is ready"
        );
        assert_eq!(
            value(
                &before,
                &format!(
                    "adminduk_build_info{{service=\"{service}\",version=\"{}\"}}",
                    env!("CARGO_PKG_VERSION")
                )
            ),
            1.0
        );
    }
    assert!(
        value(
            &before,
            r#"adminduk_tls_certificate_expiry_timestamp_seconds{service="gateway",certificate="server"}"#
        ) > chrono::Utc::now().timestamp() as f64,
        "the gateway's certificate expiry is known and ahead"
    );

    // An office books a blank through the gateway, then asks again for the same resident.
    let office = common::office(&mesh);
    let nik = common::residents(&mesh, 1).await.remove(0);
    let day = adminduk_kit::time::today_wib() + chrono::Days::new(3);
    let point = "3275-KEC-01";
    common::office_reserve(office.clone(), &nik, point, day, "metrics-1")
        .await
        .expect("a grant");
    let refused = common::office_reserve(office.clone(), &nik, point, day, "metrics-2")
        .await
        .expect_err("one hold per applicant");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);

    // A made-up method, with a NIK for its name: refused, and counted as `unknown`.
    let made_up = format!("/adminduk.inventory.v1.InventoryService/{nik}");
    let mut raw = tonic::client::Grpc::new(office.clone());
    raw.ready().await.expect("ready");
    let answer: Result<tonic::Response<()>, tonic::Status> = raw
        .unary(
            tonic::Request::new(()),
            made_up.parse().expect("a path"),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await;
    assert_eq!(
        answer.expect_err("no such method").code(),
        tonic::Code::Unimplemented
    );

    let text = get(admin, "/metrics").await.1;
    let after = samples(&text);
    assert_eq!(
        value(
            &after,
            r#"adminduk_rpc_server_requests_total{service="gateway",rpc_service="unknown",rpc_method="unknown",code="UNIMPLEMENTED"}"#
        ) - value(
            &before,
            r#"adminduk_rpc_server_requests_total{service="gateway",rpc_service="unknown",rpc_method="unknown",code="UNIMPLEMENTED"}"#
        ),
        1.0,
        "the made-up method is counted under `unknown`"
    );
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(
        moved(&format!(
            r#"adminduk_inventory_grants_total{{service="inventory",service_point="{point}"}}"#
        )),
        1.0
    );
    assert_eq!(
        moved(r#"adminduk_inventory_refusals_total{service="inventory",reason="APPLICANT_HAS_HOLD"}"#),
        1.0
    );
    for (service, code) in [
        ("inventory", "OK"),
        ("gateway", "OK"),
        ("inventory", "ALREADY_EXISTS"),
        ("gateway", "ALREADY_EXISTS"),
    ] {
        assert_eq!(
            moved(&format!(
                r#"adminduk_rpc_server_requests_total{{service="{service}",rpc_service="adminduk.inventory.v1.InventoryService",rpc_method="Reserve",code="{code}"}}"#
            )),
            1.0,
            "{service} {code}"
        );
    }
    assert!(moved(r#"adminduk_inventory_group_commit_batch_size_count{service="inventory"}"#) >= 1.0);
    assert!(moved(r#"adminduk_inventory_group_commit_duration_seconds_count{service="inventory"}"#) >= 1.0);
    let (left, _) = mesh
        .inventory
        .service()
        .engine()
        .availability(point, day)
        .expect("the point's day");
    assert_eq!(
        value(
            &after,
            &format!(
                r#"adminduk_inventory_quota_remaining{{service="inventory",service_point="{point}",date="{day}"}}"#
            )
        ),
        left as f64,
        "the gauge says what the engine has left"
    );

    // No label carries a NIK (or any run of 16 digits).
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let labels = line.rsplit_once(' ').map_or(line, |(series, _)| series);
        let digits = labels
            .split(|c: char| !c.is_ascii_digit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(digits < 16, "a 16-digit run in the labels of {line}");
    }
    assert!(!text.contains(&nik));

    mesh.shutdown().await.expect("a clean stop");
}
