//! Who is calling: the principal of a verified client certificate, a
//! resident behind a verified session token, or no one.
//!
//! Tokens are verified offline with the keys the IKD service lists (fetched
//! again when a token names a key not seen yet, so a rotated key keeps
//! working), then cached by the token's SHA-256 until they expire, so a
//! phone's repeated requests do not pay for Ed25519 each time. A cached token
//! is still checked against the shared revocation mark of its device on every
//! request, so a revocation at any office ends it at every gateway replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use adminduk_kit::principal::{Principal, principal_of_certificate};
use adminduk_kit::token::{self, Claims, TokenError, VerifyingKey};
use adminduk_kit::{ApiError, ErrorCode, ErrorReason, upstream};
use adminduk_proto::ikd::v1 as ikd;
use adminduk_proto::population::v1 as population;
use ikd::ikd_service_client::IkdServiceClient;
use population::population_service_client::PopulationServiceClient;
use tonic::transport::Channel;

use crate::access::Role;

/// Clock skew allowed on a token's expiry, in seconds.
const LEEWAY_SECONDS: i64 = 30;
/// The least time between two fetches of the signing keys.
const KEY_REFRESH: Duration = Duration::from_secs(10);
/// How long a verified token is taken without asking the IKD service again.
const RESOLVE_AGAIN: Duration = Duration::from_secs(60);
/// The most verified tokens kept; past it, expired ones are dropped, then all.
const MAX_CACHED_TOKENS: usize = 100_000;

/// A resident, as a verified token and the IKD service say.
#[derive(Clone)]
pub(crate) struct Citizen {
    /// The resident's NIK (never logged whole).
    pub(crate) nik: String,
    /// The opaque subject the token names the resident by.
    pub(crate) subject: String,
    /// The bound device.
    pub(crate) device: String,
    /// The thumbprint of the device key the token is bound to (`cnf.jkt`).
    pub(crate) jkt: String,
    /// The NIKs of the resident's family card, read once when first needed.
    family: Arc<tokio::sync::OnceCell<Family>>,
}

/// A resident's family card.
#[derive(Debug, Clone)]
pub(crate) struct Family {
    /// The KK number.
    pub(crate) kk: String,
    /// Its members' NIKs.
    pub(crate) members: Vec<String>,
}

impl std::fmt::Debug for Citizen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Citizen")
            .field("nik", &adminduk_kit::mask_nik(&self.nik))
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// Who a request comes from.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// No credential.
    Anonymous,
    /// A client certificate's principal.
    Certified(Principal),
    /// A resident with a session token.
    Citizen(Citizen),
}

impl Caller {
    /// The caller's role in the access table.
    pub(crate) fn role(&self) -> Role {
        match self {
            Caller::Anonymous => Role::Anonymous,
            Caller::Certified(Principal::Office { .. }) => Role::Office,
            Caller::Certified(Principal::Agency { .. }) => Role::Agency,
            Caller::Certified(Principal::Admin { .. }) => Role::Admin,
            // Refused by `certified`; were one here, it would be no one.
            Caller::Certified(Principal::Service { .. }) => Role::Anonymous,
            Caller::Citizen(_) => Role::Citizen,
        }
    }

    /// How the caller is named in logs and in the metadata forwarded to the
    /// services: a principal URI, or a resident's device (never the NIK).
    pub(crate) fn label(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".to_owned(),
            Caller::Certified(principal) => principal.to_string(),
            Caller::Citizen(citizen) => format!("adminduk://citizen/{}", citizen.device),
        }
    }
}

fn unauthenticated(reason: ErrorReason, message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, message).with_reason(reason, [])
}

/// The principal of the client certificate the TLS handshake verified, if one was presented.
pub(crate) fn certified(peer: Option<&[u8]>) -> Result<Option<Principal>, ApiError> {
    let Some(der) = peer else {
        return Ok(None);
    };
    match principal_of_certificate(der) {
        Some(Principal::Service { .. }) => Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "a service certificate is for the mesh's own calls, not for the gateway's clients",
        )
        .with_reason(ErrorReason::CertificateUnknown, [])),
        Some(principal) => Ok(Some(principal)),
        None => Err(unauthenticated(
            ErrorReason::CertificateUnknown,
            "the client certificate names no adminduk principal (one adminduk:// URI)",
        )),
    }
}

