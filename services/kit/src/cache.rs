//! What the replicas of a service share in memory: rate-limit windows,
//! anti-broker counters, cached IKD status, revoked tokens.
//!
//! One trait, [`SharedCache`], with two implementations: [`RedisCache`] for
//! production, where several replicas must see the same counters, and
//! [`MemoryCache`], the embedded default for `adminduk up`, where there is one
//! process and nothing to install. [`from_url`] picks between them.
//!
//! Redis is never the system of record: everything here may vanish (eviction,
//! restart, failover), so callers treat an error or a missing key as "unknown"
//! and fall back to the database or to a safe default.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A cache shared by the replicas of a service (or in-process when there is only one).
///
/// A cache is never the system of record. Every method may fail (Redis down,
/// a timeout, a failover that lost recent writes), and a key may disappear
/// before its TTL. Callers must treat a [`CacheError`] as "unknown" and fall
/// back: read the database, or choose the safe answer for the case at hand
/// (e.g. a revoked-token check that cannot reach the cache asks the token
/// service; a rate limiter that cannot count lets the request through and
/// logs). Never turn a cache error into a client-visible failure by itself.
///
/// TTLs are kept to the millisecond, rounded up, and are at least 1 ms.
#[tonic::async_trait]
pub trait SharedCache: Send + Sync + fmt::Debug {
    /// Sets `key` to `value` for `ttl`, replacing any value and TTL it had.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError>;

    /// The value of `key`, if set and not expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;

    /// Whether `key` is set and not expired.
    async fn exists(&self, key: &str) -> Result<bool, CacheError>;

    /// Deletes `key`; deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), CacheError>;

    /// Adds 1 to the counter at `key`, creating it with `ttl` when new (a fixed
    /// window); returns the new count. Atomic across replicas.
    ///
    /// Later increments keep the window's original expiry, so the count
    /// restarts at 1 once `ttl` has passed since the first increment.
    async fn incr_window(&self, key: &str, ttl: Duration) -> Result<u64, CacheError>;

    /// Sets `key` only if absent, for `ttl`; true when this call set it
    /// (single-use tokens, replay protection). Atomic across replicas.
    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError>;

    /// One request against the GCRA rate limit at `key`: a cell every
    /// `interval`, with room for `burst` at once, timed by the shared store's
    /// own clock so replicas' clocks do not matter. `None` when this cache is
    /// not shared between replicas (the caller limits in its own process).
    async fn admit(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
    ) -> Result<Option<Admission>, CacheError> {
        let _ = (key, interval, burst);
        Ok(None)
    }

    /// Several checks of one request in one round trip to the shared store, in
    /// this order: the rate limit (when it refuses, nothing else is done), the
    /// keys that must be absent (a revocation mark, a block), and a key to
    /// claim (a proof's id: set if absent). A shared store does them in one
    /// atomic step; this default does them one after another.
    async fn check_all(&self, checks: &Checks<'_>) -> Result<Checked, CacheError> {
        let rate = match checks.rate {
            Some((key, interval, burst)) => self.admit(key, interval, burst).await?,
            None => None,
        };
        if matches!(rate, Some(Admission::Refused { .. })) {
            return Ok(Checked {
                rate,
                present: Vec::new(),
                claimed: None,
            });
        }
        let mut present = Vec::with_capacity(checks.absent.len());
        for key in checks.absent {
            present.push(self.exists(key).await?);
        }
        let claimed = match checks.claim {
            Some((key, ttl)) => Some(self.set_if_absent(key, b"1", ttl).await?),
            None => None,
        };
        Ok(Checked {
            rate,
            present,
            claimed,
        })
    }
}

/// What [`SharedCache::check_all`] is asked.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checks<'a> {
    /// A GCRA admission: the key, the interval between cells, the burst.
    pub rate: Option<(&'a str, Duration, u32)>,
    /// Keys that must not be set.
    pub absent: &'a [&'a str],
    /// A key to set if absent, with its TTL.
    pub claim: Option<(&'a str, Duration)>,
}

