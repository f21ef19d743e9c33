//! Every conversion between IKD's messages and its domain, in one place:
//! a request becomes a checked command (or INVALID_ARGUMENT naming every
//! field at fault), a workflow's answer becomes its response. Requests and
//! answers are destructured whole, so a new field does not compile until it
//! is handled here.

use adminduk_kit::codes::service_point_field;
use adminduk_kit::nik::{Nik, nik_field, require_nik};
use adminduk_kit::token::{VerifyingKey, check_device_public_key};
use adminduk_kit::{ApiError, ErrorCode, Violations, text};
use adminduk_proto::convert::timestamp;
use adminduk_proto::ikd::v1 as pb;

use crate::domain::{TOKEN_CONTEXT, check_email, check_phone};
use crate::keys::KeyRing;
use crate::service::{
    Activated, Adoption, AreaQuery, CodeSent, CompleteActivation, IdentityState, IssueSessionToken, NikQuery,
    Office, Revoke, Revoked, SessionToken, StartActivation, Started, StatusReport, SubjectQuery,
    TokenChallenge, VerifyAtOffice,
};
use crate::store::Identity;

/// The most characters of an id, a nonce or an officer's id.
const MAX_ID_CHARS: usize = 64;
/// The most characters of an e-mail address (RFC 5321's path limit).
const MAX_EMAIL_CHARS: usize = 254;
/// The most characters of a phone number as typed, spaces and dashes included.
const MAX_PHONE_CHARS: usize = 32;
/// The most characters of a revocation's reason.
const MAX_REASON_CHARS: usize = 500;

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

/// The office doing the work: its officer's id, and a service point code of the right shape.
fn office_fields(officer_id: &str, service_point_code: &str, out: &mut Violations) -> Office {
    Office {
        officer_id: id_field("officer_id", officer_id, out),
        service_point_code: service_point_field("service_point_code", service_point_code, out),
    }
}

/// A device's signature: 64 bytes of Ed25519.
fn signature_field(signature: &[u8], out: &mut Violations) {
    if signature.len() != 64 {
        out.add("signature", "must be a 64-byte Ed25519 signature");
    }
}

/// The NIK a request names, once its violations (if any) were answered.
fn checked_nik(nik: Option<Nik>) -> Result<Nik, ApiError> {
    nik.ok_or_else(invalid_request)
}

/// A request whose checks passed yet left a field unread (never expected).
fn invalid_request() -> ApiError {
    ApiError::new(ErrorCode::InvalidArgument, "invalid request")
}

impl TryFrom<pb::StartActivationRequest> for StartActivation {
    type Error = ApiError;

    fn try_from(request: pb::StartActivationRequest) -> Result<Self, ApiError> {
        let pb::StartActivationRequest {
            nik,
            email,
            phone,
            device_public_key,
        } = request;
        let mut v = Violations::new();
        let nik = nik_field("nik", &nik, &mut v);
        let email = contact_field("email", &email, MAX_EMAIL_CHARS, check_email, &mut v);
        let phone = contact_field("phone", &phone, MAX_PHONE_CHARS, check_phone, &mut v);
        // A key of small order (the identity among them) would let a
        // constant signature pass for every challenge: refused here, and
        // by the verifier for whatever is stored.
        if let Err(weak) = check_device_public_key(&device_public_key) {
            v.add("device_public_key", weak.to_string());
        }
        v.into_result()?;
        let (Some(nik), Some(email), Some(phone)) = (nik, email, phone) else {
            return Err(invalid_request());
        };
        Ok(Self {
            nik,
            email,
            phone,
            device_public_key,
        })
    }
}

impl TryFrom<pb::VerifyAtOfficeRequest> for VerifyAtOffice {
    type Error = ApiError;

