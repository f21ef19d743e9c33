//! The inventory's refusals: what each failure of the inventory tells the
//! client, with its code, reason and metadata.

use std::time::Duration;

use chrono::NaiveDate;
use tonic::Status;

use adminduk_inventory_core::engine::{Level, ReserveError, Suggestions, TransitionError};
use adminduk_kit::{ApiError, ErrorCode, ErrorReason, Violations};

use crate::convert::{policy_violations, state_msg};
use crate::service::{PolicyFailure, ReserveFailure, TransitionFailure};
use crate::store::StoreError;

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
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

impl From<TransitionFailure> for ApiError {
    fn from(failure: TransitionFailure) -> Self {
        match failure {
            TransitionFailure::Refused(TransitionError::NotFound) => ApiError::not_found("reservation")
                .with_violation("reservation_id", "no reservation has this id"),
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
                .with_reason(ErrorReason::ChangeInFlight, [])
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
                .with_precondition(
                    "RESERVATION_STATE",
                    "reservation_id",
                    format!("is {name}"),
                )
            }
            TransitionFailure::NotYetDurable => {
                ApiError::new(ErrorCode::Aborted, "the reservation is still being recorded")
                    .with_reason(ErrorReason::ChangeInFlight, [])
                    .with_retry_after(Duration::from_millis(50))
            }
            TransitionFailure::Unavailable(err) => err.into(),
        }
    }
}

impl From<PolicyFailure> for ApiError {
    fn from(failure: PolicyFailure) -> Self {
        match failure {
            PolicyFailure::Invalid(found) => {
                let mut v = Violations::new();
                policy_violations(found, &mut v);
                v.into_result()
                    .err()
                    .unwrap_or_else(|| ApiError::new(ErrorCode::InvalidArgument, "invalid policy"))
            }
            PolicyFailure::Store(err) => err.into(),
        }
    }
}

/// A refused reservation; `suggestions` are asked for only when the day is full.
pub(crate) fn reserve_refusal(
    failure: ReserveFailure,
    point: &str,
    day: NaiveDate,
    suggestions: impl FnOnce() -> std::sync::Arc<Suggestions>,
) -> ApiError {
    match failure {
        ReserveFailure::Refused(ReserveError::Exhausted(level)) => {
            exhausted(level, point, day, &suggestions())
        }
        ReserveFailure::Refused(ReserveError::ApplicantHolds(existing)) => {
            ApiError::new(ErrorCode::AlreadyExists, "the applicant already holds a blank").with_reason(
                ErrorReason::ApplicantHasHold,
                [("reservation_id".to_owned(), existing.id.to_string())],
            )
        }
        ReserveFailure::Refused(ReserveError::KeyReused(_)) => {
            ApiError::invalid_field("idempotency_key", "was used for a different request")
        }
        ReserveFailure::Refused(ReserveError::Contended) => ApiError::new(
            ErrorCode::Aborted,
            "the same request is being decided; retry with the same idempotency key",
        )
        .with_reason(ErrorReason::RequestInFlight, [])
        .with_retry_after(Duration::from_millis(50)),
        ReserveFailure::Refused(ReserveError::UnknownPoint) => {
            ApiError::invalid_field("service_point_code", "unknown service point")
        }
        ReserveFailure::Unavailable(err) => err.into(),
    }
}

macro_rules! into_status {
    ($($failure:ty),+) => {$(
        impl From<$failure> for Status {
            fn from(failure: $failure) -> Self {
                ApiError::from(failure).into()
            }
        }
    )+};
}
into_status!(StoreError, TransitionFailure, PolicyFailure);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_or_change_still_being_decided_names_its_reason_and_when_to_retry() {
        let reason = |err: ApiError| {
            let status = Status::from(err);
            assert!(status.code() == tonic::Code::Aborted, "{status:?}");
            adminduk_kit::error::reason_of(&status)
        };
        let in_flight = reserve_refusal(
            ReserveFailure::Refused(ReserveError::Contended),
            "3275-KEC-01",
            NaiveDate::MIN,
            || unreachable!("no suggestions for a request in flight"),
        );
        assert!(in_flight.details().retry_info().is_some());
        assert_eq!(reason(in_flight), "REQUEST_IN_FLIGHT");
        assert_eq!(
            reason(TransitionFailure::NotYetDurable.into()),
            "CHANGE_IN_FLIGHT"
        );
    }
}