/// What [`SharedCache::check_all`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The rate limit's answer; `None` when not asked or not shared (limit in process).
    pub rate: Option<Admission>,
    /// For each key of [`Checks::absent`], whether it is set; empty when the rate refused.
    pub present: Vec<bool>,
    /// Whether the claim was this call's; `None` when not asked or the rate refused.
    pub claimed: Option<bool>,
}

/// A rate limit's answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within the limit.
    Allowed,
    /// Over it: the next request would be admitted after this long.
    Refused {
        /// How long to wait.
        retry_after: Duration,
    },
}

/// A cache operation failed; the caller should treat the answer as unknown.
///
/// No variant carries the Redis URL, which may hold a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The Redis URL did not parse (it is not repeated here: it may hold a password).
    #[error("invalid redis url (expected redis://[user:password@]host[:port][/db])")]
    InvalidUrl,
    /// Redis could not be reached when connecting.
    #[error("cannot connect to redis: {0}")]
    Connect(#[source] redis::RedisError),
    /// A command failed: Redis unreachable or refusing it.
    #[error("redis command failed: {0}")]
    Command(#[source] redis::RedisError),
    /// Redis did not answer in time (down, reconnecting, or overloaded); a
    /// write may or may not have happened.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// `incr_window` found a value that is not a counter (in-process cache;
    /// Redis reports the same as [`CacheError::Command`]).
    #[error("the value at the key is not a counter")]
    NotACounter,
    /// Redis answered something the script does not answer.
    #[error("redis answered in an unexpected shape")]
    Unexpected,
}

/// The TTL in whole milliseconds, rounded up and at least 1, as Redis takes it.
fn ttl_millis(ttl: Duration) -> u64 {
    let millis = ttl.as_nanos().div_ceil(1_000_000).max(1);
    // Redis keeps expiries as signed 64-bit milliseconds.
    u64::try_from(millis).map_or(i64::MAX as u64, |m| m.min(i64::MAX as u64))
}

/// The prefix of what the mesh's services share with each other, not only
/// between their own replicas: the IKD service's revocation marks, which every
/// gateway reads.
pub const MESH: &str = "mesh";

/// Picks the implementation: Redis when a URL is given, in-process otherwise.
///
/// `prefix` names the service (e.g. `gateway`); Redis keys become
/// `adminduk:<prefix>:<key>` so services sharing one Redis never collide.
pub async fn from_url(url: Option<&str>, prefix: &str) -> Result<Arc<dyn SharedCache>, CacheError> {
    match url {
        Some(url) => {
            let cache = RedisCache::connect(url, prefix).await?;
            tracing::info!(backend = "redis", prefix, "shared cache ready");
            Ok(Arc::new(cache))
        }
        None => {
            tracing::info!(backend = "memory", prefix, "shared cache ready");
            Ok(Arc::new(MemoryCache::new()))
        }
    }
}

/// Adds 1 and, on the first increment only, starts the window. A script runs
/// atomically in Redis, so no crash or race between the two steps can leave a
/// counter without a TTL; a counter found without one (written by something
/// else) gets one rather than counting forever.
const INCR_WINDOW_LUA: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
";

/// The checks of [`SharedCache::check_all`] in one atomic step, on Redis's
/// clock. With ARGV[1] = 1, KEYS[1] holds a GCRA theoretical arrival time (ms),
/// ARGV[2] is the interval between cells (ms) and ARGV[3] the burst: over the
/// limit, the answer is {0, ms to wait} and nothing else is done or changed.
/// Then the ARGV[4] keys that follow are checked for existence, and with
/// ARGV[5] = 1 the last key is set if absent for ARGV[6] ms. The answer is
/// {1, 0, exists..., claimed} (claimed -1 when no claim was asked).
const CHECK_ALL_LUA: &str = r"
local k = 1
if ARGV[1] == '1' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local interval = tonumber(ARGV[2])
  local tolerance = interval * (tonumber(ARGV[3]) - 1)
  local tat = tonumber(redis.call('GET', KEYS[1]) or now)
  if tat < now then tat = now end
  local wait = tat - tolerance - now
  if wait > 0 then return {0, wait} end
  local next_tat = tat + interval
  redis.call('SET', KEYS[1], next_tat, 'PX', next_tat - now)
  k = 2
end
local out = {1, 0}
local n = tonumber(ARGV[4])
for j = 0, n - 1 do
  out[#out + 1] = redis.call('EXISTS', KEYS[k + j])
end
local claimed = -1
if ARGV[5] == '1' then
  if redis.call('SET', KEYS[k + n], '1', 'NX', 'PX', ARGV[6]) then claimed = 1 else claimed = 0 end
end
out[#out + 1] = claimed
return out
";

/// The longest any one cache call waits. The client's own response timeout
/// (500 ms) does not cover waiting for a reconnect, which retries with backoff;
/// a caller that falls back needs an answer sooner than that.
const REDIS_CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs one Redis call within [`REDIS_CALL_TIMEOUT`].
async fn bounded<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, CacheError> {
    match tokio::time::timeout(REDIS_CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(CacheError::Command),
        Err(_elapsed) => Err(CacheError::Timeout(REDIS_CALL_TIMEOUT)),
    }
}

/// The cache in Redis, shared by every replica that connects with the same prefix.
#[derive(Clone)]
pub struct RedisCache {
    conn: ConnectionManager,
    key_prefix: String,
    incr_window: redis::Script,
    check_all: redis::Script,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection holds the URL, and with it maybe a password.
        f.debug_struct("RedisCache")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Connects to Redis at `url`; every key is stored as `adminduk:<prefix>:<key>`.
    ///
    /// Connecting retries briefly (about a second) before giving up. Once
    /// connected, the connection re-establishes itself after failures, and
    /// every call gives up after one second, so a slow or absent Redis becomes
    /// an error the caller can fall back from, not a stalled request.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, CacheError> {
        // The parse error is dropped: some of its messages quote the URL.
        let client = redis::Client::open(url).map_err(|_| CacheError::InvalidUrl)?;
        // Few, short retries: a cache that is away is better reported (and
        // fallen back from) than waited for.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(CacheError::Connect)?;
        Ok(Self {
            conn,
            key_prefix: format!("adminduk:{prefix}:"),
            incr_window: redis::Script::new(INCR_WINDOW_LUA),
            check_all: redis::Script::new(CHECK_ALL_LUA),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }
}

#[tonic::async_trait]
impl SharedCache for RedisCache {
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value).arg("PX").arg(ttl_millis(ttl));
        bounded(cmd.query_async::<()>(&mut self.conn.clone())).await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(key));
        bounded(cmd.query_async(&mut self.conn.clone())).await
    }

    async fn exists(&self, key: &str) -> Result<bool, CacheError> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(self.key(key));
        let found: u64 = bounded(cmd.query_async(&mut self.conn.clone())).await?;
        Ok(found > 0)
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(key));
        bounded(cmd.query_async::<()>(&mut self.conn.clone())).await
    }

    async fn incr_window(&self, key: &str, ttl: Duration) -> Result<u64, CacheError> {
        let mut invocation = self.incr_window.key(self.key(key));
        invocation.arg(ttl_millis(ttl));
        bounded(invocation.invoke_async(&mut self.conn.clone())).await
    }

    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl_millis(ttl));
        // SET NX answers OK when it set the key and nil when the key was there.
        let reply: redis::Value = bounded(cmd.query_async(&mut self.conn.clone())).await?;
        Ok(!matches!(reply, redis::Value::Nil))
    }

    async fn admit(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
    ) -> Result<Option<Admission>, CacheError> {
        let checks = Checks {
            rate: Some((key, interval, burst)),
            ..Checks::default()
        };
        Ok(self.check_all(&checks).await?.rate)
    }

    async fn check_all(&self, checks: &Checks<'_>) -> Result<Checked, CacheError> {
        let mut invocation = self.check_all.prepare_invoke();
        let (interval, burst) = checks.rate.map_or((1, 1), |(_, interval, burst)| {
            (ttl_millis(interval), burst.max(1))
        });
        if let Some((key, _, _)) = checks.rate {
            invocation.key(self.key(key));
        }
        for key in checks.absent {
            invocation.key(self.key(key));
        }
        if let Some((key, _)) = checks.claim {
            invocation.key(self.key(key));
        }
        invocation
            .arg(u8::from(checks.rate.is_some()))
            .arg(interval)
            .arg(burst)
            .arg(checks.absent.len())
            .arg(u8::from(checks.claim.is_some()))
            .arg(checks.claim.map_or(1, |(_, ttl)| ttl_millis(ttl)));
        let answer: Vec<i64> = bounded(invocation.invoke_async(&mut self.conn.clone())).await?;
        let (Some(&admitted), Some(&wait)) = (answer.first(), answer.get(1)) else {
            return Err(CacheError::Unexpected);
        };
        if admitted == 0 {
            return Ok(Checked {
                rate: Some(Admission::Refused {
                    retry_after: Duration::from_millis(u64::try_from(wait).unwrap_or(1).max(1)),
                }),
                present: Vec::new(),
                claimed: None,
            });
        }
        let flags = &answer[2..];
        if flags.len() != checks.absent.len() + 1 {
            return Err(CacheError::Unexpected);
        }
        Ok(Checked {
            rate: checks.rate.map(|_| Admission::Allowed),
            present: flags[..checks.absent.len()].iter().map(|f| *f > 0).collect(),
            claimed: match flags[checks.absent.len()] {
                -1 => None,
                claimed => Some(claimed == 1),
            },
        })
    }
}

