//! Rate limits by principal, never by address alone: an office behind one
//! NAT address is many operators, so a limit belongs to a device, an agency,
//! a resident's device or an administrator, and is shared by every gateway
//! replica through the shared cache (GCRA in one Redis script, on Redis's
//! clock). Only the anonymous methods are also limited per source address,
//! and per NIK and device key they name. The shared store gets a few
//! milliseconds; when it is slower or away, each replica limits alone with
//! `governor` (the same algorithm in process), so the gateway keeps serving.

use std::sync::Arc;
use std::time::Duration;

use adminduk_kit::cache::{Admission, SharedCache};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// How long the shared store may take to answer before the replica decides alone.
const SHARED_BUDGET: Duration = Duration::from_millis(5);
/// Past this many keys, the in-process limiters forget the idle ones.
const LOCAL_KEYS: usize = 100_000;

/// Whose allowance a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An office device.
    Office,
    /// An agency.
    Agency,
    /// A resident's bound device.
    Citizen,
    /// An administrator.
    Admin,
    /// An anonymous caller's source address.
    Address,
    /// A NIK an anonymous call names (the activation and token flow).
    Nik,
    /// A device key an anonymous call names.
    DeviceKey,
}

impl Kind {
    /// The kind of caller in the metrics: `resident`, `office`, `agency`,
    /// `admin`, or `anonymous` (limits on an address, a NIK or a device key
    /// an unauthenticated call names).
    pub fn principal_kind(self) -> &'static str {
        match self {
            Kind::Office => "office",
            Kind::Agency => "agency",
            Kind::Citizen => "resident",
            Kind::Admin => "admin",
            Kind::Address | Kind::Nik | Kind::DeviceKey => "anonymous",
        }
    }

    const ALL: [Kind; 7] = [
        Kind::Office,
        Kind::Agency,
        Kind::Citizen,
        Kind::Admin,
        Kind::Address,
        Kind::Nik,
        Kind::DeviceKey,
    ];

    /// The name in keys, refusals and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Office => "office",
            Kind::Agency => "agency",
            Kind::Citizen => "citizen",
            Kind::Admin => "admin",
            Kind::Address => "address",
            Kind::Nik => "nik",
            Kind::DeviceKey => "device_key",
        }
    }

    /// The default allowance: requests per minute, and how many at once.
    pub fn allowance(self) -> (u32, u32) {
        match self {
            // A busy counter serves a resident every few minutes, with lookups between.
            Kind::Office | Kind::Admin => (600, 120),
            Kind::Agency => (300, 60),
            Kind::Citizen => (60, 20),
            Kind::Address => (120, 30),
            // Activation and tokens for one NIK or one phone: a handful of tries.
            Kind::Nik => (10, 5),
            Kind::DeviceKey => (20, 10),
        }
    }

    fn index(self) -> usize {
        Kind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// Each kind's allowance: requests per minute, and how many at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowances([(u32, u32); 7]);

impl Default for Allowances {
    fn default() -> Self {
        Self(Kind::ALL.map(Kind::allowance))
    }
}

impl Allowances {
    /// These allowances with `kind`'s set to `per_minute` with bursts of `burst` (each at least 1).
    pub fn with(mut self, kind: Kind, per_minute: u32, burst: u32) -> Self {
        self.0[kind.index()] = (per_minute.max(1), burst.clamp(1, per_minute.max(1)));
        self
    }

    /// `kind`'s allowance.
    pub fn of(&self, kind: Kind) -> (u32, u32) {
        self.0[kind.index()]
    }
}

/// The limiters of one gateway replica.
pub(crate) struct Limits {
    shared: Arc<dyn SharedCache>,
    allowances: Allowances,
    local: Vec<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

impl Limits {
    pub(crate) fn new(shared: Arc<dyn SharedCache>, allowances: Allowances) -> Self {
        let local = Kind::ALL
            .iter()
            .map(|kind| {
                let (per_minute, burst) = allowances.of(*kind);
                let quota = Quota::per_minute(
                    std::num::NonZeroU32::new(per_minute).unwrap_or(std::num::NonZeroU32::MIN),
                )
                .allow_burst(std::num::NonZeroU32::new(burst).unwrap_or(std::num::NonZeroU32::MIN));
                governor::RateLimiter::keyed(quota)
            })
            .collect();
        Self {
            shared,
            allowances,
            local,
            clock: DefaultClock::default(),
        }
    }

    /// The shared store's key, interval and burst of `kind`'s allowance at `key`.
    pub(crate) fn shared(&self, kind: Kind, key: &str) -> (String, Duration, u32) {
        let (per_minute, burst) = self.allowances.of(kind);
        let interval = Duration::from_millis(60_000 / u64::from(per_minute.max(1)));
        (format!("rate:{}:{key}", kind.as_str()), interval, burst)
    }

    /// Spends one request of `kind`'s allowance at `key`; `Err` with the wait when none is left.
    pub(crate) async fn spend(&self, kind: Kind, key: &str) -> Result<(), Duration> {
        let (shared_key, interval, burst) = self.shared(kind, key);
        match tokio::time::timeout(SHARED_BUDGET, self.shared.admit(&shared_key, interval, burst)).await {
            Ok(Ok(Some(Admission::Allowed))) => Ok(()),
            Ok(Ok(Some(Admission::Refused { retry_after }))) => Err(retry_after),
            Ok(Ok(None)) => self.spend_here(kind, key),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "shared rate limit unanswered; limiting here");
                self.spend_here(kind, key)
            }
            Err(_) => self.spend_here(kind, key),
        }
    }

    /// Spends it in this replica alone (the shared store is away, or is no shared store).
    pub(crate) fn spend_here(&self, kind: Kind, key: &str) -> Result<(), Duration> {
        let Some(limiter) = self.local.get(kind.index()) else {
            return Ok(());
        };
        if limiter.len() > LOCAL_KEYS {
            limiter.retain_recent();
        }
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use adminduk_kit::cache::MemoryCache;

    use super::*;

    #[tokio::test]
    async fn a_burst_is_admitted_then_the_next_waits_and_keys_are_apart() {
        let limits = Limits::new(Arc::new(MemoryCache::new()), Allowances::default());
        let (_, burst) = Kind::Nik.allowance();
        for _ in 0..burst {
            assert_eq!(limits.spend(Kind::Nik, "a").await, Ok(()));
        }
        let wait = limits.spend(Kind::Nik, "a").await.expect_err("over the burst");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(6),
            "{wait:?}"
        );
        assert_eq!(limits.spend(Kind::Nik, "b").await, Ok(()), "another NIK");
        assert_eq!(limits.spend(Kind::DeviceKey, "a").await, Ok(()), "another kind");
    }

    #[test]
    fn every_kind_has_a_positive_allowance_and_its_own_limiter() {
        for kind in Kind::ALL {
            let (per_minute, burst) = kind.allowance();
            assert!(per_minute > 0 && burst > 0 && burst <= per_minute, "{kind:?}");
            assert_eq!(Kind::ALL[kind.index()], kind);
        }
    }
}