    fn try_from(request: pb::VerifyAtOfficeRequest) -> Result<Self, ApiError> {
        let pb::VerifyAtOfficeRequest {
            activation_id,
            nonce,
            officer_id,
            service_point_code,
        } = request;
        let mut v = Violations::new();
        let activation_id = id_field("activation_id", &activation_id, &mut v);
        let nonce = id_field("nonce", &nonce, &mut v);
        let office = office_fields(&officer_id, &service_point_code, &mut v);
        v.into_result()?;
        Ok(Self {
            activation_id,
            nonce,
            office,
        })
    }
}

impl TryFrom<pb::CompleteActivationRequest> for CompleteActivation {
    type Error = ApiError;

    fn try_from(request: pb::CompleteActivationRequest) -> Result<Self, ApiError> {
        let pb::CompleteActivationRequest {
            activation_id,
            code,
            signature,
        } = request;
        let mut v = Violations::new();
        let activation_id = id_field("activation_id", &activation_id, &mut v);
        if !adminduk_kit::is_digits(code.trim(), 6) {
            v.add("code", "must be the 6-digit code");
        }
        signature_field(&signature, &mut v);
        v.into_result()?;
        Ok(Self {
            activation_id,
            code,
            signature,
        })
    }
}

/// A request whose one field is the NIK it asks about.
macro_rules! nik_query_from {
    ($($request:ident),+) => {$(
        impl TryFrom<pb::$request> for NikQuery {
            type Error = ApiError;

            fn try_from(request: pb::$request) -> Result<Self, ApiError> {
                let pb::$request { nik } = request;
                Ok(Self {
                    nik: require_nik("nik", &nik)?,
                })
            }
        }
    )+};
}
nik_query_from!(GetStatusRequest, CreateTokenChallengeRequest);

impl TryFrom<pb::IssueSessionTokenRequest> for IssueSessionToken {
    type Error = ApiError;

    fn try_from(request: pb::IssueSessionTokenRequest) -> Result<Self, ApiError> {
        let pb::IssueSessionTokenRequest {
            nik,
            challenge,
            signature,
        } = request;
        let mut v = Violations::new();
        let nik = nik_field("nik", &nik, &mut v);
        if !challenge.starts_with(TOKEN_CONTEXT) {
            v.add("challenge", "must be a challenge from CreateTokenChallenge");
        }
        signature_field(&signature, &mut v);
        v.into_result()?;
        Ok(Self {
            nik: checked_nik(nik)?,
            challenge,
            signature,
        })
    }
}

impl TryFrom<pb::RevokeRequest> for Revoke {
    type Error = ApiError;

    fn try_from(request: pb::RevokeRequest) -> Result<Self, ApiError> {
        let pb::RevokeRequest {
            nik,
            reason,
            officer_id,
            service_point_code,
        } = request;
        let mut v = Violations::new();
        let nik = nik_field("nik", &nik, &mut v);
        let reason = text::required("reason", &reason, MAX_REASON_CHARS, &mut v);
        let office = office_fields(&officer_id, &service_point_code, &mut v);
        v.into_result()?;
        Ok(Self {
            nik: checked_nik(nik)?,
            reason,
            office,
        })
    }
}

impl TryFrom<pb::ResolveSubjectRequest> for SubjectQuery {
    type Error = ApiError;

    fn try_from(request: pb::ResolveSubjectRequest) -> Result<Self, ApiError> {
        let pb::ResolveSubjectRequest { subject } = request;
        // Subjects are 128 random bits in lowercase hex; anything else names no one.
        if subject.len() != 32 || !subject.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ApiError::invalid_field(
                "subject",
                "must be a session token's subject: 32 lowercase hex digits",
            ));
        }
        Ok(Self { subject })
    }
}

impl TryFrom<pb::GetAdoptionRequest> for AreaQuery {
    type Error = ApiError;

    fn try_from(request: pb::GetAdoptionRequest) -> Result<Self, ApiError> {
        let pb::GetAdoptionRequest { area_code } = request;
        adminduk_kit::codes::area_code("area_code", &area_code)?;
        Ok(Self { area_code })
    }
}