/// Below this many entries the in-process cache never sweeps; above it, a
/// sweep runs each time the map has doubled since the last one, so the cost is
/// amortised and memory stays within about twice the live entries.
const SWEEP_AT_LEAST: usize = 1024;

/// The cache in this process: the embedded default when there is one replica.
pub struct MemoryCache {
    entries: Mutex<Entries>,
}

struct Entries {
    map: HashMap<String, Entry>,
    /// Sweep expired entries when the map reaches this size.
    next_sweep: usize,
}

struct Entry {
    value: Vec<u8>,
    /// `None` when the TTL is too long for `Instant` to represent.
    expires_at: Option<Instant>,
}

impl Entry {
    fn new(value: Vec<u8>, ttl: Duration, now: Instant) -> Self {
        Self {
            value,
            expires_at: now.checked_add(Duration::from_millis(ttl_millis(ttl))),
        }
    }

    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

impl Entries {
    /// The live entry at `key`, dropping it when it has expired.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.map.get(key).is_some_and(|e| !e.is_live(now)) {
            self.map.remove(key);
        }
        self.map.get_mut(key)
    }

    fn insert(&mut self, key: &str, entry: Entry, now: Instant) {
        self.map.insert(key.to_owned(), entry);
        if self.map.len() >= self.next_sweep {
            self.map.retain(|_, e| e.is_live(now));
            self.next_sweep = (self.map.len() * 2).max(SWEEP_AT_LEAST);
        }
    }
}

