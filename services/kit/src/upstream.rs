//! Calls from one service to another: one way to build the request (trace
//! context, a deadline) and one way to read a refusal, so that no service
//! turns an answer its client can act on into "cannot be reached".

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::error::{ApiError, ErrorCode};

/// The longest a service waits for another; a caller's own deadline is shorter or equal.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// A request to another service: W3C trace context injected, deadline set.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    crate::telemetry::inject_context(request.metadata_mut());
    request.set_timeout(UPSTREAM_TIMEOUT);
    request
}

/// The caller's answer to a failed call to `service`.
///
/// Codes a client can act on (a bad field, a missing thing, a duplicate, a
/// state that forbids it, a race to retry, a full date, another office's
/// reservation) pass through with their message and google.rpc details.
/// Everything else (the service down, slow, broken, or refusing this
/// service's own credentials) becomes UNAVAILABLE naming the service, with a
/// hint of when to retry: the client cannot fix it by changing its request.
pub fn refusal(service: &str, status: &Status) -> ApiError {
    let code = match status.code() {
        Code::InvalidArgument | Code::OutOfRange => ErrorCode::InvalidArgument,
        Code::NotFound => ErrorCode::NotFound,
        Code::AlreadyExists => ErrorCode::AlreadyExists,
        Code::FailedPrecondition => ErrorCode::FailedPrecondition,
        Code::Aborted => ErrorCode::Aborted,
        Code::ResourceExhausted => ErrorCode::ResourceExhausted,
        Code::PermissionDenied => ErrorCode::PermissionDenied,
        code => {
            tracing::warn!(upstream = service, ?code, "upstream call failed");
            return ApiError::unavailable(
                format!("the {service} service cannot be reached"),
                Duration::from_secs(1),
            );
        }
    };
    ApiError::passthrough(code, status.message(), status.get_error_details())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_a_client_can_act_on_pass_through_with_their_details() {
        let upstream: Status = ApiError::invalid_field("nik", "birth_day: day 32 is not a valid day").into();
        let ours: Status = refusal("population", &upstream).into();
        assert_eq!(ours.code(), Code::InvalidArgument);
        assert_eq!(ours.message(), upstream.message());
        let details = ours.get_error_details();
        let field = details
            .bad_request()
            .and_then(|b| b.field_violations.first())
            .map(|f| f.field.clone());
        assert_eq!(field.as_deref(), Some("nik"));
        assert!(details.retry_info().is_none());

        let aborted: Status = ApiError::new(ErrorCode::Aborted, "being recorded")
            .with_retry_after(Duration::from_millis(50))
            .into();
        let ours: Status = refusal("inventory", &aborted).into();
        assert_eq!(ours.code(), Code::Aborted);
        assert!(ours.get_error_details().retry_info().is_some());
    }

    #[test]
    fn failures_of_the_upstream_itself_are_unavailable() {
        for code in [
            Code::Unavailable,
            Code::Internal,
            Code::Unknown,
            Code::DeadlineExceeded,
            Code::Unauthenticated,
            Code::Unimplemented,
            Code::Cancelled,
            Code::DataLoss,
        ] {
            let ours: Status = refusal("inventory", &Status::new(code, "select * from x")).into();
            assert_eq!(ours.code(), Code::Unavailable, "{code:?}");
            assert_eq!(ours.message(), "the inventory service cannot be reached");
            assert!(ours.get_error_details().retry_info().is_some());
        }
    }
}
