//! Activation: started on the phone, verified at an office (which sends a
//! code), completed on the phone with the code and the device's signature.

use chrono::{DateTime, Utc};

use adminduk_kit::ApiError;
use adminduk_kit::nik::Nik;
use adminduk_kit::token::{revoked_device_key, verify_device_signature};

use super::{Attempt, Ikd, Office};
use crate::domain::{
    ACTIVATION_CONTEXT, ACTIVATION_TTL, ActivationState, CODE_TTL, MAX_ATTEMPTS, check_eligibility,
    device_id, hash_code, hex, new_challenge, new_code, random_bytes, same_hash,
};
use crate::refusal::{
    activation_expired, activation_not_found, already_active_here, already_completed, code_already_sent,
    code_expired, internal, nonce_mismatch, not_verified, signature_invalid, too_many_attempts, wrong_code,
};
use crate::store::{Activation, NewActivation, StoreError};

/// A phone's request to start an activation, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartActivation {
    /// The resident's NIK.
    pub nik: Nik,
    /// Where the office's code is sent (lowercased).
    pub email: String,
    /// The resident's mobile number (`+628…`).
    pub phone: String,
    /// The device's Ed25519 public key (not of small order).
    pub device_public_key: Vec<u8>,
}

/// A started activation, as the phone shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The activation's id.
    pub activation_id: String,
    /// The nonce the office's scan must present.
    pub nonce: String,
    /// What the device signs to complete it.
    pub challenge: Vec<u8>,
    /// When it lapses.
    pub expires_at: DateTime<Utc>,
}

impl Started {
    /// What the phone shows as a QR code for the office to scan.
    pub fn qr_payload(&self) -> String {
        format!("IKD1:{}:{}", self.activation_id, self.nonce)
    }
}

/// An office's scan of an activation's QR code, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyAtOffice {
    /// The activation.
    pub activation_id: String,
    /// The nonce from the QR code.
    pub nonce: String,
    /// The office, and the officer who checked the resident's face.
    pub office: Office,
}

/// A code sent to the resident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeSent {
    /// When the code stops working.
    pub code_expires_at: DateTime<Utc>,
}

/// A phone's request to complete an activation, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteActivation {
    /// The activation.
    pub activation_id: String,
    /// The six-digit code, as typed.
    pub code: String,
    /// The device's signature of the activation's challenge (64 bytes).
    pub signature: Vec<u8>,
}

/// An identity made active on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activated {
    /// The device it is bound to.
    pub device_id: String,
}

/// The subject of the message that carries a code.
const CODE_SUBJECT: &str = "Kode aktivasi IKD";

/// The message that carries a code, in Indonesian, with when it stops working.
fn code_message(code: &str, code_expires_at: DateTime<Utc>) -> String {
    format!(
        "Kode aktivasi IKD Anda: {code}\nBerlaku sampai {} WIB. Jangan berikan kode ini kepada siapa pun, termasuk petugas.",
        code_expires_at
            .with_timezone(&adminduk_kit::time::wib())
            .format("%H:%M")
    )
}

impl Ikd {
    /// Starts an activation: refused while the identity is active, or when
    /// the population service's record makes the resident ineligible; the
    /// store refuses a start while another holds the NIK.
    pub async fn start_activation(&self, command: StartActivation) -> Result<Started, ApiError> {
        let StartActivation {
            nik,
            email,
            phone,
            device_public_key,
        } = command;
        let now = Utc::now();
        self.refuse_if_active(nik.as_str(), &device_public_key).await?;
        let (facts, district) = self.population.resident_facts(nik.as_str()).await?;
        check_eligibility(facts, adminduk_kit::time::today_wib())?;
        let started = Started {
            activation_id: uuid::Uuid::now_v7().to_string(),
            nonce: random_bytes::<16>().map(|b| hex(&b)).ok_or_else(internal)?,
            challenge: new_challenge(ACTIVATION_CONTEXT).ok_or_else(internal)?,
            expires_at: now + ACTIVATION_TTL,
        };
        let activation = NewActivation {
            id: &started.activation_id,
            nik: nik.as_str(),
            email: &email,
            phone: &phone,
            device_public_key: &device_public_key,
            district_code: &district,
            nonce: &started.nonce,
            challenge: &started.challenge,
            expires_at: started.expires_at,
        };
        self.store.start_activation(&activation, now).await?;
        crate::service::count_stage("started");
        tracing::info!(nik = %adminduk_kit::mask::log_nik(nik.as_str()), activation = %started.activation_id, "activation started");
        Ok(started)
    }

    /// ALREADY_ACTIVE when the identity is active on this very device,
    /// DEVICE_ALREADY_BOUND when on another.
    async fn refuse_if_active(&self, nik: &str, device_public_key: &[u8]) -> Result<(), ApiError> {
        match self.store.identity(nik).await? {
            Some(identity) if identity.active && identity.device_public_key == device_public_key => {
                Err(already_active_here())
            }
            Some(identity) if identity.active => Err(StoreError::AlreadyActive.into()),
            _ => Ok(()),
        }
    }

