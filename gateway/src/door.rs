//! The door itself: each request's caller authenticated, its method looked up
//! in the access table, the fields a policy reads checked, the facts the
//! gateway knows written, and the call forwarded to its backend as bytes.
//!
//! Forwarding is generic: the gateway never decodes a whole message, only the
//! fields its policies read ([`crate::wire`]), and passes the backend's answer
//! (a single message or a stream, with its status and details) back as it came.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use adminduk_kit::cache::{Admission, Checks, SharedCache};
use adminduk_kit::principal::Principal;
use adminduk_kit::proof::{self, PROOF_HEADER, ProofError};
use adminduk_kit::{ApiError, ErrorCode, ErrorReason, upstream};
use http_body_util::BodyExt as _;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::Channel;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::ServiceExt as _;

use crate::access::{self, Backend, Fact, Grant, Own, Role, Rule, Subject};
use crate::agency::Agencies;
use crate::audit::{AuditLog, Event, SubjectKind, Unfinished, outcome};
use crate::brokers::{BROKER_REFUSALS, Brokers, broker_suspected};
use crate::caller::{self, Caller, Citizen, Tokens};
use crate::edge::{Edge, Key, RetryId};
use crate::ikd_first::{IkdFirst, Passed};
use crate::limits::{Kind, Limits};
use crate::wire::{self, WireError};

/// The header that carries the caller to the services, set by the gateway alone.
pub const PRINCIPAL_HEADER: &str = "x-adminduk-principal";

/// The header in which an office writes why it goes on for a resident without an active IKD.
pub const OVERRIDE_HEADER: &str = "x-adminduk-override-reason";

/// The header in which a caller may say why it reads or changes a resident's
/// data (recorded in the audit row; 200 characters at most).
pub const PURPOSE_HEADER: &str = "x-adminduk-purpose";

/// The channels to the four services.
#[derive(Debug, Clone)]
pub struct Upstreams {
    /// The population service.
    pub population: Channel,
    /// The inventory.
    pub inventory: Channel,
    /// Printing.
    pub printing: Channel,
    /// IKD.
    pub ikd: Channel,
}

impl Upstreams {
    /// The channel to a backend; `None` for the gateway's own services.
    fn of(&self, backend: Backend) -> Option<&Channel> {
        match backend {
            Backend::Population => Some(&self.population),
            Backend::Inventory => Some(&self.inventory),
            Backend::Printing => Some(&self.printing),
            Backend::Ikd => Some(&self.ikd),
            Backend::Agencies | Backend::BrokerWatch | Backend::Reports => None,
        }
    }
}

/// The gateway's own parts the door calls on.
pub(crate) struct OwnParts {
    /// Agencies' agreements.
    pub(crate) agencies: Agencies,
    /// The broker watch.
    pub(crate) brokers: Brokers,
    /// The audit chain's writer.
    pub(crate) audit: AuditLog,
    /// `AgencyService` and `BrokerWatchService`.
    pub(crate) routes: tonic::service::Routes,
    /// Each kind of caller's allowance.
    pub(crate) allowances: crate::limits::Allowances,
    /// IKD first's reads and counts.
    pub(crate) ikd_first: IkdFirst,
}

/// The longest a forwarded answer stream (WatchAvailability) stays open; the client opens another.
const MAX_STREAM: Duration = Duration::from_secs(600);

/// How far a proof's time may be from the gateway's clock.
const PROOF_SKEW: Duration = Duration::from_secs(120);
/// How long a proof's id is remembered: past the skew on both sides, so a
/// proof is never accepted twice.
const PROOF_MEMORY: Duration = Duration::from_secs(300);
/// How long the shared cache may take to answer a resident's request's checks
/// before each falls back (longer than the rate limit's alone: a revocation
/// and a block are on the line, and their fallbacks cost more).
const SHARED_CHECKS_BUDGET: Duration = Duration::from_millis(20);
/// How long a change's checks wait for the shared cache: its proof's id is
/// remembered there for every replica, and only there.
const CLAIM_BUDGET: Duration = Duration::from_secs(1);

/// The most proof ids remembered here when the shared cache cannot be reached.
const MAX_LOCAL_PROOFS: usize = 100_000;

/// Whether the door forwards what it admits, or only decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Decide,
}

/// A request past the door's first checks: what the rest decide by.
struct Admitted<'a> {
    rule: &'static Rule,
    grant: Grant,
    caller: &'a Caller,
    /// The point and date it applies for, when the edge watches them.
    edge_key: Option<Key>,
    /// What its retries repeat, for the edge.
    retry: Option<RetryId>,
    mode: Mode,
    /// Its audit row, while the outcome is not known yet.
    event: Option<&'a mut Event>,
}

/// What every door shares.
#[derive(Debug)]
pub(crate) struct Gateway {
    upstreams: Upstreams,
    tokens: Tokens,
    cache: Arc<dyn SharedCache>,
    limits: Limits,
    agencies: Agencies,
    brokers: Brokers,
    audit: AuditLog,
    edge: Edge,
    ikd_first: IkdFirst,
    retries: crate::retry::RetryBudget,
    /// The client CA's check of a presented certificate's chain.
    client_chain: adminduk_kit::tls::ClientChain,
    /// The gateway's own services, reached through the door like the others.
    own: tonic::service::Routes,
    /// Proof ids seen while the shared cache could not be reached.
    local_proofs: Mutex<HashMap<String, Instant>>,
    max_message_bytes: usize,
}

