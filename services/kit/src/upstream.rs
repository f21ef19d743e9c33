//! Calls from one service to another: one way to build the request (trace
//! context, a deadline) and one way to read a refusal, so that no service
//! turns an answer its client can act on into "cannot be reached".

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::error::{ApiError, ErrorCode};

/// The longest a service waits for another; a caller's own deadline is shorter or equal.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

tokio::task_local! {
    /// When the request being served must be answered, from its caller's `grpc-timeout`.
    static DEADLINE: Option<Instant>;
}

/// A channel to another service: [`channel`] for `http://`, and for
/// `https://` TLS with the mesh CA and this service's certificate (mTLS), the
/// server's name taken from the URI.
pub fn channel_to(
    uri: &str,
    tls: Option<&crate::config::UpstreamTlsConfig>,
) -> Result<tonic::transport::Channel, UpstreamError> {
    let Some(tls) = tls else {
        return channel(uri).map_err(UpstreamError::Address);
    };
    let parsed: http::Uri = uri.parse().map_err(|_| UpstreamError::NotUri)?;
    let host = parsed.host().ok_or(UpstreamError::NotUri)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let config = crate::tls::client_tls(&tls.ca, host, Some((&tls.cert, &tls.key)))?;
    Ok(endpoint(uri)
        .map_err(UpstreamError::Address)?
        .tls_config(config)
        .map_err(UpstreamError::Address)?
        .connect_lazy())
}

/// A channel to another service could not be made.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The address is not a URI with a host.
    #[error("not a URI with a host")]
    NotUri,
    /// The address or its TLS settings are refused by the transport.
    #[error(transparent)]
    Address(tonic::transport::Error),
    /// The TLS files cannot be read.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

fn endpoint(uri: &str) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    Ok(tonic::transport::Endpoint::from_shared(uri.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

/// A channel to another service at `uri` (`http://population:50061`): one
/// HTTP/2 connection, made on first use and shared by every clone, kept alive
/// across idle periods, and re-made when it breaks.
pub fn channel(uri: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    Ok(endpoint(uri)?.connect_lazy())
}

/// A request to another service: W3C trace context injected, and a deadline
/// that is the request being served's own (what is left of it), capped at
/// [`UPSTREAM_TIMEOUT`], so no call outlives the caller that waits for it.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    crate::telemetry::inject_context(request.metadata_mut());
    request.set_timeout(upstream_timeout(Instant::now()));
    request
}

/// What a call made now to another service may take: the request being
/// served's remaining time, at most [`UPSTREAM_TIMEOUT`] (the gateway writes it
/// as the `grpc-timeout` of a call it forwards).
pub fn time_left() -> Duration {
    upstream_timeout(Instant::now())
}

/// What an upstream call may take from `now`: the caller's remaining time, at most the cap.
fn upstream_timeout(now: Instant) -> Duration {
    let left = DEADLINE
        .try_with(|deadline| deadline.map(|d| d.saturating_duration_since(now)))
        .ok()
        .flatten();
    left.map_or(UPSTREAM_TIMEOUT, |left| left.min(UPSTREAM_TIMEOUT))
}

/// Reads a `grpc-timeout` header value (`100m`, `5S`, ...: at most 8 digits and a unit).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = value.get(..value.len() - unit.len_utf8())?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n.checked_mul(3600)?),
        'M' => Duration::from_secs(n.checked_mul(60)?),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A server layer that keeps each request's deadline (its `grpc-timeout`) for
/// the calls the handler makes to other services ([`request`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline(inner)
    }
}

/// See [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct Deadline<S>(S);

impl<S, B> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tokio::task::futures::TaskLocalFuture<Option<Instant>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .and_then(|timeout| Instant::now().checked_add(timeout));
        DEADLINE.scope(deadline, self.0.call(request))
    }
}

/// Runs `work` as if serving a request due at `deadline` (tests, and work
/// started outside a request that should still be bounded).
pub fn within<F: Future>(deadline: Option<Instant>, work: F) -> impl Future<Output = F::Output> {
    DEADLINE.scope(deadline, work)
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

    #[tokio::test]
    async fn the_server_layer_keeps_the_callers_deadline_for_the_handler() {
        use tower::{Layer as _, ServiceExt as _};
        let handler = tower::service_fn(|_: http::Request<()>| async {
            let sent = request(())
                .metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok::<_, std::convert::Infallible>(sent)
        });
        let call = |timeout: Option<&'static str>| {
            let mut req = http::Request::new(());
            if let Some(t) = timeout {
                req.headers_mut()
                    .insert("grpc-timeout", http::HeaderValue::from_static(t));
            }
            DeadlineLayer.layer(handler).oneshot(req)
        };
        let sent = |v: Option<String>| {
            v.as_deref()
                .and_then(parse_grpc_timeout)
                .expect("a deadline is always sent")
        };
        let short = sent(call(Some("200m")).await.expect("answer"));
        assert!(
            short <= Duration::from_millis(200) && short > Duration::from_millis(100),
            "{short:?}"
        );
        assert_eq!(sent(call(Some("1H")).await.expect("answer")), UPSTREAM_TIMEOUT);
        assert_eq!(sent(call(None).await.expect("answer")), UPSTREAM_TIMEOUT);
    }

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("250u"), Some(Duration::from_micros(250)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "m", "100", "123456789m", "1x", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn an_upstream_call_gets_what_is_left_of_its_callers_deadline_at_most_the_cap() {
        assert_eq!(
            request(())
                .metadata()
                .get("grpc-timeout")
                .map(|v| v.to_str().ok()),
            Some(Some("5000000u"))
        );
        let soon = Instant::now() + Duration::from_millis(300);
        let left = within(Some(soon), async { upstream_timeout(Instant::now()) }).await;
        assert!(
            left <= Duration::from_millis(300) && left > Duration::from_millis(200),
            "{left:?}"
        );
        let later = Instant::now() + Duration::from_secs(60);
        let capped = within(Some(later), async { upstream_timeout(Instant::now()) }).await;
        assert_eq!(capped, UPSTREAM_TIMEOUT);
        let none = within(None, async { upstream_timeout(Instant::now()) }).await;
        assert_eq!(none, UPSTREAM_TIMEOUT);
        let past = Instant::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let gone = within(Some(past), async { upstream_timeout(Instant::now()) }).await;
        assert_eq!(gone, Duration::ZERO, "a deadline that passed leaves nothing");
    }

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
