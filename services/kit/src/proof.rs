//! Proof of possession of a device key, after DPoP (RFC 9449): a session
//! token names its device key by thumbprint (`cnf.jkt`, RFC 7800), and a
//! change a resident makes carries a proof signed by that key over the method,
//! a timestamp, a one-time id and the token's hash. A broker who collected a
//! resident's token has no key to sign with; one who captured a proof can
//! send it once, within minutes, for that method and that token only.
//!
//! The proof travels in one header, [`PROOF_HEADER`], as four base64url or
//! decimal parts joined by dots: `<public key>.<issued at, ms>.<id>.<signature>`.
//! The signature is over [`message`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// The request header that carries a proof.
pub const PROOF_HEADER: &str = "x-adminduk-proof";

/// What every signed proof starts with, so no other signature of the device key is one.
const CONTEXT: &str = "adminduk.proof.v1";

/// The longest one-time id.
const MAX_ID: usize = 64;

/// The RFC 7638 thumbprint of an Ed25519 public key as an OKP JWK: base64url
/// SHA-256 of `{"crv":"Ed25519","kty":"OKP","x":"<key>"}`.
pub fn thumbprint(public_key: &[u8]) -> String {
    let jwk = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        B64.encode(public_key)
    );
    B64.encode(ring::digest::digest(&ring::digest::SHA256, jwk.as_bytes()))
}

/// The bytes a proof signs: the context, the method's path
/// (`/adminduk.printing.v1.PrintingService/SubmitPrintJob`), the time, the id,
/// and the SHA-256 of the token it goes with, one per line.
pub fn message(method: &str, issued_at_ms: i64, id: &str, token: &str) -> Vec<u8> {
    let token_hash = B64.encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()));
    format!("{CONTEXT}\n{method}\n{issued_at_ms}\n{id}\n{token_hash}").into_bytes()
}

/// A proof's header value, signed with a device key (the phone's side).
pub fn sign(
    key: &ring::signature::Ed25519KeyPair,
    method: &str,
    issued_at_ms: i64,
    id: &str,
    token: &str,
) -> String {
    use ring::signature::KeyPair as _;
    let signature = key.sign(&message(method, issued_at_ms, id, token));
    format!(
        "{}.{issued_at_ms}.{id}.{}",
        B64.encode(key.public_key().as_ref()),
        B64.encode(signature.as_ref())
    )
}

/// A proof whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The device key's thumbprint, to compare with the token's `cnf.jkt`.
    pub thumbprint: String,
    /// When the phone made it, ms since the epoch.
    pub issued_at_ms: i64,
    /// Its one-time id.
    pub id: String,
}

/// Why a proof is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Not four parts of the right kinds.
    #[error("the proof is not <key>.<ms>.<id>.<signature>")]
    Malformed,
    /// The signature does not verify for this method and token.
    #[error("the proof's signature does not verify")]
    BadSignature,
    /// Made too long ago, or in the future.
    #[error("the proof is too old or from the future")]
    Stale,
}

/// Checks a proof's form, its signature over this method and token, and its
/// time (within `skew_ms` of `now_ms`). Whether its key is the token's and its
/// id unused are the caller's to check.
pub fn verify(
    header: &str,
    method: &str,
    token: &str,
    now_ms: i64,
    skew_ms: i64,
) -> Result<Proof, ProofError> {
    let mut parts = header.split('.');
    let (Some(key), Some(issued_at), Some(id), Some(signature), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(ProofError::Malformed);
    };
    let public_key = B64.decode(key).map_err(|_| ProofError::Malformed)?;
    let signature = B64.decode(signature).map_err(|_| ProofError::Malformed)?;
    let issued_at_ms: i64 = issued_at.parse().map_err(|_| ProofError::Malformed)?;
    if id.is_empty()
        || id.len() > MAX_ID
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ProofError::Malformed);
    }
    if !crate::token::verify_device_signature(
        &public_key,
        &message(method, issued_at_ms, id, token),
        &signature,
    ) {
        return Err(ProofError::BadSignature);
    }
    if now_ms.abs_diff(issued_at_ms) > skew_ms.unsigned_abs() {
        return Err(ProofError::Stale);
    }
    Ok(Proof {
        thumbprint: thumbprint(&public_key),
        issued_at_ms,
        id: id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use ring::signature::{Ed25519KeyPair, KeyPair as _};

    use super::*;

    const METHOD: &str = "/adminduk.printing.v1.PrintingService/SubmitPrintJob";

    fn key() -> Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair")
    }

    #[test]
    fn the_thumbprint_is_rfc_7638s() {
        // RFC 8037 appendix A.3: the thumbprint of its Ed25519 example key.
        let x = B64
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .expect("base64url");
        assert_eq!(thumbprint(&x), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn a_proof_verifies_for_its_method_token_and_time_only() {
        let device = key();
        let header = sign(&device, METHOD, 1_000_000, "p-1", "the.token.here");
        let proof = verify(&header, METHOD, "the.token.here", 1_030_000, 120_000).expect("valid");
        assert_eq!(proof.thumbprint, thumbprint(device.public_key().as_ref()));
        assert_eq!(proof.id, "p-1");
        assert_eq!(
            verify(
                &header,
                "/adminduk.population.v1.PopulationService/UpdateResident",
                "the.token.here",
                1_000_000,
                120_000
            ),
            Err(ProofError::BadSignature)
        );
        assert_eq!(
            verify(&header, METHOD, "another.token", 1_000_000, 120_000),
            Err(ProofError::BadSignature)
        );
        assert_eq!(
            verify(&header, METHOD, "the.token.here", 1_200_001, 120_000),
            Err(ProofError::Stale)
        );
        assert_eq!(
            verify(&header, METHOD, "the.token.here", 800_000, 120_000),
            Err(ProofError::Stale)
        );
    }

    #[test]
    fn a_proof_with_another_key_or_a_changed_part_is_refused() {
        let device = key();
        let header = sign(&device, METHOD, 1_000_000, "p-1", "t");
        let parts: Vec<&str> = header.split('.').collect();
        let other = B64.encode(key().public_key().as_ref());
        let swapped = [other.as_str(), parts[1], parts[2], parts[3]].join(".");
        assert_eq!(
            verify(&swapped, METHOD, "t", 1_000_000, 120_000),
            Err(ProofError::BadSignature)
        );
        let later = [parts[0], "1000001", parts[2], parts[3]].join(".");
        assert_eq!(
            verify(&later, METHOD, "t", 1_000_000, 120_000),
            Err(ProofError::BadSignature)
        );
        for bad in ["", "a.b.c", "a.b.c.d.e", &header.replace('.', "!")] {
            assert_eq!(
                verify(bad, METHOD, "t", 1_000_000, 120_000),
                Err(ProofError::Malformed),
                "{bad}"
            );
        }
        let extreme = sign(&device, METHOD, i64::MIN, "p-2", "t");
        assert_eq!(
            verify(&extreme, METHOD, "t", i64::MAX, 120_000),
            Err(ProofError::Stale)
        );
        let long_id = sign(&device, METHOD, 1_000_000, &"x".repeat(65), "t");
        assert_eq!(
            verify(&long_id, METHOD, "t", 1_000_000, 120_000),
            Err(ProofError::Malformed)
        );
    }
}
