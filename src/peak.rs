//! `adminduk peak-morning`: the load tool. Opens the queue on one day the way
//! the peak morning does — many applicants at once — against a running
//! inventory, then checks the books: every acknowledged grant is held, no
//! point has room left that was refused, nothing was granted twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adminduk_proto::convert;
use adminduk_proto::inventory::v1 as pb;
use anyhow::Context as _;
use chrono::NaiveDate;
use pb::inventory_service_client::InventoryServiceClient;
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::PeakArgs;

/// What one run saw.
#[derive(Debug, Default)]
struct Tally {
    outcomes: BTreeMap<String, u64>,
    latencies: Vec<Duration>,
}

pub(crate) fn run(args: PeakArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let report = storm(&args).await?;
        print!("{report}");
        anyhow::ensure!(report.consistent(), "the books do not agree with the answers");
        Ok(())
    })
}

/// The result of a storm.
#[derive(Debug)]
pub(crate) struct Report {
    day: NaiveDate,
    points: usize,
    requests: u64,
    granted: u64,
    held_before: i64,
    held_after: i64,
    room_before: i64,
    room_after: i64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    outcomes: BTreeMap<String, u64>,
}

impl Report {
    /// Every grant shows in the stock, and no room was left while requests were refused.
    pub(crate) fn consistent(&self) -> bool {
        let grants_held = self.held_after - self.held_before == i64::try_from(self.granted).unwrap_or(-1);
        let refused = self.requests > self.granted;
        grants_held && (!refused || self.room_after == 0)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "peak morning for {} at {} service points",
            self.day, self.points
        )?;
        writeln!(
            f,
            "  requests     {:>10}   ({:.0}/s)",
            self.requests,
            self.requests as f64 / secs
        )?;
        writeln!(f, "  granted      {:>10}", self.granted)?;
        for (outcome, n) in &self.outcomes {
            writeln!(f, "    {outcome:<26} {n:>8}")?;
        }
        writeln!(f, "  latency      p50 {:?}  p99 {:?}", self.p50, self.p99)?;
        writeln!(
            f,
            "  most room at one point  before {}  after {}",
            self.room_before, self.room_after
        )?;
        writeln!(
            f,
            "  held before  {:>10}   after {}  (difference {}, grants {})",
            self.held_before,
            self.held_after,
            self.held_after - self.held_before,
            self.granted
        )?;
        writeln!(
            f,
            "  books agree  {}",
            if self.consistent() { "yes" } else { "NO" }
        )
    }
}

async fn room(
    client: &mut InventoryServiceClient<Channel>,
    points: &[String],
    day: NaiveDate,
) -> anyhow::Result<i64> {
    let mut stream = client
        .watch_availability(pb::WatchAvailabilityRequest {
            service_point_codes: points.to_vec(),
            date: Some(convert::date(day)),
        })
        .await
        .context("reading availability")?
        .into_inner();
    let first = stream.message().await?.context("no availability")?;
    Ok(first.points.iter().map(|p| p.remaining).max().unwrap_or(0))
}

async fn held(client: &mut InventoryServiceClient<Channel>, region: &str) -> anyhow::Result<i64> {
    let stock = client
        .get_stock(pb::GetStockRequest {
            region_code: region.to_owned(),
        })
        .await
        .context("reading stock")?
        .into_inner();
    Ok(stock.stock.map_or(0, |s| s.held))
}

pub(crate) async fn storm(args: &PeakArgs) -> anyhow::Result<Report> {
    let channel = Endpoint::from_shared(args.inventory.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.inventory))?;
    let mut client = InventoryServiceClient::new(channel.clone());
    let day = args
        .date
        .unwrap_or_else(|| adminduk_kit::time::today_wib() + chrono::Days::new(1));
    let policy = client
        .get_stock(pb::GetStockRequest {
            region_code: args.region.clone(),
        })
        .await
        .context("reading the region's policy")?
        .into_inner()
        .policy
        .context("the region has no policy")?;
    let points: Vec<String> = if args.points.is_empty() {
        policy.service_points.iter().map(|p| p.code.clone()).collect()
    } else {
        args.points.clone()
    };
    anyhow::ensure!(!points.is_empty(), "no service points to storm");
    let held_before = held(&mut client, &args.region).await?;
    let room_before = room(&mut client, &points, day).await?;

    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let mut client = InventoryServiceClient::new(channel.clone());
        let (tally, next, points) = (tally.clone(), next.clone(), points.clone());
        let (applicants, run) = (args.applicants, args.run);
        tasks.push(tokio::spawn(async move {
            let mut local = Tally::default();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= applicants {
                    break;
                }
                let point = &points[(n as usize) % points.len()];
                // Synthetic applicants: 16 digits, unique per run and applicant.
                let nik = format!("3275{:04}{:08}", run % 10_000, n);
                let request = pb::ReserveRequest {
                    service_point_code: point.clone(),
                    date: Some(convert::date(day)),
                    applicant_nik: nik,
                    idempotency_key: format!("peak-{run}-{n}"),
                    purpose: 0,
                };
                let at = Instant::now();
                let outcome = match client.reserve(request).await {
                    Ok(_) => "OK".to_owned(),
                    Err(status) => {
                        let reason = tonic_types::StatusExt::get_error_details(&status)
                            .error_info()
                            .map(|i| i.reason.clone())
                            .unwrap_or_default();
                        format!("{:?} {reason}", status.code())
                    }
                };
                local.latencies.push(at.elapsed());
                *local.outcomes.entry(outcome).or_default() += 1;
            }
            let mut shared = tally.lock().await;
            shared.latencies.extend(local.latencies);
            for (k, v) in local.outcomes {
                *shared.outcomes.entry(k).or_default() += v;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed();
    let mut tally = Arc::try_unwrap(tally)
        .map_err(|_| anyhow::anyhow!("tasks still running"))?
        .into_inner();
    tally.latencies.sort();
    let percentile = |p: f64| {
        let i = ((tally.latencies.len() as f64 - 1.0) * p).round() as usize;
        tally.latencies.get(i).copied().unwrap_or_default()
    };
    let granted = tally.outcomes.get("OK").copied().unwrap_or(0);
    Ok(Report {
        day,
        points: points.len(),
        requests: tally.latencies.len() as u64,
        granted,
        held_before,
        held_after: held(&mut client, &args.region).await?,
        room_before,
        room_after: room(&mut client, &points, day).await?,
        elapsed,
        p50: percentile(0.50),
        p99: percentile(0.99),
        outcomes: tally.outcomes,
    })
}