    /// An office verified the resident: a code is drawn and queued for the
    /// resident's e-mail (only its salted hash is kept). The attempt names the
    /// office, and the NIK once the activation is read.
    pub async fn verify_at_office(
        &self,
        command: VerifyAtOffice,
        attempt: &mut Attempt,
    ) -> Result<CodeSent, ApiError> {
        let VerifyAtOffice {
            activation_id,
            nonce,
            office,
        } = command;
        attempt.at_office(&office);
        let activation = self.read_activation(&activation_id, attempt).await?;
        if !same_hash(&activation.nonce, &nonce) {
            return Err(nonce_mismatch());
        }
        let now = Utc::now();
        may_send_code(&activation, now)?;
        let code = new_code().ok_or_else(internal)?;
        let salt = random_bytes::<16>().ok_or_else(internal)?;
        let sent = CodeSent {
            code_expires_at: now + CODE_TTL,
        };
        let message = code_message(&code, sent.code_expires_at);
        self.store
            .verify_at_office(
                &activation.id,
                &hash_code(&salt, &code),
                &salt,
                sent.code_expires_at,
                &office.officer_id,
                &office.service_point_code,
                (&activation.email, CODE_SUBJECT, &message),
                now,
            )
            .await?;
        tracing::info!(activation = %activation.id, point = %office.service_point_code, "verified at office; code queued");
        Ok(sent)
    }

    /// Completes a verified activation with the code and the device's
    /// signature of its challenge: the device is bound, and the gateways'
    /// cached views of it and of the resident are dropped. A wrong code counts
    /// against the activation. The attempt names the NIK once it is read.
    pub async fn complete_activation(
        &self,
        command: CompleteActivation,
        attempt: &mut Attempt,
    ) -> Result<Activated, ApiError> {
        let CompleteActivation {
            activation_id,
            code,
            signature,
        } = command;
        let activation = self.read_activation(&activation_id, attempt).await?;
        let now = Utc::now();
        may_complete(&activation, now)?;
        if !verify_device_signature(&activation.device_public_key, &activation.challenge, &signature) {
            return Err(signature_invalid());
        }
        let matches = match (&activation.code_hash, &activation.code_salt) {
            (Some(hash), Some(salt)) => same_hash(hash, &hash_code(salt, &code)),
            _ => false,
        };
        if !matches {
            return Err(self.count_wrong_code(&activation, now).await);
        }
        let device = device_id(&activation.device_public_key);
        self.store.complete(&activation, &device, now).await?;
        crate::service::count_stage("completed");
        // A device bound again after a revocation may use tokens once more.
        if let Err(err) = self.cache.delete(&revoked_device_key(&device)).await {
            tracing::warn!(error = %err, "revocation mark not cleared; the gateway will ask the service");
        }
        // The gateway's IKD-first view of the resident is stale now.
        self.forget_status(&activation.nik).await;
        tracing::info!(nik = %adminduk_kit::mask::log_nik(&activation.nik), device = %device, "identity active");
        Ok(Activated { device_id: device })
    }

    /// The activation, or ACTIVATION_NOT_FOUND; the attempt is about its NIK from here on.
    async fn read_activation(&self, id: &str, attempt: &mut Attempt) -> Result<Activation, ApiError> {
        let activation = self
            .store
            .activation(id)
            .await?
            .ok_or_else(|| activation_not_found(id))?;
        attempt.about(&activation.nik);
        Ok(activation)
    }

    /// Counts a wrong code: the refusal tells how many attempts are left, or
    /// that the activation is locked now.
    async fn count_wrong_code(&self, activation: &Activation, now: DateTime<Utc>) -> ApiError {
        match self.store.wrong_code(activation, MAX_ATTEMPTS, now).await {
            Ok(attempts) => match (MAX_ATTEMPTS - attempts).max(0) {
                0 => too_many_attempts(),
                left => wrong_code(left),
            },
            Err(err) => err.into(),
        }
    }
}

/// The refusal for an activation that is over: completed, locked or lapsed.
fn refuse_if_over(state: ActivationState) -> Result<(), ApiError> {
    match state {
        ActivationState::Started | ActivationState::Verified => Ok(()),
        ActivationState::Completed => Err(already_completed()),
        ActivationState::Locked => Err(too_many_attempts()),
        ActivationState::Expired => Err(activation_expired()),
    }
}

/// Whether an office may send a code now. A code that expired is sent again,
/// fresh: the resident is not stuck until the activation lapses. A live one
/// is not replaced, so a second scan cannot reset the count of wrong codes.
fn may_send_code(activation: &Activation, now: DateTime<Utc>) -> Result<(), ApiError> {
    if activation.expires_at <= now {
        return Err(activation_expired());
    }
    refuse_if_over(activation.state)?;
    if activation.state == ActivationState::Verified
        && let Some(live_until) = activation.code_expires_at.filter(|t| *t > now)
    {
        return Err(code_already_sent(live_until));
    }
    Ok(())
}

/// Whether a code may be entered now: the activation verified, not lapsed,
/// and its code still working.
fn may_complete(activation: &Activation, now: DateTime<Utc>) -> Result<(), ApiError> {
    refuse_if_over(activation.state)?;
    if activation.state == ActivationState::Started {
        return Err(not_verified());
    }
    if activation.expires_at <= now {
        return Err(activation_expired());
    }
    if activation.code_expires_at.is_none_or(|t| t <= now) {
        return Err(code_expired());
    }
    Ok(())
}
