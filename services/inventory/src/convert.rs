//! The inventory contract and the engine's types, converted in one place:
//! each request checked into a value the inventory takes (every violation
//! reported at once), each record made a message.

use chrono::NaiveDate;
use uuid::Uuid;

use adminduk_inventory_core::engine::{Reservation, ReserveRequest};
use adminduk_inventory_core::policy::{PointKind, PointSpec, Policy, PolicyViolation, PoolSpec};
use adminduk_inventory_core::state::State;
use adminduk_kit::region::Regions;
use adminduk_kit::{ApiError, Violations, mask_nik, text};
use adminduk_proto::common::v1 as common;
use adminduk_proto::convert;
use adminduk_proto::inventory::v1 as pb;

use crate::service::StockLevel;
use crate::store::{LedgerEntry, MovementKind, NATIONAL};

/// How far ahead an appointment can be booked.
pub const BOOKING_HORIZON_DAYS: i64 = 60;
/// Most service points one watch may follow.
const MAX_WATCHED: usize = 50;
/// The one purpose a blank is held for, as stored.
const KTP_EL: &str = "ktp-el";

pub(crate) fn region_field(field: &str, code: &str, allow_national: bool, out: &mut Violations) {
    if allow_national && code == NATIONAL {
        return;
    }
    if allow_national && !adminduk_kit::is_digits(code, 4) {
        out.add(field, "must be a 4-digit regency code or NATIONAL");
    } else {
        adminduk_kit::codes::regency_field(field, code, out);
    }
}

fn quantity_field(quantity: i64, out: &mut Violations) {
    if !(1..=10_000_000).contains(&quantity) {
        out.add("quantity", "must be between 1 and 10000000");
    }
}

fn day_field(date: Option<&common::Date>, out: &mut Violations) -> Option<NaiveDate> {
    let Some(date) = date else {
        out.add("date", "is required");
        return None;
    };
    let Some(day) = convert::to_naive(date) else {
        out.add("date", "is not a real calendar date");
        return None;
    };
    let today = adminduk_kit::time::today_wib();
    if day < today {
        out.add(
            "date",
            format!("is in the past: today is {today} in WIB (UTC+7), the offices' time"),
        );
    } else if (day - today).num_days() > BOOKING_HORIZON_DAYS {
        out.add("date", format!("is more than {BOOKING_HORIZON_DAYS} days ahead"));
    }
    Some(day)
}

fn reservation_id(id: &str, out: &mut Violations) -> Option<Uuid> {
    let parsed = Uuid::parse_str(id).ok();
    if parsed.is_none() {
        out.add("reservation_id", "is not a reservation id");
    }
    parsed
}

pub(crate) fn state_msg(state: State) -> pb::ReservationState {
    match state {
        // A transition still being written is reported as the hold it still is.
        State::Held | State::Committing | State::Releasing | State::Expiring => pb::ReservationState::Held,
        State::Committed => pb::ReservationState::Committed,
        State::Released => pb::ReservationState::Released,
        State::Expired => pb::ReservationState::Expired,
    }
}

pub(crate) fn reservation_msg(r: &Reservation) -> pb::Reservation {
    pb::Reservation {
        id: r.id.to_string(),
        service_point_code: r.point_code().to_owned(),
        date: Some(convert::date(r.path.day)),
        state: state_msg(r.state()).into(),
        applicant_nik_masked: mask_nik(&r.applicant),
        idempotency_key: r.idempotency_key.clone(),
        expire_time: Some(convert::timestamp(r.expires_at)),
        create_time: Some(convert::timestamp(r.created_at)),
        purpose: if r.purpose == KTP_EL {
            pb::BlankPurpose::KtpEl
        } else {
            pb::BlankPurpose::Unspecified
        }
        .into(),
    }
}

fn kind_msg(kind: MovementKind) -> pb::MovementKind {
    match kind {
        MovementKind::Shipment => pb::MovementKind::Shipment,
        MovementKind::Transfer => pb::MovementKind::Transfer,
        MovementKind::Hold => pb::MovementKind::Hold,
        MovementKind::Commit => pb::MovementKind::Commit,
        MovementKind::Release => pb::MovementKind::Release,
        MovementKind::Expiry => pb::MovementKind::Expiry,
        MovementKind::Spoilage => pb::MovementKind::Spoilage,
    }
}

