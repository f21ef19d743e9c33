//! What every server records of each answer, in one layer: the request
//! count and latency by method and code (see [`crate::metrics`]), and the
//! answer's gRPC code on the request's span (`rpc.grpc.status_code`).
//!
//! The code is read where gRPC puts it: in the headers of a trailers-only
//! answer (every refusal), else in the trailers at the end of the body; an
//! answer whose client went away first is `CANCELLED`. A streaming call is
//! timed until its stream ends.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::body::Body;

use crate::metrics::{self, RpcLabels};

/// Methods every server answers besides its own.
const COMMON: [(&str, &str); 4] = [
    ("grpc.health.v1.Health", "Check"),
    ("grpc.health.v1.Health", "Watch"),
    ("grpc.reflection.v1.ServerReflection", "ServerReflectionInfo"),
    ("grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo"),
];

/// Names kept for the life of the process, each once (the contract's
/// service and method names: a bounded set, whatever clients send).
fn intern(name: &str) -> &'static str {
    static NAMES: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Default::default);
    let mut names = NAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(&known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// The methods a server serves, by path (`/pkg.Service/Method`), found in
/// the contract's descriptors for the services it names: each with its
/// service's and its own name, and the span name `Service/Method`, made once.
#[derive(Debug, Default)]
pub struct Methods(HashMap<String, ((&'static str, &'static str), &'static str)>);

impl Methods {
    /// The methods of `services` described in the encoded descriptor sets,
    /// with health and reflection.
    pub fn of(services: &[&str], descriptors: &[&[u8]]) -> Self {
        use prost::Message as _;
        let mut methods = HashMap::new();
        let mut add = |service: &str, method: &str| {
            let names = (intern(service), intern(method));
            methods.insert(
                format!("/{service}/{method}"),
                (names, intern(&format!("{service}/{method}"))),
            );
        };
        for (service, method) in COMMON {
            add(service, method);
        }
        for encoded in descriptors {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*encoded) else {
                continue;
            };
            for file in &set.file {
                for service in &file.service {
                    let full = match file.package.as_deref() {
                        Some(package) if !package.is_empty() => format!("{package}.{}", service.name()),
                        _ => service.name().to_owned(),
                    };
                    if services.contains(&full.as_str()) {
                        for method in &service.method {
                            add(&full, method.name());
                        }
                    }
                }
            }
        }
        Self(methods)
    }

    /// The service and method of a path this server serves.
    pub fn get(&self, path: &str) -> Option<(&'static str, &'static str)> {
        self.0.get(path).map(|(names, _)| *names)
    }

    /// A path's span name, `Service/Method`, or `unknown/unknown`.
    pub fn span_name(&self, path: &str) -> &'static str {
        self.0.get(path).map_or("unknown/unknown", |(_, name)| name)
    }
}

/// Records one answer: its count and latency under `service` (the server),
/// and nothing a client chose (unknown methods are `unknown`).
pub fn record(
    service: &'static str,
    method: Option<(&'static str, &'static str)>,
    code: Code,
    elapsed: Duration,
) {
    let (rpc_service, rpc_method) = method.unwrap_or(("unknown", "unknown"));
    let labels = RpcLabels {
        service,
        rpc_service,
        rpc_method,
        code: metrics::code_name(code),
    };
    let m = metrics::get();
    m.rpc_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    m.rpc_requests.get_or_create(&labels).inc();
}

/// The layer: `service` names the server in the metrics, `methods` are
/// those it serves, `local` is its listening address (the spans'
/// `server.address`), and `timeout` is the deadline of a request that
/// names none.
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    service: &'static str,
    methods: Arc<Methods>,
    /// The listener's address as text, made once (`server.address`).
    address: Arc<str>,
    port: u16,
    timeout: Duration,
}

