//! The gateway's per-request policy path, on one core: what the door decides
//! for a resident's request before it would forward it (a cached token, the
//! table, the allowance, the edge's view of full dates, the proof, the broker
//! checks, IKD first, the facts written), beside Ed25519 verification alone.
//!
//! `cargo bench --bench policy` (about 30 s; `ADMINDUK_BENCH_QUICK=1` for a
//! short try). The whole mesh runs in this process on its embedded default
//! (SQLite, in-process cache); the decisions are timed on the bench's own
//! thread, one at a time, after a warm-up that caches the token. The
//! residents' allowance is raised for the run (one resident sends every
//! request; at the real 60 a minute nearly all would be RATE_LIMITED). The
//! shared cache is wrapped to count its calls: on Redis each is one round
//! trip (`check_all`, one script, counts once).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use adminduk::mesh::MeshOptions;
use adminduk_gateway::limits::{Allowances, Kind};
use adminduk_kit::cache::{Admission, CacheError, Checked, Checks, MemoryCache, SharedCache};
use adminduk_proto::inventory::v1 as inventory;
use adminduk_proto::population::v1 as population;
use adminduk_proto::printing::v1 as printing;
use prost::Message as _;
use ring::signature::{ED25519, KeyPair as _, UnparsedPublicKey};

/// The in-process cache, counting the calls made to it.
#[derive(Debug, Default)]
struct Counted {
    inner: MemoryCache,
    calls: AtomicU64,
}

impl Counted {
    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

#[tonic::async_trait]
impl SharedCache for Counted {
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        self.tick();
        self.inner.set(key, value, ttl).await
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.tick();
        self.inner.get(key).await
    }
    async fn exists(&self, key: &str) -> Result<bool, CacheError> {
        self.tick();
        self.inner.exists(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.tick();
        self.inner.delete(key).await
    }
    async fn incr_window(&self, key: &str, ttl: Duration) -> Result<u64, CacheError> {
        self.tick();
        self.inner.incr_window(key, ttl).await
    }
    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError> {
        self.tick();
        self.inner.set_if_absent(key, value, ttl).await
    }
    async fn admit(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
    ) -> Result<Option<Admission>, CacheError> {
        self.tick();
        self.inner.admit(key, interval, burst).await
    }
    async fn check_all(&self, checks: &Checks<'_>) -> Result<Checked, CacheError> {
        // One round trip on Redis (one script), however many checks it carries.
        self.tick();
        self.inner.check_all(checks).await
    }
}

fn request(path: &str, message: &[u8], token: &str, proof: Option<&str>) -> http::Request<tonic::body::Body> {
    let mut body = Vec::with_capacity(5 + message.len());
    body.push(0);
    body.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
    body.extend_from_slice(message);
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"));
    if let Some(proof) = proof {
        builder = builder.header(adminduk_kit::proof::PROOF_HEADER, proof);
    }
    builder
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(body),
        )))
        .unwrap_or_default()
}

/// One row: decisions per second on this thread, the latency percentiles, and what the answers were.
struct Row {
    name: &'static str,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    mix: String,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or_default()
}

