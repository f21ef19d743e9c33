//! Server bootstrap: bind, health and reflection, TLS, one tower stack,
//! graceful shutdown with a drain timeout.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::util::MapResponseLayer;
use tower_http::classify::{GrpcCode, GrpcErrorsAsFailures, SharedClassifier};
use tower_http::trace::TraceLayer;

use crate::config::ServerConfig;
use crate::error::{ApiError, ErrorCode};

/// A server could not start or failed while running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS files could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The transport failed.
    #[error("server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be built from the descriptors.
    #[error("reflection setup failed: {0}")]
    Reflection(String),
}

/// A gRPC server being assembled: services, then `start`.
#[derive(Debug)]
pub struct GrpcServer {
    config: ServerConfig,
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    descriptors: Vec<&'static [u8]>,
    label: Option<&'static str>,
}

impl GrpcServer {
    /// A server with the given settings and no services yet.
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            routes: RoutesBuilder::default(),
            names: Vec::new(),
            descriptors: Vec::new(),
            label: None,
        }
    }

    /// The largest message a service should decode; pass it to the generated server's
    /// `max_decoding_message_size`.
    pub fn max_message_bytes(&self) -> usize {
        self.config.max_message_bytes
    }

    /// Adds a service; it is reported SERVING on the health service once the server starts.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Names the server in its metrics (`service="gateway"`); otherwise the
    /// package of its first service names it (`adminduk.inventory.v1...` is
    /// `inventory`).
    pub fn named(mut self, label: &'static str) -> Self {
        self.label = Some(label);
        self
    }

    /// The server's name in its metrics.
    fn label(&self) -> &'static str {
        self.label.unwrap_or_else(|| {
            self.names
                .first()
                .and_then(|name| name.split('.').nth(1))
                .unwrap_or("unknown")
        })
    }

    /// Adds an encoded `FileDescriptorSet` for server reflection.
    pub fn with_descriptors(mut self, encoded: &'static [u8]) -> Self {
        self.descriptors.push(encoded);
        self
    }

    /// Adds the health service (each service SERVING) and reflection to `routes`.
    async fn add_health_and_reflection(&self, routes: &mut RoutesBuilder) -> Result<(), ServeError> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        for name in &self.names {
            health_reporter
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        // Health is described too, so `buf curl .../grpc.health.v1.Health/Check` works by
        // reflection; and google.rpc's detail types, so a client prints an error's BadRequest
        // or ErrorInfo rather than a base64 blob.
        let google_rpc = google_rpc_descriptors()?;
        let reflection = || {
            let mut reflection = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_file_descriptor_set(google_rpc.clone());
            for encoded in &self.descriptors {
                reflection = reflection.register_encoded_file_descriptor_set(encoded);
            }
            // Advertise what this server serves, not every service the descriptors describe.
            reflection = reflection.with_service_name("grpc.health.v1.Health");
            for name in &self.names {
                reflection = reflection.with_service_name(*name);
            }
            reflection
        };
        let reflection_error = |err: tonic_reflection::server::Error| ServeError::Reflection(err.to_string());
        // v1alpha too: older clients (grpcio-reflection, some grpcurl builds) speak only it.
        routes
            .add_service(health_service)
            .add_service(reflection().build_v1().map_err(reflection_error)?)
            .add_service(reflection().build_v1alpha().map_err(reflection_error)?);
        Ok(())
    }

    /// With gRPC-Web on: the browser's CORS answers, and the translation to gRPC.
    fn web_layers(
        &self,
    ) -> (
        Option<tower_http::cors::CorsLayer>,
        Option<tonic_web::GrpcWebLayer>,
    ) {
        let web = self.config.grpc_web.as_ref();
        web.map(|w| (cors(w), tonic_web::GrpcWebLayer::new())).unzip()
    }

    /// Whether only the mesh's own services are answered (a backend run apart,
    /// behind mTLS).
    fn services_only(&self) -> bool {
        (self.config.tls.as_ref()).is_some_and(|t| t.services_only && t.client_ca.is_some())
    }

    /// The layer that counts and times every answer, and the methods that
    /// name request spans.
    fn observe(
        &self,
        local_addr: SocketAddr,
    ) -> (crate::observe::ObserveLayer, Arc<crate::observe::Methods>) {
        let methods = Arc::new(crate::observe::Methods::of(&self.names, &self.descriptors));
        let layer = crate::observe::ObserveLayer::new(
            self.label(),
            Arc::clone(&methods),
            local_addr,
            self.config.request_timeout(),
        );
        (layer, methods)
    }

    /// The transport: timeouts and keepalives, TLS (tonic's, or `Some` config
    /// for the server's own accept loop; the certificate's expiry is kept in
    /// the metrics), HTTP/1.1 for gRPC-Web.
    fn transport(&self) -> Result<(Server, Option<Arc<rustls::ServerConfig>>), ServeError> {
        if let Some(tls) = &self.config.tls {
            record_expiry(self.label(), "server", &tls.cert);
        }
        let mut builder = Server::builder()
            // Applies the client's grpc-timeout, or ours when it sends none.
            .timeout(self.config.request_timeout())
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)));
        // A service that checks its clients' chains itself terminates TLS in its
        // own accept loop (`tls_incoming`); any other uses tonic's.
        let own_tls = match &self.config.tls {
            Some(tls) if tls.check_client_chain_in_service && tls.client_ca.is_some() => Some(Arc::new(
                crate::tls::server_config_checking_chain_in_service(tls, self.config.grpc_web.is_some())?,
            )),
            _ => None,
        };
        if let Some(tls) = &self.config.tls
            && own_tls.is_none()
        {
            builder = builder.tls_config(crate::tls::server_tls(tls)?)?;
        }
        // gRPC-Web comes over HTTP/1.1 too (a browser's fetch); gRPC itself stays HTTP/2.
        if self.config.grpc_web.is_some() {
            builder = builder.accept_http1(true);
        }
        Ok((builder, own_tls))
    }

    /// Binds the listener and starts serving; returns once the port is open.
    pub async fn start(mut self) -> Result<RunningServer, ServeError> {
        let (listener, local_addr) = bind(self.config.listen).await?;
        let mut routes = std::mem::take(&mut self.routes);
        self.add_health_and_reflection(&mut routes).await?;
        let (observe, for_spans) = self.observe(local_addr);
        let (builder, own_tls) = self.transport()?;
        let (web, grpc_web) = self.web_layers();
        let limit = self.config.max_message_bytes;
        let stack =
            ServiceBuilder::new()
                // Outermost, so every request has a span, even one refused below; the span
                // continues the caller's W3C trace and records the method, never the body.
                .layer(TraceLayer::new(grpc_classifier()).make_span_with(
                    move |request: &http::Request<Body>| crate::telemetry::request_span(request, &for_spans),
                ))
                // A browser's preflight is answered here; its calls are translated from
                // gRPC-Web to gRPC below, so everything under sees gRPC only.
                .option_layer(web)
                .option_layer(grpc_web)
                // Counts and times every answer by method and code, as the client sees it
                // (after the rewrite below), and puts the code on the request's span.
                .layer(observe)
                // gRPC says an oversized message is RESOURCE_EXHAUSTED and a malformed one
                // INVALID_ARGUMENT; tonic's decoder says OUT_OF_RANGE and INTERNAL, so its
                // answers are rewritten here, in one place for every service.
                .layer(MapResponseLayer::new(move |response| {
                    decoder_answers_as_grpc_says(response, limit)
                }))
                // Keeps the caller's deadline for the calls this request makes to other
                // services, so none of them outlives the caller waiting for the answer.
                .layer(crate::upstream::DeadlineLayer)
                // Refuses at once when the limit below is reached, rather than queueing
                // without bound while the clients' deadlines run out.
                .layer(LoadShedLayer::new())
                // Caps requests in flight across all connections, so a burst cannot exhaust
                // the database pool or memory.
                .layer(GlobalConcurrencyLimitLayer::new(self.config.concurrency_limit))
                // A backend run apart answers the mesh's own services only.
                .layer(ServicesOnlyLayer {
                    on: self.services_only(),
                })
                .into_inner();

        let (stop_tx, mut stop_rx) = watch::channel(false);
        let router = builder.layer(stack).add_routes(routes.routes());
        let accept_stop = stop_rx.clone();
        let stopped = async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        };
        let task = match own_tls {
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
            }
            Some(tls) => {
                let incoming = tls_incoming(listener, tls, accept_stop);
                tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
            }
        };
        tracing::info!(addr = %local_addr, services = ?self.names, "listening");
        Ok(RunningServer {
            addr: local_addr,
            stop: stop_tx,
            task,
            drain: self.config.drain_timeout(),
        })
    }
}