impl Gateway {
    pub(crate) fn new(
        upstreams: Upstreams,
        tokens: Tokens,
        cache: Arc<dyn SharedCache>,
        own: OwnParts,
        client_chain: adminduk_kit::tls::ClientChain,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            edge: Edge::new(upstreams.inventory.clone()),
            ikd_first: own.ikd_first,
            retries: crate::retry::RetryBudget::default(),
            client_chain,
            upstreams,
            tokens,
            limits: Limits::new(cache.clone(), own.allowances),
            agencies: own.agencies,
            brokers: own.brokers,
            audit: own.audit,
            own: own.routes,
            cache,
            local_proofs: Mutex::new(HashMap::new()),
            max_message_bytes,
        }
    }

    async fn handle(&self, request: http::Request<Body>) -> http::Response<Body> {
        match self.admit(request, Mode::Forward).await {
            Ok(response) => response,
            Err(err) => tonic::Status::from(err).into_http(),
        }
    }

    /// Every decision the door makes for `request`, without the call it would
    /// forward (nor an agency's metering or an audit row): `Ok` where it would
    /// forward, the refusal otherwise. What the policy bench measures.
    pub(crate) async fn decide_only(&self, request: http::Request<Body>) -> Result<(), ApiError> {
        self.admit(request, Mode::Decide).await.map(drop)
    }

    async fn admit(
        &self,
        request: http::Request<Body>,
        mode: Mode,
    ) -> Result<http::Response<Body>, ApiError> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let rule = access::rule_for(&path).ok_or_else(|| unknown_method(&path))?;
        let caller = self.authenticate(&parts).await?;
        let role = caller.role();
        let grant = rule.grant_for(role).ok_or_else(|| not_allowed(role, rule))?;
        // A resident's allowance is spent with the request's other shared checks, below.
        if !matches!(caller, Caller::Citizen(_)) {
            self.spend_allowance(&caller, &parts).await?;
        }
        let body = self.read_body(body).await?;
        let message = wire::unframe(&body).map_err(malformed)?.to_vec();
        // A full date is a public fact: refused here, before anything is asked
        // about the caller or the resident, and not audited (nothing was read).
        let (edge_key, retry) = match rule.edge {
            Some(fields) => (
                edge_key(grant, &caller, &message, fields.point, fields.date)?,
                RetryId::of(&path, &caller.label(), &message, fields.retry).map_err(malformed)?,
            ),
            None => (None, None),
        };
        if let Some(refusal) = edge_key.as_ref().and_then(|key| self.edge.refusal(key, retry)) {
            return Err(refusal);
        }
        // Held in a guard until the outcome is known: a request whose client goes
        // away mid-way is still in the chain, as CANCELLED.
        let mut unfinished = match rule.audit {
            Some(subject) if mode == Mode::Forward => Some(Unfinished::new(
                self.audit.clone(),
                self.audit_event(subject, &caller, &parts.headers, &path, &message)?,
            )),
            _ => None,
        };
        let admitted = Admitted {
            rule,
            grant,
            caller: &caller,
            edge_key,
            retry,
            mode,
            event: unfinished.as_mut().and_then(Unfinished::event_mut),
        };
        let result = self.decide(admitted, parts, message).await;
        match unfinished.and_then(Unfinished::finish) {
            None => result,
            Some(mut event) => match result {
                Ok(response) => Ok(self.audited(event, response)),
                Err(refusal) => {
                    // A refusal for the rate is not a read: it is counted, not audited.
                    if refusal.reason() != Some(adminduk_kit::error::reason_name(ErrorReason::RateLimited)) {
                        event.outcome = outcome(refusal.code().grpc_code(), refusal.reason());
                        self.audit.record(event);
                    }
                    Err(refusal)
                }
            },
        }
    }

    /// The door's decisions past the caller's allowance, and the call forwarded.
    async fn decide(
        &self,
        admitted: Admitted<'_>,
        parts: http::request::Parts,
        mut message: Vec<u8>,
    ) -> Result<http::Response<Body>, ApiError> {
        let Admitted {
            rule,
            grant,
            caller,
            edge_key,
            retry,
            mode,
            event,
        } = admitted;
        let path = parts.uri.path().to_owned();
        // A resident's shared checks (allowance, revocation, block, proof) come
        // before what the request names spends its own allowances, so a
        // throttled or revoked device cannot use up a stranger's NIK allowance.
        if let Caller::Citizen(citizen) = caller {
            self.confirm_citizen(rule, citizen, &path, &parts.headers).await?;
        }
        self.spend_named(rule, &message).await?;
        // Whom a resident may name is settled before anything is asked about them.
        if let (Caller::Citizen(citizen), Grant::Citizen(own, _)) = (caller, grant) {
            self.check_named(rule, own, citizen, &message).await?;
        }
        let ikd = match rule.ikd_first {
            Some(tag) => {
                let passed = self.ikd_first(tag, caller, &parts.headers, &message).await?;
                // Every exemption is in the audit row, beside the purpose.
                if let (Some(exemption), Some(event)) = (&passed.exemption, event) {
                    event.purpose = format!("{} ({exemption})", event.purpose);
                }
                Some(passed.active)
            }
            None => None,
        };
        self.apply(grant, caller, &mut message, ikd).await?;
        if mode == Mode::Decide {
            return Ok(http::Response::new(Body::empty()));
        }
        let metered = match caller {
            Caller::Certified(Principal::Agency { code }) if rule.metered => {
                Some(self.agencies.meter(code, &message).await?)
            }
            _ => None,
        };
        tracing::debug!(method = %path, caller = %caller.label(), "forwarded");
        let response = self.forward(rule, caller, parts, &message).await;
        self.tell_edge(retry, edge_key, &response);
        // A verification the population service answered counts, whatever the
        // answer (a NIK not found is an answer too); one it never answered, or
        // refused as malformed, is taken back.
        if let Some(metered) = metered
            && not_a_check(&response)
        {
            self.agencies.unmeter(metered).await;
        }
        response
    }

    /// What the edge learns from a forwarded request's answer: that a retry of
    /// it is past the edge, and how the inventory decided its point and date.
    fn tell_edge(
        &self,
        retry: Option<RetryId>,
        edge_key: Option<Key>,
        response: &Result<http::Response<Body>, ApiError>,
    ) {
        // A retry of a request the backend took goes past the edge later.
        if let (Some(retry), Ok(answer)) = (retry, response)
            && tonic::Status::from_header_map(answer.headers()).is_none()
        {
            self.edge.forwarded(retry);
        }
        if let (Some(key), Ok(answer)) = (edge_key, response) {
            // An answer that is only a status says how the inventory decided; any other was a grant.
            let status = tonic::Status::from_header_map(answer.headers());
            if let Some(key) = self.edge.observe(key, status.as_ref()) {
                tokio::spawn(self.edge.clone().follow(key));
            }
        }
    }

    /// The audit's event for a request to a method that reads or changes
    /// personal data; its outcome is written when the answer is known.
    fn audit_event(
        &self,
        subject: Subject,
        caller: &Caller,
        headers: &http::HeaderMap,
        path: &str,
        message: &[u8],
    ) -> Result<Event, ApiError> {
        let named = match subject {
            Subject::Unnamed => None,
            Subject::Nik(tag) => wire::string_field(message, tag)
                .map_err(malformed)?
                .map(|nik| (SubjectKind::Nik, nik)),
            Subject::Kk(tag) => wire::string_field(message, tag)
                .map_err(malformed)?
                .map(|kk| (SubjectKind::Kk, kk)),
            Subject::NestedNik { outer, nik } => wire::nested_string_field(message, outer, nik)
                .map_err(malformed)?
                .map(|nik| (SubjectKind::Nik, nik)),
        };
        let purpose = headers
            .get(PURPOSE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| adminduk_kit::mask::mask_digit_runs(&p.chars().take(200).collect::<String>()));
        let purpose = purpose.unwrap_or_else(|| {
            match caller.role() {
                Role::Anonymous => "activation",
                Role::Office => "counter service",
                Role::Agency => "identity verification",
                Role::Citizen => "self-service",
                Role::Admin => "administration",
            }
            .to_owned()
        });
        Ok(Event {
            principal: caller.label(),
            subject: named.filter(|(_, value)| !value.is_empty()),
            method: path.to_owned(),
            purpose,
            outcome: String::new(),
        })
    }

    /// The answer, with its audit row written once its status is known: at
    /// once for an answer that is only a status, else at its trailers.
    fn audited(&self, mut event: Event, response: http::Response<Body>) -> http::Response<Body> {
        if let Some(status) = tonic::Status::from_header_map(response.headers()) {
            event.outcome = outcome(status.code(), Some(&adminduk_kit::error::reason_of(&status)));
            self.audit.record(event);
            return response;
        }
        // A streamed answer's row is written when its trailers say how it ended;
        // one that never ends (the client went away) is CANCELLED.
        let log = self.audit.clone();
        let (parts, body) = response.into_parts();
        let body = adminduk_kit::observe::OnEnd::new(body, move |ending| {
            event.outcome = match ending {
                adminduk_kit::observe::Ending::Trailers(trailers) => {
                    match tonic::Status::from_header_map(trailers) {
                        Some(status) => {
                            outcome(status.code(), Some(&adminduk_kit::error::reason_of(&status)))
                        }
                        None => outcome(tonic::Code::Unknown, None),
                    }
                }
                _ => outcome(tonic::Code::Cancelled, None),
            };
            log.record(event);
        });
        http::Response::from_parts(parts, Body::new(body))
    }

    /// The caller: a verified client certificate's principal first (it is the
    /// connection's identity), else a session token, else no one.
    async fn authenticate(&self, request: &http::request::Parts) -> Result<Caller, ApiError> {
        let certs = request
            .extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        if let Some(chain) = certs.as_ref().filter(|certs| !certs.is_empty())
            && !self.client_chain.verifies(chain)
        {
            // Like a failed token, it costs its sender's address.
            self.spend_allowance(&Caller::Anonymous, request).await?;
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "the client certificate is not one the gateway's CA signed, or it has expired",
            )
            .with_reason(ErrorReason::CertificateUntrusted, []));
        }
        let leaf = certs.as_ref().and_then(|certs| certs.first()).map(|c| c.as_ref());
        if let Some(principal) = caller::certified(leaf)? {
            return Ok(Caller::Certified(principal));
        }
        match request.headers.get(http::header::AUTHORIZATION) {
            Some(value) => {
                let verified = match caller::bearer(value.as_bytes()) {
                    Ok(token) => self.tokens.citizen(token).await,
                    Err(refusal) => Err(refusal),
                };
                match verified {
                    Ok(citizen) => Ok(Caller::Citizen(citizen)),
                    // A token that fails costs its sender's address, so forged tokens
                    // cannot make the gateway verify signatures without end.
                    Err(refusal) => {
                        self.spend_allowance(&Caller::Anonymous, request).await?;
                        Err(refusal)
                    }
                }
            }
            None => Ok(Caller::Anonymous),
        }
    }

    async fn read_body(&self, body: Body) -> Result<bytes::Bytes, ApiError> {
        let limit = self.max_message_bytes + 5;
        match http_body_util::Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(err) if err.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                Err(ApiError::new(
                    ErrorCode::ResourceExhausted,
                    format!(
                        "request message is larger than the limit of {} bytes",
                        self.max_message_bytes
                    ),
                )
                .with_reason(
                    ErrorReason::MessageTooLarge,
                    [("limit_bytes".to_owned(), self.max_message_bytes.to_string())],
                ))
            }
            Err(_) => Err(ApiError::unavailable(
                "the request was cut off before its end",
                std::time::Duration::from_secs(1),
            )),
        }
    }

    /// Spends one request of the caller's allowance: the principal's, or an
    /// anonymous caller's source address.
    async fn spend_allowance(&self, caller: &Caller, parts: &http::request::Parts) -> Result<(), ApiError> {
        let (kind, key) = match caller {
            Caller::Anonymous => {
                let address = parts
                    .extensions
                    .get::<TlsConnectInfo<TcpConnectInfo>>()
                    .and_then(|info| info.get_ref().remote_addr())
                    .map_or_else(|| "unknown".to_owned(), |addr| addr.ip().to_string());
                (Kind::Address, address)
            }
            Caller::Certified(Principal::Office {
                service_point,
                device,
            }) => (Kind::Office, format!("{service_point}/{device}")),
            Caller::Certified(Principal::Agency { code }) => (Kind::Agency, code.clone()),
            Caller::Certified(Principal::Admin { name }) => (Kind::Admin, name.clone()),
            Caller::Certified(Principal::Service { name }) => (Kind::Address, name.clone()),
            Caller::Citizen(citizen) => (Kind::Citizen, citizen.device.clone()),
        };
        self.limits
            .spend(kind, &key)
            .await
            .map_err(|wait| rate_limited(kind, wait))
    }

    /// Spends the allowance of what the request names (a NIK, a device key),
    /// kept under a hash of it, never the value itself.
    async fn spend_named(&self, rule: &Rule, message: &[u8]) -> Result<(), ApiError> {
        for &(tag, kind) in rule.limits {
            let Some(value) = wire::bytes_field(message, tag).map_err(malformed)? else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            // A NIK is kept under its keyed reference (NIKs are too few for a plain
            // hash to hide them); a device key is public, so a hash of it will do.
            let key = match kind {
                Kind::Nik => adminduk_kit::mask::nik_ref(&String::from_utf8_lossy(&value)),
                _ => {
                    let digest = ring::digest::digest(&ring::digest::SHA256, &value);
                    adminduk_kit::hex::encode(&digest.as_ref()[..16])
                }
            };
            self.limits
                .spend(kind, &key)
                .await
                .map_err(|wait| rate_limited(kind, wait))?;
        }
        Ok(())
    }

    /// IKD first (see [`crate::ikd_first`]) for the resident the request names
    /// at field `tag`: whether their IKD is active, and why the request goes on
    /// without one, if it does.
    async fn ikd_first(
        &self,
        tag: u32,
        caller: &Caller,
        headers: &http::HeaderMap,
        message: &[u8],
    ) -> Result<Passed, ApiError> {
        let nik = wire::string_field(message, tag)
            .map_err(malformed)?
            .unwrap_or_default();
        // A resident with a verified token has an active IKD: the IKD service said
        // so when the token was resolved, within the last minute.
        if let Caller::Citizen(citizen) = caller
            && citizen.nik == nik
        {
            return Ok(Passed {
                active: true,
                exemption: None,
            });
        }
        let override_reason = match (caller, headers.get(OVERRIDE_HEADER)) {
            (Caller::Certified(Principal::Office { .. }), Some(reason)) => {
                let reason = reason
                    .to_str()
                    .ok()
                    .map(str::trim)
                    .filter(|r| (10..=500).contains(&r.chars().count()));
                let Some(reason) = reason else {
                    return Err(ApiError::invalid_field(
                        OVERRIDE_HEADER,
                        "must be the reason written out, 10 to 500 characters",
                    ));
                };
                Some(adminduk_kit::mask::mask_digit_runs(reason))
            }
            _ => None,
        };
        let reference = self.audit.nik_reference(&nik);
        let passed = self
            .ikd_first
            .check(&nik, &reference, override_reason.as_deref())
            .await?;
        if let Some(exemption) = &passed.exemption {
            tracing::info!(
                nik = %adminduk_kit::mask::log_nik(&nik),
                caller = %caller.label(),
                exemption = %exemption,
                "IKD first: gone on without an active IKD"
            );
        }
        Ok(passed)
    }

    /// Writes what the gateway knows over the request's fields; `ikd` is
    /// whether the request's resident has an active IKD, when the gateway has
    /// asked already.
    async fn apply(
        &self,
        grant: Grant,
        caller: &Caller,
        message: &mut Vec<u8>,
        ikd: Option<bool>,
    ) -> Result<(), ApiError> {
        let facts = match grant {
            Grant::Anyone | Grant::Agency => return Ok(()),
            Grant::Office(facts) | Grant::Admin(facts) => facts,
            Grant::Citizen(_, facts) => facts,
        };
        for &(tag, fact) in facts {
            // Only a string field is asked whether the client named it.
            let named_before = fact == Fact::DeviceWhenNamed
                && wire::string_field(message, tag)
                    .map_err(malformed)?
                    .is_some_and(|value| !value.is_empty());
            // Every copy the client sent goes first: the fact is the field's only value.
            *message = wire::without(message, tag).map_err(malformed)?;
            match (fact, caller) {
                (Fact::ServicePoint, Caller::Certified(Principal::Office { service_point, .. })) => {
                    wire::set_string(message, tag, service_point)
                }
                (Fact::Device, Caller::Certified(Principal::Office { device, .. })) => {
                    wire::set_string(message, tag, device);
                }
                (Fact::DeviceWhenNamed, Caller::Certified(Principal::Office { device, .. })) => {
                    // Stripped above: named or not is read from the original.
                    if named_before {
                        wire::set_string(message, tag, device);
                    }
                }
                (Fact::AdminName, Caller::Certified(Principal::Admin { name })) => {
                    wire::set_string(message, tag, name);
                }
                (Fact::IkdActive { nik }, _) => {
                    let active = match ikd {
                        Some(active) => active,
                        None => {
                            let nik = wire::string_field(message, nik)
                                .map_err(malformed)?
                                .unwrap_or_default();
                            self.ikd_first.is_active(&nik).await?
                        }
                    };
                    wire::set_bool(message, tag, active);
                }
                _ => return Err(table_error()),
            }
        }
        Ok(())
    }

    /// The checks of a resident's request that the shared cache answers, in
    /// one round trip: the device's allowance, its revocation mark, and for a
    /// change the account's block and the proof's one-time id (the proof's
    /// signature is checked first, here). When the cache cannot answer in
    /// time, each falls back: the allowance is this replica's, the binding is
    /// asked of the IKD service, the block is read from the flags on record,
    /// and the proof's id is remembered here.
    async fn confirm_citizen(
        &self,
        rule: &Rule,
        citizen: &Citizen,
        method: &str,
        headers: &http::HeaderMap,
    ) -> Result<(), ApiError> {
        let proof_key = if rule.proof {
            Some(self.proof_key(method, citizen, headers)?)
        } else {
            None
        };
        let (rate_key, interval, burst) = self.limits.shared(Kind::Citizen, &citizen.device);
        let revoked = adminduk_kit::token::revoked_device_key(&citizen.device);
        let blocked = crate::brokers::block_key(&citizen.device);
        let with_block = [revoked.as_str(), blocked.as_str()];
        let checks = Checks {
            rate: Some((rate_key.as_str(), interval, burst)),
            absent: if rule.proof {
                &with_block[..]
            } else {
                &with_block[..1]
            },
            claim: proof_key.as_deref().map(|key| (key, PROOF_MEMORY)),
        };
        // A proof's one-time id is claimed in the shared cache or not at all
        // across replicas: a change waits for it as long as any cache call may
        // take; a read falls back after a few milliseconds.
        let budget = if checks.claim.is_some() {
            CLAIM_BUDGET
        } else {
            SHARED_CHECKS_BUDGET
        };
        let checked = match tokio::time::timeout(budget, self.cache.check_all(&checks)).await {
            Ok(Ok(checked)) => checked,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "shared checks unanswered; falling back");
                return self.confirm_citizen_alone(rule, citizen, proof_key).await;
            }
            Err(_) => {
                tracing::warn!("shared checks too slow; falling back");
                return self.confirm_citizen_alone(rule, citizen, proof_key).await;
            }
        };
        match checked.rate {
            Some(Admission::Refused { retry_after }) => return Err(rate_limited(Kind::Citizen, retry_after)),
            Some(Admission::Allowed) => {}
            // The cache is no shared limiter (one replica): the limit is this replica's.
            None => self
                .limits
                .spend_here(Kind::Citizen, &citizen.device)
                .map_err(|wait| rate_limited(Kind::Citizen, wait))?,
        }
        if checked.present.first() == Some(&true) {
            return Err(caller::revoked());
        }
        if checked.present.get(1) == Some(&true) {
            return Err(broker_suspected(BROKER_REFUSALS, true));
        }
        if checked.claimed == Some(false) {
            return Err(proof_replayed());
        }
        Ok(())
    }

    /// [`Gateway::confirm_citizen`]'s checks without the shared cache.
    async fn confirm_citizen_alone(
        &self,
        rule: &Rule,
        citizen: &Citizen,
        proof_key: Option<String>,
    ) -> Result<(), ApiError> {
        self.limits
            .spend_here(Kind::Citizen, &citizen.device)
            .map_err(|wait| rate_limited(Kind::Citizen, wait))?;
        self.tokens.confirm_with_ikd(citizen).await?;
        if rule.proof && self.brokers.is_flagged(&citizen.device).await? {
            return Err(broker_suspected(BROKER_REFUSALS, true));
        }
        if let Some(key) = proof_key
            && !self.first_use_here(key)?
        {
            return Err(proof_replayed());
        }
        Ok(())
    }

    /// A resident's change carries a proof signed by the token's device key,
    /// for this method and this token, made in the last two minutes; the key
    /// its one-time id is claimed under (ids are the phone's: kept per device
    /// key, so no one spends another phone's).
    fn proof_key(
        &self,
        method: &str,
        citizen: &Citizen,
        headers: &http::HeaderMap,
    ) -> Result<String, ApiError> {
        let Some(header) = headers.get(PROOF_HEADER) else {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "a resident's change needs a proof signed by the phone's device key (x-adminduk-proof)",
            )
            .with_reason(
                ErrorReason::ProofRequired,
                [("method".to_owned(), method.to_owned())],
            ));
        };
        let token = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| caller::bearer(v.as_bytes()))
            .transpose()?
            .unwrap_or_default();
        let header = header
            .to_str()
            .map_err(|_| proof_invalid(ProofError::Malformed))?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let skew = i64::try_from(PROOF_SKEW.as_millis()).unwrap_or(i64::MAX);
        let proof = proof::verify(header, method, token, now_ms, skew).map_err(proof_invalid)?;
        if citizen.jkt.is_empty() || proof.thumbprint != citizen.jkt {
            return Err(proof_invalid(ProofError::BadSignature));
        }
        Ok(format!("proof:{}:{}", citizen.jkt, proof.id))
    }

    /// Whether a proof id is new to this replica (the fallback when the shared
    /// cache is away). Past [`MAX_LOCAL_PROOFS`] ids still remembered, a change
    /// waits (UNAVAILABLE) rather than let the memory grow or forget a proof.
    fn first_use_here(&self, key: String) -> Result<bool, ApiError> {
        let now = Instant::now();
        let mut seen = self.local_proofs.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= MAX_LOCAL_PROOFS {
            seen.retain(|_, at| now.duration_since(*at) < PROOF_MEMORY);
            if seen.len() >= MAX_LOCAL_PROOFS {
                return Err(ApiError::unavailable(
                    "too many changes while the shared cache is away; try again shortly",
                    Duration::from_secs(5),
                ));
            }
        }
        Ok(match seen.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut used) => {
                if now.duration_since(*used.get()) < PROOF_MEMORY {
                    return Ok(false);
                }
                used.insert(now);
                true
            }
            std::collections::hash_map::Entry::Vacant(new) => {
                new.insert(now);
                true
            }
        })
    }

    async fn check_own(&self, own: Own, citizen: &Citizen, message: &[u8]) -> Result<(), ApiError> {
        let (tag, field) = match own {
            Own::Nothing => return Ok(()),
            Own::Nik(tag) | Own::Family(tag) => (tag, "nik"),
            Own::Kk(tag) => (tag, "kk"),
        };
        let named = wire::string_field(message, tag)
            .map_err(malformed)?
            .unwrap_or_default();
        let allowed = match own {
            Own::Nik(_) => named == citizen.nik,
            Own::Family(_) => {
                named == citizen.nik || self.tokens.family(citizen).await?.members.contains(&named)
            }
            Own::Kk(_) => named == self.tokens.family(citizen).await?.kk,
            Own::Nothing => true,
        };
        if allowed {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::PermissionDenied,
            format!(
                "a resident may name only their own {field} (or their family's, where they apply for it)"
            ),
        )
        .with_reason(ErrorReason::OutOfScope, [("field".to_owned(), field.to_owned())]))
    }

    /// Whom a resident names, checked by [`Self::check_own`]; a stranger named
    /// in a change is also counted against the device as a broker's refusal.
    async fn check_named(
        &self,
        rule: &Rule,
        own: Own,
        citizen: &Citizen,
        message: &[u8],
    ) -> Result<(), ApiError> {
        let Err(refusal) = self.check_own(own, citizen, message).await else {
            return Ok(());
        };
        // Naming a stranger in a change is what a broker does; in a read, a
        // mistake. Any other failure (population away, bad bytes) is itself.
        let stranger = refusal.reason() == Some(adminduk_kit::error::reason_name(ErrorReason::OutOfScope));
        Err(if rule.proof && stranger {
            self.brokers.refuse(&citizen.device, &citizen.nik).await
        } else {
            refusal
        })
    }

    async fn forward(
        &self,
        rule: &Rule,
        caller: &Caller,
        parts: http::request::Parts,
        message: &[u8],
    ) -> Result<http::Response<Body>, ApiError> {
        let headers = upstream_headers(rule, caller, &parts.headers)?;
        let body = wire::frame(message).map_err(malformed)?;
        let request = |headers: http::HeaderMap| {
            let mut forwarded = http::Request::new(Body::new(http_body_util::Full::new(body.clone())));
            *forwarded.method_mut() = parts.method.clone();
            *forwarded.uri_mut() = parts.uri.clone();
            *forwarded.headers_mut() = headers;
            forwarded
        };
        let Some(channel) = self.upstreams.of(rule.backend) else {
            let mut forwarded = request(headers);
            // The gateway's own services read the caller from here, never from metadata.
            if let Caller::Certified(principal) = caller {
                forwarded.extensions_mut().insert(principal.clone());
            }
            return match self.own.clone().oneshot(forwarded).await {
                Ok(response) => Ok(response),
                Err(never) => match never {},
            };
        };
        if rule.read {
            self.retries.attempted();
        }
        let first = channel.clone().oneshot(request(headers.clone())).await;
        // An idempotent read the backend did not answer is tried once more, within the budget.
        let unanswered = match &first {
            Err(_) => true,
            Ok(answer) => tonic::Status::from_header_map(answer.headers())
                .is_some_and(|s| s.code() == tonic::Code::Unavailable),
        };
        let answer = if unanswered
            && rule.read
            && upstream::time_left() > crate::retry::ROOM_NEEDED + crate::retry::PAUSE
            && self.retries.may_retry()
        {
            tokio::time::sleep(crate::retry::PAUSE).await;
            let mut headers = headers;
            set_deadline(&mut headers, upstream::time_left())?;
            channel.clone().oneshot(request(headers)).await
        } else {
            first
        };
        answer.map_err(|err| {
            tracing::warn!(backend = rule.backend.label(), error = %err, "backend unreachable");
            ApiError::unavailable(
                format!("the {} service is unavailable", rule.backend.label()),
                std::time::Duration::from_secs(1),
            )
        })
    }
}