impl ObserveLayer {
    /// Observes a server called `service`.
    pub fn new(service: &'static str, methods: Arc<Methods>, local: SocketAddr, timeout: Duration) -> Self {
        Self {
            service,
            methods,
            address: local.ip().to_string().into(),
            port: local.port(),
            timeout,
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

/// One answer being observed; recorded exactly once, at the latest when it
/// is dropped (a request dropped unanswered is DEADLINE_EXCEEDED past its
/// deadline, else CANCELLED: its client went away).
#[derive(Debug)]
struct Observation {
    service: &'static str,
    method: Option<(&'static str, &'static str)>,
    started: Instant,
    deadline: Duration,
    span: tracing::Span,
    done: bool,
}

impl Observation {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        // A known service's unknown method is answered UNIMPLEMENTED by its router.
        let method = self.method.filter(|_| code != Code::Unimplemented);
        record(self.service, method, code, self.started.elapsed());
        self.span.record("rpc.grpc.status_code", code as i32);
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        let code = if self.started.elapsed() >= self.deadline {
            Code::DeadlineExceeded
        } else {
            Code::Cancelled
        };
        self.finish(code);
    }
}

/// The code in a header map's `grpc-status`, if there is one.
fn status_code(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(Code::from_i32(value))
}

/// A request's `grpc-timeout` (`100m`, `5S`, ...), if it sends a valid one.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
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
        let method = self.layer.methods.get(request.uri().path());
        let span = tracing::Span::current();
        span.record("server.address", &*self.layer.address);
        span.record("server.port", self.layer.port);
        span.record("adminduk.server", self.layer.service);
        let deadline =
            grpc_timeout(request.headers()).map_or(self.layer.timeout, |t| t.min(self.layer.timeout));
        let mut observation = Observation {
            service: self.layer.service,
            method,
            started: Instant::now(),
            deadline,
            span,
            done: false,
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
                // A refusal's reason (the server's own ErrorInfo) goes on the span.
                if code != Code::Ok
                    && let Some(status) = tonic::Status::from_header_map(response.headers())
                {
                    let reason = crate::error::reason_of(&status);
                    if !reason.is_empty() {
                        observation.span.record("adminduk.reason", reason.as_str());
                    }
                }
                observation.finish(code);
                return Ok(response);
            }
            Ok(response.map(|body| {
                Body::new(OnEnd::new(body, move |ending| match ending {
                    Ending::Trailers(trailers) => {
                        observation.finish(status_code(trailers).unwrap_or(Code::Unknown))
                    }
                    Ending::Failed(status) => observation.finish(status.code()),
                    // A body that ends without trailers never said OK.
                    Ending::NoTrailers => observation.finish(Code::Unknown),
                    // The observation's drop says CANCELLED or DEADLINE_EXCEEDED.
                    Ending::Dropped => drop(observation),
                }))
            }))
        })
    }
}

/// How an answer's body ended.
#[derive(Debug)]
pub enum Ending<'a> {
    /// Its trailers came (holding the gRPC status, when the server sent one).
    Trailers(&'a http::HeaderMap),
    /// The body failed with this status.
    Failed(&'a tonic::Status),
    /// It ended without trailers.
    NoTrailers,
    /// It was dropped before it ended: the client went away, or the deadline passed.
    Dropped,
}

type OnEnding = Box<dyn for<'a> FnOnce(Ending<'a>) + Send>;

pin_project_lite::pin_project! {
    /// An answer's body passed on as it comes, with a call made once, when
    /// it ends (or is dropped): the one place the mesh learns how a streamed
    /// answer ended.
    pub struct OnEnd {
        #[pin]
        inner: Body,
        on_end: Option<OnEnding>,
    }

    impl PinnedDrop for OnEnd {
        fn drop(this: Pin<&mut Self>) {
            if let Some(on_end) = this.project().on_end.take() {
                on_end(Ending::Dropped);
            }
        }
    }
}

impl std::fmt::Debug for OnEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnEnd").finish_non_exhaustive()
    }
}

impl OnEnd {
    /// `inner`, calling `on_end` once when it ends.
    pub fn new(inner: Body, on_end: impl for<'a> FnOnce(Ending<'a>) + Send + 'static) -> Self {
        Self {
            inner,
            on_end: Some(Box::new(on_end)),
        }
    }
}

impl http_body::Body for OnEnd {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        let ending = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(Ending::Trailers),
            Poll::Ready(Some(Err(status))) => Some(Ending::Failed(status)),
            Poll::Ready(None) => Some(Ending::NoTrailers),
            Poll::Pending => None,
        };
        if let Some(ending) = ending
            && let Some(on_end) = this.on_end.take()
        {
            on_end(ending);
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
    fn only_the_contract_s_methods_are_named_and_a_made_up_path_is_unknown() {
        let methods = Methods::of(
            &["adminduk.inventory.v1.InventoryService"],
            &[adminduk_proto::FILE_DESCRIPTOR_SET],
        );
        assert_eq!(
            methods.get("/adminduk.inventory.v1.InventoryService/Reserve"),
            Some(("adminduk.inventory.v1.InventoryService", "Reserve"))
        );
        assert_eq!(
            methods.get("/grpc.health.v1.Health/Check"),
            Some(("grpc.health.v1.Health", "Check"))
        );
        assert_eq!(
            methods.get("/adminduk.inventory.v1.InventoryService/3275014101900001"),
            None
        );
        assert_eq!(
            methods.get("/adminduk.population.v1.PopulationService/ParseNik"),
            None,
            "not this server's"
        );
    }

    #[test]
    fn a_deadline_is_read_from_grpc_timeout() {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", http::HeaderValue::from_static("250m"));
        assert_eq!(grpc_timeout(&headers), Some(Duration::from_millis(250)));
        headers.insert("grpc-timeout", http::HeaderValue::from_static("x"));
        assert_eq!(grpc_timeout(&headers), None);
    }
}
