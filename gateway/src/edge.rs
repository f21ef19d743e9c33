//! The peak morning at the edge. More than 99% of the morning's applications
//! are for a date that is already full; the gateway refuses those itself,
//! without a backend call, and lets every request for a date with room go on
//! to the inventory, which alone grants.
//!
//! The view is the inventory's own: once the inventory refuses a service
//! point's date as full, the gateway keeps that refusal (its message and its
//! details: the next dates and the other points with room) and follows the
//! point's `WatchAvailability` for the date. While the stream says nothing is
//! left, a request for that point and date gets the kept refusal. A stale view
//! can only send a request on, never grant, and never refuse for long:
//!
//! - the view is the stream's last update, pushed by the inventory on change;
//!   a stream that ends or fails drops its view at once;
//! - a kept refusal older than [`REFUSAL_LIFE`] is not repeated (the next
//!   request goes on and brings a fresh one, with fresh suggestions);
//! - even then, one request per point and date goes on every [`RECHECK`], so
//!   a date that has room again is found within that bound whatever the stream does.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use adminduk_kit::{ApiError, ErrorCode, ErrorReason};
use adminduk_proto::common::v1::Date;
use adminduk_proto::inventory::v1 as inventory;
use inventory::inventory_service_client::InventoryServiceClient;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

use crate::wire::{self, WireError};

/// How long a kept refusal is repeated at the edge.
pub const REFUSAL_LIFE: Duration = Duration::from_secs(30);
/// How often one request for a full point and date still goes on to the inventory.
pub const RECHECK: Duration = Duration::from_secs(2);
/// The most points and dates followed at once; past it, requests simply go on.
const MAX_WATCHED: usize = 2_000;
/// How long one stream follows a point's date; a refusal after it follows again.
const FOLLOW_LIFE: Duration = Duration::from_secs(600);
/// Retries remembered per generation (two are kept, so none is forgotten at once).
const RETRIES_KEPT: usize = 100_000;

/// The refusals of the inventory that say a point's date has no room.
const FULL: [ErrorReason; 4] = [
    ErrorReason::DateFull,
    ErrorReason::RegionBudgetSpent,
    ErrorReason::MonthlyCapReached,
    ErrorReason::OutOfStock,
];

/// A service point and a day.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    point: String,
    date: (i32, i32, i32),
}

#[derive(Debug)]
struct Seen {
    /// Blanks left, as the stream last said; `None` while no stream speaks for it.
    remaining: Option<i64>,
    /// The inventory's last refusal, and when it came.
    refusal: Option<(ApiError, Instant)>,
    /// When a request last went on while the view said full.
    last_recheck: Instant,
    /// Whether a stream follows it.
    watched: bool,
}

/// The view of full dates, shared by every request.
#[derive(Debug, Clone)]
pub(crate) struct Edge {
    inventory: InventoryServiceClient<Channel>,
    view: Arc<Mutex<HashMap<Key, Seen>>>,
    /// The requests forwarded (their retry ids), this generation and the last.
    forwarded: Arc<Mutex<[HashSet<u128>; 2]>>,
}

/// What identifies a request's retries: a hash of its method and the field
/// that repeats (an idempotency key, an applicant's NIK), never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryId(u128);

impl RetryId {
    /// The retry id of `message`'s field `tag` for the method at `path`, sent by
    /// `caller` (its label: a retry is the same caller's); `None` when the field is absent.
    pub(crate) fn of(path: &str, caller: &str, message: &[u8], tag: u32) -> Result<Option<Self>, WireError> {
        let Some(value) = wire::bytes_field(message, tag)? else {
            return Ok(None);
        };
        if value.is_empty() {
            return Ok(None);
        }
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [path.as_bytes(), caller.as_bytes(), &value] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let digest = ctx.finish();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest.as_ref()[..16]);
        Ok(Some(Self(u128::from_be_bytes(first))))
    }
}

fn date_of(bytes: &[u8]) -> Result<(i32, i32, i32), WireError> {
    let part = |tag| -> Result<i32, WireError> {
        // An int32 is its varint's low 32 bits, as every protobuf decoder reads
        // it (a negative one is sent sign-extended to ten bytes); whether the
        // date is a real one is the backend's to say, with the field named.
        let value = wire::varint_field(bytes, tag)?.unwrap_or(0);
        Ok(value as u32 as i32)
    };
    Ok((part(1)?, part(2)?, part(3)?))
}

impl Edge {
    pub(crate) fn new(inventory: Channel) -> Self {
        Self {
            inventory: InventoryServiceClient::new(inventory),
            view: Arc::new(Mutex::new(HashMap::new())),
            forwarded: Arc::new(Mutex::new([HashSet::new(), HashSet::new()])),
        }
    }