/// The headers a request is forwarded with: the client's, less what the
/// gateway keeps or writes anew, with the trace, the backend's deadline and
/// the caller as the gateway names them.
fn upstream_headers(
    rule: &Rule,
    caller: &Caller,
    client: &http::HeaderMap,
) -> Result<http::HeaderMap, ApiError> {
    let mut headers = http::HeaderMap::new();
    for (name, value) in client {
        let n = name.as_str();
        // The credential stays here; what the gateway says of the caller is its own;
        // the length and the deadline are written anew below.
        let dropped = n == "authorization"
            || n.starts_with("x-adminduk-")
            || n == "content-length"
            || n == "grpc-encoding"
            || (n == "grpc-timeout" && !rule.streams);
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    let mut metadata = tonic::metadata::MetadataMap::from_headers(headers);
    adminduk_kit::telemetry::inject_context(&mut metadata);
    let mut headers = metadata.into_headers();
    if rule.streams {
        // A stream ends within the client's deadline, and within ten minutes at most.
        let asked = headers
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(upstream::parse_grpc_timeout);
        let life = asked.map_or(MAX_STREAM, |asked| asked.min(MAX_STREAM));
        set_deadline(&mut headers, life)?;
    } else {
        set_deadline(&mut headers, upstream::time_left())?;
    }
    headers.insert(
        PRINCIPAL_HEADER,
        http::HeaderValue::from_str(&caller.label()).map_err(|_| table_error())?,
    );
    Ok(headers)
}

/// Whether a forwarded request is no check to bill: the backend was not
/// reached, its answer is only UNAVAILABLE or DEADLINE_EXCEEDED, or it
/// refused the request itself as malformed (INVALID_ARGUMENT).
fn not_a_check(response: &Result<http::Response<Body>, ApiError>) -> bool {
    match response {
        Err(_) => true,
        Ok(r) => tonic::Status::from_header_map(r.headers()).is_some_and(|s| {
            matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::InvalidArgument
            )
        }),
    }
}

