//! Session tokens: compact JWS signed with Ed25519 (EdDSA), with a key id for
//! rotation. The IKD service signs them; the gateway verifies them offline
//! with the public keys the IKD service lists.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// The issuer named in every token.
pub const ISSUER: &str = "adminduk-ikd";

/// What a session token says. Its `Debug` masks the subject as it would a NIK.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer, always [`ISSUER`].
    pub iss: String,
    /// The resident's opaque subject, never the NIK (a token is readable by whoever holds it).
    pub sub: String,
    /// The bound device's id.
    pub dev: String,
    /// The token's id.
    pub jti: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            iss,
            sub,
            dev,
            jti,
            iat,
            exp,
        } = self;
        f.debug_struct("Claims")
            .field("iss", iss)
            .field("sub", &crate::mask_nik(sub))
            .field("dev", dev)
            .field("jti", jti)
            .field("iat", iat)
            .field("exp", exp)
            .finish()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// A key that signs tokens.
pub struct SigningKey {
    kid: String,
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Why a token or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// Signed by no key we know.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Past its expiry (with the leeway).
    #[error("token expired")]
    Expired,
    /// Another issuer, or another algorithm.
    #[error("token not issued by adminduk")]
    WrongIssuer,
    /// A key could not be made or read.
    #[error("bad key")]
    BadKey,
}

impl SigningKey {
    /// A new random key.
    pub fn generate(kid: impl Into<String>) -> Result<Self, TokenError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| TokenError::BadKey)?;
        Self::from_pkcs8(kid, pkcs8.as_ref())
    }

    /// A key from its stored PKCS#8 form.
    pub fn from_pkcs8(kid: impl Into<String>, pkcs8: &[u8]) -> Result<Self, TokenError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| TokenError::BadKey)?;
        Ok(Self {
            kid: kid.into(),
            pair,
            pkcs8: pkcs8.to_vec(),
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The PKCS#8 form, to store.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key, 32 bytes.
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// Signs claims into a compact JWS.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let header = Header {
            alg: "EdDSA".into(),
            typ: "JWT".into(),
            kid: self.kid.clone(),
        };
        let header = serde_json::to_vec(&header).map_err(|_| TokenError::Malformed)?;
        let claims = serde_json::to_vec(claims).map_err(|_| TokenError::Malformed)?;
        let signing_input = format!("{}.{}", B64.encode(header), B64.encode(claims));
        let signature = self.pair.sign(signing_input.as_bytes());
        Ok(format!("{signing_input}.{}", B64.encode(signature.as_ref())))
    }
}

/// A public key that verifies tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    /// Key id.
    pub kid: String,
    /// Ed25519 public key, 32 bytes.
    pub public_key: Vec<u8>,
}

/// Verifies a token against known keys at `now` (seconds), allowing `leeway` seconds of clock skew.
pub fn verify(token: &str, keys: &[VerifyingKey], now: i64, leeway: i64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let decode = |part: &str| B64.decode(part).map_err(|_| TokenError::Malformed);
    let parsed: Header = serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
    if parsed.alg != "EdDSA" {
        return Err(TokenError::WrongIssuer);
    }
    let key = keys
        .iter()
        .find(|k| k.kid == parsed.kid)
        .ok_or(TokenError::UnknownKey)?;
    let signing_input = &token[..header.len() + 1 + claims.len()];
    UnparsedPublicKey::new(&ED25519, &key.public_key)
        .verify(signing_input.as_bytes(), &decode(signature)?)
        .map_err(|_| TokenError::BadSignature)?;
    let claims: Claims = serde_json::from_slice(&decode(claims)?).map_err(|_| TokenError::Malformed)?;
    if claims.iss != ISSUER {
        return Err(TokenError::WrongIssuer);
    }
    if now > claims.exp + leeway {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// Verifies an Ed25519 signature by a device key.
pub fn verify_device_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    public_key.len() == 32
        && UnparsedPublicKey::new(&ED25519, public_key)
            .verify(message, signature)
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: "3275014101900001".into(),
            dev: "dev-1".into(),
            jti: "t-1".into(),
            iat: 1_000,
            exp,
        }
    }

    #[test]
    fn a_signed_token_verifies_with_its_key_only() {
        let key = SigningKey::generate("k1").expect("key");
        let other = SigningKey::generate("k2").expect("key");
        let token = key.sign(&claims(2_000)).expect("sign");
        let keys = [VerifyingKey {
            kid: "k1".into(),
            public_key: key.public_key(),
        }];
        assert_eq!(verify(&token, &keys, 1_500, 0), Ok(claims(2_000)));
        assert_eq!(verify(&token, &keys, 2_100, 0), Err(TokenError::Expired));
        assert_eq!(
            verify(&token, &keys, 2_030, 60).map(|c| c.sub),
            Ok("3275014101900001".into())
        );
        let wrong = [VerifyingKey {
            kid: "k1".into(),
            public_key: other.public_key(),
        }];
        assert_eq!(verify(&token, &wrong, 1_500, 0), Err(TokenError::BadSignature));
        assert_eq!(verify(&token, &[], 1_500, 0), Err(TokenError::UnknownKey));
    }

    #[test]
    fn tampered_tokens_fail() {
        let key = SigningKey::generate("k1").expect("key");
        let keys = [VerifyingKey {
            kid: "k1".into(),
            public_key: key.public_key(),
        }];
        let token = key.sign(&claims(2_000)).expect("sign");
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = B64.encode(
            serde_json::to_vec(&Claims {
                sub: "3275014101900002".into(),
                ..claims(2_000)
            })
            .expect("json"),
        );
        parts[1] = &forged;
        assert_eq!(
            verify(&parts.join("."), &keys, 1_500, 0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(verify("a.b", &keys, 1_500, 0), Err(TokenError::Malformed));
        assert_eq!(verify("!!.??.**", &keys, 1_500, 0), Err(TokenError::Malformed));
        let restored = SigningKey::from_pkcs8("k1", key.pkcs8()).expect("restore");
        assert_eq!(restored.public_key(), key.public_key());
    }

    #[test]
    fn device_signatures_verify() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
        let sig = pair.sign(b"challenge");
        assert!(verify_device_signature(
            pair.public_key().as_ref(),
            b"challenge",
            sig.as_ref()
        ));
        assert!(!verify_device_signature(
            pair.public_key().as_ref(),
            b"other",
            sig.as_ref()
        ));
        assert!(!verify_device_signature(&[0; 31], b"challenge", sig.as_ref()));
    }

    #[test]
    fn claims_never_show_a_whole_nik_in_debug() {
        let shown = format!("{:?}", claims(1));
        assert!(!shown.contains("3275014101900001"), "{shown}");
        assert!(shown.contains("3275********0001"), "{shown}");
    }
}