    /// The point and date a request names at these field numbers, if both are
    /// given; `point` is the one the gateway writes there, when it writes one.
    pub(crate) fn key(
        message: &[u8],
        point_tag: u32,
        date_tag: u32,
        point: Option<&str>,
    ) -> Result<Option<Key>, WireError> {
        let point = match point {
            Some(point) => point.to_owned(),
            None => wire::string_field(message, point_tag)?.unwrap_or_default(),
        };
        let Some(date) = wire::bytes_field(message, date_tag)? else {
            return Ok(None);
        };
        if point.is_empty() {
            return Ok(None);
        }
        Ok(Some(Key {
            point,
            date: date_of(&date)?,
        }))
    }

    /// Remembers that a request was forwarded, so its retries go on too.
    pub(crate) fn forwarded(&self, retry: RetryId) {
        let mut kept = self.forwarded.lock().unwrap_or_else(PoisonError::into_inner);
        if kept[0].len() >= RETRIES_KEPT {
            kept[1] = std::mem::take(&mut kept[0]);
        }
        kept[0].insert(retry.0);
    }

    /// The inventory's refusal, repeated, when the view says the date is full
    /// and the refusal is fresh; `None` sends the request on. A retry of a
    /// request forwarded before always goes on: the inventory answers it as
    /// it answered the first (the blank it holds, for an idempotency key).
    pub(crate) fn refusal(&self, key: &Key, retry: Option<RetryId>) -> Option<ApiError> {
        if let Some(retry) = retry {
            let kept = self.forwarded.lock().unwrap_or_else(PoisonError::into_inner);
            if kept.iter().any(|generation| generation.contains(&retry.0)) {
                return None;
            }
        }
        let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = view.get_mut(key)?;
        let (refusal, at) = seen.refusal.as_ref()?;
        if seen.remaining != Some(0) || at.elapsed() > REFUSAL_LIFE {
            return None;
        }
        if seen.last_recheck.elapsed() >= RECHECK {
            seen.last_recheck = Instant::now();
            return None;
        }
        Some(refusal.clone())
    }

    /// What the inventory answered for `key`: a refusal for a full date is kept,
    /// anything else forgets the kept one. The key is handed back when the date
    /// is to be followed now ([`Edge::follow`]).
    pub(crate) fn observe(&self, key: Key, answer: Option<&tonic::Status>) -> Option<Key> {
        let full = answer.filter(|status| {
            status.code() == tonic::Code::ResourceExhausted
                && FULL
                    .iter()
                    .any(|r| adminduk_kit::error::reason_name(*r) == adminduk_kit::error::reason_of(status))
        });
        let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(status) = full else {
            if let Some(seen) = view.get_mut(&key) {
                seen.refusal = None;
            }
            return None;
        };
        if !view.contains_key(&key) && view.len() >= MAX_WATCHED {
            return None;
        }
        let seen = view.entry(key.clone()).or_insert_with(|| Seen {
            remaining: None,
            refusal: None,
            last_recheck: Instant::now(),
            watched: false,
        });
        // Decoded once, answered many times.
        let refusal = ApiError::passthrough(
            ErrorCode::ResourceExhausted,
            status.message(),
            status.get_error_details(),
        );
        seen.refusal = Some((refusal, Instant::now()));
        if seen.watched {
            return None;
        }
        seen.watched = true;
        // A refusal is proof enough to start: until the stream's first
        // update, the inventory's word is that nothing is left.
        seen.remaining = Some(0);
        seen.last_recheck = Instant::now();
        Some(key)
    }

