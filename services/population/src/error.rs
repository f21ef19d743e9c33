//! The population service's refusals: what each store outcome tells the
//! client, with its code, reason and the record it names (masked).

use tonic::Status;

use adminduk_kit::{ApiError, ErrorCode, ErrorReason, Violations};

use crate::convert::absorb;
use crate::domain::kk::Kk;
use crate::domain::nik::Nik;
use crate::store::StoreError;

/// NOT_FOUND naming the resident asked for, by masked NIK.
pub(crate) fn resident_not_found(nik: &Nik) -> ApiError {
    ApiError::not_found("resident")
        .with_reason(ErrorReason::ResidentNotFound, [])
        .with_resource("resident", nik.masked())
}

/// NOT_FOUND naming the family asked for, by masked KK number.
pub(crate) fn family_not_found(kk: &Kk) -> ApiError {
    ApiError::not_found("family (KK)")
        .with_reason(ErrorReason::FamilyNotFound, [])
        .with_resource("family", kk.masked())
}

/// A store error for a change to one resident, so a NOT_FOUND says which
/// resident (and which family, when the change names one).
pub(crate) fn change_error(nik: &Nik, kk: Option<&Kk>) -> impl FnOnce(StoreError) -> ApiError {
    move |err| match (err, kk) {
        (StoreError::ResidentNotFound, _) => resident_not_found(nik),
        (StoreError::FamilyNotFound, Some(kk)) => family_not_found(kk),
        (err, _) => ApiError::from(err),
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::ResidentNotFound => {
                ApiError::not_found("resident").with_reason(ErrorReason::ResidentNotFound, [])
            }
            StoreError::FamilyNotFound => {
                ApiError::not_found("family (KK)").with_reason(ErrorReason::FamilyNotFound, [])
            }
            StoreError::NikTaken => ApiError::new(
                ErrorCode::AlreadyExists,
                "a resident with this NIK is already registered; a person is active on one KK only",
            )
            .with_violation("nik", "already registered")
            .with_reason(ErrorReason::NikAlreadyRegistered, []),
            StoreError::SecondHead => precondition(
                ErrorReason::FamilyHasHead,
                "relationship",
                "the family already has a living head",
            ),
            StoreError::FirstMemberNotHead => precondition(
                ErrorReason::FamilyNeedsHead,
                "kk",
                "the KK is not on record yet; its first member must be the head",
            ),
            StoreError::WouldLoseHead => precondition(
                ErrorReason::FamilyNeedsHead,
                "relationship",
                "the family would be left without a head; record the new head first",
            ),
            StoreError::StaleVersion { expected, actual } => ApiError::new(
                ErrorCode::Aborted,
                format!("the record changed: version {expected} was read, version {actual} is stored"),
            )
            .with_reason(
                ErrorReason::StaleVersion,
                [("current_version".to_owned(), actual.to_string())],
            ),
            StoreError::NotActive(status) => precondition(
                ErrorReason::ResidentNotActive,
                "nik",
                &format!("the resident is {status}"),
            ),
            StoreError::Invalid(found) => {
                let mut out = Violations::new();
                absorb(&mut out, found);
                out.into_result()
                    .err()
                    .unwrap_or_else(|| ApiError::new(ErrorCode::InvalidArgument, "invalid"))
            }
            StoreError::Corrupt(what) => ApiError::internal(&StoreError::Corrupt(what)),
            StoreError::Db(err) => ApiError::from(err),
        }
    }
}

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
        ApiError::from(err).into()
    }
}

fn precondition(reason: ErrorReason, subject: &str, description: &str) -> ApiError {
    ApiError::new(ErrorCode::FailedPrecondition, description)
        .with_reason(reason, [])
        .with_precondition(adminduk_kit::error::reason_name(reason), subject, description)
}
