//! The rules of IKD activation, with no I/O: who is eligible, what a code
//! and a challenge are, how long each lives, how a device is named.

use chrono::NaiveDate;
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom as _, SystemRandom};

/// How long an activation code works after the office sends it.
pub const CODE_TTL: chrono::Duration = chrono::Duration::minutes(15);
/// How long a started activation may take in all (the visit to an office included).
pub const ACTIVATION_TTL: chrono::Duration = chrono::Duration::days(3);
/// How long a started activation that no office has verified holds the NIK
/// against a new start. Starting needs only the NIK, so anyone who knows it
/// can start one; holding it for the whole [`ACTIVATION_TTL`] let them block
/// the resident for three days. After this grace a new start replaces it;
/// within it, of starts racing at the same moment exactly one proceeds. A
/// verified activation is held while its code works (the office checked the
/// face).
pub const RESTART_GRACE: chrono::Duration = chrono::Duration::minutes(2);
/// Wrong codes before an activation locks.
pub const MAX_ATTEMPTS: i64 = 5;
/// How long a session token lives.
pub const TOKEN_TTL: chrono::Duration = chrono::Duration::minutes(15);
/// How long a token challenge may be answered.
pub const CHALLENGE_TTL: chrono::Duration = chrono::Duration::minutes(2);

/// Prefix of activation challenges: a device signature made for one purpose
/// can never be replayed for another.
pub const ACTIVATION_CONTEXT: &[u8] = b"adminduk.ikd.v1.activation:";
/// Prefix of token challenges.
pub const TOKEN_CONTEXT: &[u8] = b"adminduk.ikd.v1.token:";

/// The life of an activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationState {
    /// Started on the phone; waiting for the office.
    Started,
    /// Verified at an office; a code was sent.
    Verified,
    /// Completed: the identity is active.
    Completed,
    /// Too many wrong codes.
    Locked,
    /// Lapsed.
    Expired,
}

adminduk_kit::text_codes!(ActivationState {
    Started => "STARTED",
    Verified => "VERIFIED",
    Completed => "COMPLETED",
    Locked => "LOCKED",
    Expired => "EXPIRED",
});

/// Why a resident may not activate IKD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    /// No such resident.
    NotFound,
    /// Deceased.
    Deceased,
    /// Moved out of the area.
    MovedOut,
    /// Under 17 and never married.
    Under17,
    /// No recorded KTP-el (biometrics not recorded, or a duplicate record).
    NotRecorded,
}

impl Ineligible {
    /// The `why` reported with NOT_ELIGIBLE.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "NOT_FOUND",
            Self::Deceased => "DECEASED",
            Self::MovedOut => "MOVED_OUT",
            Self::Under17 => "UNDER_17",
            Self::NotRecorded => "NOT_RECORDED",
        }
    }
}

/// What eligibility needs to know of a resident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResidentFacts {
    /// Alive and registered here.
    pub alive: bool,
    /// Moved out.
    pub moved_out: bool,
    /// Date of birth.
    pub birth_date: NaiveDate,
    /// Married now or before.
    pub ever_married: bool,
    /// KTP-el recorded (recorded or print-ready).
    pub recorded: bool,
}

/// The KTP-el age: 17, or younger once married (UU 24/2013; DOMAIN.md, "KTP-el eligibility").
pub const KTP_AGE: i32 = 17;

/// The youngest age at which population records a marriage (its rule: the
/// marriage age is 19 under UU 16/2019, younger only by court dispensation,
/// never below 16). A record that says otherwise predates that rule and makes
/// nobody eligible.
pub const MIN_MARRIAGE_AGE: i32 = 16;

/// Whether the resident may activate IKD today: alive, 17 or older or ever
/// married, with a recorded KTP-el.
pub fn check_eligibility(facts: Option<ResidentFacts>, today: NaiveDate) -> Result<(), Ineligible> {
    let facts = facts.ok_or(Ineligible::NotFound)?;
    if facts.moved_out {
        return Err(Ineligible::MovedOut);
    }
    if !facts.alive {
        return Err(Ineligible::Deceased);
    }
    let age = age(facts.birth_date, today);
    if age < KTP_AGE && !(facts.ever_married && age >= MIN_MARRIAGE_AGE) {
        return Err(Ineligible::Under17);
    }
    if !facts.recorded {
        return Err(Ineligible::NotRecorded);
    }
    Ok(())
}

pub use adminduk_kit::time::age;

/// The id of a device: the first 10 bytes of its key's SHA-256, in hex.
pub fn device_id(public_key: &[u8]) -> String {
    let hash = digest(&SHA256, public_key);
    format!("dev-{}", hex(&hash.as_ref()[..10]))
}

pub use adminduk_kit::hex::{decode as unhex, encode as hex};

/// Random bytes from the system's generator.
pub fn random_bytes<const N: usize>() -> Option<[u8; N]> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).ok()?;
    Some(out)
}

/// A six-digit activation code, uniformly drawn.
pub fn new_code() -> Option<String> {
    // Rejection sampling keeps every code equally likely.
    loop {
        let bytes = random_bytes::<4>()?;
        let n = u32::from_le_bytes(bytes);
        if n < 4_294_000_000 {
            return Some(format!("{:06}", n % 1_000_000));
        }
    }
}

