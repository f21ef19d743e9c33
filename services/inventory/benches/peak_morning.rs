//! The peak morning, measured side by side: one run, one table.
//!
//! ```sh
//! cargo bench -p adminduk-inventory --bench peak_morning
//! ```
//!
//! In memory (2 threads): our core on the peak-morning mix, the same core on
//! its resolved path only, a bare contended `AtomicU64` CAS counter (the
//! physical limit) and a `Mutex<HashMap>`. Durable (1,024 requests in
//! flight): our core with group commit on PostgreSQL, the per-request
//! PostgreSQL baseline (one transaction per grant) and a Redis `EVALSHA`
//! check-and-decrement (not durable). Below the table: rows 5 and 6 under
//! other conditions (a 1 ms linger; 64 and 512 in flight), the grant cost at 14 and at 7,277 service points, memory per
//! bucket, and which targets of issue 3 are met. See `docs/benchmarks.md`.
//!
//! `ADMINDUK_BENCH_POSTGRES_URL` and `ADMINDUK_BENCH_REDIS_URL` name the
//! services (e.g. `postgres://postgres@localhost/adminduk_bench?host=/var/run/postgresql`
//! for a Unix socket); unreachable ones turn their rows into "skipped". With
//! `ADMINDUK_BENCH_QUICK=1` every run is five times shorter (for trying the
//! bench out, not for figures).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::hint::black_box;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use adminduk_inventory::demo::{KOTA_BEKASI, kota_bekasi_policy};
use adminduk_inventory::service::{Inventory, ReserveFailure};
use adminduk_inventory::store::NATIONAL;
use adminduk_inventory::{GroupCommit, MIGRATIONS};
use adminduk_inventory_core::bucket::{Bucket, take_all};
use adminduk_inventory_core::engine::{BucketKey, Engine, Path, ReserveError, ReserveRequest};
use adminduk_inventory_core::policy::{PointKind, PointSpec, Policy, PoolSpec};
use adminduk_kit::config::DatabaseConfig;
use adminduk_kit::storage::Db;
use chrono::{Days, NaiveDate, Utc};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

/// Threads for the in-memory rows: the machine has two cores.
const THREADS: usize = 2;
/// Rounds of the in-memory rows, taken in turn (see [`memory_rows`]).
const MEMORY_ROUNDS: u32 = 6;
/// Operations timed together in the in-memory rows (two clock reads per
/// batch), sized so a batch takes some microseconds and the clock's own cost
/// stays under a few percent: (core mix, resolved path, CAS counter, mutex).
const BATCHES: [u64; 5] = [100, 10_000, 10_000, 1_000, 100];
/// Concurrent requests in the durable rows. On the peak morning tens of
/// thousands of residents press "book" within minutes of the queue opening; a
/// national day of about 218,000 grants in under 10 s means at least this many
/// requests in flight at once.
const TASKS: usize = 1_024;
/// Shallower queues, for rows 5 and 6 under other conditions.
const SHALLOW_TASKS: [usize; 2] = [64, 512];
/// Connections of our core's pool (its group-commit writer uses one at a time).
const CORE_POOL: u32 = 4;
/// Connections of the per-request baseline's pool.
const BASELINE_POOL: u32 = 16;
/// The peak morning's grants in Kota Bekasi: 12 × 30 + 150.
const DAILY_GRANTS: u64 = 510;

fn main() {
    let quick = std::env::var("ADMINDUK_BENCH_QUICK").is_ok_and(|v| v == "1");
    let scale = |secs: f64| Duration::from_secs_f64(if quick { secs / 5.0 } else { secs });
    // Each in-memory row's whole time, in MEMORY_ROUNDS slices.
    let memory_run = scale(3.0);
    let durable_run = scale(8.0);
    let redis_run = scale(5.0);
    let variant_run = scale(5.0);
    let postgres_url = std::env::var("ADMINDUK_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/adminduk_bench".to_owned());
    let redis_url =
        std::env::var("ADMINDUK_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let day = Utc::now().date_naive() + Days::new(1);
    let began = Instant::now();
    let load_before = load_average();

    // Memory first, before other allocations are freed and reused.
    progress("memory per bucket (100,000 pool buckets through Engine::path)");
    let memory = memory_per_bucket(day);
    progress("grant cost at 14 and 7,277 service points");
    let scaling = grant_cost_scaling(day);

    progress("1-4/7 our core (peak-morning mix, resolved path), CAS counter, Mutex<HashMap>, in turn");
    let [core, resolved, cas, mutex, recorded] = memory_rows(day, memory_run);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    progress("5/7 our core with group commit on PostgreSQL");
    let durable = runtime.block_on(durable_core(
        &postgres_url,
        day,
        durable_run,
        TASKS,
        GroupCommit::default(),
    ));
    progress("6/7 per-request PostgreSQL baseline");
    let baseline = runtime.block_on(per_request_baseline(&postgres_url, day, durable_run, TASKS));
    progress("7/7 Redis EVALSHA check-and-decrement");
    let redis = runtime.block_on(redis_evalsha(&redis_url, redis_run));
    // Not the table's conditions: how rows 5 and 6 move with a linger in the
    // writer and with fewer requests in flight.
    let sensitivity = if durable.is_ok() {
        progress("sensitivity: row 5 with a 1 ms linger");
        let with_linger = GroupCommit {
            linger: Duration::from_millis(1),
            ..GroupCommit::default()
        };
        let linger1 = runtime.block_on(durable_core(&postgres_url, day, variant_run, TASKS, with_linger));
        let mut shallow = Vec::new();
        for tasks in SHALLOW_TASKS {
            progress(&format!("sensitivity: rows 5 and 6 with {tasks} tasks"));
            let core = runtime.block_on(durable_core(
                &postgres_url,
                day,
                variant_run,
                tasks,
                GroupCommit::default(),
            ));
            let base = runtime.block_on(per_request_baseline(&postgres_url, day, variant_run, tasks));
            shallow.push((tasks, core, base));
        }
        Some(Sensitivity { linger1, shallow })
    } else {
        None
    };
    drop(runtime);

    let mut table = Table::default();
    table.section("in memory, 2 threads, ops/s = answers per second (ratio to row 1)");
    let core_ops = core.per_second();
    table.row(
        "1",
        "our core, peak-morning mix (`Engine::reserve`)",
        Some(&core),
        Some(core_ops),
        core.mix(),
    );
    table.row(
        "1m",
        "row 1 + what the service records per answer (`kit::metrics`)",
        Some(&recorded),
        Some(core_ops),
        recorded.mix(),
    );
    table.row(
        "2",
        "our core, resolved path only (`bucket::take_all`, 4 buckets)",
        Some(&resolved),
        Some(core_ops),
        resolved.mix(),
    );
    table.row(
        "3",
        "bare contended `AtomicU64` CAS counter (physical limit)",
        Some(&cas),
        Some(core_ops),
        cas.mix(),
    );
    table.row(
        "4",
        "`Mutex<HashMap<String, u64>>` by service point",
        Some(&mutex),
        Some(core_ops),
        mutex.mix(),
    );
    table.section(&format!(
        "durable, {} concurrent tasks, ops/s = grants per second (ratio to row 5)",
        group(TASKS as u64)
    ));
    let durable_ops = durable.as_ref().ok().map(Measured::grants_per_second);
    table.durable_row(
        "5",
        "our core + group commit on PostgreSQL (`Inventory::reserve`)",
        &durable,
        durable_ops,
    );
    table.durable_row(
        "6",
        &format!("per-request PostgreSQL: 1 transaction per grant, pool of {BASELINE_POOL}"),
        &baseline,
        durable_ops,
    );
    table.durable_row(
        "7",
        "Redis `EVALSHA` check-and-decrement (NOT durable)",
        &redis,
        durable_ops,
    );

    let mut out = String::new();
    let _ = writeln!(out);
    out.push_str(&table.render());
    let _ = writeln!(
        out,
        "\nRows 1-4 and 1m run {THREADS} threads for {:.1} s each, in {MEMORY_ROUNDS} rounds taken in turn (1, 2, 3, 4, 1m, 1, 2, ...); their latencies are per operation, from batches \
         timed together\n(rows 1/2/3/4/1m: {} operations per batch): p50/p99 are of batch time / batch size, so \
         one slow operation is spread over\nits batch. Rows 1 and 4 send the same requests: {} per \
         thread (distinct NIKs and keys, the points in turn),\nbuilt beforehand and sent round and \
         round, as residents retry (the holders of the 510 grants get them back). Rows 5-7 run {TASKS} tokio tasks on {THREADS} worker threads for {:.0}/{:.0}/{:.0} s; their \
         latencies are\nper request, until the answer (for row 5, until the grant's group commit). \
         Row 5: GroupCommit::default()\n(max_batch {}, linger {:?}), a pool of {CORE_POOL}. Row 6: \
         a sqlx PgPool of {BASELINE_POOL}. Row 7: one multiplexed connection.\nPostgreSQL: {}; Redis: {}.",
        memory_run.as_secs_f64(),
        BATCHES.map(group).join(" / "),
        group(STREAM as u64),
        durable_run.as_secs_f64(),
        durable_run.as_secs_f64(),
        redis_run.as_secs_f64(),
        GroupCommit::default().max_batch,
        GroupCommit::default().linger,
        without_credentials(&postgres_url),
        without_credentials(&redis_url),
    );
    if let Some(sensitivity) = &sensitivity {
        let _ = writeln!(out, "\n{}", sensitivity.render(durable_ops));
    }
    let _ = writeln!(out, "\n{}", scaling.render());
    let _ = writeln!(out, "{}", memory.render());
    let _ = writeln!(
        out,
        "Targets (issue 3, section 6):\n{}",
        targets(
            &core, &resolved, &cas, &mutex, &durable, &baseline, &scaling, &memory
        )
    );
    let _ = writeln!(
        out,
        "({} cores; load average {} before, {} after; whole run {:.0} s)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before,
        load_average(),
        began.elapsed().as_secs_f64()
    );
    print!("{out}");
}

/// A service URL without its user and password.
fn without_credentials(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, rest))) => format!("{scheme}://{rest}"),
        _ => url.to_owned(),
    }
}