/// Binds `addr`; the listener and the address it is bound to (the real port
/// when 0 was asked for).
pub(crate) async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
    let bind_error = |source| ServeError::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local_addr))
}

/// Keeps a certificate's expiry in `adminduk_tls_certificate_expiry_timestamp_seconds`.
pub fn record_expiry(service: &'static str, certificate: &'static str, path: &std::path::Path) {
    let Some(expiry) = std::fs::read(path)
        .ok()
        .and_then(|pem| crate::tls::not_after(&pem))
    else {
        tracing::warn!(path = %path.display(), "the certificate's expiry could not be read");
        return;
    };
    crate::metrics::get()
        .certificate_expiry
        .get_or_create(&crate::metrics::CertificateLabels { service, certificate })
        .set(expiry);
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes under way at once; past it, new connections wait to be accepted.
const HANDSHAKES_AT_ONCE: usize = 256;

/// TLS connections accepted on `listener`, each handshake in a task of its
/// own (a slow or failed one holds up no other), until `stop`.
fn tls_incoming(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut stop: watch::Receiver<bool>,
) -> tokio_stream::wrappers::ReceiverStream<
    Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(128);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_AT_ONCE));
    tokio::spawn(async move {
        loop {
            // A slot for one more handshake first, so slow clients cannot pile up tasks.
            let permit = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => break,
                // The server is gone (the stream's receiver dropped): so is this loop.
                () = tx.closed() => break,
                permit = handshakes.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => break,
                () = tx.closed() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let _ = tx.send(Ok(stream)).await;
                            }
                            Ok(Err(err)) => tracing::debug!(error = %err, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    });
                }
                Err(err) => {
                    // Out of descriptors or the like: wait a moment rather than spin.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// CORS for gRPC-Web: the configured origins may POST with any request header
/// (a token, a proof, the gRPC-Web ones) and read the gRPC status headers.
fn cors(web: &crate::config::GrpcWebConfig) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};
    let origins = if web.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            web.allowed_origins
                .iter()
                .filter_map(|o| http::HeaderValue::from_str(o).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([http::Method::POST])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(ExposeHeaders::list([
            http::HeaderName::from_static("grpc-status"),
            http::HeaderName::from_static("grpc-message"),
            http::HeaderName::from_static("grpc-status-details-bin"),
        ]))
        .max_age(Duration::from_secs(600))
}

