//! What the inventory records in the process's metrics (see
//! `adminduk_kit::metrics`), in one place the service, its handlers and the
//! bench call: grants by point, refusals by reason, expiries, and each day's
//! quota left.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex, PoisonError};

use chrono::NaiveDate;

use adminduk_inventory_core::engine::{Path, Reservation, ReserveError};
use adminduk_inventory_core::state::Transition;
use adminduk_kit::metrics::{self, Metrics, PointLabels, QuotaLabels, ReasonLabels};

const SERVICE: &str = "inventory";

/// The days whose quota gauges are kept, with their labels (so past days'
/// series can be taken out of the metrics).
static GAUGED: LazyLock<Mutex<HashSet<(NaiveDate, QuotaLabels)>>> = LazyLock::new(Default::default);

/// A hold granted (and durable): its point's count and its day's quota left.
pub fn granted(reservation: &Reservation) {
    metrics::get()
        .grants
        .get_or_create(&PointLabels {
            service: SERVICE,
            service_point: reservation.point_code().to_owned(),
        })
        .inc();
    room_left(&reservation.path);
}

/// A hold committed, released or expired (and durable).
pub fn transitioned(reservation: &Reservation, transition: Transition) {
    if transition != Transition::Commit {
        // A released or expired hold is room again.
        room_left(&reservation.path);
    }
    if transition == Transition::Expire {
        Metrics::count(&metrics::get().expiries, SERVICE);
    }
}

/// A reservation refused by the core.
pub fn refused(err: &ReserveError) {
    refused_for(match err {
        ReserveError::Exhausted(level) => {
            adminduk_kit::error::reason_name(crate::error::level_reason(*level).0)
        }
        ReserveError::ApplicantHolds(_) => {
            adminduk_kit::error::reason_name(adminduk_kit::ErrorReason::ApplicantHasHold)
        }
        ReserveError::KeyReused(_) => "IDEMPOTENCY_KEY_REUSED",
        ReserveError::Contended => "CONTENDED",
        ReserveError::UnknownPoint => "UNKNOWN_POINT",
    });
}

/// A reservation not made because its write failed.
pub fn unavailable() {
    refused_for("UNAVAILABLE");
}

fn refused_for(reason: &'static str) {
    metrics::get()
        .refusals
        .get_or_create(&ReasonLabels {
            service: SERVICE,
            reason,
        })
        .inc();
}

/// Keeps the quota gauge of a point's day at what is left.
fn room_left(path: &Path) {
    let labels = QuotaLabels {
        service: SERVICE,
        service_point: path.point.spec.code.clone(),
        date: path.day.to_string(),
    };
    metrics::get()
        .quota_remaining
        .get_or_create(&labels)
        .set(path.remaining());
    // A day already kept is found by its hash; the new labels are then dropped.
    GAUGED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert((path.day, labels));
}

/// Takes the quota gauges of days before `today` out of the metrics.
pub fn forget_past_days(today: NaiveDate) {
    let mut gauged = GAUGED.lock().unwrap_or_else(PoisonError::into_inner);
    let quota = &metrics::get().quota_remaining;
    gauged.retain(|(day, labels)| {
        let keep = *day >= today;
        if !keep {
            quota.remove(labels);
        }
        keep
    });
}
