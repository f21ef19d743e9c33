//! Every refusal IKD answers with, in one place: its code, its reason and
//! the words a phone shows, and how a store failure becomes one (so
//! workflows pass store errors on with `?`).

use std::time::Duration;

use chrono::{DateTime, Utc};

use adminduk_kit::{ApiError, ErrorCode, ErrorReason};

use crate::domain::Ineligible;
use crate::store::{OpenActivation, StoreError};

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::ActivationOpen(open) => activation_pending(open, Utc::now()),
            StoreError::AlreadyActive => refusal(
                ErrorCode::FailedPrecondition,
                ErrorReason::DeviceAlreadyBound,
                "this identity is already active on another device; revoke it at an office first",
            ),
            StoreError::Conflict => ApiError::new(
                ErrorCode::Aborted,
                "the activation changed meanwhile; read it again",
            )
            .with_reason(ErrorReason::ActivationChanged, [])
            .with_retry_after(Duration::from_millis(100)),
            StoreError::Corrupt(_) => ApiError::internal(&err),
            StoreError::Db(db) => ApiError::from(db),
        }
    }
}

/// A refusal with a reason and no metadata.
pub(crate) fn refusal(code: ErrorCode, reason: ErrorReason, message: &str) -> ApiError {
    ApiError::new(code, message).with_reason(reason, [])
}

/// INTERNAL with nothing to log: randomness or signing failed.
pub(crate) fn internal() -> ApiError {
    ApiError::new(ErrorCode::Internal, "internal error")
}

/// ACTIVATION_PENDING: what holds the NIK, what to do, and when a new start
/// is accepted (`start_accepted_time`; RetryInfo too while it is moments away).
fn activation_pending(open: OpenActivation, now: DateTime<Utc>) -> ApiError {
    let wib = |at: DateTime<Utc>| at.with_timezone(&adminduk_kit::time::wib()).format("%H:%M:%S");
    let (message, at, retry) = match open {
        OpenActivation::Started { replaceable_at } => {
            let wait = (replaceable_at - now).num_seconds().max(0) + 1;
            (
                format!(
                    "an activation for this NIK was started moments ago and no office has verified it yet; \
                     to activate on this phone, start again in {wait} seconds (after {} WIB): the new start \
                     replaces it. If it was started on your own phone, have its QR code scanned at an office",
                    wib(replaceable_at)
                ),
                replaceable_at,
                Some(Duration::from_secs(wait.unsigned_abs())),
            )
        }
        OpenActivation::CodeSent { code_expires_at } => (
            format!(
                "an activation for this NIK was verified at an office and its code still works: enter the \
                 code from the e-mail on the phone that started it, or start again after {} WIB, when the \
                 code expires",
                wib(code_expires_at)
            ),
            code_expires_at,
            None,
        ),
    };
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let err = ApiError::new(ErrorCode::AlreadyExists, message).with_reason(
        ErrorReason::ActivationPending,
        [("start_accepted_time".to_owned(), at)],
    );
    match retry {
        Some(delay) => err.with_retry_after(delay),
        None => err,
    }
}

/// NOT_ELIGIBLE, with why (as metadata and as a precondition failure).
impl From<Ineligible> for ApiError {
    fn from(why: Ineligible) -> Self {
        ApiError::new(ErrorCode::FailedPrecondition, ineligible_message(why))
            .with_reason(
                ErrorReason::NotEligible,
                [("why".to_owned(), why.as_str().to_owned())],
            )
            .with_precondition("ELIGIBILITY", "nik", why.as_str())
    }
}

fn ineligible_message(why: Ineligible) -> &'static str {
    match why {
        Ineligible::NotFound => "no resident with this NIK is registered",
        Ineligible::Deceased => "the resident is recorded as deceased",
        Ineligible::MovedOut => "the resident has moved out of the area",
        Ineligible::Under17 => "IKD needs a KTP-el: 17 or older, or married",
        Ineligible::NotRecorded => "the KTP-el is not recorded yet: record it at an office first",
    }
}

/// ALREADY_ACTIVE: the identity is active on the very device starting again.
pub(crate) fn already_active_here() -> ApiError {
    refusal(
        ErrorCode::AlreadyExists,
        ErrorReason::AlreadyActive,
        "this identity is already active on this device",
    )
}