/// The google.rpc error model (`google/rpc/error_details.proto`: BadRequest,
/// ErrorInfo, RetryInfo, ResourceInfo, PreconditionFailure, ...; and
/// `google/rpc/status.proto`) with the well-known types they import, as
/// tonic-types ships them. tonic-types names the two files without their
/// directory (`error_details.proto`); they are served under their canonical
/// names, which clients that know the files already expect.
pub fn google_rpc_descriptors() -> Result<prost_types::FileDescriptorSet, ServeError> {
    use prost::Message as _;
    let mut set = prost_types::FileDescriptorSet::decode(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .map_err(|err| ServeError::Reflection(format!("google.rpc descriptors: {err}")))?;
    let canonical = |name: &str| -> String {
        if name.contains('/') {
            name.to_owned()
        } else {
            format!("google/rpc/{name}")
        }
    };
    for file in &mut set.file {
        if file.package.as_deref() == Some("google.rpc") {
            file.name = file.name.as_deref().map(canonical);
        }
        for dependency in &mut file.dependency {
            if !dependency.contains('/') {
                *dependency = canonical(dependency);
            }
        }
    }
    Ok(set)
}

/// tonic's answer to an oversized message: OUT_OF_RANGE with this text (percent-encoded on the wire).
fn is_oversized_status(headers: &http::HeaderMap) -> bool {
    headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| {
                m.contains("message%20length%20too%20large") || m.contains("message length too large")
            })
}

/// tonic's answer to bytes that are not the method's message: INTERNAL, though
/// the fault is the client's.
fn is_undecodable_status(headers: &http::HeaderMap) -> bool {
    headers.get("grpc-status").is_some_and(|v| v == "13")
        && headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| {
                m.starts_with("failed%20to%20decode%20Protobuf%20message")
                    || m.starts_with("failed to decode Protobuf message")
            })
}