pub(crate) fn entry_msg(e: &LedgerEntry) -> pb::LedgerEntry {
    pb::LedgerEntry {
        sequence: e.seq,
        holder_code: e.holder_code.clone(),
        kind: kind_msg(e.kind).into(),
        quantity: e.quantity,
        on_hand_delta: e.on_hand_delta,
        reference: e.reference.clone(),
        actor: e.actor.clone(),
        reason: e.reason.clone(),
        reservation_id: e.reservation_id.clone().unwrap_or_default(),
        create_time: Some(convert::timestamp(e.created_at)),
    }
}

pub(crate) fn stock_msg(s: &StockLevel) -> pb::StockLevel {
    pb::StockLevel {
        region_code: s.region.clone(),
        on_hand: s.on_hand,
        held: s.held,
        committed: s.committed,
        spoiled: s.spoiled,
        available: s.available,
        today_budget: s.today_budget,
        today_remaining: s.today_remaining,
        runway_days: if s.runway_days.is_finite() {
            s.runway_days
        } else {
            -1.0
        },
        next_shipment_date: s.next_shipment.map(convert::date),
        month_used: s.month_used,
        monthly_cap: s.monthly_cap,
    }
}

fn point_kind(kind: i32, field: &str, out: &mut Violations) -> Option<PointKind> {
    match pb::ServicePointKind::try_from(kind) {
        Ok(pb::ServicePointKind::Kecamatan) => Some(PointKind::Kecamatan),
        Ok(pb::ServicePointKind::Mpp) => Some(PointKind::Mpp),
        Ok(pb::ServicePointKind::Gpp) => Some(PointKind::Gpp),
        Ok(pb::ServicePointKind::Disdukcapil) => Some(PointKind::Disdukcapil),
        _ => {
            out.add(field, "must be KECAMATAN, MPP, GPP or DISDUKCAPIL");
            None
        }
    }
}

fn point_kind_msg(kind: PointKind) -> pb::ServicePointKind {
    match kind {
        PointKind::Kecamatan => pb::ServicePointKind::Kecamatan,
        PointKind::Mpp => pb::ServicePointKind::Mpp,
        PointKind::Gpp => pb::ServicePointKind::Gpp,
        PointKind::Disdukcapil => pb::ServicePointKind::Disdukcapil,
    }
}

pub(crate) fn policy_msg(p: &Policy) -> pb::QuotaPolicy {
    pb::QuotaPolicy {
        region_code: p.region_code.clone(),
        service_points: p
            .points
            .iter()
            .map(|s| pb::ServicePoint {
                code: s.code.clone(),
                name: s.name.clone(),
                kind: point_kind_msg(s.kind).into(),
                district_code: s.district_code.clone(),
                pool_code: s.pool_code.clone(),
            })
            .collect(),
        pools: p
            .pools
            .iter()
            .map(|q| pb::QuotaPool {
                code: q.code.clone(),
                daily_quota: q.daily_quota,
            })
            .collect(),
        monthly_cap: p.monthly_cap,
        next_shipment_date: p.next_shipment.map(convert::date),
        version: p.version,
    }
}

fn reservation_id_field(id: &str, point: &str, out: &mut Violations) -> Option<Uuid> {
    if point.is_empty() {
        out.add("service_point_code", "is required");
    }
    reservation_id(id, out)
}

/// A shipment of blanks into a region's (or the national) stock, checked.
#[derive(Debug, Clone)]
pub struct Shipment {
    /// The regency code, or `NATIONAL`.
    pub region_code: String,
    /// Blanks received.
    pub quantity: i64,
    /// The delivery's reference (one entry per reference).
    pub reference: String,
    /// Who received it.
    pub received_by: String,
}

impl TryFrom<pb::ReceiveShipmentRequest> for Shipment {
    type Error = ApiError;

    fn try_from(request: pb::ReceiveShipmentRequest) -> Result<Self, ApiError> {
        let pb::ReceiveShipmentRequest {
            region_code,
            quantity,
            reference,
            received_by,
        } = request;
        let mut v = Violations::new();
        region_field("region_code", &region_code, true, &mut v);
        quantity_field(quantity, &mut v);
        let reference = text::required("reference", &reference, 128, &mut v);
        let received_by = text::required("received_by", &received_by, 128, &mut v);
        v.into_result()?;
        Ok(Self {
            region_code,
            quantity,
            reference,
            received_by,
        })
    }
}