impl From<&Started> for pb::StartActivationResponse {
    fn from(started: &Started) -> Self {
        let Started {
            activation_id,
            nonce: _, // in the QR payload
            challenge,
            expires_at,
        } = started;
        Self {
            activation_id: activation_id.clone(),
            qr_payload: started.qr_payload(),
            challenge: challenge.clone(),
            expire_time: Some(timestamp(*expires_at)),
        }
    }
}

impl From<&CodeSent> for pb::VerifyAtOfficeResponse {
    fn from(sent: &CodeSent) -> Self {
        let CodeSent { code_expires_at } = sent;
        Self {
            code_expire_time: Some(timestamp(*code_expires_at)),
        }
    }
}

impl From<&Activated> for pb::CompleteActivationResponse {
    fn from(activated: &Activated) -> Self {
        let Activated { device_id } = activated;
        Self {
            status: pb::IdentityStatus::Active.into(),
            device_id: device_id.clone(),
        }
    }
}

impl From<IdentityState> for pb::IdentityStatus {
    fn from(state: IdentityState) -> Self {
        match state {
            IdentityState::Active => Self::Active,
            IdentityState::Pending => Self::Pending,
            IdentityState::Revoked => Self::Revoked,
            IdentityState::NotActivated => Self::NotActivated,
        }
    }
}

impl From<&StatusReport> for pb::GetStatusResponse {
    fn from(report: &StatusReport) -> Self {
        let StatusReport {
            state,
            device_id,
            activated_at,
            ineligible,
        } = report;
        Self {
            status: pb::IdentityStatus::from(*state).into(),
            device_id: device_id.clone(),
            activate_time: activated_at.map(timestamp),
            ineligible: ineligible.clone(),
        }
    }
}

impl From<&TokenChallenge> for pb::CreateTokenChallengeResponse {
    fn from(issued: &TokenChallenge) -> Self {
        let TokenChallenge {
            challenge,
            expires_at,
        } = issued;
        Self {
            challenge: challenge.clone(),
            expire_time: Some(timestamp(*expires_at)),
        }
    }
}

impl From<&SessionToken> for pb::IssueSessionTokenResponse {
    fn from(issued: &SessionToken) -> Self {
        let SessionToken {
            token,
            expires_at,
            key_id,
        } = issued;
        Self {
            token: token.clone(),
            expire_time: Some(timestamp(*expires_at)),
            key_id: key_id.clone(),
        }
    }
}

impl From<&KeyRing> for pb::ListSigningKeysResponse {
    fn from(keys: &KeyRing) -> Self {
        let keys = keys
            .verifying_keys()
            .into_iter()
            .map(|VerifyingKey { kid, public_key }| pb::SigningKey {
                key_id: kid,
                public_key,
                algorithm: "EdDSA".to_owned(),
            })
            .collect();
        Self { keys }
    }
}

impl From<&Revoked> for pb::RevokeResponse {
    fn from(revoked: &Revoked) -> Self {
        let Revoked { device_id: _ } = revoked;
        Self {
            status: pb::IdentityStatus::Revoked.into(),
        }
    }
}

impl From<&Identity> for pb::ResolveSubjectResponse {
    fn from(identity: &Identity) -> Self {
        let Identity {
            nik,
            active,
            device_id,
            device_public_key: _,
            district_code: _,
            activated_at: _,
            subject: _,
        } = identity;
        let state = if *active {
            IdentityState::Active
        } else {
            IdentityState::Revoked
        };
        Self {
            nik: nik.clone(),
            status: pb::IdentityStatus::from(state).into(),
            // A revoked identity is bound to no device.
            device_id: if *active { device_id.clone() } else { String::new() },
        }
    }
}

impl From<&Adoption> for pb::GetAdoptionResponse {
    fn from(adoption: &Adoption) -> Self {
        let Adoption {
            area_code,
            eligible,
            active,
        } = adoption;
        Self {
            area_code: area_code.clone(),
            eligible: *eligible,
            active: *active,
            share: adoption.share(),
            gap_to_25_percent: adoption.gap_to(0.25),
            gap_to_30_percent: adoption.gap_to(0.30),
        }
    }
}
