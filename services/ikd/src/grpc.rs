//! The gRPC face of IKD: thin handlers that validate, check eligibility with
//! the population service, call the store, audit every attempt, and map
//! refusals to reasons a phone can act on.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use adminduk_kit::cache::SharedCache;
use adminduk_kit::codes::service_point_field;
use adminduk_kit::nik::{Nik, nik_field};
use adminduk_kit::region::Regions;
use adminduk_kit::token::{
    Claims, ISSUER, SigningKey, VerifyingKey, check_device_public_key, verify_device_signature,
};
use adminduk_kit::{ApiError, ErrorCode, ErrorReason, Violations, mask_nik, text, upstream};
use adminduk_proto::convert;
use adminduk_proto::ikd::v1 as pb;
use adminduk_proto::population::v1 as population;
use pb::ikd_service_server::IkdService;
use population::population_service_client::PopulationServiceClient;

use crate::domain::{
    ACTIVATION_CONTEXT, ACTIVATION_TTL, ActivationState, CHALLENGE_TTL, CODE_TTL, Ineligible, MAX_ATTEMPTS,
    ResidentFacts, TOKEN_CONTEXT, TOKEN_TTL, check_eligibility, check_email, check_phone, device_id,
    hash_code, hex, new_challenge, new_code, random_bytes, same_hash,
};
use crate::store::{AuditEntry, NewActivation, OpenActivation, Store, StoreError};

pub use adminduk_kit::token::{ikd_status_key, revoked_device_key};

/// The keys that sign session tokens: the newest signs, all verify.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
}

impl KeyRing {
    /// Loads the stored keys, making the first one when there is none.
    pub async fn load(store: &Store) -> Result<Self, StoreError> {
        let mut keys = Vec::new();
        for (kid, pkcs8, _retired) in store.signing_keys().await? {
            keys.push(SigningKey::from_pkcs8(kid, &pkcs8).map_err(|_| StoreError::Corrupt("signing key"))?);
        }
        if keys.is_empty() {
            let kid = format!("ikd-{}", Utc::now().format("%Y%m%d%H%M%S"));
            let key = SigningKey::generate(kid).map_err(|_| StoreError::Corrupt("key generation"))?;
            store
                .add_signing_key(key.kid(), key.pkcs8(), &key.public_key(), Utc::now())
                .await?;
            keys.push(key);
        }
        Ok(Self { keys })
    }

    fn current(&self) -> Option<&SigningKey> {
        self.keys.first()
    }

    /// Every key's public half, for offline verification.
    pub fn verifying_keys(&self) -> Vec<VerifyingKey> {
        self.keys
            .iter()
            .map(|k| VerifyingKey {
                kid: k.kid().to_owned(),
                public_key: k.public_key(),
            })
            .collect()
    }
}

/// The `IkdService` implementation.
#[derive(Debug, Clone)]
pub struct IkdApi {
    store: Store,
    population: PopulationServiceClient<Channel>,
    cache: Arc<dyn SharedCache>,
    keys: Arc<KeyRing>,
}

impl IkdApi {
    /// A service over its store, a channel to the population service, and the shared cache.
    pub fn new(store: Store, population: Channel, cache: Arc<dyn SharedCache>, keys: Arc<KeyRing>) -> Self {
        Self {
            store,
            population: PopulationServiceClient::new(population),
            cache,
            keys,
        }
    }

    async fn audit(&self, nik: &str, action: &str, outcome: &str, point: &str, officer: &str) {
        let trace_id = adminduk_kit::telemetry::current_trace_id().unwrap_or_default();
        let entry = AuditEntry {
            nik_masked: &mask_nik(nik),
            action,
            outcome,
            service_point_code: point,
            officer_id: officer,
            trace_id: &trace_id,
        };
        if let Err(err) = self.store.audit(&entry, Utc::now()).await {
            tracing::error!(error = %err, action, "audit row not written");
        }
    }

    /// Runs an operation, audits its outcome, and turns refusals into statuses.
    async fn audited<T>(
        &self,
        nik: &str,
        action: &str,
        (point, officer): (&str, &str),
        result: Result<T, ApiError>,
    ) -> Result<T, Status> {
        let outcome = match &result {
            Ok(_) => "OK".to_owned(),
            Err(err) => err
                .reason()
                .map_or_else(|| format!("{:?}", err.code()), str::to_owned),
        };
        self.audit(nik, action, &outcome, point, officer).await;
        result.map_err(Status::from)
    }