/// Blanks moved from one region to another, checked.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// From this regency.
    pub from_region_code: String,
    /// To this one.
    pub to_region_code: String,
    /// Blanks moved.
    pub quantity: i64,
    /// The transfer's reference.
    pub reference: String,
    /// Who asked for it.
    pub requested_by: String,
    /// Why.
    pub reason: String,
}

impl TryFrom<pb::TransferStockRequest> for Transfer {
    type Error = ApiError;

    fn try_from(request: pb::TransferStockRequest) -> Result<Self, ApiError> {
        let pb::TransferStockRequest {
            from_region_code,
            to_region_code,
            quantity,
            reference,
            requested_by,
            reason,
        } = request;
        let mut v = Violations::new();
        region_field("from_region_code", &from_region_code, false, &mut v);
        region_field("to_region_code", &to_region_code, false, &mut v);
        if from_region_code == to_region_code {
            v.add("to_region_code", "must differ from from_region_code");
        }
        quantity_field(quantity, &mut v);
        let reference = text::required("reference", &reference, 128, &mut v);
        let requested_by = text::required("requested_by", &requested_by, 128, &mut v);
        let reason = text::required("reason", &reason, 500, &mut v);
        v.into_result()?;
        Ok(Self {
            from_region_code,
            to_region_code,
            quantity,
            reference,
            requested_by,
            reason,
        })
    }
}

/// A region's quota policy as asked for, checked as the engine would install it.
pub fn policy_from(request: pb::SetQuotaPolicyRequest) -> Result<Policy, ApiError> {
    let pb::SetQuotaPolicyRequest { policy } = request;
    let Some(pb::QuotaPolicy {
        region_code,
        service_points,
        pools,
        monthly_cap,
        next_shipment_date,
        version: _,
    }) = policy
    else {
        return Err(ApiError::invalid_field("policy", "is required"));
    };
    let mut v = Violations::new();
    region_field("policy.region_code", &region_code, false, &mut v);
    let regions = Regions::global();
    for (i, point) in service_points.iter().enumerate() {
        if point.district_code.starts_with(region_code.as_str())
            && adminduk_kit::is_digits(&point.district_code, 6)
            && regions.district(&point.district_code).is_none()
        {
            v.add(
                format!("policy.service_points[{i}].district_code"),
                "is not a kecamatan in the official region list",
            );
        }
    }
    let next_shipment = next_shipment_date.as_ref().and_then(|d| {
        let day = convert::to_naive(d);
        if day.is_none() {
            v.add("policy.next_shipment_date", "is not a real calendar date");
        }
        day
    });
    let points: Vec<PointSpec> = service_points
        .into_iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let kind = point_kind(p.kind, &format!("policy.service_points[{i}].kind"), &mut v)?;
            Some(PointSpec {
                code: p.code,
                name: p.name,
                kind,
                district_code: p.district_code,
                pool_code: p.pool_code,
            })
        })
        .collect();
    let policy = Policy {
        region_code,
        points,
        pools: pools
            .into_iter()
            .map(|p| PoolSpec {
                code: p.code,
                daily_quota: p.daily_quota,
            })
            .collect(),
        monthly_cap,
        next_shipment,
        version: 0,
    };
    if let Err(found) = policy.check() {
        policy_violations(found, &mut v);
    }
    v.into_result()?;
    Ok(policy)
}

/// A policy's own violations, named under `policy.`.
pub(crate) fn policy_violations(found: Vec<PolicyViolation>, out: &mut Violations) {
    for violation in found {
        out.add(format!("policy.{}", violation.field), violation.description);
    }
}

/// A request to hold a blank, checked; `known_point` says whether the engine
/// knows a service point (so an unknown one is reported with the other faults).
#[derive(Debug, Clone)]
pub struct ReserveAsk {
    /// The service point.
    pub point: String,
    /// The appointment's day (today to the booking horizon, in WIB).
    pub day: NaiveDate,
    /// The applicant's NIK (checked, never logged whole).
    pub applicant: String,
    /// The client's key for retries.
    pub idempotency_key: String,
}

