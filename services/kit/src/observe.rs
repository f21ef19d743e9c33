//! What every server records of each answer, in one layer: the request
//! count and latency by method and code (see [`crate::metrics`]), and the
//! answer's gRPC code on the request's span (`rpc.grpc.status_code`).
//!
//! The code is read where gRPC puts it: in the headers of a trailers-only
//! answer (every refusal), else in the trailers at the end of the body; an
//! answer whose client went away first is `CANCELLED`. A streaming call is
//! timed until its stream ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::Code;
use tonic::body::Body;

use crate::metrics::{self, RpcLabels};

/// Services every server answers besides its own.
const COMMON: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The layer: `service` names the server in the metrics, `known` are the
/// gRPC services it serves (any other path is counted as `unknown`).
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    service: &'static str,
    known: Arc<[&'static str]>,
}

impl ObserveLayer {
    /// Observes a server called `service` that serves `known`.
    pub fn new(service: &'static str, known: &[&'static str]) -> Self {
        Self {
            service,
            known: known.iter().copied().chain(COMMON).collect(),
        }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            layer: self.clone(),
        }
    }
}

/// The layer's service.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    layer: ObserveLayer,
}

/// `/pkg.Service/Method` as its two names, if it has that shape.
fn split_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some((service, method))
}

/// One answer being observed.
#[derive(Debug)]
struct Observation {
    service: &'static str,
    rpc_service: String,
    rpc_method: String,
    started: Instant,
    span: tracing::Span,
}

impl Observation {
    fn finish(self, code: Code) {
        let unknown = || "unknown".to_owned();
        let known_method = code != Code::Unimplemented;
        let labels = RpcLabels {
            service: self.service,
            rpc_service: if known_method { self.rpc_service } else { unknown() },
            rpc_method: if known_method { self.rpc_method } else { unknown() },
            code: metrics::code_name(code),
        };
        let m = metrics::get();
        m.rpc_duration
            .get_or_create(&labels)
            .observe(self.started.elapsed().as_secs_f64());
        m.rpc_requests.get_or_create(&labels).inc();
        self.span.record("rpc.grpc.status_code", code as i32);
    }
}

/// The code in a header map's `grpc-status`, if there is one.
fn status_code(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(Code::from_i32(value))
}

impl<S, B> tower::Service<http::Request<B>> for Observe<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (rpc_service, rpc_method) = match split_path(request.uri().path()) {
            Some((service, method)) if self.layer.known.contains(&service) => {
                (service.to_owned(), method.to_owned())
            }
            _ => ("unknown".to_owned(), "unknown".to_owned()),
        };
        let span = tracing::Span::current();
        span.record("adminduk.server", self.layer.service);
        let observation = Observation {
            service: self.layer.service,
            rpc_service,
            rpc_method,
            started: Instant::now(),
            span,
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = match answer.await {
                Ok(response) => response,
                Err(err) => {
                    // Refused by a layer below (load shed): the server answers UNAVAILABLE.
                    observation.finish(Code::Unavailable);
                    return Err(err);
                }
            };
            if let Some(code) = status_code(response.headers()) {
                observation.finish(code);
                return Ok(response);
            }
            Ok(response.map(|body| {
                Body::new(ObservedBody {
                    inner: body,
                    pending: Some(observation),
                })
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A body that records its answer's code when its trailers pass.
    struct ObservedBody {
        #[pin]
        inner: Body,
        pending: Option<Observation>,
    }

    impl PinnedDrop for ObservedBody {
        fn drop(this: Pin<&mut Self>) {
            if let Some(observation) = this.project().pending.take() {
                observation.finish(Code::Cancelled);
            }
        }
    }
}

impl http_body::Body for ObservedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(observation) = this.pending.take()
                {
                    observation.finish(status_code(trailers).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(status))) => {
                if let Some(observation) = this.pending.take() {
                    observation.finish(status.code());
                }
            }
            Poll::Ready(None) => {
                // A body that ends without trailers never said OK.
                if let Some(observation) = this.pending.take() {
                    observation.finish(Code::Unknown);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_a_service_and_a_method_or_nothing() {
        assert_eq!(
            split_path("/adminduk.inventory.v1.InventoryService/Reserve"),
            Some(("adminduk.inventory.v1.InventoryService", "Reserve"))
        );
        assert_eq!(split_path("/nothing"), None);
        assert_eq!(split_path("/a/b/c"), None);
        assert_eq!(split_path("//Reserve"), None);
    }
}