/// Writes the backend's deadline, `left` from now, as `grpc-timeout` (in
/// milliseconds, one at least).
fn set_deadline(headers: &mut http::HeaderMap, left: Duration) -> Result<(), ApiError> {
    let value = format!("{}m", left.as_millis().max(1));
    headers.insert(
        "grpc-timeout",
        http::HeaderValue::from_str(&value).map_err(|_| table_error())?,
    );
    Ok(())
}

/// The point and date an application names; an office's point is its
/// certificate's (the gateway writes it over the request's).
fn edge_key(
    grant: Grant,
    caller: &Caller,
    message: &[u8],
    point: u32,
    date: u32,
) -> Result<Option<Key>, ApiError> {
    let written = matches!(grant, Grant::Office(facts) if facts.contains(&(point, Fact::ServicePoint)));
    let own_point = match caller {
        Caller::Certified(Principal::Office { service_point, .. }) if written => Some(service_point.as_str()),
        _ => None,
    };
    Edge::key(message, point, date, own_point).map_err(malformed)
}

fn unknown_method(path: &str) -> ApiError {
    let method: String = path.chars().take(200).collect();
    ApiError::new(ErrorCode::Unimplemented, "the gateway serves no such method")
        .with_reason(ErrorReason::MethodUnknown, [("method".to_owned(), method)])
}

