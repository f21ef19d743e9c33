//! One error type for every handler, mapped to `tonic::Code` in one place, with
//! google.rpc details a client can act on.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The ErrorInfo domain every adminduk service reports its reasons under.
pub const ERROR_DOMAIN: &str = "adminduk.go.id";

pub use adminduk_proto::common::v1::ErrorReason;

/// A reason as sent in ErrorInfo: its contract name without the enum's prefix (`DATE_FULL`).
pub fn reason_name(reason: ErrorReason) -> &'static str {
    let name = reason.as_str_name();
    name.strip_prefix("ERROR_REASON_").unwrap_or(name)
}

/// The ErrorInfo reason a status carries (`DATE_FULL`); empty when it carries none.
pub fn reason_of(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// One metadata value of a status's ErrorInfo (`next_dates_with_room`, `job_id`, ...).
pub fn metadata_of(status: &Status, key: &str) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .and_then(|info| info.metadata.get(key).cloned())
}

/// What went wrong, as far as a client needs to know; each maps to one gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request itself is wrong; details name the fields.
    InvalidArgument,
    /// The thing asked for does not exist.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// The system is not in the state the request needs (policy, rules).
    FailedPrecondition,
    /// A concurrent change won (stale version); read again and retry.
    Aborted,
    /// A quota or capacity is used up.
    ResourceExhausted,
    /// No valid credential.
    Unauthenticated,
    /// A valid credential without the right to do this.
    PermissionDenied,
    /// A dependency is down or overloaded; retrying later may work.
    Unavailable,
    /// The deadline passed before the work finished.
    DeadlineExceeded,
    /// No such method is served here.
    Unimplemented,
    /// A bug or an unexpected failure; never carries its cause to the client.
    Internal,
}

impl ErrorCode {
    /// The gRPC status code for this error.
    pub fn grpc_code(self) -> Code {
        match self {
            Self::InvalidArgument => Code::InvalidArgument,
            Self::NotFound => Code::NotFound,
            Self::AlreadyExists => Code::AlreadyExists,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::Aborted => Code::Aborted,
            Self::ResourceExhausted => Code::ResourceExhausted,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::Unavailable => Code::Unavailable,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Unimplemented => Code::Unimplemented,
            Self::Internal => Code::Internal,
        }
    }
}

/// An error on its way to a client: a code, a message safe to show, and details.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    // Boxed: the details are large and rare, and errors travel in every `Result`.
    details: Box<ErrorDetails>,
}

impl ApiError {
    /// An error with a code and a message; the message must be safe to show a client.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Box::default(),
        }
    }

    /// Another service's answer passed on as it came: its code, message and details.
    pub fn passthrough(code: ErrorCode, message: impl Into<String>, details: ErrorDetails) -> Self {
        Self {
            code,
            message: message.into(),
            details: Box::new(details),
        }
    }

    /// INVALID_ARGUMENT naming one field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        let description = description.into();
        Self::new(ErrorCode::InvalidArgument, description.clone()).with_violation(field, description)
    }

    /// NOT_FOUND for a kind of thing; never echoes the key (it may be a NIK).
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// INTERNAL: the cause is logged here and never sent to the client (it may hold SQL or paths).
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// UNAVAILABLE with a hint of when to retry.
    pub fn unavailable(message: impl Into<String>, retry_after: Duration) -> Self {
        Self::new(ErrorCode::Unavailable, message).with_retry_after(retry_after)
    }

    /// Adds ResourceInfo: which thing the error is about (a job id, a masked NIK).
    pub fn with_resource(mut self, resource_type: impl Into<String>, name: impl Into<String>) -> Self {
        let resource_type = resource_type.into();
        let description = format!("no such {resource_type}");
        self.details
            .set_resource_info(resource_type, name, "", description);
        self
    }

    /// Adds a BadRequest field violation.
    pub fn with_violation(mut self, field: impl Into<String>, description: impl Into<String>) -> Self {
        self.details.add_bad_request_violation(field, description);
        self
    }

    /// Sets ErrorInfo: a reason of the contract (`adminduk.common.v1.ErrorReason`,
    /// sent as `DATE_FULL`) and its metadata.
    pub fn with_reason(
        mut self,
        reason: ErrorReason,
        metadata: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let metadata: HashMap<String, String> = metadata.into_iter().collect();
        self.details
            .set_error_info(reason_name(reason), ERROR_DOMAIN, metadata);
        self
    }

    /// Adds a PreconditionFailure violation.
    pub fn with_precondition(
        mut self,
        kind: impl Into<String>,
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        self.details
            .add_precondition_failure_violation(kind, subject, description);
        self
    }

    /// Sets RetryInfo.
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.details.set_retry_info(Some(delay));
        self
    }

    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message sent to the client.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The google.rpc details sent to the client.
    pub fn details(&self) -> &ErrorDetails {
        &self.details
    }

    /// The ErrorInfo reason, when the error has one.
    pub fn reason(&self) -> Option<&str> {
        self.details.error_info().map(|info| info.reason.as_str())
    }
}