/// The 1-minute load average: other work on the machine skews every row.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn progress(what: &str) {
    eprintln!("peak_morning: measuring {what} ...");
}

// ---------------------------------------------------------------------------
// Measuring

/// A log-linear histogram of nanoseconds: 64 sub-buckets per power of two
/// (under 1.6% error), exact below 128 ns.
#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Histogram {
    const LEN: usize = 128 + 57 * 64;

    fn new() -> Self {
        Self {
            counts: vec![0; Self::LEN],
            total: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < 128 {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros();
        let shift = msb - 6;
        128 + (shift as usize - 1) * 64 + ((v >> shift) as usize - 64)
    }

    /// The middle of the values that fall into slot `index`.
    fn value(index: usize) -> f64 {
        if index < 128 {
            return index as f64;
        }
        let k = index - 128;
        let shift = k / 64 + 1;
        let mantissa = (k % 64 + 64) as f64;
        (mantissa + 0.5) * (1u64 << shift) as f64
    }

    fn record(&mut self, nanos: u64) {
        self.counts[Self::index(nanos)] += 1;
        self.total += 1;
    }

    fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    fn quantile(&self, q: f64) -> f64 {
        let target = ((q * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= target {
                return Self::value(i);
            }
        }
        0.0
    }
}

/// What one row measured.
#[derive(Debug)]
struct Measured {
    /// Answers given (grants, refusals, retries and failures).
    ops: u64,
    grants: u64,
    failures: u64,
    /// Holders' retries, answered with their reservation.
    retries: u64,
    elapsed: Duration,
    /// Latency samples; each covers `per_sample` operations.
    latency: Histogram,
    per_sample: u64,
    /// Transactions that wrote the grants, when known (group commits).
    commits: Option<u64>,
    /// Share of the run the worker threads were on a CPU (others' work on the
    /// machine preempts them), when known.
    on_cpu: Option<f64>,
}

impl Measured {
    fn per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// Operations per second had the threads had their cores to themselves:
    /// operations per CPU-second of the worker threads, times the threads.
    fn undisturbed(&self) -> Option<f64> {
        self.on_cpu
            .filter(|share| *share > 0.0)
            .map(|share| self.per_second() / share)
    }

    fn grants_per_second(&self) -> f64 {
        self.grants as f64 / self.elapsed.as_secs_f64()
    }

    fn p(&self, q: f64) -> f64 {
        self.latency.quantile(q) / self.per_sample as f64
    }

    fn empty(per_sample: u64) -> Self {
        Self {
            ops: 0,
            grants: 0,
            failures: 0,
            retries: 0,
            elapsed: Duration::ZERO,
            latency: Histogram::new(),
            per_sample,
            commits: None,
            on_cpu: None,
        }
    }

    /// Adds another run of the same row.
    fn merge(&mut self, other: Self) {
        // CPU shares weighted by the time they cover.
        self.on_cpu = if self.ops == 0 {
            other.on_cpu
        } else {
            self.on_cpu.zip(other.on_cpu).map(|(mine, theirs)| {
                let (a, b) = (self.elapsed.as_secs_f64(), other.elapsed.as_secs_f64());
                (mine * a + theirs * b) / (a + b)
            })
        };
        self.ops += other.ops;
        self.grants += other.grants;
        self.failures += other.failures;
        self.retries += other.retries;
        self.elapsed += other.elapsed;
        self.latency.merge(&other.latency);
        self.commits = match (self.commits, other.commits) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }

    /// Adds answers counted by [`Outcome`] (indexed by its discriminant).
    fn add(&mut self, counts: [u64; 4]) {
        let [granted, refused, failed, retried] = counts;
        self.grants += granted;
        self.failures += failed;
        self.retries += retried;
        self.ops += granted + refused + failed + retried;
    }

    fn refusals(&self) -> u64 {
        self.ops - self.grants - self.failures - self.retries
    }

    fn mix(&self) -> String {
        let share = |n: u64| 100.0 * n as f64 / self.ops.max(1) as f64;
        let mut mix = format!("{:.3}% refused", share(self.refusals()));
        if self.retries > 0 {
            let _ = write!(mix, ", {:.3}% holders' retries", share(self.retries));
        }
        let _ = write!(mix, " ({} granted of {})", group(self.grants), group(self.ops));
        if self.failures > 0 {
            let _ = write!(mix, ", {} FAILED", group(self.failures));
        }
        if let (Some(share), Some(undisturbed)) = (self.on_cpu, self.undisturbed()) {
            let _ = write!(
                mix,
                "; threads on CPU {:.0}% of the run: {}/s per {THREADS} CPU-seconds",
                100.0 * share,
                group(undisturbed.round() as u64)
            );
        }
        if let Some(commits) = self.commits {
            let _ = write!(
                mix,
                "; {} group commits of {:.1} grants on average",
                group(commits),
                self.grants as f64 / commits.max(1) as f64
            );
        }
        mix
    }
}

/// Runs `THREADS` threads for `run`, each calling its operation (made by
/// `make`, outside the timed part) in batches of `batch`; an operation returns
/// its answer.
fn run_threads<W, F>(label: &str, batch: u64, run: Duration, make: W) -> Measured
where
    W: Fn(usize) -> F + Sync,
    F: FnMut() -> Outcome,
{
    let barrier = Barrier::new(THREADS + 1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (make, barrier) = (&make, &barrier);
                let builder = std::thread::Builder::new().name(format!("{label}-{t}"));
                let spawned = builder.spawn_scoped(scope, move || {
                    let mut op = make(t);
                    let mut latency = Histogram::new();
                    let mut counts = [0u64; 4];
                    barrier.wait();
                    let on_cpu_before = on_cpu_nanos();
                    let deadline = Instant::now() + run;
                    loop {
                        let start = Instant::now();
                        for _ in 0..batch {
                            counts[op() as usize] += 1;
                        }
                        let end = Instant::now();
                        latency.record((end - start).as_nanos() as u64);
                        if end >= deadline {
                            let on_cpu = on_cpu_before
                                .zip(on_cpu_nanos())
                                .map(|(b, a)| a.saturating_sub(b));
                            return (counts, latency, end, on_cpu);
                        }
                    }
                });
                spawned.expect("a worker thread")
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut total = Measured::empty(batch);
        let mut last = start;
        let mut on_cpu = Some(0);
        for worker in workers {
            let (counts, latency, end, cpu) = worker.join().expect("a worker thread");
            total.add(counts);
            total.latency.merge(&latency);
            last = last.max(end);
            on_cpu = on_cpu.zip(cpu).map(|(a, b)| a + b);
        }
        total.elapsed = last - start;
        total.on_cpu = on_cpu.map(|ns| ns as f64 / (THREADS as f64 * total.elapsed.as_nanos() as f64));
        total
    })
}

/// Nanoseconds the calling thread has spent on a CPU: user + system time from
/// `/proc/thread-self/stat`, in Linux's USER_HZ ticks of 10 ms.
fn on_cpu_nanos() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which may hold spaces): state is the 3rd
    // field of the line, utime and stime the 14th and 15th.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 10_000_000)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Granted,
    Refused,
    Failed,
    /// A retry answered with the reservation it already holds.
    Retried,
}

