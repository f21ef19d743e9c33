//! The gRPC face of IKD: thin handlers that validate, check eligibility with
//! the population service, call the store, audit every attempt, and map
//! refusals to reasons a phone can act on.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use adminduk_kit::cache::SharedCache;
use adminduk_kit::token::{Claims, ISSUER, SigningKey, VerifyingKey, verify_device_signature};
use adminduk_kit::{ApiError, ErrorCode, Violations, mask_nik};
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
use crate::store::{AuditEntry, NewActivation, Store, StoreError};

/// The cache key the gateway checks before accepting a device's token.
pub fn revoked_device_key(device_id: &str) -> String {
    format!("revoked-device:{device_id}")
}

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
            Err(err) => reason_of(err),
        };
        self.audit(nik, action, &outcome, point, officer).await;
        result.map_err(Status::from)
    }

    async fn resident_facts(&self, nik: &str) -> Result<(Option<ResidentFacts>, String), ApiError> {
        let mut client = self.population.clone();
        let mut request = tonic::Request::new(population::GetResidentRequest { nik: nik.to_owned() });
        adminduk_kit::telemetry::inject_context(request.metadata_mut());
        request.set_timeout(Duration::from_secs(3));
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
            Err(status) if status.code() == Code::NotFound => Ok((None, String::new())),
            Err(status) => {
                tracing::warn!(code = ?status.code(), "population service unavailable");
                Err(ApiError::unavailable(
                    "the population registry cannot be reached",
                    Duration::from_secs(1),
                ))
            }
        }
    }
}

fn reason_of(err: &ApiError) -> String {
    err.details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_else(|| format!("{:?}", err.code()))
}

fn refusal(code: ErrorCode, reason: &str, message: &str) -> ApiError {
    ApiError::new(code, message).with_reason(reason, [])
}

fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::ActivationOpen => refusal(
            ErrorCode::AlreadyExists,
            "ACTIVATION_PENDING",
            "an activation for this NIK is already under way",
        ),
        StoreError::AlreadyActive => refusal(
            ErrorCode::FailedPrecondition,
            "DEVICE_ALREADY_BOUND",
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

fn nik_field(nik: &str, out: &mut Violations) {
    if !adminduk_kit::is_digits(nik, 16) {
        out.add("nik", "must be 16 digits");
    }
}

fn id_field(field: &str, value: &str, out: &mut Violations) {
    if value.is_empty() || value.len() > 64 {
        out.add(field, "is required");
    }
}

fn not_found() -> ApiError {
    refusal(ErrorCode::NotFound, "ACTIVATION_NOT_FOUND", "no such activation")
}

fn signature_invalid() -> ApiError {
    refusal(
        ErrorCode::Unauthenticated,
        "SIGNATURE_INVALID",
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
            nik_field(&nik, &mut v);
            let email = check_email(&email).map_err(|e| v.add("email", e)).ok();
            let phone = check_phone(&phone).map_err(|e| v.add("phone", e)).ok();
            if device_public_key.len() != 32 {
                v.add("device_public_key", "must be a 32-byte Ed25519 public key");
            }
            v.into_result()?;
            let (Some(email), Some(phone)) = (email, phone) else {
                return Err(ApiError::new(ErrorCode::InvalidArgument, "invalid request"));
            };
            let now = Utc::now();
            if let Some(identity) = self.store.identity(&nik).await.map_err(store_error)?
                && identity.active
            {
                return Err(if identity.device_public_key == device_public_key {
                    refusal(
                        ErrorCode::AlreadyExists,
                        "ALREADY_ACTIVE",
                        "this identity is already active on this device",
                    )
                } else {
                    store_error(StoreError::AlreadyActive)
                });
            }
            let (facts, district) = self.resident_facts(&nik).await?;
            if let Err(why) = check_eligibility(facts, adminduk_kit::time::today_wib()) {
                return Err(
                    ApiError::new(ErrorCode::FailedPrecondition, ineligible_message(why))
                        .with_reason("NOT_ELIGIBLE", [("why".to_owned(), why.as_str().to_owned())])
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
                        nik: &nik,
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
            tracing::info!(nik = %mask_nik(&nik), activation = %id, "activation started");
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
        let result = async {
            let mut v = Violations::new();
            id_field("activation_id", &activation_id, &mut v);
            id_field("nonce", &nonce, &mut v);
            id_field("officer_id", &officer_id, &mut v);
            id_field("service_point_code", &service_point_code, &mut v);
            v.into_result()?;
            let activation = self.store.activation(&activation_id).await.map_err(store_error)?.ok_or_else(not_found)?;
            nik.clone_from(&activation.nik);
            if !same_hash(&activation.nonce, &nonce) {
                return Err(refusal(ErrorCode::PermissionDenied, "NONCE_MISMATCH", "the QR code does not belong to this activation"));
            }
            let now = Utc::now();
            if activation.expires_at <= now {
                return Err(refusal(ErrorCode::FailedPrecondition, "ACTIVATION_EXPIRED", "the activation lapsed; start again"));
            }
            if activation.state != ActivationState::Started {
                return Err(refusal(
                    ErrorCode::FailedPrecondition,
                    "ACTIVATION_NOT_STARTED",
                    "the activation was already verified or has ended",
                ));
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
        self.audited(
            &nik,
            "VERIFY_AT_OFFICE",
            (&service_point_code, &officer_id),
            result,
        )
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
            id_field("activation_id", &activation_id, &mut v);
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
                .ok_or_else(not_found)?;
            nik.clone_from(&activation.nik);
            let now = Utc::now();
            match activation.state {
                ActivationState::Verified => {}
                ActivationState::Started => {
                    return Err(refusal(
                        ErrorCode::FailedPrecondition,
                        "NOT_VERIFIED",
                        "the activation must first be verified at an office",
                    ));
                }
                ActivationState::Completed => {
                    return Err(refusal(
                        ErrorCode::FailedPrecondition,
                        "ACTIVATION_COMPLETED",
                        "this activation was already completed",
                    ));
                }
                ActivationState::Locked => {
                    return Err(refusal(
                        ErrorCode::FailedPrecondition,
                        "TOO_MANY_ATTEMPTS",
                        "too many wrong codes; start again at an office",
                    ));
                }
                ActivationState::Expired => {
                    return Err(refusal(
                        ErrorCode::FailedPrecondition,
                        "CODE_EXPIRED",
                        "the activation lapsed; start again",
                    ));
                }
            }
            if activation.code_expires_at.is_none_or(|t| t <= now) || activation.expires_at <= now {
                return Err(refusal(
                    ErrorCode::FailedPrecondition,
                    "CODE_EXPIRED",
                    "the code has expired; ask the office for a new verification",
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
                    .wrong_code(&activation.id, MAX_ATTEMPTS, now)
                    .await
                    .map_err(store_error)?;
                let left = (MAX_ATTEMPTS - attempts).max(0);
                return Err(if left == 0 {
                    refusal(
                        ErrorCode::FailedPrecondition,
                        "TOO_MANY_ATTEMPTS",
                        "too many wrong codes; start again at an office",
                    )
                } else {
                    ApiError::new(
                        ErrorCode::InvalidArgument,
                        format!("wrong code; {left} attempts left"),
                    )
                    .with_violation("code", "does not match")
                    .with_reason("CODE_INVALID", [("attempts_left".to_owned(), left.to_string())])
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
            tracing::info!(nik = %mask_nik(&activation.nik), device = %device, "identity active");
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
        let mut v = Violations::new();
        nik_field(&nik, &mut v);
        v.into_result()?;
        let identity = self.store.identity(&nik).await.map_err(store_error)?;
        let response = match identity {
            Some(i) if i.active => pb::GetStatusResponse {
                status: pb::IdentityStatus::Active.into(),
                device_id: i.device_id,
                activate_time: Some(convert::timestamp(i.activated_at)),
            },
            other => {
                let pending = self
                    .store
                    .has_open_activation(&nik, Utc::now())
                    .await
                    .map_err(store_error)?;
                let status = if pending {
                    pb::IdentityStatus::Pending
                } else if other.is_some() {
                    pb::IdentityStatus::Revoked
                } else {
                    pb::IdentityStatus::NotActivated
                };
                pb::GetStatusResponse {
                    status: status.into(),
                    device_id: String::new(),
                    activate_time: None,
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
        let mut v = Violations::new();
        nik_field(&nik, &mut v);
        v.into_result()?;
        let active = self
            .store
            .identity(&nik)
            .await
            .map_err(store_error)?
            .is_some_and(|i| i.active);
        if !active {
            return Err(refusal(
                ErrorCode::FailedPrecondition,
                "IKD_NOT_ACTIVE",
                "the identity is not active",
            )
            .into());
        }
        let challenge = new_challenge(TOKEN_CONTEXT)
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "internal error"))?;
        let expires_at = Utc::now() + CHALLENGE_TTL;
        self.store
            .add_challenge(&challenge, &nik, expires_at)
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
            nik_field(&nik, &mut v);
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
                    "IKD_NOT_ACTIVE",
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
                    "CHALLENGE_INVALID",
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
                sub: nik.clone(),
                dev: identity.device_id.clone(),
                jti: uuid::Uuid::now_v7().to_string(),
                iat: now.timestamp(),
                exp: expires_at.timestamp(),
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
        let result = async {
            let mut v = Violations::new();
            nik_field(&nik, &mut v);
            if reason.trim().is_empty() {
                v.add("reason", "is required");
            }
            id_field("officer_id", &officer_id, &mut v);
            id_field("service_point_code", &service_point_code, &mut v);
            v.into_result()?;
            let device = self.store.revoke(&nik, Utc::now()).await.map_err(store_error)?;
            let Some(device) = device else {
                return Err(refusal(ErrorCode::FailedPrecondition, "IKD_NOT_ACTIVE", "the identity is not active"));
            };
            // Tokens already out live at most TOKEN_TTL: the mark outlives them.
            let ttl = (TOKEN_TTL + chrono::Duration::minutes(1)).to_std().unwrap_or(Duration::from_secs(960));
            if let Err(err) = self.cache.set(&revoked_device_key(&device), b"1", ttl).await {
                tracing::error!(error = %err, "revocation not shared; gateways fall back to asking the service");
            }
            tracing::info!(nik = %mask_nik(&nik), device = %device, "identity revoked");
            Ok(pb::RevokeResponse {
                status: pb::IdentityStatus::Revoked.into(),
            })
        }
        .await;
        self.audited(&nik, "REVOKE", (&service_point_code, &officer_id), result)
            .await
            .map(Response::new)
    }

    async fn get_adoption(
        &self,
        request: Request<pb::GetAdoptionRequest>,
    ) -> Result<Response<pb::GetAdoptionResponse>, Status> {
        let pb::GetAdoptionRequest { area_code } = request.into_inner();
        if !(adminduk_kit::is_digits(&area_code, 4) || adminduk_kit::is_digits(&area_code, 6)) {
            return Err(ApiError::invalid_field(
                "area_code",
                "must be a regency (4 digits) or kecamatan (6 digits) code",
            )
            .into());
        }
        let mut client = self.population.clone();
        let mut counts = tonic::Request::new(population::CountResidentsRequest {
            area_code: area_code.clone(),
        });
        adminduk_kit::telemetry::inject_context(counts.metadata_mut());
        let counts = match client.count_residents(counts).await {
            Ok(r) => r.into_inner(),
            Err(status) if status.code() == Code::InvalidArgument => {
                return Err(ApiError::invalid_field("area_code", "unknown area").into());
            }
            Err(_) => {
                return Err(ApiError::unavailable(
                    "the population registry cannot be reached",
                    Duration::from_secs(1),
                )
                .into());
            }
        };
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