/// The bearer token of an `authorization` header value, if it is one.
pub(crate) fn bearer(value: &[u8]) -> Result<&str, ApiError> {
    let text = std::str::from_utf8(value).map_err(|_| malformed_header())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(malformed_header)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.len() > 4096 {
        return Err(malformed_header());
    }
    Ok(token.trim())
}

fn malformed_header() -> ApiError {
    unauthenticated(
        ErrorReason::TokenInvalid,
        "the authorization header must be `Bearer <session token>`",
    )
}

struct Verified {
    claims: Claims,
    citizen: Citizen,
    /// When the IKD service last said the identity is active on this device.
    resolved: Instant,
}

/// Verifies session tokens and keeps the ones it verified.
#[derive(Clone)]
pub(crate) struct Tokens {
    inner: Arc<TokensInner>,
}

struct TokensInner {
    ikd: IkdServiceClient<Channel>,
    population: PopulationServiceClient<Channel>,
    keys: RwLock<Vec<VerifyingKey>>,
    fetched: tokio::sync::Mutex<Option<Instant>>,
    verified: Mutex<HashMap<[u8; 32], Arc<Verified>>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").finish_non_exhaustive()
    }
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn digest(token: &str) -> [u8; 32] {
    let hash = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(hash.as_ref());
    out
}

impl Tokens {
    /// A verifier asking the IKD service for keys and subjects, and the
    /// population service for families.
    pub(crate) fn new(ikd: Channel, population: Channel) -> Self {
        Self {
            inner: Arc::new(TokensInner {
                ikd: IkdServiceClient::new(ikd),
                population: PopulationServiceClient::new(population),
                keys: RwLock::new(Vec::new()),
                fetched: tokio::sync::Mutex::new(None),
                verified: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The resident a token speaks for, or why it is refused: its signature,
    /// expiry and binding (asked of the IKD service at most once a minute).
    /// Whether the device was revoked since is the shared mark's to say, which
    /// the door reads with the request's other checks in one round trip
    /// ([`Tokens::confirm_with_ikd`] when the shared cache cannot answer).
    pub(crate) async fn citizen(&self, token: &str) -> Result<Citizen, ApiError> {
        let now = now_seconds();
        let hash = digest(token);
        let cached = self
            .inner
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&hash)
            .cloned();
        let verified = match cached {
            // The identity is asked about again every minute, so a revocation whose
            // shared mark was lost still ends the token within a minute.
            Some(v) if now <= v.claims.exp + LEEWAY_SECONDS && v.resolved.elapsed() < RESOLVE_AGAIN => v,
            Some(v) if now <= v.claims.exp + LEEWAY_SECONDS => self.verify(token, hash, now).await?,
            Some(_) => return Err(expired()),
            None => self.verify(token, hash, now).await?,
        };
        Ok(verified.citizen.clone())
    }

    async fn verify(&self, token: &str, hash: [u8; 32], now: i64) -> Result<Arc<Verified>, ApiError> {
        let claims = match self.check_signature(token, now) {
            Err(TokenError::UnknownKey) => {
                self.refresh_keys().await?;
                self.check_signature(token, now)
            }
            other => other,
        }
        .map_err(|err| match err {
            TokenError::Expired => expired(),
            _ => unauthenticated(ErrorReason::TokenInvalid, "the session token is not valid"),
        })?;
        let resolved = self.resolve(&claims.sub).await?;
        if resolved.status != ikd::IdentityStatus::Active as i32 || resolved.device_id != claims.dev {
            return Err(revoked());
        }
        let verified = Arc::new(Verified {
            citizen: Citizen {
                nik: resolved.nik,
                subject: claims.sub.clone(),
                device: claims.dev.clone(),
                jkt: claims.cnf.jkt.clone(),
                family: Arc::default(),
            },
            claims,
            resolved: Instant::now(),
        });
        let mut cache = self.inner.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED_TOKENS {
            cache.retain(|_, v| now <= v.claims.exp + LEEWAY_SECONDS);
            if cache.len() >= MAX_CACHED_TOKENS {
                cache.clear();
            }
        }
        cache.insert(hash, verified.clone());
        Ok(verified)
    }

    fn check_signature(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let keys = self.inner.keys.read().unwrap_or_else(PoisonError::into_inner);
        token::verify(token, &keys, now, LEEWAY_SECONDS)
    }

    /// Fetches the signing keys again, at most once per [`KEY_REFRESH`].
    async fn refresh_keys(&self) -> Result<(), ApiError> {
        let mut fetched = self.inner.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < KEY_REFRESH) {
            return Ok(());
        }
        let mut client = self.inner.ikd.clone();
        let listed = client
            .list_signing_keys(upstream::request(ikd::ListSigningKeysRequest {}))
            .await
            .map_err(|status| upstream::refusal("ikd", &status))?
            .into_inner();
        let keys = listed.keys.into_iter().map(VerifyingKey::from).collect();
        *self.inner.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
        *fetched = Some(Instant::now());
        Ok(())
    }

    async fn resolve(&self, subject: &str) -> Result<ikd::ResolveSubjectResponse, ApiError> {
        let mut client = self.inner.ikd.clone();
        match client
            .resolve_subject(upstream::request(ikd::ResolveSubjectRequest {
                subject: subject.to_owned(),
            }))
            .await
        {
            Ok(answer) => Ok(answer.into_inner()),
            Err(status) if status.code() == tonic::Code::NotFound => Err(revoked()),
            Err(status) => Err(upstream::refusal("ikd", &status)),
        }
    }

    /// Whether the resident's binding still holds, asked of the IKD service:
    /// what the door does when the shared revocation marks cannot be read.
    pub(crate) async fn confirm_with_ikd(&self, citizen: &Citizen) -> Result<(), ApiError> {
        let resolved = self.resolve(&citizen.subject).await?;
        if resolved.status == ikd::IdentityStatus::Active as i32 && resolved.device_id == citizen.device {
            Ok(())
        } else {
            Err(revoked())
        }
    }

    /// The resident's family card, read from the population service once per verified token.
    pub(crate) async fn family(&self, citizen: &Citizen) -> Result<Family, ApiError> {
        citizen
            .family
            .get_or_try_init(|| async {
                let mut people = self.inner.population.clone();
                let resident = people
                    .get_resident(upstream::request(population::GetResidentRequest {
                        nik: citizen.nik.clone(),
                    }))
                    .await
                    .map_err(|status| upstream::refusal("population", &status))?
                    .into_inner()
                    .resident
                    .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "population sent no resident"))?;
                let family = people
                    .get_family(upstream::request(population::GetFamilyRequest {
                        kk: resident.kk.clone(),
                    }))
                    .await
                    .map_err(|status| upstream::refusal("population", &status))?
                    .into_inner()
                    .family
                    .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "population sent no family"))?;
                Ok(Family {
                    kk: family.kk,
                    members: family.members.into_iter().map(|m| m.nik).collect(),
                })
            })
            .await
            .cloned()
    }
}