fn row(name: &'static str, mut times: Vec<Duration>, elapsed: Duration, mix: String) -> Row {
    times.sort_unstable();
    Row {
        name,
        per_second: times.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
        mix,
    }
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::var("ADMINDUK_BENCH_QUICK").is_ok_and(|v| v == "1");
    let n: usize = if quick { 4_000 } else { 40_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Lazily connected channels are made in the runtime's context.
    let _entered = runtime.enter();
    let dir = tempfile::tempdir()?;
    let counted = Arc::new(Counted::default());
    let cache: Arc<dyn SharedCache> = counted.clone();
    let allowances = Allowances::default().with(Kind::Citizen, 60_000_000, 1_000_000);
    let mesh = runtime.block_on(adminduk::mesh::start(MeshOptions {
        cache: Some(cache),
        allowances,
        ..MeshOptions::on_free_ports(dir.path(), 300)
    }))?;
    let policy = mesh.gateway.service().clone();

    // A resident with IKD and a token; a point whose day is full.
    let today = adminduk_kit::time::today_wib();
    let residents = runtime.block_on(mesh.population.service().eligible_niks(today, 300))?;
    let mut nik = None;
    for candidate in &residents {
        if runtime
            .block_on(mesh.ikd.service().identity(candidate))?
            .is_none()
        {
            nik = Some(candidate.clone());
            break;
        }
    }
    let nik = nik.ok_or_else(|| anyhow::anyhow!("no resident without IKD"))?;
    let key = adminduk::resident::device_key()?;
    let token = runtime.block_on(adminduk::resident::activate(&mesh, &nik, &key))?;
    let full_day = today + chrono::Days::new(3);
    let room_day = today + chrono::Days::new(4);
    let office =
        adminduk::resident::gateway_channel(&mesh, Some((&mesh.certs.office_cert, &mesh.certs.office_key)))?;
    let mut counter = inventory::inventory_service_client::InventoryServiceClient::new(office);
    let mut filled = 0;
    for applicant in residents.iter().filter(|r| **r != nik) {
        let mut reserve = tonic::Request::new(inventory::ReserveRequest {
            service_point_code: "3275-KEC-01".into(),
            date: Some(adminduk_proto::convert::date(full_day)),
            applicant_nik: applicant.clone(),
            idempotency_key: format!("bench-{applicant}"),
            ..Default::default()
        });
        reserve.metadata_mut().insert(
            adminduk_gateway::OVERRIDE_HEADER,
            "filling the day for the bench".parse()?,
        );
        match runtime.block_on(counter.reserve(reserve)) {
            Ok(_) => filled += 1,
            Err(status) if status.code() == tonic::Code::ResourceExhausted => break,
            Err(status) => anyhow::bail!("filling the day: {status:?}"),
        }
    }

    let submit = "/adminduk.printing.v1.PrintingService/SubmitPrintJob";
    let application = |day| {
        printing::SubmitPrintJobRequest {
            nik: nik.clone(),
            reason: printing::PrintReason::FirstCard as i32,
            service_point_code: "3275-KEC-01".into(),
            date: Some(adminduk_proto::convert::date(day)),
            has_active_ikd: false,
        }
        .encode_to_vec()
    };
    let to_full = application(full_day);
    let to_room = application(room_day);
    let own_record = population::GetResidentRequest { nik: nik.clone() }.encode_to_vec();
    let get_resident = "/adminduk.population.v1.PopulationService/GetResident";
    // Proofs are signed before the clock starts: signing is the phone's work.
    let proofs: Vec<String> = (0..n)
        .map(|i| adminduk::resident::proof(&key, submit, &format!("bench-{i}"), &token))
        .collect();

    // Warm-up: the token is verified and resolved once, then cached.
    runtime.block_on(policy.decide(request(get_resident, &own_record, &token, None)))?;

    let mut rows = Vec::new();
    let measure = |name: &'static str, make: &dyn Fn(usize) -> http::Request<tonic::body::Body>| {
        let requests: Vec<_> = (0..n).map(make).collect();
        let calls_before = counted.calls.load(Ordering::Relaxed);
        let mut outcomes = std::collections::BTreeMap::<String, u64>::new();
        let mut times = Vec::with_capacity(n);
        let started = Instant::now();
        runtime.block_on(async {
            for request in requests {
                let at = Instant::now();
                let answer = policy.decide(request).await;
                times.push(at.elapsed());
                let outcome = match answer {
                    Ok(()) => "forwarded".to_owned(),
                    Err(refusal) => refusal.reason().unwrap_or("refused").to_owned(),
                };
                *outcomes.entry(outcome).or_default() += 1;
            }
        });
        let elapsed = started.elapsed();
        let calls = counted.calls.load(Ordering::Relaxed) - calls_before;
        let mix = outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        row(
            name,
            times,
            elapsed,
            format!("{mix}; {:.2} shared-cache calls each", calls as f64 / n as f64),
        )
    };

    rows.push(measure(
        "a resident's application for a full date (refused at the edge)",
        &|i| request(submit, &to_full, &token, Some(&proofs[i])),
    ));
    rows.push(measure(
        "a resident reads their own record (token, table, scope)",
        &|_| request(get_resident, &own_record, &token, None),
    ));
    rows.push(measure(
        "a resident's application for a date with room (every check, proof verified)",
        &|i| request(submit, &to_room, &token, Some(&proofs[i])),
    ));

    // The baseline: Ed25519 verification alone, as a proof's or a token's costs.
    let message = vec![7u8; 120];
    let signature = key.sign(&message);
    let public = UnparsedPublicKey::new(&ED25519, key.public_key().as_ref().to_vec());
    let mut times = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let at = Instant::now();
        let good = public.verify(&message, signature.as_ref()).is_ok();
        times.push(at.elapsed());
        assert!(good);
    }
    rows.push(row(
        "baseline: one Ed25519 verification (ring)",
        times,
        started.elapsed(),
        "verified".to_owned(),
    ));

    let baseline = rows.last().map_or(1.0, |r| r.per_second);
    println!("policy path on one thread, {n} decisions a row ({filled} blanks filled the full day)");
    println!();
    println!("| # | path | decisions/s | p50 | p99 | vs Ed25519 | answers |");
    println!("|---|---|---:|---:|---:|---:|---|");
    for (i, r) in rows.iter().enumerate() {
        println!(
            "| {} | {} | {:.0} | {:.1?} | {:.1?} | {:.2}x | {} |",
            i + 1,
            r.name,
            r.per_second,
            r.p50,
            r.p99,
            r.per_second / baseline,
            r.mix
        );
    }
    let edge = rows.first().map_or(0.0, |r| r.per_second);
    println!();
    println!(
        "target: >= 200,000 decisions/s per core with cached tokens on the in-process cache: the edge refusal {} ({edge:.0}/s)",
        if edge >= 200_000.0 {
            "meets it"
        } else {
            "misses it"
        }
    );
    runtime.block_on(mesh.shutdown())?;
    Ok(())
}