/// Field violations gathered across a request, so a client sees every problem at once.
#[derive(Debug, Default, Clone)]
pub struct Violations(Vec<(String, String)>);

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push((field.into(), description.into()));
    }

    /// Adds every violation of `other`.
    pub fn extend(&mut self, other: Violations) {
        self.0.extend(other.0);
    }

    /// How many were recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// INVALID_ARGUMENT with every violation, or `Ok` when there is none.
    pub fn into_result(self) -> Result<(), ApiError> {
        let Some((field, description)) = self.0.first() else {
            return Ok(());
        };
        let message = if self.0.len() == 1 {
            format!("{field}: {description}")
        } else {
            format!(
                "{} invalid fields, the first {field}: {description}",
                self.0.len()
            )
        };
        Err(self.0.iter().fold(
            ApiError::new(ErrorCode::InvalidArgument, message),
            |err, (f, d)| err.with_violation(f, d),
        ))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        Status::with_error_details(err.code.grpc_code(), err.message, *err.details)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                tracing::warn!(error = %err, "database unavailable");
                Self::unavailable("database unavailable", Duration::from_secs(1))
            }
            _ => Self::internal(&err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_field_carries_a_bad_request_violation() {
        let status: Status = ApiError::invalid_field("nik", "must be 16 digits").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request details");
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "nik");
        assert_eq!(bad.field_violations[0].description, "must be 16 digits");
    }

    #[test]
    fn reasons_go_into_error_info_under_the_adminduk_domain() {
        let status: Status = ApiError::new(ErrorCode::FailedPrecondition, "activate IKD first")
            .with_reason(
                ErrorReason::IkdNotActive,
                [("how".to_owned(), "visit an office".to_owned())],
            )
            .with_precondition("IKD", "resident", "not activated")
            .into();
        assert_eq!(status.code(), Code::FailedPrecondition);
        let details = status.get_error_details();
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, "IKD_NOT_ACTIVE");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(
            info.metadata.get("how").map(String::as_str),
            Some("visit an office")
        );
        assert_eq!(reason_of(&status), "IKD_NOT_ACTIVE");
        assert_eq!(metadata_of(&status, "how").as_deref(), Some("visit an office"));
        assert_eq!(metadata_of(&status, "why"), None);
        assert_eq!(
            details.precondition_failure().map(|p| p.violations.len()),
            Some(1)
        );
    }

    #[test]
    fn database_errors_never_reach_the_client() {
        let err = sqlx::Error::Protocol("SELECT secret FROM /var/lib/db".into());
        let status: Status = ApiError::from(err).into();
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
        assert_eq!(reason_of(&status), "", "no reason, no ErrorInfo");
        assert!(!format!("{status:?}").contains("SELECT"));
    }

    #[test]
    fn violations_are_reported_together() {
        let mut v = Violations::new();
        assert!(v.clone().into_result().is_ok());
        v.add("quantity", "must be positive");
        v.add("reason", "is required");
        let status: Status = v.into_result().expect_err("two violations").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("2 invalid fields"));
        let fields: Vec<_> = status
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.iter().map(|f| f.field.clone()).collect())
            .unwrap_or_default();
        assert_eq!(fields, ["quantity", "reason"]);
    }

    #[test]
    fn every_code_maps_to_its_grpc_code() {
        let pairs = [
            (ErrorCode::InvalidArgument, Code::InvalidArgument),
            (ErrorCode::NotFound, Code::NotFound),
            (ErrorCode::AlreadyExists, Code::AlreadyExists),
            (ErrorCode::FailedPrecondition, Code::FailedPrecondition),
            (ErrorCode::Aborted, Code::Aborted),
            (ErrorCode::ResourceExhausted, Code::ResourceExhausted),
            (ErrorCode::Unauthenticated, Code::Unauthenticated),
            (ErrorCode::PermissionDenied, Code::PermissionDenied),
            (ErrorCode::Unavailable, Code::Unavailable),
            (ErrorCode::DeadlineExceeded, Code::DeadlineExceeded),
            (ErrorCode::Internal, Code::Internal),
        ];
        for (ours, grpc) in pairs {
            assert_eq!(ours.grpc_code(), grpc);
        }
    }
}