impl fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be tokens; show neither them nor their keys.
        f.debug_struct("MemoryCache").finish_non_exhaustive()
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                next_sweep: SWEEP_AT_LEAST,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Every critical section leaves the map consistent, so a panic in
        // another holder does not make it unusable.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl SharedCache for MemoryCache {
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let now = Instant::now();
        self.lock().insert(key, Entry::new(value.to_vec(), ttl, now), now);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.lock().live(key, Instant::now()).map(|e| e.value.clone()))
    }

    async fn exists(&self, key: &str) -> Result<bool, CacheError> {
        Ok(self.lock().live(key, Instant::now()).is_some())
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.lock().map.remove(key);
        Ok(())
    }

    async fn incr_window(&self, key: &str, ttl: Duration) -> Result<u64, CacheError> {
        let now = Instant::now();
        let mut entries = self.lock();
        if let Some(entry) = entries.live(key, now) {
            // Kept as decimal text, as Redis keeps counters, so `get` agrees.
            let count = std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .and_then(|n| n.checked_add(1))
                .ok_or(CacheError::NotACounter)?;
            entry.value = count.to_string().into_bytes();
            return Ok(count);
        }
        entries.insert(key, Entry::new(b"1".to_vec(), ttl, now), now);
        Ok(1)
    }

    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError> {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.live(key, now).is_some() {
            return Ok(false);
        }
        entries.insert(key, Entry::new(value.to_vec(), ttl, now), now);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::testing;

    /// Long enough that a test never sees it pass by accident.
    const LONG: Duration = Duration::from_secs(60);
    /// Short enough to wait out.
    const SHORT: Duration = Duration::from_millis(100);
    /// Comfortably past `SHORT`.
    const PAST_SHORT: Duration = Duration::from_millis(250);

    /// A prefix no other test (or test run) uses, so tests can share one Redis.
    fn unique_prefix(test: &str) -> String {
        format!("test:{test}:{}", crate::testing::unique_suffix())
    }

    /// Asserts that `key` holds `value`, saying `why` (with the backend) otherwise.
    async fn assert_reads(cache: &dyn SharedCache, key: &str, value: &[u8], why: &str) {
        let read = cache.get(key).await.unwrap_or_else(|err| panic!("{why}: {err}"));
        assert_eq!(read.as_deref(), Some(value), "{why}");
    }

    /// The Redis cache at `ADMINDUK_TEST_REDIS_URL` under a prefix of its own,
    /// when one is configured.
    async fn redis(test: &str) -> Option<RedisCache> {
        let url = testing::redis_url()?;
        let cache = RedisCache::connect(&url, &unique_prefix(test))
            .await
            .expect("redis at ADMINDUK_TEST_REDIS_URL");
        Some(cache)
    }

    /// Every implementation to test: in-process always, Redis when configured.
    async fn caches(test: &str) -> Vec<(&'static str, Arc<dyn SharedCache>)> {
        let mut all: Vec<(&'static str, Arc<dyn SharedCache>)> =
            vec![("memory", Arc::new(MemoryCache::new()))];
        if let Some(cache) = redis(test).await {
            all.push(("redis", Arc::new(cache)));
        }
        all
    }

    #[tokio::test]
    async fn check_all_answers_each_check_and_a_refused_rate_does_nothing_else() {
        let caches = caches("check_all").await;
        if let Some(redis) = redis("check_all_limited").await {
            // Redis also limits: one at once, then a refusal that claims nothing.
            let minute = Duration::from_secs(60);
            let limited = Checks {
                rate: Some(("rate", minute, 1)),
                absent: &["mark"],
                claim: Some(("proof", minute)),
            };
            let first = redis.check_all(&limited).await.expect("redis");
            assert_eq!(first.rate, Some(Admission::Allowed));
            assert_eq!((first.present, first.claimed), (vec![false], Some(true)));
            let limited = Checks {
                claim: Some(("proof-2", minute)),
                ..limited
            };
            let second = redis.check_all(&limited).await.expect("redis");
            assert!(
                matches!(second.rate, Some(Admission::Refused { .. })),
                "{second:?}"
            );
            assert_eq!((second.present.len(), second.claimed), (0, None));
            assert!(
                !redis.exists("proof-2").await.expect("redis"),
                "a refusal claims nothing"
            );
        }
        for (name, cache) in caches {
            cache
                .set("revoked", b"1", Duration::from_secs(60))
                .await
                .expect("set");
            let checks = Checks {
                rate: None,
                absent: &["revoked", "blocked"],
                claim: Some(("claim", Duration::from_secs(60))),
            };
            let first = cache.check_all(&checks).await.expect("checked");
            assert_eq!(first.present, [true, false], "{name}");
            assert_eq!(first.claimed, Some(true), "{name}");
            let again = cache.check_all(&checks).await.expect("checked");
            assert_eq!(again.claimed, Some(false), "{name}: a claim is once");
            let none = cache.check_all(&Checks::default()).await.expect("checked");
            assert_eq!(
                (none.rate, none.present, none.claimed),
                (None, vec![], None),
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn redis_admits_a_burst_then_refuses_with_the_wait_and_keys_apart() {
        let Some(cache) = redis("gcra").await else {
            return;
        };
        // One a minute, three at once: the fourth waits about a minute.
        let minute = Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(
                cache.admit("a", minute, 3).await.expect("redis"),
                Some(Admission::Allowed)
            );
        }
        match cache.admit("a", minute, 3).await.expect("redis") {
            Some(Admission::Refused { retry_after }) => {
                assert!(
                    retry_after > Duration::from_secs(50) && retry_after <= minute,
                    "{retry_after:?}"
                );
            }
            other => panic!("the fourth is refused: {other:?}"),
        }
        // Another key has its own allowance; a refusal spent nothing.
        assert_eq!(
            cache.admit("b", minute, 3).await.expect("redis"),
            Some(Admission::Allowed)
        );
        // A short interval refills: after it, one more is admitted.
        assert_eq!(
            cache.admit("c", SHORT, 1).await.expect("redis"),
            Some(Admission::Allowed)
        );
        assert!(matches!(
            cache.admit("c", SHORT, 1).await.expect("redis"),
            Some(Admission::Refused { .. })
        ));
        tokio::time::sleep(PAST_SHORT).await;
        assert_eq!(
            cache.admit("c", SHORT, 1).await.expect("redis"),
            Some(Admission::Allowed)
        );
        // The in-process cache is no shared limiter: its callers limit themselves.
        assert_eq!(
            MemoryCache::new().admit("a", minute, 3).await.expect("memory"),
            None
        );
    }

    #[tokio::test]
    async fn set_get_exists_delete() {
        for (label, cache) in caches("basic").await {
            assert_eq!(cache.get("k").await.expect(label), None, "{label}");
            assert!(!cache.exists("k").await.expect(label), "{label}");

            cache.set("k", b"one", LONG).await.expect(label);
            assert_reads(cache.as_ref(), "k", b"one", label).await;
            assert!(cache.exists("k").await.expect(label), "{label}");

            cache.set("k", b"\x00two\xff", LONG).await.expect(label);
            // Set replaces the value, binary-safe.
            assert_reads(cache.as_ref(), "k", b"\x00two\xff", label).await;

            cache.delete("k").await.expect(label);
            assert_eq!(cache.get("k").await.expect(label), None, "{label}");
            assert!(!cache.exists("k").await.expect(label), "{label}");
            cache
                .delete("k")
                .await
                .unwrap_or_else(|e| panic!("{label}: deleting a missing key: {e}"));
        }
    }

    #[tokio::test]
    async fn values_expire_after_their_ttl() {
        for (label, cache) in caches("expiry").await {
            cache.set("short", b"v", SHORT).await.expect(label);
            cache.set("long", b"v", LONG).await.expect(label);
            assert!(cache.exists("short").await.expect(label), "{label}");

            tokio::time::sleep(PAST_SHORT).await;
            assert_eq!(cache.get("short").await.expect(label), None, "{label}");
            assert!(!cache.exists("short").await.expect(label), "{label}");
            assert!(cache.exists("long").await.expect(label), "{label}");
        }
    }

    #[tokio::test]
    async fn set_replaces_the_ttl() {
        for (label, cache) in caches("reset_ttl").await {
            cache.set("k", b"v", SHORT).await.expect(label);
            cache.set("k", b"v", LONG).await.expect(label);
            tokio::time::sleep(PAST_SHORT).await;
            assert!(cache.exists("k").await.expect(label), "{label}");
        }
    }

    #[tokio::test]
    async fn a_zero_ttl_is_accepted() {
        for (label, cache) in caches("zero_ttl").await {
            cache.set("k", b"v", Duration::ZERO).await.expect(label);
            assert!(
                cache.set_if_absent("n", b"v", Duration::ZERO).await.expect(label),
                "{label}"
            );
            assert_eq!(
                cache.incr_window("c", Duration::ZERO).await.expect(label),
                1,
                "{label}"
            );
        }
    }

    #[tokio::test]
    async fn incr_window_counts_then_restarts_after_the_window() {
        for (label, cache) in caches("window").await {
            for expected in 1..=3 {
                assert_eq!(
                    cache.incr_window("w", SHORT).await.expect(label),
                    expected,
                    "{label}"
                );
            }
            // Counters read back as decimal text.
            assert_reads(cache.as_ref(), "w", b"3", label).await;

            tokio::time::sleep(PAST_SHORT).await;
            assert_eq!(
                cache.incr_window("w", SHORT).await.expect(label),
                1,
                "{label}: a new window"
            );
        }
    }

    #[tokio::test]
    async fn incr_window_keeps_the_first_expiry() {
        for (label, cache) in caches("fixed_window").await {
            assert_eq!(cache.incr_window("w", SHORT).await.expect(label), 1);
            // A later increment with a longer TTL must not stretch the window.
            assert_eq!(cache.incr_window("w", LONG).await.expect(label), 2);
            tokio::time::sleep(PAST_SHORT).await;
            assert_eq!(cache.incr_window("w", LONG).await.expect(label), 1, "{label}");
        }
    }

    #[tokio::test]
    async fn incr_window_on_a_non_counter_fails() {
        for (label, cache) in caches("not_counter").await {
            cache.set("k", b"not a number", LONG).await.expect(label);
            assert!(cache.incr_window("k", LONG).await.is_err(), "{label}");
        }
    }

    #[tokio::test]
    async fn set_if_absent_sets_once_until_expiry() {
        for (label, cache) in caches("nx").await {
            assert!(
                cache.set_if_absent("t", b"first", SHORT).await.expect(label),
                "{label}"
            );
            assert!(
                !cache.set_if_absent("t", b"second", SHORT).await.expect(label),
                "{label}"
            );
            // The losing call changes nothing.
            assert_reads(cache.as_ref(), "t", b"first", label).await;

            tokio::time::sleep(PAST_SHORT).await;
            assert!(
                cache.set_if_absent("t", b"third", SHORT).await.expect(label),
                "{label}: free again after expiry"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_increments_are_all_counted() {
        const TASKS: u64 = 8;
        const EACH: u64 = 100;
        for (label, cache) in caches("incr_race").await {
            let start = Arc::new(tokio::sync::Barrier::new(TASKS as usize));
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let cache = Arc::clone(&cache);
                    let start = Arc::clone(&start);
                    tokio::spawn(async move {
                        start.wait().await;
                        let mut last = 0;
                        for _ in 0..EACH {
                            last = cache.incr_window("hits", LONG).await.expect("incr_window");
                        }
                        last
                    })
                })
                .collect();
            let mut max_seen = 0;
            for task in tasks {
                max_seen = max_seen.max(task.await.expect("task"));
            }
            assert_eq!(max_seen, TASKS * EACH, "{label}");
            assert_eq!(
                cache.get("hits").await.expect(label),
                Some((TASKS * EACH).to_string().into_bytes()),
                "{label}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn exactly_one_racer_wins_set_if_absent() {
        const TASKS: usize = 16;
        for (label, cache) in caches("nx_race").await {
            let start = Arc::new(tokio::sync::Barrier::new(TASKS));
            let tasks: Vec<_> = (0..TASKS)
                .map(|i| {
                    let cache = Arc::clone(&cache);
                    let start = Arc::clone(&start);
                    tokio::spawn(async move {
                        start.wait().await;
                        let value = i.to_string();
                        let won = cache
                            .set_if_absent("once", value.as_bytes(), LONG)
                            .await
                            .expect("set_if_absent");
                        won.then_some(value)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for task in tasks {
                winners.extend(task.await.expect("task"));
            }
            assert_eq!(winners.len(), 1, "{label}: winners {winners:?}");
            assert_eq!(
                cache.get("once").await.expect(label),
                Some(winners[0].clone().into_bytes()),
                "{label}: the stored value is the winner's"
            );
        }
    }

    #[tokio::test]
    async fn memory_sweeps_expired_entries() {
        let cache = MemoryCache::new();
        for i in 0..SWEEP_AT_LEAST - 1 {
            cache
                .set(&format!("k{i}"), b"v", Duration::from_millis(1))
                .await
                .expect("set");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        // One more insert reaches the threshold and drops the expired ones.
        cache.set("fresh", b"v", LONG).await.expect("set");
        let entries = cache.lock();
        let kept: Vec<&str> = entries.map.keys().map(String::as_str).collect();
        assert_eq!(kept, ["fresh"], "only the live entry is kept");
        assert_eq!(entries.next_sweep, SWEEP_AT_LEAST);
    }

    #[tokio::test]
    async fn prefixes_keep_services_apart() {
        let (Some(a), Some(b)) = (redis("a").await, redis("b").await) else {
            return;
        };
        a.set("k", b"a", LONG).await.expect("set");
        assert_eq!(b.get("k").await.expect("get"), None);
        assert!(b.set_if_absent("k", b"b", LONG).await.expect("nx"));
        assert_eq!(a.get("k").await.expect("get").as_deref(), Some(&b"a"[..]));
    }

    /// Everything an error could print: Display, Debug and every source.
    fn everything_shown(err: &CacheError) -> String {
        let mut shown = format!("{err} {err:?}");
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            shown.push_str(&format!(" {s} {s:?}"));
            source = s.source();
        }
        shown
    }

    #[tokio::test]
    async fn errors_never_show_the_password() {
        const PASSWORD: &str = "hunter2-s3cret";
        for url in [
            format!("redis://:{PASSWORD}@127.0.0.1:notaport"),
            format!("redis://user:{PASSWORD}@[::1"),
            format!("http://user:{PASSWORD}@127.0.0.1:6379"),
            format!("redis://user:{PASSWORD}@127.0.0.1:6379/?protocol={PASSWORD}"),
        ] {
            let err = RedisCache::connect(&url, "t").await.expect_err("a bad url");
            assert!(matches!(err, CacheError::InvalidUrl), "{url}: {err}");
            let shown = everything_shown(&err);
            assert!(!shown.contains(PASSWORD), "{url} leaked: {shown}");
        }

        // A URL that parses, with nothing listening (port 1 refuses at once).
        let url = format!("redis://user:{PASSWORD}@127.0.0.1:1");
        let err = RedisCache::connect(&url, "t")
            .await
            .expect_err("nothing listens on port 1");
        assert!(matches!(err, CacheError::Connect(_)), "{err}");
        let shown = everything_shown(&err);
        assert!(!shown.contains(PASSWORD), "connect failure leaked: {shown}");

        // A URL that parses, against a Redis that refuses the login (an unknown
        // user: a Redis without a password accepts any for `default`).
        if let Some(url) = testing::redis_url() {
            let Some(rest) = url.strip_prefix("redis://").filter(|r| !r.contains('@')) else {
                return;
            };
            let url = format!("redis://adminduk-no-such-user:{PASSWORD}@{rest}");
            let err = RedisCache::connect(&url, "t")
                .await
                .expect_err("a wrong password");
            let shown = everything_shown(&err);
            assert!(!shown.contains(PASSWORD), "auth failure leaked: {shown}");
        }
    }

    #[tokio::test]
    async fn from_url_picks_the_implementation() {
        let memory = from_url(None, "t").await.expect("memory");
        assert!(format!("{memory:?}").starts_with("MemoryCache"));
        if let Some(url) = testing::redis_url() {
            let redis = from_url(Some(&url), &unique_prefix("from_url"))
                .await
                .expect("redis");
            assert!(format!("{redis:?}").starts_with("RedisCache"));
        }
    }

    #[test]
    fn ttls_round_up_to_whole_milliseconds() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1)), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_millis(Duration::from_secs(2)), 2000);
        assert_eq!(ttl_millis(Duration::MAX), i64::MAX as u64);
    }
}
