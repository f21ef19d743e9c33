//! Fixed-width numeric codes: NIK and KK (16 digits), villages (10),
//! districts (6), regencies (4).

/// Whether `text` is exactly `len` ASCII digits.
pub fn is_digits(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_number_of_ascii_digits() {
        assert!(is_digits("3275", 4));
        assert!(!is_digits("327", 4));
        assert!(!is_digits("32751", 4));
        assert!(!is_digits("32a5", 4));
        assert!(!is_digits("٣٢٧٥", 4), "other scripts' digits are not ASCII");
        assert!(is_digits("", 0));
    }
}