fn not_allowed(role: Role, rule: &Rule) -> ApiError {
    let method = format!("{}/{}", rule.backend.service(), rule.method);
    if role == Role::Anonymous {
        return ApiError::new(
            ErrorCode::Unauthenticated,
            "this method needs a credential: a client certificate, or a session token from IKD",
        )
        .with_reason(ErrorReason::CredentialRequired, [("method".to_owned(), method)]);
    }
    ApiError::new(
        ErrorCode::PermissionDenied,
        format!("a caller of role {} may not call this method", role.as_str()),
    )
    .with_reason(
        ErrorReason::RoleNotAllowed,
        [
            ("role".to_owned(), role.as_str().to_owned()),
            ("method".to_owned(), method),
        ],
    )
}

fn rate_limited(kind: Kind, wait: Duration) -> ApiError {
    adminduk_kit::metrics::get()
        .rate_limit_refusals
        .get_or_create(&adminduk_kit::metrics::PrincipalKindLabels {
            service: "gateway",
            principal_kind: kind.principal_kind(),
        })
        .inc();
    ApiError::new(
        ErrorCode::ResourceExhausted,
        format!(
            "too many requests for this {}; retry in {} s",
            kind.as_str().replace('_', " "),
            wait.as_secs().max(1)
        ),
    )
    .with_reason(
        ErrorReason::RateLimited,
        [("kind".to_owned(), kind.as_str().to_owned())],
    )
    .with_retry_after(wait)
}