/// ACTIVATION_NOT_FOUND, naming the activation asked for.
pub(crate) fn activation_not_found(id: &str) -> ApiError {
    ApiError::not_found("activation")
        .with_reason(ErrorReason::ActivationNotFound, [])
        .with_resource("activation", id)
}

/// NONCE_MISMATCH: the scanned QR code is another activation's.
pub(crate) fn nonce_mismatch() -> ApiError {
    refusal(
        ErrorCode::PermissionDenied,
        ErrorReason::NonceMismatch,
        "the QR code does not belong to this activation",
    )
}

/// CODE_ALREADY_SENT: a live code is not replaced, until `live_until`.
pub(crate) fn code_already_sent(live_until: DateTime<Utc>) -> ApiError {
    let until = live_until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    ApiError::new(
        ErrorCode::FailedPrecondition,
        "a code was sent for this activation and still works; a new one can be sent once it expires",
    )
    .with_reason(
        ErrorReason::CodeAlreadySent,
        [("code_expire_time".to_owned(), until)],
    )
}

/// NOT_VERIFIED: a code is entered before any office verified the activation.
pub(crate) fn not_verified() -> ApiError {
    refusal(
        ErrorCode::FailedPrecondition,
        ErrorReason::NotVerified,
        "the activation must first be verified at an office",
    )
}

/// What to do once a code has expired: the activation holds the NIK until
/// its code expires, and after that either way on is open.
const NEW_CODE_HOW: &str = "have an officer scan this activation's QR code again for a new code, \
                            or start again on the phone";

/// CODE_EXPIRED, with how to get a new one.
pub(crate) fn code_expired() -> ApiError {
    ApiError::new(
        ErrorCode::FailedPrecondition,
        format!("the code has expired; {NEW_CODE_HOW}"),
    )
    .with_reason(
        ErrorReason::CodeExpired,
        [("how".to_owned(), NEW_CODE_HOW.to_owned())],
    )
    .with_precondition(
        "CODE_EXPIRED",
        "code",
        "the code sent for this activation has expired",
    )
}

/// CODE_INVALID, with the attempts left (more than none).
pub(crate) fn wrong_code(left: i64) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidArgument,
        format!("wrong code; {left} attempts left"),
    )
    .with_violation("code", "does not match")
    .with_reason(
        ErrorReason::CodeInvalid,
        [("attempts_left".to_owned(), left.to_string())],
    )
}

/// ACTIVATION_EXPIRED: lapsed, or replaced by a newer start.
pub(crate) fn activation_expired() -> ApiError {
    refusal(
        ErrorCode::FailedPrecondition,
        ErrorReason::ActivationExpired,
        "the activation lapsed or a newer one replaced it; start again on the phone",
    )
}

/// TOO_MANY_ATTEMPTS: the activation locked.
pub(crate) fn too_many_attempts() -> ApiError {
    refusal(
        ErrorCode::FailedPrecondition,
        ErrorReason::TooManyAttempts,
        "too many wrong codes; start again on the phone and have it verified at an office",
    )
}

/// ACTIVATION_COMPLETED: nothing more to do with this activation.
pub(crate) fn already_completed() -> ApiError {
    refusal(
        ErrorCode::FailedPrecondition,
        ErrorReason::ActivationCompleted,
        "this activation was already completed",
    )
}

/// SIGNATURE_INVALID: the device key did not sign the challenge.
pub(crate) fn signature_invalid() -> ApiError {
    refusal(
        ErrorCode::Unauthenticated,
        ErrorReason::SignatureInvalid,
        "the device signature does not verify",
    )
}

/// IKD_NOT_ACTIVE: no active identity for the NIK.
pub(crate) fn not_active() -> ApiError {
    refusal(
        ErrorCode::FailedPrecondition,
        ErrorReason::IkdNotActive,
        "the identity is not active",
    )
}

/// CHALLENGE_INVALID: the token challenge is unknown, used or expired.
pub(crate) fn challenge_invalid() -> ApiError {
    refusal(
        ErrorCode::FailedPrecondition,
        ErrorReason::ChallengeInvalid,
        "the challenge is unknown, used or expired",
    )
}

/// NOT_FOUND (IKD_NOT_ACTIVE) for a subject no identity has.
pub(crate) fn unknown_subject() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no identity has this subject")
        .with_reason(ErrorReason::IkdNotActive, [])
}