/// Runs `tasks` tokio tasks for `run`, each awaiting one request at a time;
/// every request is timed.
async fn drive<F, Fut>(tasks: usize, run: Duration, op: F) -> Measured
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + run;
    let tasks: Vec<_> = (0..tasks)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latency = Histogram::new();
                let mut counts = [0u64; 4];
                let mut i = 0;
                while Instant::now() < deadline {
                    let begun = Instant::now();
                    let outcome = op(t, i).await;
                    latency.record(begun.elapsed().as_nanos() as u64);
                    counts[outcome as usize] += 1;
                    i += 1;
                }
                (latency, counts)
            })
        })
        .collect();
    let mut total = Measured::empty(1);
    for task in tasks {
        let (latency, counts) = task.await.expect("a request task");
        total.latency.merge(&latency);
        total.add(counts);
    }
    total.elapsed = start.elapsed();
    total
}

/// Prints the first few failures of a durable row, not thousands.
fn failed(what: &str, err: &dyn std::fmt::Debug) -> Outcome {
    static SHOWN: AtomicU64 = AtomicU64::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("peak_morning: {what} failed: {err:?}");
    }
    Outcome::Failed
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000)
        .unwrap_or_default();
    format!("{}_{nanos}", std::process::id())
}

// ---------------------------------------------------------------------------
// In memory

/// Requests per thread in rows 1 and 4, built before the clock starts and
/// sent round and round: on the peak morning the same residents press "book"
/// again and again. 65,536 residents over the two threads, so that 510 of
/// them hold a grant and more than 99% of the answers are refusals, as the
/// issue's mix asks (with fewer residents, the holders' retries would be a
/// large share of the answers). Read in order: 19 bytes a request.
const STREAM: usize = 32_768;

/// One thread's peak-morning requests: distinct applicants (a 16-digit NIK
/// with the thread's digit) and idempotency keys (`pm-` and the NIK), the
/// points in turn. The keys sit end to end in one buffer.
#[derive(Debug)]
struct Stream {
    keys: String,
}

impl Stream {
    const KEY_LEN: usize = 19;

    fn new(thread: usize) -> Self {
        let mut keys = String::with_capacity(STREAM * Self::KEY_LEN);
        for n in 0..STREAM {
            let _ = write!(keys, "pm-3275{thread}{n:011}");
        }
        assert_eq!(
            keys.len(),
            STREAM * Self::KEY_LEN,
            "every key is {} bytes",
            Self::KEY_LEN
        );
        Self { keys }
    }

    /// Request `n`: its point's index among `points`, its key and its NIK.
    fn request(&self, n: usize, points: usize) -> (usize, &str, &str) {
        let key = &self.keys[n * Self::KEY_LEN..(n + 1) * Self::KEY_LEN];
        (n % points, key, &key[3..])
    }
}

/// Kota Bekasi set up for one peak morning: its policy with the next shipment
/// two weeks away (so pacing allows the full 510 a day; with no date known it
/// spreads 15,000 over 30 days, 500 a day) and a stock of 15,000.
fn bekasi_engine(day: NaiveDate) -> (Engine, Vec<String>) {
    let engine = Engine::new();
    let mut policy = kota_bekasi_policy();
    policy.next_shipment = Some(day + Days::new(14));
    let points = policy.points.iter().map(|p| p.code.clone()).collect();
    engine.set_policy(policy).expect("Kota Bekasi's policy is valid");
    engine
        .stock(KOTA_BEKASI)
        .adjust_capacity(15_000)
        .expect("stock can be added");
    (engine, points)
}