fn proof_replayed() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthenticated,
        "this proof was used already; sign a new one",
    )
    .with_reason(ErrorReason::ProofReplayed, [])
}

fn proof_invalid(err: ProofError) -> ApiError {
    let message = match err {
        ProofError::BadSignature => {
            "the proof is not signed by the token's device key for this method and token"
        }
        ProofError::Malformed => "the proof must be <public key>.<ms>.<id>.<signature> (base64url)",
        ProofError::Stale => "the proof is more than two minutes from the gateway's clock; sign a new one",
    };
    ApiError::new(ErrorCode::Unauthenticated, message).with_reason(ErrorReason::ProofInvalid, [])
}

fn malformed(err: WireError) -> ApiError {
    ApiError::new(ErrorCode::InvalidArgument, err.to_string()).with_reason(ErrorReason::MalformedMessage, [])
}

/// A grant whose facts do not fit its role: a mistake in the access table.
fn table_error() -> ApiError {
    tracing::error!("the access table writes a fact its role does not have");
    ApiError::new(ErrorCode::Internal, "internal error")
}

/// Which service a [`Door`] stands for.
pub(crate) trait Named {
    const NAME: &'static str;
}

macro_rules! named {
    ($($name:ident = $backend:expr;)*) => {$(
        #[derive(Debug)]
        pub(crate) struct $name;
        impl Named for $name {
            const NAME: &'static str = $backend;
        }
    )*};
}