/// The stored form of a code: SHA-256 of salt and code. Only this is kept.
pub fn hash_code(salt: &[u8], code: &str) -> String {
    let mut input = salt.to_vec();
    input.extend_from_slice(code.trim().as_bytes());
    hex(digest(&SHA256, &input).as_ref())
}

/// Compares two hashes without an early exit.
pub fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A challenge: the purpose's prefix and 32 random bytes.
pub fn new_challenge(context: &[u8]) -> Option<Vec<u8>> {
    let mut challenge = context.to_vec();
    challenge.extend_from_slice(&random_bytes::<32>()?);
    Some(challenge)
}

/// A checked e-mail address (lowercased), or why not.
pub fn check_email(email: &str) -> Result<String, &'static str> {
    let email = email.trim().to_lowercase();
    let Some((local, domain)) = email.split_once('@') else {
        return Err("must be an e-mail address");
    };
    if local.is_empty() || !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
        return Err("must be an e-mail address");
    }
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be an e-mail address");
    }
    Ok(email)
}

/// An Indonesian mobile number in international form (`+62…`), or why not.
pub fn check_phone(phone: &str) -> Result<String, &'static str> {
    let digits: String = phone
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    let national = digits
        .strip_prefix("+62")
        .or_else(|| digits.strip_prefix("62"))
        .or_else(|| digits.strip_prefix('0'))
        .ok_or("must be an Indonesian number (+62… or 08…)")?;
    if !national.starts_with('8')
        || !(9..=12).contains(&national.len())
        || !national.bytes().all(|b| b.is_ascii_digit())
    {
        return Err("must be an Indonesian mobile number (+628…)");
    }
    Ok(format!("+62{national}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("date")
    }

    fn facts() -> ResidentFacts {
        ResidentFacts {
            alive: true,
            moved_out: false,
            birth_date: d(2000, 1, 1),
            ever_married: false,
            recorded: true,
        }
    }

    #[test]
    fn eligibility_follows_the_ktp_rules() {
        let today = d(2026, 11, 22);
        assert_eq!(check_eligibility(Some(facts()), today), Ok(()));
        assert_eq!(check_eligibility(None, today), Err(Ineligible::NotFound));
        let young = ResidentFacts {
            birth_date: d(2009, 11, 23),
            ..facts()
        };
        assert_eq!(check_eligibility(Some(young), today), Err(Ineligible::Under17));
        let seventeen_today = ResidentFacts {
            birth_date: d(2009, 11, 22),
            ..facts()
        };
        assert_eq!(check_eligibility(Some(seventeen_today), today), Ok(()));
        let married_young = ResidentFacts {
            ever_married: true,
            ..young
        };
        assert_eq!(check_eligibility(Some(married_young), today), Ok(()));
        // A stored "married" at 8 (from before population refused it) makes nobody eligible.
        let married_child = ResidentFacts {
            birth_date: d(2018, 1, 1),
            ever_married: true,
            ..facts()
        };
        assert_eq!(
            check_eligibility(Some(married_child), today),
            Err(Ineligible::Under17)
        );
        assert_eq!(
            check_eligibility(
                Some(ResidentFacts {
                    recorded: false,
                    ..facts()
                }),
                today
            ),
            Err(Ineligible::NotRecorded)
        );
        assert_eq!(
            check_eligibility(
                Some(ResidentFacts {
                    alive: false,
                    ..facts()
                }),
                today
            ),
            Err(Ineligible::Deceased)
        );
        let moved = ResidentFacts {
            alive: false,
            moved_out: true,
            ..facts()
        };
        assert_eq!(check_eligibility(Some(moved), today), Err(Ineligible::MovedOut));
    }

    #[test]
    fn codes_are_six_digits_and_only_their_hash_matches() {
        let code = new_code().expect("code");
        assert_eq!(code.len(), 6);
        assert!(code.bytes().all(|b| b.is_ascii_digit()));
        let salt = random_bytes::<16>().expect("salt");
        let stored = hash_code(&salt, &code);
        assert!(same_hash(&stored, &hash_code(&salt, &format!(" {code} "))));
        let other = if code == "000000" { "000001" } else { "000000" };
        assert!(!same_hash(&stored, &hash_code(&salt, other)));
        assert!(!stored.contains(&code));
    }

    #[test]
    fn contacts_are_normalised_or_refused() {
        assert_eq!(
            check_email(" Siti@Example.co.id "),
            Ok("siti@example.co.id".into())
        );
        assert!(check_email("siti@localhost").is_err());
        assert!(check_email("@example.com").is_err());
        assert_eq!(check_phone("0812-3456-7890"), Ok("+6281234567890".into()));
        assert_eq!(check_phone("+62 812 3456 7890"), Ok("+6281234567890".into()));
        assert!(check_phone("021 1234567").is_err());
        assert!(check_phone("+1 415 555 0100").is_err());
    }

    #[test]
    fn hex_round_trips_and_devices_have_stable_ids() {
        assert_eq!(unhex(&hex(&[0, 255, 16])), Some(vec![0, 255, 16]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(device_id(&[7; 32]), device_id(&[7; 32]));
        assert_ne!(device_id(&[7; 32]), device_id(&[8; 32]));
        assert!(device_id(&[7; 32]).starts_with("dev-"));
    }
}