fn next_index(i: usize, len: usize) -> usize {
    if i + 1 == len { 0 } else { i + 1 }
}

/// Row 1's engine, kept from round to round.
struct CoreMix {
    engine: Engine,
    points: Vec<String>,
    day: NaiveDate,
}

impl CoreMix {
    fn new(day: NaiveDate) -> Self {
        let (engine, points) = bekasi_engine(day);
        Self { engine, points, day }
    }
}

fn core_peak_mix(row: &CoreMix, run: Duration) -> Measured {
    core_mix::<false>(row, run, "core-mix", BATCHES[0])
}

/// Row 1 with the metrics the inventory records for each answer of `Reserve`:
/// a grant's point and its day's quota left, or a refusal's reason
/// (`adminduk_inventory::metrics`, as the service records them), then the
/// server layer's count and latency of the call (`kit::observe::record`, as
/// every request does). Row 1's code records nothing.
fn core_peak_mix_recorded(row: &CoreMix, run: Duration) -> Measured {
    core_mix::<true>(row, run, "core-mix-recorded", BATCHES[4])
}

/// Row 1's requests, answered by the core, and recorded when `RECORD`.
fn core_mix<const RECORD: bool>(row: &CoreMix, run: Duration, label: &str, batch: u64) -> Measured {
    let (engine, points, day) = (&row.engine, &row.points, row.day);
    let now = Utc::now();
    let expires_at = now + chrono::Duration::hours(8);
    let methods = adminduk_kit::observe::Methods::of(
        &["adminduk.inventory.v1.InventoryService"],
        &[adminduk_proto::FILE_DESCRIPTOR_SET],
    );
    let method = methods.get("/adminduk.inventory.v1.InventoryService/Reserve");
    run_threads(label, batch, run, |t| {
        let stream = Stream::new(t);
        let mut at = 0;
        move || {
            let started = RECORD.then(Instant::now);
            at = next_index(at, STREAM);
            let (point, key, nik) = stream.request(at, points.len());
            let req = ReserveRequest {
                point_code: &points[point],
                day,
                applicant: nik,
                purpose: "ktp-el",
                idempotency_key: key,
                expires_at,
            };
            let outcome = match engine.reserve(&req, now) {
                Ok(reserved) if black_box(&reserved).fresh => {
                    if RECORD {
                        adminduk_inventory::metrics::granted(&reserved.reservation);
                    }
                    Outcome::Granted
                }
                // A holder's retry gets its reservation back: an answer, not a grant.
                Ok(_) => Outcome::Retried,
                Err(err @ ReserveError::Exhausted(_)) => {
                    if RECORD {
                        adminduk_inventory::metrics::refused(&err);
                    }
                    Outcome::Refused
                }
                Err(other) => panic!("unexpected answer on the peak morning: {other:?}"),
            };
            if let Some(started) = started {
                let code = if outcome == Outcome::Refused {
                    tonic::Code::ResourceExhausted
                } else {
                    tonic::Code::Ok
                };
                adminduk_kit::observe::record("inventory", method, code, started.elapsed());
            }
            outcome
        }
    })
}

/// Row 2's engine and the paths of its points, resolved once.
struct ResolvedPaths {
    // Holds the paths' buckets.
    _engine: Engine,
    paths: Vec<Arc<Path>>,
}

impl ResolvedPaths {
    fn new(day: NaiveDate) -> Self {
        let (engine, points) = bekasi_engine(day);
        let paths = points
            .iter()
            .map(|code| {
                let point = engine.point(code).expect("a point of the policy");
                engine.path(&point, day).expect("a region with a policy")
            })
            .collect();
        Self {
            _engine: engine,
            paths,
        }
    }
}

fn core_resolved_path(row: &ResolvedPaths, run: Duration) -> Measured {
    let paths = &row.paths;
    run_threads("core-path", BATCHES[1], run, |t| {
        // A path's buckets as the engine holds them: four references, leaf first.
        let buckets: Vec<[&Bucket; 4]> = paths
            .iter()
            .map(|p| {
                let mut refs = p.buckets().map(|(_, b)| b);
                std::array::from_fn(|_| refs.next().expect("four buckets in a path"))
            })
            .collect();
        let mut at = t;
        move || {
            at = next_index(at, buckets.len());
            if take_all(&buckets[at]).is_ok() {
                Outcome::Granted
            } else {
                Outcome::Refused
            }
        }
    })
}

/// A counter alone on its cache line.
#[repr(align(128))]
#[derive(Debug)]
struct Padded(AtomicU64);

fn cas_counter(counter: &Padded, run: Duration) -> Measured {
    run_threads("cas", BATCHES[2], run, |_| {
        let counter = &counter.0;
        move || {
            let mut current = counter.load(Ordering::Acquire);
            loop {
                if current == 0 {
                    return Outcome::Refused;
                }
                match counter.compare_exchange_weak(current, current - 1, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return Outcome::Granted,
                    Err(actual) => current = actual,
                }
            }
        }
    })
}

/// Row 4's map, keyed by service point: 12 kecamatan at 30, the three shared points at 50.
struct MutexMap {
    points: Vec<String>,
    map: Mutex<HashMap<String, u64>>,
}

impl MutexMap {
    fn new() -> Self {
        let points: Vec<String> = kota_bekasi_policy().points.into_iter().map(|p| p.code).collect();
        let map = Mutex::new(
            points
                .iter()
                .map(|p| (p.clone(), if p.contains("-KEC-") { 30 } else { 50 }))
                .collect(),
        );
        Self { points, map }
    }
}

fn mutex_map(row: &MutexMap, run: Duration) -> Measured {
    run_threads("mutex", BATCHES[3], run, |t| {
        let (map, points) = (&row.map, &row.points);
        // The same requests as row 1's; only their points are read.
        let stream = Stream::new(t);
        let mut at = 0;
        move || {
            at = next_index(at, STREAM);
            let (point, _, _) = stream.request(at, points.len());
            let mut left = map.lock().expect("the map's lock");
            let left = left.get_mut(points[point].as_str()).expect("a known point");
            if *left == 0 {
                Outcome::Refused
            } else {
                *left -= 1;
                Outcome::Granted
            }
        }
    })
}