impl ReserveAsk {
    /// Checks a reservation request; `known_point` says whether the engine knows a service point.
    pub fn check(request: pb::ReserveRequest, known_point: impl Fn(&str) -> bool) -> Result<Self, ApiError> {
        let pb::ReserveRequest {
            service_point_code,
            date,
            applicant_nik,
            idempotency_key,
            purpose,
        } = request;
        let mut v = Violations::new();
        let day = day_field(date.as_ref(), &mut v);
        adminduk_kit::nik::nik_field("applicant_nik", &applicant_nik, &mut v);
        if idempotency_key.trim().is_empty() || idempotency_key.chars().count() > 128 {
            v.add("idempotency_key", "must be 1 to 128 characters");
        } else if idempotency_key.chars().any(char::is_control) {
            v.add("idempotency_key", "must not contain control characters");
        }
        // Every blank is an e-KTP blank: one purpose, so one hold per applicant.
        if pb::BlankPurpose::try_from(purpose).is_err() {
            v.add("purpose", "must be BLANK_PURPOSE_KTP_EL");
        }
        if !known_point(&service_point_code) {
            v.add("service_point_code", "unknown service point");
        }
        v.into_result()?;
        let day = day.ok_or_else(|| ApiError::invalid_field("date", "is required"))?;
        Ok(Self {
            point: service_point_code,
            day,
            applicant: applicant_nik,
            idempotency_key,
        })
    }

    /// The engine's request: held until the end of the appointment's day.
    pub fn request(&self) -> ReserveRequest<'_> {
        ReserveRequest {
            point_code: &self.point,
            day: self.day,
            applicant: &self.applicant,
            purpose: KTP_EL,
            idempotency_key: &self.idempotency_key,
            expires_at: adminduk_kit::time::end_of_day_wib(self.day),
        }
    }
}

/// A service point's word on one of its holds (commit or release), checked.
#[derive(Debug, Clone)]
pub struct Handover {
    /// The reservation.
    pub id: Uuid,
    /// The service point that holds it.
    pub point: String,
    /// What happened (the ledger's note).
    pub reason: String,
}

impl TryFrom<pb::CommitRequest> for Handover {
    type Error = ApiError;

    fn try_from(request: pb::CommitRequest) -> Result<Self, ApiError> {
        let pb::CommitRequest {
            reservation_id,
            service_point_code,
        } = request;
        let mut v = Violations::new();
        let id = reservation_id_field(&reservation_id, &service_point_code, &mut v);
        v.into_result()?;
        let id = id.ok_or_else(|| ApiError::invalid_field("reservation_id", "is required"))?;
        Ok(Self {
            id,
            point: service_point_code,
            reason: "card printed".to_owned(),
        })
    }
}

impl TryFrom<pb::ReleaseRequest> for Handover {
    type Error = ApiError;

    fn try_from(request: pb::ReleaseRequest) -> Result<Self, ApiError> {
        let pb::ReleaseRequest {
            reservation_id,
            service_point_code,
            reason,
        } = request;
        let mut v = Violations::new();
        let id = reservation_id_field(&reservation_id, &service_point_code, &mut v);
        let reason = text::required("reason", &reason, 500, &mut v);
        v.into_result()?;
        let id = id.ok_or_else(|| ApiError::invalid_field("reservation_id", "is required"))?;
        Ok(Self {
            id,
            point: service_point_code,
            reason,
        })
    }
}

/// Blanks written off, checked: loose ones from a region's stock, or the one a
/// committed reservation consumed.
#[derive(Debug, Clone)]
pub struct Spoilage {
    /// The regency.
    pub region_code: String,
    /// Blanks spoiled (1 with a reservation).
    pub quantity: i64,
    /// What happened.
    pub reason: String,
    /// The write-off's reference.
    pub reference: String,
    /// Who reports it.
    pub reported_by: String,
    /// The committed reservation whose blank it was, if any (however the
    /// client spelt the id, the blank is one: stored by this value's text).
    pub reservation: Option<Uuid>,
}

impl TryFrom<pb::RecordSpoilageRequest> for Spoilage {
    type Error = ApiError;

