//! Printing's refusals, in one place: the store's errors as the contract's,
//! and the answers the workflows give by name.

use std::time::Duration;

use tonic::Status;

use adminduk_kit::{ApiError, ErrorCode, ErrorReason, mask_nik};

use crate::store::StoreError;

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::ActiveJobExists => ApiError::new(
                ErrorCode::AlreadyExists,
                "the resident already has an active print job",
            )
            .with_reason(ErrorReason::PrintJobExists, []),
            StoreError::WrongState => ApiError::new(
                ErrorCode::FailedPrecondition,
                "the job is not in the state this needs",
            )
            .with_reason(ErrorReason::JobState, []),
            StoreError::SerialTaken => serial_taken(),
            StoreError::PrintInProgress { serial } => ApiError::new(
                ErrorCode::Aborted,
                "another report of this job is being recorded; read the job again",
            )
            .with_reason(ErrorReason::PrintInProgress, [("card_serial".to_owned(), serial)])
            .with_retry_after(Duration::from_millis(200)),
            StoreError::NotDispatchable { job_id, state } => ApiError::new(
                ErrorCode::FailedPrecondition,
                "every job must be a printed card not yet sent out; nothing was dispatched",
            )
            .with_reason(
                ErrorReason::NotDispatchable,
                [
                    ("job_id".to_owned(), job_id.clone()),
                    ("state".to_owned(), state.clone()),
                ],
            )
            .with_precondition("CARD_STATE", job_id, format!("is {state}, not PRINTED")),
            StoreError::JobNotFound(id) => job_not_found(&id),
            StoreError::SuketExists(held) => {
                ApiError::new(ErrorCode::AlreadyExists, "the resident already holds a suket")
                    .with_reason(ErrorReason::SuketExists, [("suket_id".to_owned(), held)])
            }
            StoreError::Corrupt(_) => ApiError::internal(&err),
            StoreError::Db(db) => ApiError::from(db),
        }
    }
}

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
        ApiError::from(err).into()
    }
}

/// Whether a refusal from another service ends a report, so its claim on the
/// job goes. An unreachable service may have done the work, and an ABORTED
/// one is being done by a twin of this report: the claim stays for the
/// report's retry (or its twin) to finish.
pub(crate) fn ends_report(err: &ApiError) -> bool {
    !matches!(err.code(), ErrorCode::Unavailable | ErrorCode::Aborted)
}

/// A store refusal about one job, naming it: a change that found the job
/// moved on (a racing request) says which job and where it is now.
pub(crate) fn about_job(err: StoreError, job: &str) -> ApiError {
    match err {
        StoreError::WrongState => ApiError::new(
            ErrorCode::FailedPrecondition,
            "the job is not in the state this needs; read it again",
        )
        .with_reason(ErrorReason::JobState, [("job_id".to_owned(), job.to_owned())]),
        other => other.into(),
    }
}

/// NOT_FOUND for a print job, naming it.
pub(crate) fn job_not_found(id: &str) -> ApiError {
    ApiError::not_found("print job")
        .with_resource("print job", id)
        .with_reason(ErrorReason::JobNotFound, [("job_id".to_owned(), id.to_owned())])
}

/// NOT_FOUND for a resident, named by the masked NIK only.
pub(crate) fn resident_not_found(nik: &str) -> ApiError {
    ApiError::not_found("resident").with_resource("resident", mask_nik(nik))
}

/// A service point the inventory does not know.
pub(crate) fn unknown_point() -> ApiError {
    ApiError::invalid_field(
        "service_point_code",
        "is not a service point of a region with a quota policy",
    )
}

/// The answer to a report from a printer without a live lease on the job.
pub(crate) fn no_live_lease() -> ApiError {
    ApiError::new(
        ErrorCode::FailedPrecondition,
        "this printer holds no live lease on the job",
    )
    .with_reason(ErrorReason::LeaseExpired, [])
    .with_precondition(
        "LEASE",
        "job_id",
        "the lease lapsed or belongs to another printer",
    )
}

/// The answer to a serial used before, on a card or a ruined blank.
pub(crate) fn serial_taken() -> ApiError {
    ApiError::new(ErrorCode::AlreadyExists, "this card serial was already used")
        .with_violation("card_serial", "already used on another card or blank")
        .with_reason(ErrorReason::SerialTaken, [])
}
