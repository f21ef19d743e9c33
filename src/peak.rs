//! `adminduk peak-morning`: the load tool. Opens the queue on one day the way
//! the peak morning does — many applicants at once — against a running
//! inventory, then checks the books: every acknowledged grant is held, no
//! point has room left that was refused, nothing was granted twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adminduk_kit::nik::{Nik, Sex};
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
    run: u64,
    day: NaiveDate,
    points: usize,
    requests: u64,
    granted: u64,
    held_before: i64,
    held_after: i64,
    /// Grants answered again: holds an earlier run with the same `--run` made.
    again: u64,
    room_before: i64,
    room_after: i64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    outcomes: BTreeMap<String, u64>,
}

impl Report {
    /// Every new grant shows in the stock (a grant answered again for a
    /// repeated run was held already), and no room was left while requests
    /// were refused.
    pub(crate) fn consistent(&self) -> bool {
        let fresh = self.granted.saturating_sub(self.again);
        let grants_held = self.held_after - self.held_before == i64::try_from(fresh).unwrap_or(-1);
        let refused = self.requests > self.granted;
        grants_held && (!refused || self.room_after == 0)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "peak morning for {} at {} service points (run {})",
            self.day, self.points, self.run
        )?;
        writeln!(
            f,
            "  requests     {:>10}   ({:.0}/s)",
            self.requests,
            self.requests as f64 / secs
        )?;
        writeln!(
            f,
            "  granted      {:>10}   ({} new, {} answered again)",
            self.granted,
            self.granted.saturating_sub(self.again),
            self.again
        )?;
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
            "  held before  {:>10}   after {}  (difference {}, new grants {})",
            self.held_before,
            self.held_after,
            self.held_after - self.held_before,
            self.granted.saturating_sub(self.again)
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
    let points = points_to_storm(&mut client, args).await?;
    let held_before = held(&mut client, &args.region).await?;
    let room_before = room(&mut client, &points, day).await?;

    let run = args.run.unwrap_or_else(fresh_run);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    // A hold created before this instant is an earlier run's (the service and
    // this tool read one clock, or synchronised ones).
    let started_at = chrono::Utc::now().timestamp_millis();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let mut client = InventoryServiceClient::new(channel.clone());
        let (tally, next, points) = (tally.clone(), next.clone(), points.clone());
        let (applicants, region) = (args.applicants, args.region.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = Tally::default();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= applicants {
                    break;
                }
                let request = applicant_request(&points, day, &region, run, n)?;
                let at = Instant::now();
                let outcome = reserve(&mut client, request, started_at).await;
                local.latencies.push(at.elapsed());
                *local.outcomes.entry(outcome).or_default() += 1;
            }
            add_to(&tally, local).await;
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let tally = finished(tally)?;
    let again = tally.outcomes.get("OK again").copied().unwrap_or(0);
    let granted = tally.outcomes.get("OK").copied().unwrap_or(0) + again;
    Ok(Report {
        run,
        day,
        points: points.len(),
        requests: tally.latencies.len() as u64,
        granted,
        held_before,
        held_after: held(&mut client, &args.region).await?,
        again,
        room_before,
        room_after: room(&mut client, &points, day).await?,
        elapsed,
        p50: percentile(&tally.latencies, 0.50),
        p99: percentile(&tally.latencies, 0.99),
        outcomes: tally.outcomes,
    })
}

/// The service points to storm: those given, or else every point of the
/// region's policy.
async fn points_to_storm(
    client: &mut InventoryServiceClient<Channel>,
    args: &PeakArgs,
) -> anyhow::Result<Vec<String>> {
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
    Ok(points)
}

/// Applicant `n`'s request in `run`: a place at the service points in turn,
/// on `day`, keyed so that asking again is a retry.
fn applicant_request(
    points: &[String],
    day: NaiveDate,
    region: &str,
    run: u64,
    n: u64,
) -> anyhow::Result<pb::ReserveRequest> {
    let point = &points[(n as usize) % points.len()];
    Ok(pb::ReserveRequest {
        service_point_code: point.clone(),
        date: Some(convert::date(day)),
        applicant_nik: applicant_nik(region, run, n)?.as_str().to_owned(),
        idempotency_key: format!("peak-{run}-{n}"),
        purpose: 0,
    })
}