/// Rows 1-4 and 1m, measured in turn for `run / ROUNDS` each, `ROUNDS` times over,
/// each row's rounds added up. Whatever else the machine does during the run
/// then falls on all four rows alike instead of on whichever ran at the time,
/// and their ratios stay comparable. Each row keeps its state between rounds
/// (its 510 grants are made in its first round).
fn memory_rows(day: NaiveDate, run: Duration) -> [Measured; 5] {
    let (core, resolved) = (CoreMix::new(day), ResolvedPaths::new(day));
    let recorded = CoreMix::new(day);
    let (counter, mutex) = (Padded(AtomicU64::new(DAILY_GRANTS)), MutexMap::new());
    let slice = run / MEMORY_ROUNDS;
    let mut rows: [Measured; 5] = std::array::from_fn(|i| Measured::empty(BATCHES[i]));
    for round in 1..=MEMORY_ROUNDS {
        progress(&format!("rows 1-4 and 1m, round {round} of {MEMORY_ROUNDS}"));
        rows[0].merge(core_peak_mix(&core, slice));
        rows[1].merge(core_resolved_path(&resolved, slice));
        rows[2].merge(cas_counter(&counter, slice));
        rows[3].merge(mutex_map(&mutex, slice));
        rows[4].merge(core_peak_mix_recorded(&recorded, slice));
    }
    for (row, measured) in rows.iter().enumerate() {
        assert_eq!(
            measured.grants,
            DAILY_GRANTS,
            "row {}: exactly Kota Bekasi's 510 a day",
            row + 1
        );
    }
    rows
}

// ---------------------------------------------------------------------------
// Durable

type RowResult = Result<Measured, String>;

fn database_config(url: &str, max_connections: u32) -> DatabaseConfig {
    DatabaseConfig {
        url: url.to_owned().into(),
        max_connections,
    }
}

async fn durable_core(
    url: &str,
    day: NaiveDate,
    run: Duration,
    tasks: usize,
    settings: GroupCommit,
) -> RowResult {
    let schema = format!("bench_core_{}", unique_suffix());
    let db = tokio::time::timeout(
        Duration::from_secs(10),
        Db::connect(&database_config(url, CORE_POOL), &schema, MIGRATIONS),
    )
    .await
    .map_err(|_| "no database (timed out)".to_owned())?
    .map_err(|e| format!("no database ({e})"))?;
    let (inventory, background, _) = Inventory::open(db.clone(), settings)
        .await
        .map_err(|e| format!("open: {e}"))?;
    // Kota Bekasi's points with pools far larger than a day's grants, so
    // nearly every request is granted: this row measures grants per second.
    let mut policy = kota_bekasi_policy();
    for pool in &mut policy.pools {
        pool.daily_quota = 100_000;
    }
    policy.monthly_cap = 1_000_000_000;
    policy.next_shipment = Some(day + Days::new(1));
    let points: Arc<[String]> = policy.points.iter().map(|p| p.code.clone()).collect();
    inventory
        .set_policy(policy)
        .await
        .map_err(|e| format!("policy: {e:?}"))?;
    for (holder, reference) in [(NATIONAL, "national"), (KOTA_BEKASI, "region")] {
        inventory
            .receive_shipment(holder, 10_000_000, &format!("{schema}-{reference}"), "bench")
            .await
            .map_err(|e| format!("shipment: {e}"))?;
    }
    let inv = inventory.clone();
    let measured = drive(tasks, run, move |t, i| {
        let inventory = inv.clone();
        let point = points.clone();
        async move {
            let point = &point[(t + i as usize) % point.len()];
            let nik = applicant_nik(t, i);
            let key = format!("core-{t}-{i}");
            let req = ReserveRequest {
                point_code: point,
                day,
                applicant: &nik,
                purpose: "ktp-el",
                idempotency_key: &key,
                expires_at: Utc::now() + chrono::Duration::hours(8),
            };
            match inventory.reserve(&req, Utc::now()).await {
                Ok(_) => Outcome::Granted,
                Err(ReserveFailure::Refused(ReserveError::Exhausted(_))) => Outcome::Refused,
                Err(other) => failed("Inventory::reserve", &other),
            }
        }
    })
    .await;
    let stored = inventory
        .store()
        .reservation_states()
        .await
        .map_err(|e| format!("count: {e}"))?
        .get("HELD")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        u64::try_from(stored).ok(),
        Some(measured.grants),
        "every acknowledged grant is stored"
    );
    // Every reservation of one group commit carries the batch's timestamp.
    let commits: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT updated_at) FROM reservations")
        .fetch_one(db.pool())
        .await
        .map_err(|e| format!("count: {e}"))?;
    let mut measured = measured;
    measured.commits = u64::try_from(commits).ok();
    background.abort();
    drop(inventory);
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(db.pool())
        .await;
    db.close().await;
    Ok(measured)
}

async fn per_request_baseline(url: &str, day: NaiveDate, run: Duration, tasks: usize) -> RowResult {
    let schema = format!("bench_base_{}", unique_suffix());
    let options = PgConnectOptions::from_str(url).map_err(|e| format!("no database ({e})"))?;
    let mut conn = tokio::time::timeout(Duration::from_secs(10), PgConnection::connect_with(&options))
        .await
        .map_err(|_| "no database (timed out)".to_owned())?
        .map_err(|e| format!("no database ({e})"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("schema: {e}"))?;
    let pool = PgPoolOptions::new()
        .max_connections(BASELINE_POOL)
        .min_connections(BASELINE_POOL)
        .connect_with(options.options([("search_path", schema.as_str())]))
        .await
        .map_err(|e| format!("pool: {e}"))?;
    // The same reservation row as our store's (same columns, the same unique
    // key and one-hold index); one bucket per service point.
    for ddl in [
        "CREATE TABLE bucket (id TEXT PRIMARY KEY, remaining BIGINT NOT NULL CHECK (remaining >= 0))",
        "CREATE TABLE reservation (id TEXT PRIMARY KEY, point_code TEXT NOT NULL, day TEXT NOT NULL, \
         applicant_nik TEXT NOT NULL CHECK (length(applicant_nik) = 16), purpose TEXT NOT NULL, \
         idempotency_key TEXT NOT NULL UNIQUE, state TEXT NOT NULL, expires_at BIGINT NOT NULL, \
         created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
        "CREATE UNIQUE INDEX reservation_one_hold ON reservation (applicant_nik, purpose) WHERE state = 'HELD'",
    ] {
        sqlx::query(ddl)
            .execute(&pool)
            .await
            .map_err(|e| format!("tables: {e}"))?;
    }
    let points: Arc<[String]> = kota_bekasi_policy().points.into_iter().map(|p| p.code).collect();
    for point in points.iter() {
        sqlx::query("INSERT INTO bucket (id, remaining) VALUES ($1, 1000000)")
            .bind(point)
            .execute(&pool)
            .await
            .map_err(|e| format!("buckets: {e}"))?;
    }
    let shared = pool.clone();
    let measured = drive(tasks, run, move |t, i| {
        let pool = shared.clone();
        let point = points.clone();
        async move {
            let point = &point[(t + i as usize) % point.len()];
            match grant_per_request(&pool, point, day, t, i).await {
                Ok(true) => Outcome::Granted,
                Ok(false) => Outcome::Refused,
                Err(err) => failed("per-request grant", &err),
            }
        }
    })
    .await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut conn)
        .await;
    pool.close().await;
    Ok(measured)
}

/// A distinct 16-digit NIK for request `i` of task `t` (up to 9,999 tasks).
fn applicant_nik(t: usize, i: u64) -> String {
    format!("32{:014}", t as u64 * 10_000_000_000 + i)
}