    fn try_from(request: pb::RecordSpoilageRequest) -> Result<Self, ApiError> {
        let pb::RecordSpoilageRequest {
            region_code,
            quantity,
            reason,
            reference,
            reported_by,
            reservation_id,
        } = request;
        let mut v = Violations::new();
        region_field("region_code", &region_code, false, &mut v);
        quantity_field(quantity, &mut v);
        let reason = text::required("reason", &reason, 500, &mut v);
        let reference = text::required("reference", &reference, 128, &mut v);
        let reported_by = text::required("reported_by", &reported_by, 128, &mut v);
        let reservation = if reservation_id.is_empty() {
            None
        } else {
            if quantity != 1 {
                v.add("quantity", "must be 1 with a reservation_id");
            }
            self::reservation_id(&reservation_id, &mut v)
        };
        v.into_result()?;
        Ok(Self {
            region_code,
            quantity,
            reason,
            reference,
            reported_by,
            reservation,
        })
    }
}

/// A watch of service points' room on one day, checked.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The points, each known to the engine.
    pub points: Vec<String>,
    /// The day.
    pub day: NaiveDate,
}

impl Watch {
    /// Checks a watch request; `known_point` says whether the engine knows a service point.
    pub fn check(
        request: pb::WatchAvailabilityRequest,
        known_point: impl Fn(&str) -> bool,
    ) -> Result<Self, ApiError> {
        let pb::WatchAvailabilityRequest {
            service_point_codes,
            date,
        } = request;
        let mut v = Violations::new();
        let day = day_field(date.as_ref(), &mut v);
        if service_point_codes.is_empty() || service_point_codes.len() > MAX_WATCHED {
            v.add(
                "service_point_codes",
                format!("must name 1 to {MAX_WATCHED} service points"),
            );
        }
        for (i, code) in service_point_codes.iter().enumerate() {
            if !known_point(code) {
                v.add(format!("service_point_codes[{i}]"), "unknown service point");
            }
        }
        v.into_result()?;
        let day = day.ok_or_else(|| ApiError::invalid_field("date", "is required"))?;
        Ok(Self {
            points: service_point_codes,
            day,
        })
    }
}

/// One page of a holder's ledger, newest first, checked.
#[derive(Debug, Clone)]
pub struct LedgerPage {
    /// The regency code or `NATIONAL`.
    pub holder_code: String,
    /// Entries on the page.
    pub size: i64,
    /// Entries before this sequence number (none for the first page).
    pub before: Option<i64>,
}

impl TryFrom<pb::ListLedgerRequest> for LedgerPage {
    type Error = ApiError;

    fn try_from(request: pb::ListLedgerRequest) -> Result<Self, ApiError> {
        let pb::ListLedgerRequest {
            holder_code,
            page_size,
            page_token,
        } = request;
        let mut v = Violations::new();
        region_field("holder_code", &holder_code, true, &mut v);
        let size = match page_size {
            0 => 50,
            1..=500 => i64::from(page_size),
            _ => {
                v.add("page_size", "must be between 0 and 500");
                50
            }
        };
        let before = if page_token.is_empty() {
            None
        } else {
            let parsed = page_token
                .strip_prefix(&format!("{holder_code}:"))
                .and_then(|seq| seq.parse::<i64>().ok());
            if parsed.is_none() {
                v.add("page_token", "is not a token from this listing");
            }
            parsed
        };
        v.into_result()?;
        Ok(Self {
            holder_code,
            size,
            before,
        })
    }
}

impl LedgerPage {
    /// How many entries to read: one more than the page, to tell whether another follows.
    pub fn rows_to_read(&self) -> i64 {
        self.size + 1
    }

    /// The page from the entries read, with a token for the next page when there is one.
    pub fn page(&self, mut entries: Vec<LedgerEntry>) -> pb::ListLedgerResponse {
        let next_page_token = if entries.len() as i64 > self.size {
            entries.truncate(usize::try_from(self.size).unwrap_or(50));
            entries
                .last()
                .map(|e| format!("{}:{}", self.holder_code, e.seq))
                .unwrap_or_default()
        } else {
            String::new()
        };
        pb::ListLedgerResponse {
            entries: entries.iter().map(entry_msg).collect(),
            next_page_token,
        }
    }
}