named! {
    PopulationName = "adminduk.population.v1.PopulationService";
    InventoryName = "adminduk.inventory.v1.InventoryService";
    PrintingName = "adminduk.printing.v1.PrintingService";
    IkdName = "adminduk.ikd.v1.IkdService";
    AgencyName = "adminduk.gateway.v1.AgencyService";
    BrokerWatchName = "adminduk.gateway.v1.BrokerWatchService";
    ReportName = "adminduk.gateway.v1.ReportService";
}

/// The gateway's face for one service: every method of that name goes through [`Gateway`].
pub(crate) struct Door<N> {
    gateway: Arc<Gateway>,
    name: PhantomData<fn() -> N>,
}

impl<N> Door<N> {
    pub(crate) fn new(gateway: Arc<Gateway>) -> Self {
        Self {
            gateway,
            name: PhantomData,
        }
    }
}

impl<N> Clone for Door<N> {
    fn clone(&self) -> Self {
        Self::new(self.gateway.clone())
    }
}

impl<N: Named> NamedService for Door<N> {
    const NAME: &'static str = N::NAME;
}

impl<N> tower::Service<http::Request<Body>> for Door<N> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let gateway = self.gateway.clone();
        Box::pin(async move { Ok(gateway.handle(request).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_door_is_named_as_its_backend() {
        let names = [
            PopulationName::NAME,
            InventoryName::NAME,
            PrintingName::NAME,
            IkdName::NAME,
            AgencyName::NAME,
            BrokerWatchName::NAME,
            ReportName::NAME,
        ];
        let backends: Vec<&str> = Backend::ALL.iter().map(|b| b.service()).collect();
        assert_eq!(names.to_vec(), backends);
    }

    #[test]
    fn every_fact_in_the_table_is_one_its_role_has() {
        for rule in access::TABLE {
            for grant in rule.grants {
                let ok = match grant {
                    Grant::Anyone | Grant::Agency => true,
                    Grant::Office(facts) => facts.iter().all(|(_, f)| {
                        matches!(
                            f,
                            Fact::ServicePoint
                                | Fact::Device
                                | Fact::DeviceWhenNamed
                                | Fact::IkdActive { .. }
                        )
                    }),
                    Grant::Admin(facts) => facts
                        .iter()
                        .all(|(_, f)| matches!(f, Fact::AdminName | Fact::IkdActive { .. })),
                    Grant::Citizen(_, facts) => {
                        facts.iter().all(|(_, f)| matches!(f, Fact::IkdActive { .. }))
                    }
                };
                assert!(ok, "{}: {grant:?}", rule.method);
            }
        }
    }

    #[test]
    fn refusals_name_the_role_and_the_method() {
        let rule =
            access::rule_for("/adminduk.inventory.v1.InventoryService/SetQuotaPolicy").expect("served");
        let anonymous = not_allowed(Role::Anonymous, rule);
        assert_eq!(anonymous.code(), ErrorCode::Unauthenticated);
        assert_eq!(anonymous.reason(), Some("CREDENTIAL_REQUIRED"));
        let office = not_allowed(Role::Office, rule);
        assert_eq!(office.code(), ErrorCode::PermissionDenied);
        assert_eq!(office.reason(), Some("ROLE_NOT_ALLOWED"));
        assert_eq!(unknown_method("/x/y").code(), ErrorCode::Unimplemented);
    }
}
