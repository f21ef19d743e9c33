//! The gRPC face of the inventory: thin handlers that validate, call the
//! inventory, and map its answers to codes with google.rpc details.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use adminduk_inventory_core::engine::{
    Level, Reservation, ReserveError, ReserveRequest, Suggestions, TransitionError,
};
use adminduk_inventory_core::policy::{PointKind, PointSpec, Policy, PoolSpec};
use adminduk_inventory_core::state::{State, Transition};
use adminduk_kit::region::Regions;
use adminduk_kit::{ApiError, ErrorCode, ErrorReason, Violations, mask_nik, text};
use adminduk_proto::common::v1 as common;
use adminduk_proto::convert;
use adminduk_proto::inventory::v1 as pb;
use pb::inventory_service_server::InventoryService;

use crate::service::{Inventory, PolicyFailure, ReserveFailure, StockLevel, TransitionFailure};
use crate::store::{LedgerEntry, MovementKind, NATIONAL, StoreError};

/// How far ahead an appointment can be booked.
pub const BOOKING_HORIZON_DAYS: i64 = 60;
/// Days searched for room when a date is full.
const SUGGESTION_DAYS: u32 = 14;
/// Suggestions offered of each kind.
const SUGGESTIONS: usize = 3;
/// How long a full date's suggestions are reused: refusals must stay cheap on the peak morning.
const SUGGESTION_TTL: Duration = Duration::from_secs(1);
/// Most service points one watch may follow.
const MAX_WATCHED: usize = 50;
/// Least time between two updates of one watch.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(100);

/// The one purpose a blank is held for, as stored.
const KTP_EL: &str = "ktp-el";

/// Suggestions for a full (point, date), with when they were computed.
type SuggestionCache = papaya::HashMap<(String, NaiveDate), (Instant, Arc<Suggestions>)>;

/// The `InventoryService` implementation.
#[derive(Debug, Clone)]
pub struct InventoryApi {
    inventory: Arc<Inventory>,
    suggestions: Arc<SuggestionCache>,
}

impl InventoryApi {
    /// A service over an opened inventory.
    pub fn new(inventory: Arc<Inventory>) -> Self {
        Self {
            inventory,
            suggestions: Arc::new(papaya::HashMap::new()),
        }
    }

    fn suggestions_for(&self, point: &str, day: NaiveDate) -> Arc<Suggestions> {
        let key = (point.to_owned(), day);
        let cache = self.suggestions.pin();
        if let Some((at, cached)) = cache.get(&key)
            && at.elapsed() < SUGGESTION_TTL
        {
            return cached.clone();
        }
        let fresh = Arc::new(
            self.inventory
                .engine()
                .suggestions(point, day, SUGGESTION_DAYS, SUGGESTIONS),
        );
        cache.insert(key, (Instant::now(), fresh.clone()));
        fresh
    }
}

