//! Session tokens: compact JWS signed with Ed25519 (EdDSA), with a key id for
//! rotation. The IKD service signs them; the gateway verifies them offline
//! with the public keys the IKD service lists.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// The issuer named in every token.
pub const ISSUER: &str = "adminduk-ikd";

/// The shared-cache key that marks a device's binding revoked: the IKD service
/// sets it when it revokes, and every gateway replica checks it before it
/// accepts a token of that device.
pub fn revoked_device_key(device_id: &str) -> String {
    format!("revoked-device:{device_id}")
}

/// The shared-cache key of a resident's IKD status as the gateway last read
/// it (IKD first); the IKD service deletes it whenever the status changes.
/// Both must run with the same `telemetry.nik_ref_key` for the deletion to
/// reach the gateway's entry (else the entry simply lives out its short TTL).
pub fn ikd_status_key(nik: &str) -> String {
    format!("ikd-status:{}", crate::mask::nik_key(nik))
}

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
    /// The device key the token is bound to (RFC 7800): a change made with the
    /// token carries a proof signed by that key ([`crate::proof`]).
    #[serde(default)]
    pub cnf: Confirmation,
}

/// A token's confirmation claim: the thumbprint of its device key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The RFC 7638 thumbprint of the device's Ed25519 key ([`crate::proof::thumbprint`]).
    pub jkt: String,
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
            cnf,
        } = self;
        f.debug_struct("Claims")
            .field("iss", iss)
            .field("sub", &crate::mask_nik(sub))
            .field("dev", dev)
            .field("jti", jti)
            .field("iat", iat)
            .field("exp", exp)
            .field("cnf", cnf)
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

impl From<adminduk_proto::ikd::v1::SigningKey> for VerifyingKey {
    /// A key as the IKD service lists it (`ListSigningKeys`).
    fn from(key: adminduk_proto::ikd::v1::SigningKey) -> Self {
        Self {
            kid: key.key_id,
            public_key: key.public_key,
        }
    }
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

/// The encodings of the points of small order (1, 2, 4 and 8) of
/// edwards25519, compared with the top bit of the last byte (the sign of x)
/// cleared; the same 7 as libsodium's `has_small_order` blocklist
/// (`crypto_core/ed25519/ref10/ed25519_ref10.c`). Checked from first
/// principles with RFC 8032's decoding (section 5.1.3) in pure Python: each
/// decodes to a point whose order divides 8, and they are every encoding of
/// the 8 points of the 8-torsion whose y is below 2^255.
const SMALL_ORDER: [[u8; 32]; 7] = [
    // Order 1, y = 1: the identity.
    [
        0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ],
    // Order 1, y = p + 1 (not canonical).
    [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ],
    // Order 2, y = p - 1.
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ],
    // Order 4, y = 0.
    [0; 32],
    // Order 4, y = p (not canonical).
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ],
    // Order 8.
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0, 0xd5,
        0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05,
    ],
    // Order 8.
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f, 0x2a,
        0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a,
    ],
];

/// The order of the edwards25519 base point, L = 2^252 +
/// 27742317777372353535851937790883648493, little-endian.
const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Why a device's public key cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WeakDeviceKey {
    /// Not 32 bytes.
    #[error("must be a 32-byte Ed25519 public key")]
    Length,
    /// A point of small order (the identity among them): a signature
    /// "verifies" for it with no private key at all.
    #[error("must not be a point of small order (such a key signs without a private key)")]
    SmallOrder,
    /// y is not below p: the encoding is not canonical.
    #[error("must be a canonical encoding of an Ed25519 point")]
    NotCanonical,
}

/// Whether a device public key may be bound: 32 bytes, canonical (y < p),
/// not of small order. ring's Ed25519 checks none of the last two, and for a
/// key of small order a constant signature (R = identity, S = 0) verifies
/// every message.
pub fn check_device_public_key(public_key: &[u8]) -> Result<(), WeakDeviceKey> {
    let key: &[u8; 32] = public_key.try_into().map_err(|_| WeakDeviceKey::Length)?;
    let mut y = *key;
    y[31] &= 0x7f;
    if SMALL_ORDER.contains(&y) {
        return Err(WeakDeviceKey::SmallOrder);
    }
    // y >= p = 2^255 - 19: bytes 1..31 all 0xff, the top byte 0x7f (sign
    // cleared), and the lowest at least 0xed. Those of small order are above.
    if y[31] == 0x7f && y[1..31].iter().all(|&b| b == 0xff) && y[0] >= 0xed {
        return Err(WeakDeviceKey::NotCanonical);
    }
    Ok(())
}

/// Whether a signature's S is below the group order L (RFC 8032, 5.1.7):
/// S + L verifies wherever S does, so a signature made otherwise is forged.
fn canonical_s(signature: &[u8]) -> bool {
    let Some(s) = signature.get(32..64) else {
        return false;
    };
    // Little-endian: compare from the most significant byte down.
    for (a, b) in s.iter().rev().zip(GROUP_ORDER.iter().rev()) {
        if a != b {
            return a < b;
        }
    }
    false
}