/// Sends one applicant's request, and names its outcome: `OK`, `OK again`,
/// or the refusal's code and reason.
async fn reserve(
    client: &mut InventoryServiceClient<Channel>,
    request: pb::ReserveRequest,
    started_at: i64,
) -> String {
    match client.reserve(request).await {
        // A hold made before this storm began is an earlier run's grant, answered again.
        Ok(answer)
            if answer
                .get_ref()
                .reservation
                .as_ref()
                .and_then(|r| r.create_time.as_ref())
                .is_some_and(|t| t.seconds * 1_000 + i64::from(t.nanos / 1_000_000) < started_at) =>
        {
            "OK again".to_owned()
        }
        Ok(_) => "OK".to_owned(),
        Err(status) => {
            let reason = adminduk_kit::error::reason_of(&status);
            format!("{:?} {reason}", status.code())
        }
    }
}

/// Adds what one caller saw to the run's tally.
async fn add_to(tally: &Mutex<Tally>, local: Tally) {
    let mut shared = tally.lock().await;
    shared.latencies.extend(local.latencies);
    for (k, v) in local.outcomes {
        *shared.outcomes.entry(k).or_default() += v;
    }
}

/// The run's tally once every caller has ended, its latencies sorted.
fn finished(tally: Arc<Mutex<Tally>>) -> anyhow::Result<Tally> {
    let mut tally = Arc::try_unwrap(tally)
        .map_err(|_| anyhow::anyhow!("tasks still running"))?
        .into_inner();
    tally.latencies.sort();
    Ok(tally)
}

/// The latency at `p` (0 to 1) of latencies sorted shortest first; zero when there are none.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// A run number no earlier run is likely to have used, so a second storm's
/// requests are new requests rather than retries of the first one's.
fn fresh_run() -> u64 {
    let mut bytes = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_ok() {
        // Small enough to type back as `--run`.
        u64::from_le_bytes(bytes) % 1_000_000_000
    } else {
        chrono::Utc::now().timestamp_micros().unsigned_abs() % 1_000_000_000
    }
}

/// Birth dates of synthetic applicants: adults born from 1 January 1950 on.
const BIRTH_DAYS: u64 = 20_000;
/// Serials a NIK can carry (0001-9999).
const SERIALS: u64 = 9_999;
/// Distinct applicants one district can hold: serial × birth date × sex.
const SPACE: u64 = SERIALS * BIRTH_DAYS * 2;

/// The NIK of applicant `n` in `run`: a valid one (a real birth date, a
/// serial from 0001), distinct for every applicant of a run, and spread by
/// the run number so that different runs send different people.
pub(crate) fn applicant_nik(region: &str, run: u64, n: u64) -> anyhow::Result<Nik> {
    // A large odd multiplier scatters runs over the space; `n` then walks it.
    let index = (run.wrapping_mul(0x9E37_79B9_7F4A_7C15) % SPACE + n % SPACE) % SPACE;
    let serial = u16::try_from(1 + index % SERIALS)?;
    let rest = index / SERIALS;
    let sex = if rest.is_multiple_of(2) {
        Sex::Male
    } else {
        Sex::Female
    };
    let born = NaiveDate::from_ymd_opt(1950, 1, 1).context("a date")? + chrono::Days::new(rest / 2);
    Nik::from_parts(&format!("{region}01"), born, sex, serial)
        .map_err(|err| anyhow::anyhow!("region {region} gives no valid nik: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applicants_carry_valid_niks_distinct_within_a_run_and_between_runs() {
        let today = adminduk_kit::time::today_wib();
        let mut seen = std::collections::HashSet::new();
        for run in [1, 2, 987_654_321] {
            for n in 0..30_000 {
                let nik = applicant_nik("3275", run, n).expect("a nik");
                let parsed = Nik::parse(nik.as_str(), today).expect("population would accept it");
                assert_eq!(parsed, nik);
                assert!(seen.insert(nik), "run {run} applicant {n} repeats a nik");
            }
        }
    }

    #[test]
    fn a_run_number_is_fresh_each_time() {
        assert_ne!(fresh_run(), fresh_run());
    }
}