    async fn resident_facts(&self, nik: &Nik) -> Result<(Option<ResidentFacts>, String), ApiError> {
        let mut client = self.population.clone();
        let request = upstream::request(population::GetResidentRequest {
            nik: nik.as_str().to_owned(),
        });
        match client.get_resident(request).await {
            Ok(response) => {
                let r = response
                    .into_inner()
                    .resident
                    .ok_or_else(|| ApiError::new(ErrorCode::Internal, "internal error"))?;
                let birth = r.birth_date.as_ref().and_then(convert::to_naive);
                let Some(birth_date) = birth else {
                    return Ok((None, String::new()));
                };
                let facts = ResidentFacts {
                    alive: r.life_status == population::LifeStatus::Alive as i32,
                    moved_out: r.life_status == population::LifeStatus::MovedOut as i32,
                    birth_date,
                    ever_married: r.marital_status != population::MaritalStatus::Single as i32,
                    recorded: r.recording_status == population::RecordingStatus::Recorded as i32
                        || r.recording_status == population::RecordingStatus::PrintReady as i32,
                };
                Ok((
                    Some(facts),
                    r.address.map(|a| a.district_code).unwrap_or_default(),
                ))
            }
            // No such resident is an answer: the resident is told NOT_ELIGIBLE, NOT_FOUND.
            Err(status) if status.code() == Code::NotFound => Ok((None, String::new())),
            Err(status) => Err(upstream::refusal("population", &status)),
        }
    }
}

fn refusal(code: ErrorCode, reason: ErrorReason, message: &str) -> ApiError {
    ApiError::new(code, message).with_reason(reason, [])
}

fn store_error(err: StoreError) -> ApiError {
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
        .with_retry_after(Duration::from_millis(100)),
        StoreError::Corrupt(_) => ApiError::internal(&err),
        StoreError::Db(db) => ApiError::from(db),
    }
}