/// Verifies an Ed25519 signature by a device key. A key that
/// [`check_device_public_key`] refuses verifies nothing, whatever is stored,
/// and so does a signature of 64 bytes whose S is not below L.
pub fn verify_device_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    check_device_public_key(public_key).is_ok()
        && signature.len() == 64
        && canonical_s(signature)
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
            cnf: Confirmation { jkt: "thumb".into() },
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

    /// R = the identity, S = 0: what verifies for a key of small order
    /// without any private key.
    fn constant_forgery() -> [u8; 64] {
        let mut sig = [0u8; 64];
        sig[0] = 1;
        sig
    }

    #[test]
    fn ring_alone_accepts_a_constant_forgery_for_every_small_order_key() {
        // The list is what it says: for each canonical entry some message
        // has [k]A = identity, and ring then takes R = identity, S = 0.
        for key in SMALL_ORDER {
            let canonical = !(key[31] == 0x7f && key[1..31].iter().all(|&b| b == 0xff) && key[0] >= 0xed);
            if !canonical {
                continue;
            }
            let fooled = (0u32..256).any(|i| {
                UnparsedPublicKey::new(&ED25519, &key)
                    .verify(&i.to_le_bytes(), &constant_forgery())
                    .is_ok()
            });
            assert!(fooled, "{key:02x?}");
        }
        let identity = SMALL_ORDER[0];
        assert!(
            UnparsedPublicKey::new(&ED25519, &identity)
                .verify(b"any challenge", &constant_forgery())
                .is_ok(),
            "ring does not refuse the identity by itself"
        );
    }

    #[test]
    fn keys_of_small_order_verify_nothing_whatever_the_sign_bit() {
        for key in SMALL_ORDER {
            let mut signed = key;
            signed[31] |= 0x80;
            for key in [key, signed] {
                assert!(check_device_public_key(&key).is_err(), "{key:02x?}");
                for message in [&b"any challenge"[..], b"", &0u32.to_le_bytes()] {
                    assert!(
                        !verify_device_signature(&key, message, &constant_forgery()),
                        "{key:02x?}"
                    );
                }
            }
        }
        // The attack as the tester made it: the identity, then R = identity, S = 0.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(check_device_public_key(&identity), Err(WeakDeviceKey::SmallOrder));
        assert!(!verify_device_signature(
            &identity,
            b"challenge",
            &constant_forgery()
        ));
        assert_eq!(check_device_public_key(&[0; 32]), Err(WeakDeviceKey::SmallOrder));
        let mut top = [0u8; 32];
        top[31] = 0x80;
        assert_eq!(check_device_public_key(&top), Err(WeakDeviceKey::SmallOrder));
    }

    #[test]
    fn keys_whose_y_is_not_below_p_are_refused() {
        // y = p + 2 ..= 2^255 - 1 (p and p + 1 are of small order), either sign.
        for low in 0xefu8..=0xff {
            let mut key = [0xffu8; 32];
            key[0] = low;
            key[31] = 0x7f;
            assert_eq!(
                check_device_public_key(&key),
                Err(WeakDeviceKey::NotCanonical),
                "{low:#x}"
            );
            key[31] = 0xff;
            assert_eq!(
                check_device_public_key(&key),
                Err(WeakDeviceKey::NotCanonical),
                "{low:#x}"
            );
        }
        // p - 2, canonical, passes this check (ring decides whether it is a point).
        let mut key = [0xffu8; 32];
        key[0] = 0xeb;
        key[31] = 0x7f;
        assert_eq!(check_device_public_key(&key), Ok(()));
        assert_eq!(check_device_public_key(&[7; 31]), Err(WeakDeviceKey::Length));
        assert_eq!(check_device_public_key(&[7; 33]), Err(WeakDeviceKey::Length));
    }

    #[test]
    fn a_signature_whose_s_is_not_below_l_is_refused() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
        let key = pair.public_key().as_ref();
        let sig = pair.sign(b"challenge");
        let mut sig: [u8; 64] = sig.as_ref().try_into().expect("64 bytes");
        assert!(verify_device_signature(key, b"challenge", &sig));
        // S + L: the same scalar, another encoding.
        let mut carry = 0u16;
        for (s, l) in sig[32..].iter_mut().zip(GROUP_ORDER) {
            let sum = u16::from(*s) + u16::from(l) + carry;
            *s = (sum & 0xff) as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0, "S + L < 2^256");
        assert!(!canonical_s(&sig));
        assert!(!verify_device_signature(key, b"challenge", &sig));
        // L itself and all ones are not below L; L - 1 and 0 are.
        let mut at = [0u8; 64];
        at[32..].copy_from_slice(&GROUP_ORDER);
        assert!(!canonical_s(&at));
        at[32] -= 1;
        assert!(canonical_s(&at));
        assert!(!canonical_s(&[0xff; 64]));
        assert!(canonical_s(&[0; 64]));
        assert!(!canonical_s(&[0; 63]));
    }

    #[test]
    fn claims_never_show_a_whole_nik_in_debug() {
        let shown = format!("{:?}", claims(1));
        assert!(!shown.contains("3275014101900001"), "{shown}");
        assert!(shown.contains("3275********0001"), "{shown}");
    }
}