/// One grant, one transaction: a conditional decrement, then the reservation row.
async fn grant_per_request(
    pool: &PgPool,
    point: &str,
    day: NaiveDate,
    t: usize,
    i: u64,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let left: Option<i64> = sqlx::query_scalar(
        "UPDATE bucket SET remaining = remaining - 1 WHERE id = $1 AND remaining > 0 RETURNING remaining",
    )
    .bind(point)
    .fetch_optional(&mut *tx)
    .await?;
    if left.is_none() {
        tx.rollback().await?;
        return Ok(false);
    }
    let now = Utc::now().timestamp_millis();
    sqlx::query(
        "INSERT INTO reservation (id, point_code, day, applicant_nik, purpose, idempotency_key, state, \
         expires_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'HELD', $7, $8, $8)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(point)
    .bind(day.to_string())
    .bind(applicant_nik(t, i))
    .bind("ktp-el")
    .bind(format!("base-{t}-{i}"))
    .bind(now + 8 * 3_600_000)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

const CHECK_AND_DECREMENT: &str = r"
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
if left <= 0 then return -1 end
return redis.call('DECR', KEYS[1])
";

async fn redis_evalsha(url: &str, run: Duration) -> RowResult {
    let client = redis::Client::open(url).map_err(|e| format!("no Redis ({e})"))?;
    let mut con = tokio::time::timeout(Duration::from_secs(5), client.get_multiplexed_async_connection())
        .await
        .map_err(|_| "no Redis (timed out)".to_owned())?
        .map_err(|e| format!("no Redis ({e})"))?;
    let prefix = format!("adminduk:bench:{}", unique_suffix());
    let keys: Arc<[String]> = kota_bekasi_policy()
        .points
        .iter()
        .map(|p| format!("{prefix}:{}", p.code))
        .collect();
    for key in keys.iter() {
        redis::cmd("SET")
            .arg(key)
            .arg(1_000_000)
            .query_async::<()>(&mut con)
            .await
            .map_err(|e| format!("SET: {e}"))?;
    }
    let script = Arc::new(redis::Script::new(CHECK_AND_DECREMENT));
    // Loaded once, so every call below is an EVALSHA hit.
    script
        .prepare_invoke()
        .load_async(&mut con)
        .await
        .map_err(|e| format!("SCRIPT LOAD: {e}"))?;
    let (shared, all) = (con.clone(), keys.clone());
    let measured = drive(TASKS, run, move |t, i| {
        let mut con = shared.clone();
        let script = script.clone();
        let keys = all.clone();
        async move {
            let key = &keys[(t + i as usize) % keys.len()];
            match script.key(key).invoke_async::<i64>(&mut con).await {
                Ok(left) if left >= 0 => Outcome::Granted,
                Ok(_) => Outcome::Refused,
                Err(err) => failed("EVALSHA", &err),
            }
        }
    })
    .await;
    let _ = redis::cmd("DEL")
        .arg(keys.iter().collect::<Vec<_>>())
        .query_async::<()>(&mut con)
        .await;
    Ok(measured)
}

/// Rows 5 and 6 under other conditions than the table's.
#[derive(Debug)]
struct Sensitivity {
    linger1: RowResult,
    /// Our core and the baseline with fewer requests in flight.
    shallow: Vec<(usize, RowResult, RowResult)>,
}

impl Sensitivity {
    fn render(&self, row5: Option<f64>) -> String {
        let line = |what: &str, m: &RowResult| match m {
            Ok(m) => format!(
                "- {what}: {} grants/s{}, p50 {}, p99 {}; {}\n",
                group(m.grants_per_second().round() as u64),
                row5.map_or(String::new(), |r| format!(
                    " ({:.2}× row 5)",
                    m.grants_per_second() / r
                )),
                fmt_ns(m.p(0.5)),
                fmt_ns(m.p(0.99)),
                m.mix()
            ),
            Err(why) => format!("- {what}: skipped ({why})\n"),
        };
        let mut out =
            String::from("Durable rows under other conditions (not the table's; same machine and run):\n");
        out.push_str(&line(
            &format!("row 5 with GroupCommit {{ linger: 1 ms }}, {TASKS} tasks"),
            &self.linger1,
        ));
        for (tasks, core, base) in &self.shallow {
            out.push_str(&line(
                &format!("row 5 with {tasks} tasks (GroupCommit::default())"),
                core,
            ));
            out.push_str(&line(
                &format!("row 6 with {tasks} tasks (pool of {BASELINE_POOL})"),
                base,
            ));
            if let (Ok(core), Ok(base)) = (core, base) {
                let _ = writeln!(
                    out,
                    "- at {tasks} tasks our core is {:.1}× the per-request baseline",
                    core.grants_per_second() / base.grants_per_second()
                );
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Scaling and memory

/// One policy per entry of `layout` (its number of points), each point with a
/// pool of its own; regions are stocked far beyond what is granted.
fn engine_with(layout: &[usize], day: NaiveDate) -> (Engine, Vec<Vec<String>>) {
    let engine = Engine::new();
    let mut codes = Vec::with_capacity(layout.len());
    for (r, &n) in layout.iter().enumerate() {
        let region = format!("{}", 1100 + r);
        let points: Vec<PointSpec> = (0..n)
            .map(|p| PointSpec {
                code: format!("{region}-P{p:04}"),
                name: format!("Point {p}"),
                kind: PointKind::Kecamatan,
                district_code: format!("{region}{:02}", p % 100),
                pool_code: format!("{region}-P{p:04}"),
            })
            .collect();
        let pools = points
            .iter()
            .map(|p| PoolSpec {
                code: p.pool_code.clone(),
                daily_quota: 1_000,
            })
            .collect();
        codes.push(points.iter().map(|p| p.code.clone()).collect());
        engine
            .set_policy(Policy {
                region_code: region.clone(),
                points,
                pools,
                monthly_cap: 1_000_000_000,
                next_shipment: Some(day + Days::new(1)),
                version: 0,
            })
            .expect("a valid policy");
        engine
            .stock(&region)
            .adjust_capacity(1_000_000_000)
            .expect("stock can be added");
    }
    (engine, codes)
}

#[derive(Debug)]
struct Scaling {
    rows: Vec<(String, Histogram, Histogram, usize)>,
}

impl Scaling {
    fn render(&self) -> String {
        let mut out = String::from(
            "Grant cost by number of service points (Engine::reserve, 1 thread, each grant timed alone):\n\n\
             | layout | grants timed | fresh path p50 | fresh path p99 | built path p50 | built path p99 |\n\
             |---|---:|---:|---:|---:|---:|\n",
        );
        for (name, fresh, built, n) in &self.rows {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} |",
                group(*n as u64),
                fmt_ns(fresh.quantile(0.5)),
                fmt_ns(fresh.quantile(0.99)),
                fmt_ns(built.quantile(0.5)),
                fmt_ns(built.quantile(0.99)),
            );
        }
        out.push_str(
            "\n\"Fresh path\": the first grant at a (point, day), which builds the path and the pool's \
             bucket (the region's\nday budget and month already exist). \"Built path\": a second grant there. \
             Each grant has its own applicant and key.\n",
        );
        out
    }

    fn p50s(&self, layout: usize) -> (f64, f64) {
        let (_, fresh, built, _) = &self.rows[layout];
        (fresh.quantile(0.5), built.quantile(0.5))
    }
}

fn grant_cost_scaling(day: NaiveDate) -> Scaling {
    let mut national = vec![14; 519];
    national.push(7_277 - 519 * 14);
    let layouts: [(&str, Vec<usize>, u64); 3] = [
        ("14 points: 1 region of 14", vec![14], 520),
        ("7,277 points: 520 regions of ~14", national, 1),
        ("7,277 points: 1 region of 7,277", vec![7_277], 1),
    ];
    let now = Utc::now();
    let expires_at = now + chrono::Duration::hours(8);
    let mut rows = Vec::new();
    let mut serial = 0u64;
    for (name, layout, days) in layouts {
        let (engine, codes) = engine_with(&layout, day);
        let mut reserve = |code: &str, day: NaiveDate| -> Duration {
            serial += 1;
            let nik = format!("{serial:016}");
            let key = format!("scale-{serial}");
            let req = ReserveRequest {
                point_code: code,
                day,
                applicant: &nik,
                purpose: "ktp-el",
                idempotency_key: &key,
                expires_at,
            };
            let start = Instant::now();
            let reserved = engine.reserve(&req, now);
            let took = start.elapsed();
            assert!(reserved.is_ok(), "room everywhere: {reserved:?}");
            took
        };
        // The region's day and month buckets exist before the timed grants: the
        // first point of each region takes one grant each day, untimed.
        let days: Vec<NaiveDate> = (0..days).map(|d| day + Days::new(d)).collect();
        for region in &codes {
            for d in &days {
                reserve(&region[0], *d);
            }
        }
        let (mut fresh, mut built) = (Histogram::new(), Histogram::new());
        let mut timed = 0;
        for d in &days {
            for region in &codes {
                for code in &region[1..] {
                    fresh.record(reserve(code, *d).as_nanos() as u64);
                    timed += 1;
                }
            }
        }
        for d in &days {
            for region in &codes {
                for code in &region[1..] {
                    built.record(reserve(code, *d).as_nanos() as u64);
                }
            }
        }
        rows.push((name.to_owned(), fresh, built, timed));
    }
    Scaling { rows }
}

#[derive(Debug)]
struct Memory {
    buckets: usize,
    paths: usize,
    rss_growth: Option<u64>,
    /// Buckets inserted alone (`Engine::restore_bucket`, no paths) and the RSS they took.
    bare: usize,
    bare_growth: Option<u64>,
}

impl Memory {
    fn per_bucket(&self) -> Option<f64> {
        self.rss_growth.map(|b| b as f64 / self.buckets as f64)
    }

    fn bare_per_bucket(&self) -> Option<f64> {
        self.bare_growth.map(|b| b as f64 / self.bare as f64)
    }

    fn render(&self) -> String {
        let bucket = std::mem::size_of::<Bucket>();
        let align = std::mem::align_of::<Bucket>();
        // An Arc's allocation: two counters, padded to the bucket's alignment, then the bucket.
        let arc = (2 * std::mem::size_of::<usize>()).next_multiple_of(align) + bucket;
        let key = std::mem::size_of::<BucketKey>();
        let measured = match (self.rss_growth, self.per_bucket()) {
            (Some(growth), Some(per)) => format!(
                "RSS grew by {:.1} MiB for {} buckets (and {} paths): {per:.0} bytes per bucket, everything \
                 included\n(the bucket, its key and map entry, and the path that created it).",
                growth as f64 / (1024.0 * 1024.0),
                group(self.buckets as u64),
                group(self.paths as u64),
            ),
            _ => "RSS not available on this system.".to_owned(),
        };
        let bare = match self.bare_per_bucket() {
            Some(per) => format!(
                "\nBuckets alone ({} inserted with Engine::restore_bucket, no paths): {per:.0} bytes per bucket \
                 (bucket, key, map entry).",
                group(self.bare as u64),
            ),
            None => String::new(),
        };
        format!(
            "Memory per bucket: {measured}{bare}\nBy size_of: a Bucket is {bucket} bytes (two cache-padded lines, \
             align {align}), {arc} bytes in its Arc;\nits BucketKey {key} bytes plus two small heap strings; \
             the map entry adds a pointer and the table's slack.\n"
        )
    }
}

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn memory_per_bucket(day: NaiveDate) -> Memory {
    // Buckets alone: 100,000 pool buckets straight into the map.
    let bare_engine = Engine::new();
    let bare = 100_000;
    let before = rss_bytes();
    for n in 0..bare {
        bare_engine.restore_bucket(
            BucketKey::Pool {
                region: "3275".to_owned(),
                pool: format!("3275-P{:04}", n % 100),
                day: day + Days::new(n / 100),
            },
            adminduk_inventory_core::bucket::BucketCounts {
                capacity: 30,
                ..Default::default()
            },
        );
    }
    let bare_growth = before.zip(rss_bytes()).map(|(b, a)| a.saturating_sub(b));

    // 100 points with a pool each, over 1,000 days: 100,000 pool buckets,
    // plus a day budget per day and a month bucket per month.
    let (engine, codes) = engine_with(&[100], day);
    let points: Vec<_> = codes[0]
        .iter()
        .map(|c| engine.point(c).expect("a point of the policy"))
        .collect();
    let before = rss_bytes();
    let mut paths = 0;
    for d in 0..1_000 {
        let day = day + Days::new(d);
        for point in &points {
            black_box(engine.path(point, day).expect("a region with a policy"));
            paths += 1;
        }
    }
    let after = rss_bytes();
    let buckets = engine.bucket_counts().len();
    drop(bare_engine);
    Memory {
        buckets,
        paths,
        rss_growth: before.zip(after).map(|(b, a)| a.saturating_sub(b)),
        bare: bare as usize,
        bare_growth,
    }
}

// ---------------------------------------------------------------------------
// Reporting

#[derive(Debug, Default)]
struct Table {
    lines: Vec<[String; 7]>,
}

impl Table {
    fn section(&mut self, title: &str) {
        self.lines.push([
            String::new(),
            format!("*{title}*"),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }

    fn row(&mut self, n: &str, name: &str, m: Option<&Measured>, reference: Option<f64>, mix: String) {
        let line = match m {
            Some(m) => [
                n.to_owned(),
                name.to_owned(),
                group(m.per_second().round() as u64),
                fmt_ns(m.p(0.5)),
                fmt_ns(m.p(0.99)),
                reference.map_or("–".to_owned(), |r| format!("{:.2}×", m.per_second() / r)),
                mix,
            ],
            None => [
                n.to_owned(),
                name.to_owned(),
                "–".into(),
                "–".into(),
                "–".into(),
                "–".into(),
                mix,
            ],
        };
        self.lines.push(line);
    }

    fn durable_row(&mut self, n: &str, name: &str, m: &RowResult, reference: Option<f64>) {
        match m {
            Ok(m) => self.lines.push([
                n.to_owned(),
                name.to_owned(),
                group(m.grants_per_second().round() as u64),
                fmt_ns(m.p(0.5)),
                fmt_ns(m.p(0.99)),
                reference.map_or("–".to_owned(), |r| format!("{:.2}×", m.grants_per_second() / r)),
                m.mix(),
            ]),
            Err(why) => self.row(n, name, None, None, format!("skipped: {why}")),
        }
    }

    fn render(&self) -> String {
        let header = ["#", "name", "ops/s", "p50", "p99", "vs our core", "measured mix"];
        let right = [false, false, true, true, true, true, false];
        let widths: Vec<usize> = (0..header.len())
            .map(|c| {
                self.lines
                    .iter()
                    .map(|l| l[c].chars().count())
                    .chain([header[c].chars().count(), 3])
                    .max()
                    .unwrap_or(3)
            })
            .collect();
        let line = |cells: &[String]| {
            let mut out = String::from("|");
            for (c, cell) in cells.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                if right[c] {
                    let _ = write!(out, " {}{cell} |", " ".repeat(pad));
                } else {
                    let _ = write!(out, " {cell}{} |", " ".repeat(pad));
                }
            }
            out.push('\n');
            out
        };
        let mut out = line(&header.map(str::to_owned));
        out.push('|');
        for (c, w) in widths.iter().enumerate() {
            let dashes = "-".repeat(if right[c] { w - 1 } else { *w });
            let _ = write!(out, " {dashes}{} |", if right[c] { ":" } else { "" });
        }
        out.push('\n');
        for l in &self.lines {
            out.push_str(&line(l));
        }
        out
    }
}

fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn fmt_ns(ns: f64) -> String {
    if ns < 10.0 {
        format!("{ns:.2} ns")
    } else if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1_000.0)
    } else {
        format!("{:.2} ms", ns / 1_000_000.0)
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "NOT MET" }
}

#[allow(clippy::too_many_arguments)]
fn targets(
    core: &Measured,
    resolved: &Measured,
    cas: &Measured,
    mutex: &Measured,
    durable: &RowResult,
    baseline: &RowResult,
    scaling: &Scaling,
    memory: &Memory,
) -> String {
    let mut out = String::new();
    let (core_ops, resolved_ops) = (core.per_second(), resolved.per_second());
    let (cas_ops, mutex_ops) = (cas.per_second(), mutex.per_second());
    // The same ratios per CPU-second, in case others' work slowed some rows more than others.
    let per_cpu = |m: &Measured| m.undisturbed().unwrap_or_else(|| m.per_second());
    let (core_cpu, resolved_cpu, cas_cpu, mutex_cpu) =
        (per_cpu(core), per_cpu(resolved), per_cpu(cas), per_cpu(mutex));
    let _ = writeln!(
        out,
        "- refusals >= 50% of the bare CAS counter: {} — core (row 1) at {:.1}% of it ({:.1}% per \
         CPU-second); resolved path (row 2) at {:.1}% ({:.1}%)",
        verdict(core_ops >= 0.5 * cas_ops),
        100.0 * core_ops / cas_ops,
        100.0 * core_cpu / cas_cpu,
        100.0 * resolved_ops / cas_ops,
        100.0 * resolved_cpu / cas_cpu,
    );
    let _ = writeln!(
        out,
        "- refusals >= 3x Mutex<HashMap>: {} — core (row 1) at {:.2}x ({:.2}x per CPU-second); \
         resolved path (row 2) at {:.2}x ({:.2}x)",
        verdict(core_ops >= 3.0 * mutex_ops),
        core_ops / mutex_ops,
        core_cpu / mutex_cpu,
        resolved_ops / mutex_ops,
        resolved_cpu / mutex_cpu,
    );
    match (durable, baseline) {
        (Ok(d), Ok(b)) => {
            let (d, b) = (d.grants_per_second(), b.grants_per_second());
            let _ = writeln!(
                out,
                "- >= 25,000 durable grants/s: {} — {} grants/s ({:.0}% of the target)",
                verdict(d >= 25_000.0),
                group(d.round() as u64),
                100.0 * d / 25_000.0
            );
            let _ = writeln!(
                out,
                "- >= 10x the per-request Postgres baseline: {} — {:.1}x",
                verdict(d >= 10.0 * b),
                d / b
            );
        }
        (Ok(d), Err(_)) => {
            let d = d.grants_per_second();
            let _ = writeln!(
                out,
                "- >= 25,000 durable grants/s: {} — {} grants/s; baseline skipped",
                verdict(d >= 25_000.0),
                group(d.round() as u64)
            );
        }
        _ => out.push_str("- durable targets: skipped (no database)\n"),
    }
    let (small_fresh, small_built) = scaling.p50s(0);
    let (national_fresh, national_built) = scaling.p50s(1);
    let (single_fresh, single_built) = scaling.p50s(2);
    let flat = |a: f64, b: f64| b <= 2.0 * a;
    let built_flat = flat(small_built, national_built) && flat(small_built, single_built);
    let fresh_flat = flat(small_fresh, national_fresh) && flat(small_fresh, single_fresh);
    let _ = writeln!(
        out,
        "- grant cost flat from 14 to 7,277 points (p50 within 2x): {} — built path {} → {} (520 regions) \
         / {} (1 region); fresh path {} → {} (520 regions) / {} (1 region, {:.1}x)",
        match (built_flat, fresh_flat) {
            (true, true) => "MET",
            (true, false) if flat(small_fresh, national_fresh) => {
                "PARTLY MET (built paths and 520 regions flat; a fresh path in 1 region of 7,277 is not)"
            }
            _ => "NOT MET",
        },
        fmt_ns(small_built),
        fmt_ns(national_built),
        fmt_ns(single_built),
        fmt_ns(small_fresh),
        fmt_ns(national_fresh),
        fmt_ns(single_fresh),
        single_fresh / small_fresh,
    );
    match (memory.per_bucket(), memory.bare_per_bucket()) {
        (Some(per), Some(bare)) => {
            let _ = writeln!(
                out,
                "- < 1 KiB per bucket: {} — {bare:.0} bytes for a bucket alone; {per:.0} bytes per bucket \
                 counting the path that built it",
                match (bare < 1024.0, per < 1024.0) {
                    (true, true) => "MET",
                    (true, false) => "PARTLY MET (the bucket alone is under, bucket + its path is over)",
                    _ => "NOT MET",
                }
            );
        }
        _ => out.push_str("- < 1 KiB per bucket: not measured (no /proc)\n"),
    }
    out
}