fn expired() -> ApiError {
    unauthenticated(
        ErrorReason::TokenExpired,
        "the session token has expired; ask IssueSessionToken for a new one",
    )
}

pub(crate) fn revoked() -> ApiError {
    unauthenticated(
        ErrorReason::DeviceRevoked,
        "this device's IKD binding is no longer active; activate IKD again",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_header_is_read_strictly() {
        assert_eq!(bearer(b"Bearer abc.def.ghi").ok(), Some("abc.def.ghi"));
        assert_eq!(bearer(b"bearer abc").ok(), Some("abc"));
        for bad in [&b"abc"[..], b"Basic abc", b"Bearer ", b"Bearer", &[0xff, 0xfe]] {
            let err = bearer(bad).expect_err("refused");
            assert_eq!(err.code(), ErrorCode::Unauthenticated, "{bad:?}");
        }
        let long = format!("Bearer {}", "a".repeat(5000));
        assert!(bearer(long.as_bytes()).is_err());
    }

    #[test]
    fn a_certificate_without_a_principal_is_unauthenticated() {
        assert_eq!(certified(None).ok(), Some(None));
        let err = certified(Some(b"not a certificate")).expect_err("refused");
        assert_eq!(err.code(), ErrorCode::Unauthenticated);
    }

    #[test]
    fn a_citizen_is_labelled_by_device_never_by_nik() {
        let citizen = Citizen {
            nik: "3275014101900001".to_owned(),
            subject: "5b1f0c3e9d2a47a8b6c4e0f1a2b3c4d5".to_owned(),
            device: "dev-1".to_owned(),
            jkt: String::new(),
            family: Arc::default(),
        };
        let caller = Caller::Citizen(citizen.clone());
        assert_eq!(caller.label(), "adminduk://citizen/dev-1");
        assert!(!format!("{citizen:?}").contains("3275014101900001"));
        assert_eq!(caller.role(), Role::Citizen);
    }
}
