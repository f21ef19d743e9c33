//! Masking of personal numbers (NIK, KK) for logs, spans and metrics.
//!
//! A mask alone cannot tell two residents apart: serials are mostly `0001`,
//! so most of Kota Bekasi reads `3275********0001`. Logs therefore carry a
//! short keyed reference beside the mask ([`log_nik`]): the first 8 hex digits
//! of an HMAC-SHA256 of the NIK under a per-deployment key. The same resident
//! has the same reference in every log line and every replica that shares the
//! key, so an SRE can follow one person; without the key the reference says
//! nothing about the NIK (there are too few NIKs for a plain hash to hide one).

use std::fmt;
use std::sync::OnceLock;

use ring::hmac;

/// Masks a NIK or KK number as `3275********0001`: the region's first four
/// digits and the serial stay readable, the birth date and district do not.
///
/// Anything that is not 16 ASCII digits is masked completely, so a malformed
/// input (which may still be someone's NIK with a typo) never leaks either.
pub fn mask_nik(nik: &str) -> String {
    if crate::is_digits(nik, 16) {
        let mut out = String::with_capacity(16);
        out.push_str(&nik[..4]);
        out.push_str("********");
        out.push_str(&nik[12..]);
        out
    } else {
        format!("<{} chars masked>", nik.chars().count())
    }
}

/// Free text with every run of 16 or more digits masked (16 as a NIK is,
/// longer ones whole), for text a person wrote that is logged: whoever types
/// a reason may type a NIK into it.
pub fn mask_digit_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 16 {
            out.push_str(&mask_nik(run));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// The key references are made with; set once at start-up.
static REFERENCE_KEY: OnceLock<hmac::Key> = OnceLock::new();

/// Installs the deployment's reference key (`telemetry.nik_ref_key`); the
/// first call wins. Returns false when a key was installed already.
pub fn set_reference_key(key: &[u8]) -> bool {
    REFERENCE_KEY.set(hmac::Key::new(hmac::HMAC_SHA256, key)).is_ok()
}

/// The installed key, or a random one for this process when none was set:
/// references then still tell residents apart within one process's logs,
/// though not across restarts or replicas.
fn reference_key() -> &'static hmac::Key {
    REFERENCE_KEY.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        // A key from the system's randomness; ring fails only without one, and then
        // a key from the clock still keeps references apart within this process.
        hmac::Key::generate(hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            hmac::Key::new(hmac::HMAC_SHA256, &now.to_le_bytes())
        })
    })
}

/// The keyed reference of a NIK (or of any input, malformed too): 8 hex digits.
pub fn nik_ref(nik: &str) -> String {
    nik_ref_with(reference_key(), nik)
}

/// A NIK as a key of shared records (a cache entry about the resident): the
/// whole HMAC-SHA256 under the reference key, in hex, so two residents never
/// share one and the NIK is not in the key.
pub fn nik_key(nik: &str) -> String {
    crate::hex::encode(hmac::sign(reference_key(), nik.as_bytes()).as_ref())
}

fn nik_ref_with(key: &hmac::Key, nik: &str) -> String {
    let tag = hmac::sign(key, nik.as_bytes());
    crate::hex::encode(&tag.as_ref()[..4])
}

/// A NIK as logs show it: the mask and the keyed reference, `3275********0001#1f2e3d4c`.
/// Formatting it is the only work, so it can be passed to `tracing` as `nik = %log_nik(n)`.
pub fn log_nik(nik: &str) -> LoggedNik<'_> {
    LoggedNik(nik)
}

/// See [`log_nik`]. Never shows the whole NIK, in `Display` or `Debug`.
#[derive(Clone, Copy)]
pub struct LoggedNik<'a>(&'a str);

impl fmt::Display for LoggedNik<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", mask_nik(self.0), nik_ref(self.0))
    }
}

impl fmt::Debug for LoggedNik<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_runs_long_enough_to_be_a_nik_are_masked_in_free_text() {
        assert_eq!(
            mask_digit_runs("lansia 3275014101900001, no phone"),
            "lansia 3275********0001, no phone"
        );
        assert_eq!(mask_digit_runs("RT 007 RW 003"), "RT 007 RW 003");
        assert!(!mask_digit_runs("/x/32750141019000019").contains("3275014101900001"));
        assert_eq!(mask_digit_runs(""), "");
    }

    #[test]
    fn keeps_region_and_serial_only() {
        assert_eq!(mask_nik("3275014101900001"), "3275********0001");
    }

    #[test]
    fn malformed_input_is_masked_whole() {
        assert_eq!(mask_nik("327501410190001"), "<15 chars masked>");
        assert_eq!(mask_nik("32750141019000a1"), "<16 chars masked>");
        assert_eq!(mask_nik(""), "<0 chars masked>");
    }

    #[test]
    fn residents_with_the_same_mask_have_different_references() {
        let (a, b) = ("3275014101900001", "3275020505850001");
        assert_eq!(mask_nik(a), mask_nik(b));
        let (la, lb) = (log_nik(a).to_string(), log_nik(b).to_string());
        assert_ne!(la, lb, "two residents are told apart");
        assert!(la.starts_with("3275********0001#"), "{la}");
        assert_eq!(la.len(), 16 + 1 + 8);
        assert_eq!(la, log_nik(a).to_string(), "one resident, one reference");
        assert!(!la.contains(&a[4..12]) && !format!("{:?}", log_nik(a)).contains(a));
    }

    #[test]
    fn the_reference_depends_on_the_deployment_key() {
        let nik = "3275014101900001";
        let one = hmac::Key::new(hmac::HMAC_SHA256, b"deployment one");
        let two = hmac::Key::new(hmac::HMAC_SHA256, b"deployment two");
        assert_eq!(nik_ref_with(&one, nik), nik_ref_with(&one, nik));
        assert_ne!(nik_ref_with(&one, nik), nik_ref_with(&two, nik));
        // HMAC-SHA256 under "deployment one", first four bytes (as Python's hmac
        // gives them): fixed, so a deployment's references survive a release.
        assert_eq!(nik_ref_with(&one, nik), "a1778a3d");
    }
}