/// Rewrites the decoder's answers into what gRPC says they are, wherever the
/// status travels (the headers of a trailers-only response, or the trailers):
/// tonic's OUT_OF_RANGE for an oversized message into RESOURCE_EXHAUSTED, and
/// its INTERNAL for bytes that are not the method's message into
/// INVALID_ARGUMENT, each with ErrorInfo. The decoder's text (which may quote
/// field names and offsets) is not passed on.
fn rewrite_decoder_status(headers: &mut http::HeaderMap, limit: usize) {
    let status: tonic::Status = if is_oversized_status(headers) {
        ApiError::new(
            ErrorCode::ResourceExhausted,
            format!("request message is larger than the limit of {limit} bytes"),
        )
        .with_reason(
            crate::ErrorReason::MessageTooLarge,
            [("limit_bytes".to_owned(), limit.to_string())],
        )
        .into()
    } else if is_undecodable_status(headers) {
        ApiError::new(
            ErrorCode::InvalidArgument,
            "the request is not a valid protobuf message of this method",
        )
        .with_reason(crate::ErrorReason::MalformedMessage, [])
        .into()
    } else {
        return;
    };
    let replacement: Response<Body> = status.into_http();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    for (name, value) in replacement.headers() {
        if name.as_str().starts_with("grpc-") {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Which answers the request log calls failures (logged at ERROR). Answers a
/// client acts on (bad input, not found, a duplicate, no room, a policy
/// refusal, no credentials) are outcomes: on the peak morning nearly every
/// answer is RESOURCE_EXHAUSTED, and an ERROR line for each would bury the
/// real failures. Those are what the server owes an explanation for:
/// UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
fn grpc_classifier() -> SharedClassifier<GrpcErrorsAsFailures> {
    let outcomes = [
        GrpcCode::Cancelled,
        GrpcCode::InvalidArgument,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::ResourceExhausted,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unauthenticated,
    ];
    SharedClassifier::new(
        outcomes
            .into_iter()
            .fold(GrpcErrorsAsFailures::new(), GrpcErrorsAsFailures::with_success),
    )
}

fn decoder_answers_as_grpc_says(mut response: Response<Body>, limit: usize) -> Response<Body> {
    rewrite_decoder_status(response.headers_mut(), limit);
    response.map(|inner| Body::new(DecoderTrailers { inner, limit }))
}

/// A response body that applies [`rewrite_decoder_status`] to its trailers.
struct DecoderTrailers {
    inner: Body,
    limit: usize,
}

impl http_body::Body for DecoderTrailers {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let limit = self.limit;
        std::pin::Pin::new(&mut self.inner).poll_frame(cx).map(|frame| {
            frame.map(|frame| {
                frame.map(|frame| match frame.into_trailers() {
                    Ok(mut trailers) => {
                        rewrite_decoder_status(&mut trailers, limit);
                        http_body::Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// See [`ServicesOnly`].
#[derive(Debug, Clone, Copy)]
struct ServicesOnlyLayer {
    on: bool,
}

impl<S> tower::Layer<S> for ServicesOnlyLayer {
    type Service = ServicesOnly<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServicesOnly { inner, on: self.on }
    }
}

/// Answers PERMISSION_DENIED to a client whose certificate names no mesh
/// service (`adminduk://service/...`), when on; health and reflection too, so
/// nothing but the mesh learns what it serves.
#[derive(Debug, Clone)]
struct ServicesOnly<S> {
    inner: S,
    on: bool,
}

fn peer_is_a_service<B>(request: &Request<B>) -> bool {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .and_then(|certs| {
            certs
                .first()
                .and_then(|leaf| crate::principal::principal_of_certificate(leaf))
        })
        .is_some_and(|principal| matches!(principal, crate::principal::Principal::Service { .. }))
}

impl<S, B> tower::Service<Request<B>> for ServicesOnly<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.on && !peer_is_a_service(&request) {
            let refusal: tonic::Status = ApiError::new(
                ErrorCode::PermissionDenied,
                "this service answers the mesh's own services only; call the gateway",
            )
            .into();
            return Box::pin(std::future::ready(Ok(refusal.into_http())));
        }
        Box::pin(self.inner.call(request))
    }
}

/// A started server: its address, and the means to stop it.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    drain: Duration,
}

impl RunningServer {
    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests finish for up to the drain timeout, then cuts the rest.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        let _ = self.stop.send(true);
        match tokio::time::timeout(self.drain, &mut self.task).await {
            Ok(Ok(result)) => result.map_err(ServeError::from),
            Ok(Err(join)) => {
                tracing::error!(error = %join, "server task ended abnormally");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(
                    drain_ms = self.drain.as_millis() as u64,
                    "drain timeout passed; closing remaining connections"
                );
                self.task.abort();
                Ok(())
            }
        }
    }
}

/// A service of the mesh, started: its server, what it answers from (`S`: the
/// store, or the workflows over it, for seeding and reading in tests and the
/// CLI), and what stops with it. Each service crate's `start` returns one.
pub struct Running<S> {
    server: RunningServer,
    service: S,
    first: Vec<StopHook>,
    last: Vec<StopHook>,
}

/// Something to stop with a service: a future made when the stop begins.
type StopHook = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

fn hook<F>(stop: impl FnOnce() -> F + Send + 'static) -> StopHook
where
    F: Future<Output = ()> + Send + 'static,
{
    Box::new(move || Box::pin(stop()))
}

impl<S> Running<S> {
    /// A started server answering from `service`, with nothing else to stop yet.
    pub fn new(server: RunningServer, service: S) -> Self {
        Self {
            server,
            service,
            first: Vec::new(),
            last: Vec::new(),
        }
    }

    /// Stops `stop` first, before in-flight requests drain (streams to end, a
    /// sender's last pass, a task that reads gauges). Hooks run in the order added.
    pub fn stop_first<F>(mut self, stop: impl FnOnce() -> F + Send + 'static) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.first.push(hook(stop));
        self
    }

    /// Stops `stop` once requests have drained (background writers), before
    /// the database closes. Hooks run in the order added.
    pub fn stop_last<F>(mut self, stop: impl FnOnce() -> F + Send + 'static) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.last.push(hook(stop));
        self
    }

    /// Closes `db` last of all.
    pub fn closing(self, db: crate::storage::Db) -> Self {
        self.stop_last(move || async move { db.close().await })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// What the server answers from.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// Stops: the first hooks, then the server (draining in-flight requests up
    /// to the drain timeout), then what it answered from is let go and the
    /// last hooks run (the database closes last).
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let Self {
            server,
            service,
            first,
            last,
        } = self;
        for stop in first {
            stop().await;
        }
        let result = server.shutdown().await;
        drop(service);
        for stop in last {
            stop().await;
        }
        result
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Running<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("server", &self.server)
            .field("service", &self.service)
            .field("stops", &(self.first.len() + self.last.len()))
            .finish()
    }
}

/// Starts a server of one of the mesh's services with the kit's stack (one
/// tower stack, health, reflection of the mesh's contracts). `make` builds the
/// generated server given the largest message it should decode (pass it to
/// `max_decoding_message_size`). Returns once the port is open.
pub async fn serve_one<T>(
    config: ServerConfig,
    make: impl FnOnce(usize) -> T,
) -> Result<RunningServer, ServeError>
where
    T: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    T::Future: Send + 'static,
{
    let builder = GrpcServer::new(config);
    let service = make(builder.max_message_bytes());
    builder
        .add_service(service)
        .with_descriptors(adminduk_proto::FILE_DESCRIPTOR_SET)
        .start()
        .await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (Kubernetes, systemd). The handlers
/// are installed when this is called, not when it is first awaited, so a signal
/// that arrives while the caller prints its banner is not lost.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
                    _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
                    _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
                },
                (Err(err), _) | (_, Err(err)) => {
                    tracing::error!(error = %err, "cannot install signal handlers; stop with SIGKILL");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};
    use tower_http::classify::{ClassifiedResponse, ClassifyResponse as _, MakeClassifier as _};

    use super::*;

    /// One reflection request to `server`, answered.
    async fn reflect(server: &RunningServer, request: MessageRequest) -> MessageResponse {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.local_addr()))
            .expect("a uri")
            .connect()
            .await
            .expect("connects");
        let mut client = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let mut answers = client
            .server_reflection_info(tokio_stream::once(request))
            .await
            .expect("reflection answers")
            .into_inner();
        let answer: ServerReflectionResponse =
            answers.message().await.expect("a message").expect("one answer");
        answer.message_response.expect("a response")
    }

    fn files(response: MessageResponse) -> Vec<prost_types::FileDescriptorProto> {
        match response {
            MessageResponse::FileDescriptorResponse(files) => files
                .file_descriptor_proto
                .iter()
                .map(|raw| {
                    prost_types::FileDescriptorProto::decode(raw.as_slice()).expect("a file descriptor")
                })
                .collect(),
            other => panic!("not a file descriptor: {other:?}"),
        }
    }

    #[tokio::test]
    async fn reflection_describes_the_google_rpc_error_details() {
        let server = GrpcServer::new(ServerConfig::default())
            .start()
            .await
            .expect("starts");
        for symbol in [
            "google.rpc.BadRequest",
            "google.rpc.ErrorInfo",
            "google.rpc.RetryInfo",
            "google.rpc.ResourceInfo",
            "google.rpc.PreconditionFailure",
        ] {
            let found =
                files(reflect(&server, MessageRequest::FileContainingSymbol(symbol.to_owned())).await);
            let file = found.first().expect("one file");
            assert_eq!(file.name(), "google/rpc/error_details.proto", "{symbol}");
            assert_eq!(file.package(), "google.rpc");
            // What it imports can be fetched too, so a client can build the type.
            for dependency in &file.dependency {
                let dep = files(reflect(&server, MessageRequest::FileByFilename(dependency.clone())).await);
                assert_eq!(dep.first().map(|f| f.name()), Some(dependency.as_str()));
            }
        }
        let status = files(
            reflect(
                &server,
                MessageRequest::FileContainingSymbol("google.rpc.Status".to_owned()),
            )
            .await,
        );
        assert_eq!(status.first().map(|f| f.name()), Some("google/rpc/status.proto"));
        server.shutdown().await.expect("stops");
    }

    /// A message that is not a HealthCheckRequest: field 1 is a number, not a string.
    #[derive(Clone, PartialEq, prost::Message)]
    struct NotAHealthCheck {
        #[prost(uint64, tag = "1")]
        service: u64,
    }

    #[tokio::test]
    async fn bytes_that_are_not_the_methods_message_are_invalid_argument() {
        let server = GrpcServer::new(ServerConfig::default())
            .start()
            .await
            .expect("starts");
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.local_addr()))
            .expect("a uri")
            .connect()
            .await
            .expect("connects");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let codec =
            tonic_prost::ProstCodec::<NotAHealthCheck, tonic_health::pb::HealthCheckResponse>::default();
        let err = grpc
            .unary(
                tonic::Request::new(NotAHealthCheck { service: 7 }),
                http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
                codec,
            )
            .await
            .expect_err("not a health check");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(!err.message().contains("wire type"), "{err:?}");
        let details = tonic_types::StatusExt::get_error_details(&err);
        assert_eq!(
            details.error_info().map(|i| i.reason.as_str()),
            Some("MALFORMED_MESSAGE")
        );
        server.shutdown().await.expect("stops");
    }

    /// How the request log classifies a trailers-only answer with `code`.
    fn is_failure(code: tonic::Code) -> bool {
        let classifier = grpc_classifier().make_classifier(&Request::new(()));
        let response = Response::builder()
            .header("grpc-status", (code as i32).to_string())
            .body(())
            .expect("a response");
        match classifier.classify_response(&response) {
            ClassifiedResponse::Ready(result) => result.is_err(),
            ClassifiedResponse::RequiresEos(_) => panic!("a trailers-only answer is classified at once"),
        }
    }

    #[test]
    fn answers_a_client_acts_on_are_not_logged_as_failures() {
        for code in [
            tonic::Code::Ok,
            tonic::Code::InvalidArgument,
            tonic::Code::NotFound,
            tonic::Code::AlreadyExists,
            tonic::Code::ResourceExhausted,
            tonic::Code::FailedPrecondition,
            tonic::Code::Unauthenticated,
            tonic::Code::PermissionDenied,
        ] {
            assert!(!is_failure(code), "{code:?}");
        }
        for code in [
            tonic::Code::Internal,
            tonic::Code::Unavailable,
            tonic::Code::Unknown,
            tonic::Code::DeadlineExceeded,
            tonic::Code::DataLoss,
            tonic::Code::Unimplemented,
        ] {
            assert!(is_failure(code), "{code:?}");
        }
    }
}