    /// Follows one point's date until the stream ends, then forgets the view.
    pub(crate) async fn follow(self, key: Key) {
        let (year, month, day) = key.date;
        let request = inventory::WatchAvailabilityRequest {
            service_point_codes: vec![key.point.clone()],
            date: Some(Date { year, month, day }),
        };
        let mut client = self.inventory.clone();
        let followed = async {
            match client.watch_availability(request).await {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    while let Ok(Some(update)) = stream.message().await {
                        let remaining = update
                            .points
                            .iter()
                            .find(|p| p.service_point_code == key.point)
                            .map(|p| p.remaining);
                        let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
                        if let Some(seen) = view.get_mut(&key) {
                            seen.remaining = remaining;
                        }
                    }
                }
                Err(status) => {
                    tracing::debug!(code = ?status.code(), "availability not followed; requests go on");
                }
            }
        };
        // Ten minutes at most: a past date's stream ends with it, and the next
        // refusal of a date still full follows it again.
        let _ = tokio::time::timeout(FOLLOW_LIFE, followed).await;
        self.view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn the_key_is_the_point_and_the_date_of_the_request() {
        let request = inventory::ReserveRequest {
            service_point_code: "3275-KEC-01".into(),
            date: Some(Date {
                year: 2026,
                month: 12,
                day: 3,
            }),
            applicant_nik: "3275014101900001".into(),
            ..Default::default()
        };
        let key = Edge::key(&request.encode_to_vec(), 1, 2, None)
            .expect("read")
            .expect("named");
        let office = Edge::key(&request.encode_to_vec(), 1, 2, Some("3275-KEC-02"))
            .expect("read")
            .expect("named");
        assert_eq!(
            office.point, "3275-KEC-02",
            "the certificate's point, not the request's"
        );
        assert_eq!(
            key,
            Key {
                point: "3275-KEC-01".into(),
                date: (2026, 12, 3)
            }
        );
        let no_date = inventory::ReserveRequest {
            date: None,
            ..request
        };
        assert_eq!(Edge::key(&no_date.encode_to_vec(), 1, 2, None), Ok(None));
        // Negative numbers are valid int32s on the wire: read as prost reads them.
        let negative = inventory::ReserveRequest {
            date: Some(Date {
                year: -5,
                month: -1,
                day: -1,
            }),
            ..no_date
        };
        assert_eq!(
            Edge::key(&negative.encode_to_vec(), 1, 2, None).map(|k| k.map(|k| k.date)),
            Ok(Some((-5, -1, -1)))
        );
    }

    fn full() -> tonic::Status {
        ApiError::new(ErrorCode::ResourceExhausted, "full")
            .with_reason(
                ErrorReason::DateFull,
                [("next_dates_with_room".to_owned(), "2026-12-04".to_owned())],
            )
            .into()
    }

    #[tokio::test]
    async fn a_full_date_is_refused_until_its_refusal_ages_and_one_request_goes_on_per_recheck() {
        let edge = Edge::new(adminduk_kit::upstream::channel("http://127.0.0.1:9").expect("channel"));
        let key = Key {
            point: "3275-KEC-01".into(),
            date: (2026, 12, 3),
        };
        assert!(
            edge.refusal(&key, None).is_none(),
            "nothing known: on to the inventory"
        );
        assert_eq!(
            edge.observe(key.clone(), Some(&full())),
            Some(key.clone()),
            "followed"
        );
        assert_eq!(edge.observe(key.clone(), Some(&full())), None, "followed once");
        let refused = edge.refusal(&key, None).expect("refused at the edge");
        assert_eq!(refused.code(), ErrorCode::ResourceExhausted);
        assert_eq!(refused.reason(), Some("DATE_FULL"));
        let status = tonic::Status::from(refused);
        assert_eq!(
            adminduk_kit::error::metadata_of(&status, "next_dates_with_room").as_deref(),
            Some("2026-12-04"),
            "the inventory's suggestions, as it gave them"
        );
        // The stream says there is room again: on to the inventory.
        edge.view
            .lock()
            .expect("view")
            .get_mut(&key)
            .expect("seen")
            .remaining = Some(3);
        assert!(edge.refusal(&key, None).is_none());
        edge.view
            .lock()
            .expect("view")
            .get_mut(&key)
            .expect("seen")
            .remaining = Some(0);
        // A recheck is due: one request goes on, the next is refused again.
        edge.view
            .lock()
            .expect("view")
            .get_mut(&key)
            .expect("seen")
            .last_recheck = Instant::now().checked_sub(RECHECK).expect("past");
        assert!(edge.refusal(&key, None).is_none());
        assert!(edge.refusal(&key, None).is_some());
        // A retry of a request forwarded before goes on, whatever the view.
        let retry = RetryId::of("/x/Reserve", "adminduk://office/p/d", b"\x22\x03key", 4)
            .expect("read")
            .expect("named");
        let other_caller = RetryId::of("/x/Reserve", "adminduk://office/p/e", b"\x22\x03key", 4)
            .expect("read")
            .expect("named");
        assert!(edge.refusal(&key, Some(retry)).is_some());
        edge.forwarded(retry);
        assert!(edge.refusal(&key, Some(retry)).is_none());
        assert!(
            edge.refusal(&key, Some(other_caller)).is_some(),
            "another caller's key is not a retry"
        );
        assert!(edge.refusal(&key, None).is_some());
        // A grant forgets the refusal.
        assert_eq!(edge.observe(key.clone(), None), None);
        assert!(edge.refusal(&key, None).is_none());
        // Any other refusal is the backend's to give each time.
        let other: tonic::Status = ApiError::new(ErrorCode::PermissionDenied, "no").into();
        assert_eq!(edge.observe(key.clone(), Some(&other)), None);
        assert!(edge.refusal(&key, None).is_none());
    }
}