/// ACTIVATION_PENDING: what holds the NIK, what to do, and when a new start
/// is accepted (`start_accepted_time`; RetryInfo too while it is moments away).
fn activation_pending(open: OpenActivation, now: chrono::DateTime<Utc>) -> ApiError {
    let wib = |at: chrono::DateTime<Utc>| at.with_timezone(&adminduk_kit::time::wib()).format("%H:%M:%S");
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

/// The most characters of an id, a nonce or an officer's id.
const MAX_ID_CHARS: usize = 64;
/// The most characters of an e-mail address (RFC 5321's path limit).
const MAX_EMAIL_CHARS: usize = 254;
/// The most characters of a phone number as typed, spaces and dashes included.
const MAX_PHONE_CHARS: usize = 32;
/// The most characters of a revocation's reason.
const MAX_REASON_CHARS: usize = 500;

/// The NIK that is the whole request, checked as every service checks it.
fn require_nik(input: &str) -> Result<Nik, ApiError> {
    adminduk_kit::nik::require_nik("nik", input)
}

/// An id-like field: trimmed, required, short, printable.
fn id_field(field: &str, value: &str, out: &mut Violations) -> String {
    text::required(field, value, MAX_ID_CHARS, out)
}

/// A contact field: the kit's rules for text first, then its own shape.
fn contact_field(
    field: &str,
    value: &str,
    max: usize,
    shape: fn(&str) -> Result<String, &'static str>,
    out: &mut Violations,
) -> Option<String> {
    let before = out.len();
    let value = text::required(field, value, max, out);
    if out.len() != before {
        return None;
    }
    shape(&value).map_err(|e| out.add(field, e)).ok()
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("activation")
        .with_reason(ErrorReason::ActivationNotFound, [])
        .with_resource("activation", id)
}

/// What to do once a code has expired: the activation holds the NIK until
/// its code expires, and after that either way on is open.
const NEW_CODE_HOW: &str = "have an officer scan this activation's QR code again for a new code, \
                            or start again on the phone";

fn activation_expired() -> ApiError {
    refusal(
        ErrorCode::FailedPrecondition,
        ErrorReason::ActivationExpired,
        "the activation lapsed or a newer one replaced it; start again on the phone",
    )
}

fn too_many_attempts() -> ApiError {
    refusal(
        ErrorCode::FailedPrecondition,
        ErrorReason::TooManyAttempts,
        "too many wrong codes; start again on the phone and have it verified at an office",
    )
}

fn already_completed() -> ApiError {
    refusal(
        ErrorCode::FailedPrecondition,
        ErrorReason::ActivationCompleted,
        "this activation was already completed",
    )
}

fn signature_invalid() -> ApiError {
    refusal(
        ErrorCode::Unauthenticated,
        ErrorReason::SignatureInvalid,
        "the device signature does not verify",
    )
}

#[tonic::async_trait]
impl IkdService for IkdApi {
    async fn start_activation(
        &self,
        request: Request<pb::StartActivationRequest>,
    ) -> Result<Response<pb::StartActivationResponse>, Status> {
        let pb::StartActivationRequest {
            nik,
            email,
            phone,
            device_public_key,
        } = request.into_inner();
        let result = async {
            let mut v = Violations::new();
            let parsed = nik_field("nik", &nik, &mut v);
            let email = contact_field("email", &email, MAX_EMAIL_CHARS, check_email, &mut v);
            let phone = contact_field("phone", &phone, MAX_PHONE_CHARS, check_phone, &mut v);
            // A key of small order (the identity among them) would let a
            // constant signature pass for every challenge: refused here, and
            // by the verifier for whatever is stored.
            if let Err(weak) = check_device_public_key(&device_public_key) {
                v.add("device_public_key", weak.to_string());
            }
            v.into_result()?;
            let (Some(parsed), Some(email), Some(phone)) = (parsed, email, phone) else {
                return Err(ApiError::new(ErrorCode::InvalidArgument, "invalid request"));
            };
            let nik = parsed.as_str();
            let now = Utc::now();
            if let Some(identity) = self.store.identity(nik).await.map_err(store_error)?
                && identity.active
            {
                return Err(if identity.device_public_key == device_public_key {
                    refusal(
                        ErrorCode::AlreadyExists,
                        ErrorReason::AlreadyActive,
                        "this identity is already active on this device",
                    )
                } else {
                    store_error(StoreError::AlreadyActive)
                });
            }
            let (facts, district) = self.resident_facts(&parsed).await?;
            if let Err(why) = check_eligibility(facts, adminduk_kit::time::today_wib()) {
                return Err(
                    ApiError::new(ErrorCode::FailedPrecondition, ineligible_message(why))
                        .with_reason(
                            ErrorReason::NotEligible,
                            [("why".to_owned(), why.as_str().to_owned())],
                        )
                        .with_precondition("ELIGIBILITY", "nik", why.as_str()),
                );
            }
            let id = uuid::Uuid::now_v7().to_string();
            let nonce = random_bytes::<16>()
                .map(|b| hex(&b))
                .ok_or_else(|| ApiError::new(ErrorCode::Internal, "internal error"))?;
            let challenge = new_challenge(ACTIVATION_CONTEXT)
                .ok_or_else(|| ApiError::new(ErrorCode::Internal, "internal error"))?;
            let expires_at = now + ACTIVATION_TTL;
            self.store
                .start_activation(
                    &NewActivation {
                        id: &id,
                        nik,
                        email: &email,
                        phone: &phone,
                        device_public_key: &device_public_key,
                        district_code: &district,
                        nonce: &nonce,
                        challenge: &challenge,
                        expires_at,
                    },
                    now,
                )
                .await
                .map_err(store_error)?;
            tracing::info!(nik = %adminduk_kit::mask::log_nik(parsed.as_str()), activation = %id, "activation started");
            Ok(pb::StartActivationResponse {
                qr_payload: format!("IKD1:{id}:{nonce}"),
                activation_id: id,
                challenge,
                expire_time: Some(convert::timestamp(expires_at)),
            })
        }
        .await;
        self.audited(&nik, "START_ACTIVATION", ("", ""), result)
            .await
            .map(Response::new)
    }

    async fn verify_at_office(
        &self,
        request: Request<pb::VerifyAtOfficeRequest>,
    ) -> Result<Response<pb::VerifyAtOfficeResponse>, Status> {
        let pb::VerifyAtOfficeRequest {
            activation_id,
            nonce,
            officer_id,
            service_point_code,
        } = request.into_inner();
        let mut nik = String::new();
        let mut v = Violations::new();
        let activation_id = id_field("activation_id", &activation_id, &mut v);
        let nonce = id_field("nonce", &nonce, &mut v);
        let officer_id = id_field("officer_id", &officer_id, &mut v);
        let service_point_code = service_point_field("service_point_code", &service_point_code, &mut v);
        // The audit keeps who verified, but never text that failed the checks.
        let who = if v.is_empty() {
            (service_point_code.clone(), officer_id.clone())
        } else {
            (String::new(), String::new())
        };
        let result = async {
            v.into_result()?;
            let activation = self
                .store
                .activation(&activation_id)
                .await
                .map_err(store_error)?
                .ok_or_else(|| not_found(&activation_id))?;
            nik.clone_from(&activation.nik);
            if !same_hash(&activation.nonce, &nonce) {
                return Err(refusal(ErrorCode::PermissionDenied, ErrorReason::NonceMismatch, "the QR code does not belong to this activation"));
            }
            let now = Utc::now();
            if activation.expires_at <= now {
                return Err(activation_expired());
            }
            match activation.state {
                ActivationState::Started => {}
                // A code that expired is sent again, fresh: the resident is not stuck
                // until the activation lapses. A live one is not replaced, so a
                // second scan cannot reset the count of wrong codes.
                ActivationState::Verified => {
                    if let Some(live_until) = activation.code_expires_at.filter(|t| *t > now) {
                        let until = live_until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                        return Err(ApiError::new(
                            ErrorCode::FailedPrecondition,
                            "a code was sent for this activation and still works; a new one can be sent once it expires",
                        )
                        .with_reason(ErrorReason::CodeAlreadySent, [("code_expire_time".to_owned(), until)]));
                    }
                }
                ActivationState::Completed => return Err(already_completed()),
                ActivationState::Locked => return Err(too_many_attempts()),
                ActivationState::Expired => return Err(activation_expired()),
            }
            let code = new_code().ok_or_else(|| ApiError::new(ErrorCode::Internal, "internal error"))?;
            let salt = random_bytes::<16>().ok_or_else(|| ApiError::new(ErrorCode::Internal, "internal error"))?;
            let code_expires_at = now + CODE_TTL;
            let body = format!(
                "Kode aktivasi IKD Anda: {code}\nBerlaku sampai {} WIB. Jangan berikan kode ini kepada siapa pun, termasuk petugas.",
                code_expires_at.with_timezone(&adminduk_kit::time::wib()).format("%H:%M")
            );
            self.store
                .verify_at_office(
                    &activation.id,
                    &hash_code(&salt, &code),
                    &salt,
                    code_expires_at,
                    &officer_id,
                    &service_point_code,
                    (&activation.email, "Kode aktivasi IKD", &body),
                    now,
                )
                .await
                .map_err(store_error)?;
            tracing::info!(activation = %activation.id, point = %service_point_code, "verified at office; code queued");
            Ok(pb::VerifyAtOfficeResponse {
                code_expire_time: Some(convert::timestamp(code_expires_at)),
            })
        }
        .await;
        self.audited(&nik, "VERIFY_AT_OFFICE", (&who.0, &who.1), result)
            .await
            .map(Response::new)
    }

    async fn complete_activation(
        &self,
        request: Request<pb::CompleteActivationRequest>,
    ) -> Result<Response<pb::CompleteActivationResponse>, Status> {
        let pb::CompleteActivationRequest {
            activation_id,
            code,
            signature,
        } = request.into_inner();
        let mut nik = String::new();
        let result = async {
            let mut v = Violations::new();
            let activation_id = id_field("activation_id", &activation_id, &mut v);
            if !adminduk_kit::is_digits(code.trim(), 6) {
                v.add("code", "must be the 6-digit code");
            }
            if signature.len() != 64 {
                v.add("signature", "must be a 64-byte Ed25519 signature");
            }
            v.into_result()?;
            let activation = self
                .store
                .activation(&activation_id)
                .await
                .map_err(store_error)?
                .ok_or_else(|| not_found(&activation_id))?;
            nik.clone_from(&activation.nik);
            let now = Utc::now();
            match activation.state {
                ActivationState::Verified => {}
                ActivationState::Started => {
                    return Err(refusal(
                        ErrorCode::FailedPrecondition,
                        ErrorReason::NotVerified,
                        "the activation must first be verified at an office",
                    ));
                }
                ActivationState::Completed => return Err(already_completed()),
                ActivationState::Locked => return Err(too_many_attempts()),
                ActivationState::Expired => return Err(activation_expired()),
            }
            if activation.expires_at <= now {
                return Err(activation_expired());
            }
            if activation.code_expires_at.is_none_or(|t| t <= now) {
                return Err(ApiError::new(
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
                ));
            }
            if !verify_device_signature(&activation.device_public_key, &activation.challenge, &signature) {
                return Err(signature_invalid());
            }
            let matches = match (&activation.code_hash, &activation.code_salt) {
                (Some(hash), Some(salt)) => same_hash(hash, &hash_code(salt, &code)),
                _ => false,
            };
            if !matches {
                let attempts = self
                    .store
                    .wrong_code(&activation, MAX_ATTEMPTS, now)
                    .await
                    .map_err(store_error)?;
                let left = (MAX_ATTEMPTS - attempts).max(0);
                return Err(if left == 0 {
                    too_many_attempts()
                } else {
                    ApiError::new(
                        ErrorCode::InvalidArgument,
                        format!("wrong code; {left} attempts left"),
                    )
                    .with_violation("code", "does not match")
                    .with_reason(
                        ErrorReason::CodeInvalid,
                        [("attempts_left".to_owned(), left.to_string())],
                    )
                });
            }
            let device = device_id(&activation.device_public_key);
            self.store
                .complete(&activation, &device, now)
                .await
                .map_err(store_error)?;
            // A device bound again after a revocation may use tokens once more.
            if let Err(err) = self.cache.delete(&revoked_device_key(&device)).await {
                tracing::warn!(error = %err, "revocation mark not cleared; the gateway will ask the service");
            }
            // The gateway's IKD-first view of the resident is stale now.
            if let Err(err) = self.cache.delete(&ikd_status_key(&activation.nik)).await {
                tracing::warn!(error = %err, "IKD status not refreshed at the gateway; it expires by itself");
            }
            tracing::info!(nik = %adminduk_kit::mask::log_nik(&activation.nik), device = %device, "identity active");
            Ok(pb::CompleteActivationResponse {
                status: pb::IdentityStatus::Active.into(),
                device_id: device,
            })
        }
        .await;
        self.audited(&nik, "COMPLETE_ACTIVATION", ("", ""), result)
            .await
            .map(Response::new)
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let pb::GetStatusRequest { nik } = request.into_inner();
        let parsed = require_nik(&nik)?;
        let nik = parsed.as_str();
        let identity = self.store.identity(nik).await.map_err(store_error)?;
        let response = match identity {
            Some(i) if i.active => pb::GetStatusResponse {
                status: pb::IdentityStatus::Active.into(),
                device_id: i.device_id,
                activate_time: Some(convert::timestamp(i.activated_at)),
                ineligible: String::new(),
            },
            other => {
                let pending = self
                    .store
                    .has_open_activation(nik, Utc::now())
                    .await
                    .map_err(store_error)?;
                let status = if pending {
                    pb::IdentityStatus::Pending
                } else if other.is_some() {
                    pb::IdentityStatus::Revoked
                } else {
                    pb::IdentityStatus::NotActivated
                };
                // Whether the resident could activate (IKD first exempts those who cannot).
                let ineligible = match self.resident_facts(&parsed).await {
                    Ok((facts, _)) => check_eligibility(facts, adminduk_kit::time::today_wib())
                        .err()
                        .map_or_else(String::new, |why| why.as_str().to_owned()),
                    Err(err) => {
                        tracing::warn!(error = %err.message(), "eligibility unknown: population unanswered");
                        "UNKNOWN".to_owned()
                    }
                };
                pb::GetStatusResponse {
                    status: status.into(),
                    device_id: String::new(),
                    activate_time: None,
                    ineligible,
                }
            }
        };
        Ok(Response::new(response))
    }

    async fn create_token_challenge(
        &self,
        request: Request<pb::CreateTokenChallengeRequest>,
    ) -> Result<Response<pb::CreateTokenChallengeResponse>, Status> {
        let pb::CreateTokenChallengeRequest { nik } = request.into_inner();
        let nik = require_nik(&nik)?;
        let nik = nik.as_str();
        let active = self
            .store
            .identity(nik)
            .await
            .map_err(store_error)?
            .is_some_and(|i| i.active);
        if !active {
            return Err(refusal(
                ErrorCode::FailedPrecondition,
                ErrorReason::IkdNotActive,
                "the identity is not active",
            )
            .into());
        }
        let challenge = new_challenge(TOKEN_CONTEXT)
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "internal error"))?;
        let expires_at = Utc::now() + CHALLENGE_TTL;
        self.store
            .add_challenge(&challenge, nik, expires_at)
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::CreateTokenChallengeResponse {
            challenge,
            expire_time: Some(convert::timestamp(expires_at)),
        }))
    }

    async fn issue_session_token(
        &self,
        request: Request<pb::IssueSessionTokenRequest>,
    ) -> Result<Response<pb::IssueSessionTokenResponse>, Status> {
        let pb::IssueSessionTokenRequest {
            nik,
            challenge,
            signature,
        } = request.into_inner();
        let result = async {
            let mut v = Violations::new();
            nik_field("nik", &nik, &mut v);
            if !challenge.starts_with(TOKEN_CONTEXT) {
                v.add("challenge", "must be a challenge from CreateTokenChallenge");
            }
            if signature.len() != 64 {
                v.add("signature", "must be a 64-byte Ed25519 signature");
            }
            v.into_result()?;
            let identity = self
                .store
                .identity(&nik)
                .await
                .map_err(store_error)?
                .filter(|i| i.active);
            let Some(identity) = identity else {
                return Err(refusal(
                    ErrorCode::FailedPrecondition,
                    ErrorReason::IkdNotActive,
                    "the identity is not active",
                ));
            };
            if !verify_device_signature(&identity.device_public_key, &challenge, &signature) {
                return Err(signature_invalid());
            }
            let now = Utc::now();
            if !self
                .store
                .use_challenge(&challenge, &nik, now)
                .await
                .map_err(store_error)?
            {
                return Err(refusal(
                    ErrorCode::FailedPrecondition,
                    ErrorReason::ChallengeInvalid,
                    "the challenge is unknown, used or expired",
                ));
            }
            let key = self
                .keys
                .current()
                .ok_or_else(|| ApiError::new(ErrorCode::Internal, "internal error"))?;
            let expires_at = now + TOKEN_TTL;
            let claims = Claims {
                iss: ISSUER.to_owned(),
                // Opaque: a token is readable by whoever holds it, so it never carries the NIK.
                sub: identity.subject.clone(),
                dev: identity.device_id.clone(),
                jti: uuid::Uuid::now_v7().to_string(),
                iat: now.timestamp(),
                exp: expires_at.timestamp(),
                // Bound to the device key: the gateway wants a proof signed by it for a change.
                cnf: adminduk_kit::token::Confirmation {
                    jkt: adminduk_kit::proof::thumbprint(&identity.device_public_key),
                },
            };
            let token = key
                .sign(&claims)
                .map_err(|_| ApiError::new(ErrorCode::Internal, "internal error"))?;
            Ok(pb::IssueSessionTokenResponse {
                token,
                expire_time: Some(convert::timestamp(expires_at)),
                key_id: key.kid().to_owned(),
            })
        }
        .await;
        self.audited(&nik, "ISSUE_SESSION_TOKEN", ("", ""), result)
            .await
            .map(Response::new)
    }

    async fn list_signing_keys(
        &self,
        _request: Request<pb::ListSigningKeysRequest>,
    ) -> Result<Response<pb::ListSigningKeysResponse>, Status> {
        Ok(Response::new(pb::ListSigningKeysResponse {
            keys: self
                .keys
                .verifying_keys()
                .into_iter()
                .map(|k| pb::SigningKey {
                    key_id: k.kid,
                    public_key: k.public_key,
                    algorithm: "EdDSA".to_owned(),
                })
                .collect(),
        }))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let pb::RevokeRequest {
            nik,
            reason,
            officer_id,
            service_point_code,
        } = request.into_inner();
        let mut v = Violations::new();
        nik_field("nik", &nik, &mut v);
        text::required("reason", &reason, MAX_REASON_CHARS, &mut v);
        let officer_id = id_field("officer_id", &officer_id, &mut v);
        let service_point_code = service_point_field("service_point_code", &service_point_code, &mut v);
        let who = if v.is_empty() {
            (service_point_code, officer_id)
        } else {
            (String::new(), String::new())
        };
        let result = async {
            v.into_result()?;
            let device = match self.store.revoke(&nik, Utc::now()).await.map_err(store_error)? {
                Some(device) => device,
                None => match self.store.identity(&nik).await.map_err(store_error)? {
                    // Revoked already (a retry, or a second office): answered as the
                    // revocation was, and its mark for the gateways set again.
                    Some(identity) if !identity.active => identity.device_id,
                    _ => {
                        return Err(refusal(
                            ErrorCode::FailedPrecondition,
                            ErrorReason::IkdNotActive,
                            "the identity is not active",
                        ));
                    }
                },
            };
            // Tokens already out live at most TOKEN_TTL: the mark outlives them.
            let ttl = (TOKEN_TTL + chrono::Duration::minutes(1)).to_std().unwrap_or(Duration::from_secs(960));
            if let Err(err) = self.cache.set(&revoked_device_key(&device), b"1", ttl).await {
                tracing::error!(error = %err, "revocation not shared; gateways fall back to asking the service");
            }
            if let Err(err) = self.cache.delete(&ikd_status_key(&nik)).await {
                tracing::warn!(error = %err, "IKD status not refreshed at the gateway; it expires by itself");
            }
            tracing::info!(nik = %adminduk_kit::mask::log_nik(&nik), device = %device, "identity revoked");
            Ok(pb::RevokeResponse {
                status: pb::IdentityStatus::Revoked.into(),
            })
        }
        .await;
        self.audited(&nik, "REVOKE", (&who.0, &who.1), result)
            .await
            .map(Response::new)
    }

    async fn resolve_subject(
        &self,
        request: Request<pb::ResolveSubjectRequest>,
    ) -> Result<Response<pb::ResolveSubjectResponse>, Status> {
        let pb::ResolveSubjectRequest { subject } = request.into_inner();
        // Subjects are 128 random bits in lowercase hex; anything else names no one.
        if subject.len() != 32 || !subject.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ApiError::invalid_field(
                "subject",
                "must be a session token's subject: 32 lowercase hex digits",
            )
            .into());
        }
        let identity = self
            .store
            .identity_by_subject(&subject)
            .await
            .map_err(store_error)?;
        let Some(identity) = identity else {
            return Err(ApiError::new(ErrorCode::NotFound, "no identity has this subject")
                .with_reason(ErrorReason::IkdNotActive, [])
                .into());
        };
        let status = if identity.active {
            pb::IdentityStatus::Active
        } else {
            pb::IdentityStatus::Revoked
        };
        Ok(Response::new(pb::ResolveSubjectResponse {
            nik: identity.nik,
            status: status.into(),
            device_id: if identity.active {
                identity.device_id
            } else {
                String::new()
            },
        }))
    }

    async fn get_adoption(
        &self,
        request: Request<pb::GetAdoptionRequest>,
    ) -> Result<Response<pb::GetAdoptionResponse>, Status> {
        let pb::GetAdoptionRequest { area_code } = request.into_inner();
        let regions = Regions::global();
        let known = match area_code.len() {
            4 => regions.regency(&area_code).is_some(),
            6 => regions.district(&area_code).is_some(),
            _ => false,
        };
        if !known {
            return Err(ApiError::invalid_field(
                "area_code",
                "must be a known regency (4 digits) or kecamatan (6 digits) code",
            )
            .into());
        }
        let mut client = self.population.clone();
        let counts = upstream::request(population::CountResidentsRequest {
            area_code: area_code.clone(),
        });
        let counts = client
            .count_residents(counts)
            .await
            .map_err(|status| upstream::refusal("population", &status))?
            .into_inner();
        let active = self.store.count_active(&area_code).await.map_err(store_error)?;
        let share = if counts.eligible > 0 {
            active as f64 / counts.eligible as f64
        } else {
            0.0
        };
        let gap = |target: f64| ((counts.eligible as f64 * target).ceil() as i64 - active).max(0);
        Ok(Response::new(pb::GetAdoptionResponse {
            area_code,
            eligible: counts.eligible,
            active,
            share,
            gap_to_25_percent: gap(0.25),
            gap_to_30_percent: gap(0.30),
        }))
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