fn region_field(field: &str, code: &str, allow_national: bool, out: &mut Violations) {
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

fn state_msg(state: State) -> pb::ReservationState {
    match state {
        // A transition still being written is reported as the hold it still is.
        State::Held | State::Committing | State::Releasing | State::Expiring => pb::ReservationState::Held,
        State::Committed => pb::ReservationState::Committed,
        State::Released => pb::ReservationState::Released,
        State::Expired => pb::ReservationState::Expired,
    }
}

fn reservation_msg(r: &Reservation) -> pb::Reservation {
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

fn entry_msg(e: &LedgerEntry) -> pb::LedgerEntry {
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

fn stock_msg(s: &StockLevel) -> pb::StockLevel {
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

fn policy_msg(p: &Policy) -> pb::QuotaPolicy {
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

fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::DuplicateReference => {
            ApiError::new(ErrorCode::AlreadyExists, "this reference was already recorded")
                .with_violation("reference", "already recorded")
                .with_reason(ErrorReason::DuplicateReference, [])
        }
        StoreError::AlreadySpoiled { reference } => ApiError::new(
            ErrorCode::AlreadyExists,
            "this consumed blank was already written off",
        )
        .with_violation("reservation_id", "its blank was already counted as spoiled")
        .with_reason(
            ErrorReason::BlankAlreadySpoiled,
            [("first_reference".to_owned(), reference)]
                .into_iter()
                .filter(|(_, r)| !r.is_empty()),
        ),
        StoreError::InsufficientStock { available } => ApiError::new(
            ErrorCode::FailedPrecondition,
            format!("only {available} blanks are available"),
        )
        .with_reason(
            ErrorReason::InsufficientStock,
            [("available".to_owned(), available.to_string())],
        )
        .with_precondition("STOCK", "quantity", format!("at most {available}")),
        StoreError::LimitRefused(_) | StoreError::WriterStopped => {
            tracing::warn!(error = %err, "write refused or writer stopped");
            ApiError::unavailable(
                "the reservation could not be made durable; nothing is held",
                Duration::from_millis(200),
            )
        }
        StoreError::Corrupt(_) => ApiError::internal(&err),
        StoreError::Db(db) => ApiError::from(db),
    }
}

pub(crate) fn level_reason(level: Level) -> (ErrorReason, &'static str) {
    match level {
        Level::Pool => (
            ErrorReason::DateFull,
            "the service point has no blanks left for this date",
        ),
        Level::Budget => (
            ErrorReason::RegionBudgetSpent,
            "the region's paced budget for this date is spent",
        ),
        Level::Month => (
            ErrorReason::MonthlyCapReached,
            "the region's monthly cap is reached",
        ),
        Level::Stock => (ErrorReason::OutOfStock, "the region has no blanks in stock"),
    }
}

fn exhausted(level: Level, point: &str, day: NaiveDate, suggestions: &Suggestions) -> ApiError {
    let (reason, message) = level_reason(level);
    let next_dates = suggestions
        .next_dates
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let others = suggestions
        .other_points
        .iter()
        .map(|(code, n)| format!("{code}:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    ApiError::new(ErrorCode::ResourceExhausted, message).with_reason(
        reason,
        [
            ("service_point_code".to_owned(), point.to_owned()),
            ("date".to_owned(), day.to_string()),
            ("next_dates_with_room".to_owned(), next_dates),
            ("other_points_with_room".to_owned(), others),
        ],
    )
}

fn transition_error(failure: TransitionFailure) -> ApiError {
    match failure {
        TransitionFailure::Refused(TransitionError::NotFound) => {
            ApiError::not_found("reservation").with_violation("reservation_id", "no reservation has this id")
        }
        TransitionFailure::Refused(TransitionError::WrongPoint(r)) => ApiError::new(
            ErrorCode::PermissionDenied,
            "the reservation belongs to another service point",
        )
        .with_reason(
            ErrorReason::OtherServicePoint,
            [("owner".to_owned(), r.point_code().to_owned())],
        ),
        TransitionFailure::Refused(TransitionError::NotHeld(_, state)) if state.is_pending() => {
            ApiError::new(
                ErrorCode::Aborted,
                "another change of this reservation is being written; read it again",
            )
            .with_retry_after(Duration::from_millis(100))
        }
        TransitionFailure::Refused(TransitionError::NotHeld(_, state)) => {
            let name = state_msg(state).as_str_name();
            ApiError::new(
                ErrorCode::FailedPrecondition,
                format!("the reservation is no longer held ({name})"),
            )
            .with_reason(
                ErrorReason::ReservationNotHeld,
                [("state".to_owned(), name.to_owned())],
            )
            .with_precondition("RESERVATION_STATE", "reservation_id", format!("is {name}"))
        }
        TransitionFailure::NotYetDurable => {
            ApiError::new(ErrorCode::Aborted, "the reservation is still being recorded")
                .with_retry_after(Duration::from_millis(50))
        }
        TransitionFailure::Unavailable(err) => store_error(err),
    }
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    async fn receive_shipment(
        &self,
        request: Request<pb::ReceiveShipmentRequest>,
    ) -> Result<Response<pb::ReceiveShipmentResponse>, Status> {
        let pb::ReceiveShipmentRequest {
            region_code,
            quantity,
            reference,
            received_by,
        } = request.into_inner();
        let mut v = Violations::new();
        region_field("region_code", &region_code, true, &mut v);
        quantity_field(quantity, &mut v);
        let reference = text::required("reference", &reference, 128, &mut v);
        let received_by = text::required("received_by", &received_by, 128, &mut v);
        v.into_result()?;
        if region_code != NATIONAL && self.inventory.engine().policy(&region_code).is_none() {
            return Err(
                ApiError::invalid_field("region_code", "unknown region: set its quota policy first").into(),
            );
        }
        let entries = self
            .inventory
            .receive_shipment(&region_code, quantity, &reference, &received_by)
            .await
            .map_err(store_error)?;
        tracing::info!(region = %region_code, quantity, "shipment received");
        let stock = self
            .inventory
            .stock_level(&region_code, adminduk_kit::time::today_wib())
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::ReceiveShipmentResponse {
            entries: entries.iter().map(entry_msg).collect(),
            stock: Some(stock_msg(&stock)),
        }))
    }

    async fn transfer_stock(
        &self,
        request: Request<pb::TransferStockRequest>,
    ) -> Result<Response<pb::TransferStockResponse>, Status> {
        let pb::TransferStockRequest {
            from_region_code,
            to_region_code,
            quantity,
            reference,
            requested_by,
            reason,
        } = request.into_inner();
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
        for (field, code) in [
            ("from_region_code", &from_region_code),
            ("to_region_code", &to_region_code),
        ] {
            if self.inventory.engine().policy(code).is_none() {
                return Err(
                    ApiError::invalid_field(field, "unknown region: set its quota policy first").into(),
                );
            }
        }
        let entries = self
            .inventory
            .transfer(
                &from_region_code,
                &to_region_code,
                quantity,
                &reference,
                &requested_by,
                &reason,
            )
            .await
            .map_err(store_error)?;
        tracing::info!(from = %from_region_code, to = %to_region_code, quantity, "stock transferred");
        Ok(Response::new(pb::TransferStockResponse {
            entries: entries.iter().map(entry_msg).collect(),
        }))
    }

    async fn set_quota_policy(
        &self,
        request: Request<pb::SetQuotaPolicyRequest>,
    ) -> Result<Response<pb::SetQuotaPolicyResponse>, Status> {
        let pb::SetQuotaPolicyRequest { policy } = request.into_inner();
        let Some(pb::QuotaPolicy {
            region_code,
            service_points,
            pools,
            monthly_cap,
            next_shipment_date,
            version: _,
        }) = policy
        else {
            return Err(ApiError::invalid_field("policy", "is required").into());
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
            for violation in found {
                v.add(format!("policy.{}", violation.field), violation.description);
            }
        }
        v.into_result()?;
        let installed = self
            .inventory
            .set_policy(policy)
            .await
            .map_err(|failure| match failure {
                PolicyFailure::Invalid(found) => {
                    let mut v = Violations::new();
                    for violation in found {
                        v.add(format!("policy.{}", violation.field), violation.description);
                    }
                    v.into_result()
                        .err()
                        .unwrap_or_else(|| ApiError::new(ErrorCode::InvalidArgument, "invalid policy"))
                }
                PolicyFailure::Store(err) => store_error(err),
            })?;
        tracing::info!(region = %installed.region_code, version = installed.version, "quota policy set");
        Ok(Response::new(pb::SetQuotaPolicyResponse {
            policy: Some(policy_msg(&installed)),
        }))
    }

    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::GetStockResponse>, Status> {
        let pb::GetStockRequest { region_code } = request.into_inner();
        let mut v = Violations::new();
        region_field("region_code", &region_code, false, &mut v);
        v.into_result()?;
        let policy = self
            .inventory
            .engine()
            .policy(&region_code)
            .ok_or_else(|| ApiError::invalid_field("region_code", "unknown region"))?;
        let stock = self
            .inventory
            .stock_level(&region_code, adminduk_kit::time::today_wib())
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::GetStockResponse {
            stock: Some(stock_msg(&stock)),
            policy: Some(policy_msg(&policy)),
        }))
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let pb::ReserveRequest {
            service_point_code,
            date,
            applicant_nik,
            idempotency_key,
            purpose,
        } = request.into_inner();
        let mut v = Violations::new();
        let day = day_field(date.as_ref(), &mut v);
        adminduk_kit::nik::nik_field("applicant_nik", &applicant_nik, &mut v);
        if idempotency_key.trim().is_empty() || idempotency_key.chars().count() > 128 {
            v.add("idempotency_key", "must be 1 to 128 characters");
        } else if idempotency_key.chars().any(char::is_control) {
            v.add("idempotency_key", "must not contain control characters");
        }
        // Every blank is an e-KTP blank: one purpose, so one hold per applicant.
        let purpose = match pb::BlankPurpose::try_from(purpose) {
            Ok(pb::BlankPurpose::Unspecified | pb::BlankPurpose::KtpEl) => KTP_EL,
            Err(_) => {
                v.add("purpose", "must be BLANK_PURPOSE_KTP_EL");
                KTP_EL
            }
        };
        if self.inventory.engine().point(&service_point_code).is_none() {
            v.add("service_point_code", "unknown service point");
        }
        v.into_result()?;
        let day = day.ok_or_else(|| ApiError::invalid_field("date", "is required"))?;
        let req = ReserveRequest {
            point_code: &service_point_code,
            day,
            applicant: &applicant_nik,
            purpose,
            idempotency_key: &idempotency_key,
            expires_at: adminduk_kit::time::end_of_day_wib(day),
        };
        // The point is one the engine knows (checked above), so it may name the span.
        tracing::Span::current().record("adminduk.service_point", service_point_code.as_str());
        let reserved = self.inventory.reserve(&req, Utc::now()).await;
        match &reserved {
            Err(ReserveFailure::Refused(err)) => crate::metrics::refused(err),
            Err(ReserveFailure::Unavailable(_)) => crate::metrics::unavailable(),
            Ok(_) => {}
        }
        match reserved {
            Ok(reservation) => Ok(Response::new(pb::ReserveResponse {
                reservation: Some(reservation_msg(&reservation)),
            })),
            Err(ReserveFailure::Refused(ReserveError::Exhausted(level))) => Err(exhausted(
                level,
                &service_point_code,
                day,
                &self.suggestions_for(&service_point_code, day),
            )
            .into()),
            Err(ReserveFailure::Refused(ReserveError::ApplicantHolds(existing))) => Err(ApiError::new(
                ErrorCode::AlreadyExists,
                "the applicant already holds a blank",
            )
            .with_reason(
                ErrorReason::ApplicantHasHold,
                [("reservation_id".to_owned(), existing.id.to_string())],
            )
            .into()),
            Err(ReserveFailure::Refused(ReserveError::KeyReused(_))) => {
                Err(ApiError::invalid_field("idempotency_key", "was used for a different request").into())
            }
            Err(ReserveFailure::Refused(ReserveError::Contended)) => Err(ApiError::new(
                ErrorCode::Aborted,
                "the same request is being decided; retry with the same idempotency key",
            )
            .with_retry_after(Duration::from_millis(50))
            .into()),
            Err(ReserveFailure::Refused(ReserveError::UnknownPoint)) => {
                Err(ApiError::invalid_field("service_point_code", "unknown service point").into())
            }
            Err(ReserveFailure::Unavailable(err)) => Err(store_error(err).into()),
        }
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let pb::CommitRequest {
            reservation_id,
            service_point_code,
        } = request.into_inner();
        let mut v = Violations::new();
        let id = reservation_id_field(&reservation_id, &service_point_code, &mut v);
        v.into_result()?;
        let id = id.ok_or_else(|| ApiError::invalid_field("reservation_id", "is required"))?;
        let r = self
            .inventory
            .transition(
                &id,
                Transition::Commit,
                Some(&service_point_code),
                &service_point_code,
                "card printed",
            )
            .await
            .map_err(transition_error)?;
        Ok(Response::new(pb::CommitResponse {
            reservation: Some(reservation_msg(&r)),
        }))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let pb::ReleaseRequest {
            reservation_id,
            service_point_code,
            reason,
        } = request.into_inner();
        let mut v = Violations::new();
        let id = reservation_id_field(&reservation_id, &service_point_code, &mut v);
        let reason = text::required("reason", &reason, 500, &mut v);
        v.into_result()?;
        let id = id.ok_or_else(|| ApiError::invalid_field("reservation_id", "is required"))?;
        let r = self
            .inventory
            .transition(
                &id,
                Transition::Release,
                Some(&service_point_code),
                &service_point_code,
                &reason,
            )
            .await
            .map_err(transition_error)?;
        Ok(Response::new(pb::ReleaseResponse {
            reservation: Some(reservation_msg(&r)),
        }))
    }

    async fn record_spoilage(
        &self,
        request: Request<pb::RecordSpoilageRequest>,
    ) -> Result<Response<pb::RecordSpoilageResponse>, Status> {
        let pb::RecordSpoilageRequest {
            region_code,
            quantity,
            reason,
            reference,
            reported_by,
            reservation_id,
        } = request.into_inner();
        let mut v = Violations::new();
        region_field("region_code", &region_code, false, &mut v);
        quantity_field(quantity, &mut v);
        let reason = text::required("reason", &reason, 500, &mut v);
        let reference = text::required("reference", &reference, 128, &mut v);
        let reported_by = text::required("reported_by", &reported_by, 128, &mut v);
        let committed = if reservation_id.is_empty() {
            None
        } else {
            if quantity != 1 {
                v.add("quantity", "must be 1 with a reservation_id");
            }
            self::reservation_id(&reservation_id, &mut v)
        };
        v.into_result()?;
        if self.inventory.engine().policy(&region_code).is_none() {
            return Err(ApiError::invalid_field("region_code", "unknown region").into());
        }
        let entries = match committed {
            None => self
                .inventory
                .spoil(&region_code, quantity, &reference, &reported_by, &reason)
                .await
                .map_err(store_error)?,
            Some(id) => {
                let reservation = self.inventory.engine().reservation(&id).ok_or_else(|| {
                    ApiError::not_found("reservation")
                        .with_violation("reservation_id", "no reservation has this id")
                })?;
                if reservation.path.point.region != region_code || reservation.state() != State::Committed {
                    return Err(ApiError::new(
                        ErrorCode::FailedPrecondition,
                        "only a committed blank of this region can be counted as spoiled",
                    )
                    .with_reason(ErrorReason::ReservationNotCommitted, [])
                    .into());
                }
                self.inventory
                    .store()
                    .reclassify_spoilage(
                        &region_code,
                        &reservation_id,
                        &reference,
                        &reported_by,
                        &reason,
                        Utc::now(),
                    )
                    .await
                    .map_err(store_error)?
            }
        };
        tracing::info!(region = %region_code, quantity, "spoilage recorded");
        let stock = self
            .inventory
            .stock_level(&region_code, adminduk_kit::time::today_wib())
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::RecordSpoilageResponse {
            entry: entries.first().map(entry_msg),
            stock: Some(stock_msg(&stock)),
        }))
    }

    type WatchAvailabilityStream = ReceiverStream<Result<pb::WatchAvailabilityResponse, Status>>;

    async fn watch_availability(
        &self,
        request: Request<pb::WatchAvailabilityRequest>,
    ) -> Result<Response<Self::WatchAvailabilityStream>, Status> {
        let pb::WatchAvailabilityRequest {
            service_point_codes,
            date,
        } = request.into_inner();
        let mut v = Violations::new();
        let day = day_field(date.as_ref(), &mut v);
        if service_point_codes.is_empty() || service_point_codes.len() > MAX_WATCHED {
            v.add(
                "service_point_codes",
                format!("must name 1 to {MAX_WATCHED} service points"),
            );
        }
        for (i, code) in service_point_codes.iter().enumerate() {
            if self.inventory.engine().point(code).is_none() {
                v.add(format!("service_point_codes[{i}]"), "unknown service point");
            }
        }
        v.into_result()?;
        let day = day.ok_or_else(|| ApiError::invalid_field("date", "is required"))?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let inventory = self.inventory.clone();
        let mut changes = inventory.subscribe();
        let mut closing = inventory.closing();
        tokio::spawn(async move {
            let mut last: HashMap<String, i64> = HashMap::new();
            loop {
                let points: Vec<pb::PointAvailability> = service_point_codes
                    .iter()
                    .filter_map(|code| {
                        let point = inventory.engine().point(code)?;
                        let (remaining, quota) = inventory.engine().availability(code, day)?;
                        Some(pb::PointAvailability {
                            service_point_code: code.clone(),
                            pool_code: point.spec.pool_code.clone(),
                            date: Some(convert::date(day)),
                            remaining,
                            quota,
                        })
                    })
                    .collect();
                let now: HashMap<String, i64> = points
                    .iter()
                    .map(|p| (p.service_point_code.clone(), p.remaining))
                    .collect();
                if now != last {
                    let update = pb::WatchAvailabilityResponse {
                        points,
                        read_time: Some(convert::timestamp(Utc::now())),
                    };
                    if tx.send(Ok(update)).await.is_err() {
                        return;
                    }
                    last = now;
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = closing.wait_for(|closing| *closing) => return,
                    () = tx.closed() => return,
                }
                tokio::time::sleep(WATCH_DEBOUNCE).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_ledger(
        &self,
        request: Request<pb::ListLedgerRequest>,
    ) -> Result<Response<pb::ListLedgerResponse>, Status> {
        let pb::ListLedgerRequest {
            holder_code,
            page_size,
            page_token,
        } = request.into_inner();
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
        let mut entries = self
            .inventory
            .store()
            .ledger(&holder_code, before, size + 1)
            .await
            .map_err(store_error)?;
        let next_page_token = if entries.len() as i64 > size {
            entries.truncate(usize::try_from(size).unwrap_or(50));
            entries
                .last()
                .map(|e| format!("{holder_code}:{}", e.seq))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListLedgerResponse {
            entries: entries.iter().map(entry_msg).collect(),
            next_page_token,
        }))
    }
}

fn reservation_id_field(id: &str, point: &str, out: &mut Violations) -> Option<Uuid> {
    if point.is_empty() {
        out.add("service_point_code", "is required");
    }
    reservation_id(id, out)
}
