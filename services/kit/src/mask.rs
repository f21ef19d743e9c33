//! Masking of personal numbers (NIK, KK) for logs, spans and metrics.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
