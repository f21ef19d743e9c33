//! Session tokens: a one-use challenge, signed by the bound device, buys a
//! short-lived token bound to the device's key.

use chrono::{DateTime, Utc};

use adminduk_kit::ApiError;
use adminduk_kit::nik::Nik;
use adminduk_kit::token::{Claims, ISSUER, verify_device_signature};

use super::{Ikd, NikQuery};
use crate::domain::{CHALLENGE_TTL, TOKEN_CONTEXT, TOKEN_TTL, new_challenge};
use crate::refusal::{challenge_invalid, internal, not_active, signature_invalid};
use crate::store::Identity;

/// A token challenge handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenChallenge {
    /// What the device signs.
    pub challenge: Vec<u8>,
    /// When it may no longer be answered.
    pub expires_at: DateTime<Utc>,
}

/// A phone's request for a session token, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueSessionToken {
    /// The resident's NIK.
    pub nik: Nik,
    /// A challenge from `CreateTokenChallenge` (it has the token prefix).
    pub challenge: Vec<u8>,
    /// The device's signature of it (64 bytes).
    pub signature: Vec<u8>,
}

/// A session token issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionToken {
    /// The signed token.
    pub token: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// The key that signed it.
    pub key_id: String,
}

impl Ikd {
    /// A one-use challenge for an active identity's device to sign.
    pub async fn create_token_challenge(&self, query: &NikQuery) -> Result<TokenChallenge, ApiError> {
        let nik = query.nik.as_str();
        self.active_identity(nik).await?;
        let challenge = new_challenge(TOKEN_CONTEXT).ok_or_else(internal)?;
        let expires_at = Utc::now() + CHALLENGE_TTL;
        self.store.add_challenge(&challenge, nik, expires_at).await?;
        Ok(TokenChallenge {
            challenge,
            expires_at,
        })
    }

    /// A session token for an active identity whose bound device signed a
    /// live challenge of its NIK, used up by this.
    pub async fn issue_session_token(&self, command: &IssueSessionToken) -> Result<SessionToken, ApiError> {
        let IssueSessionToken {
            nik,
            challenge,
            signature,
        } = command;
        let identity = self.active_identity(nik.as_str()).await?;
        if !verify_device_signature(&identity.device_public_key, challenge, signature) {
            return Err(signature_invalid());
        }
        let now = Utc::now();
        if !self.store.use_challenge(challenge, nik.as_str(), now).await? {
            return Err(challenge_invalid());
        }
        let key = self.keys.current().ok_or_else(internal)?;
        let expires_at = now + TOKEN_TTL;
        let token = key
            .sign(&claims(&identity, now, expires_at))
            .map_err(|_| internal())?;
        Ok(SessionToken {
            token,
            expires_at,
            key_id: key.kid().to_owned(),
        })
    }

    /// The NIK's identity if it is active; IKD_NOT_ACTIVE otherwise.
    async fn active_identity(&self, nik: &str) -> Result<Identity, ApiError> {
        self.store
            .identity(nik)
            .await?
            .filter(|i| i.active)
            .ok_or_else(not_active)
    }
}

/// A session token's claims for the identity, issued `now`.
fn claims(identity: &Identity, now: DateTime<Utc>, expires_at: DateTime<Utc>) -> Claims {
    Claims {
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
    }
}
