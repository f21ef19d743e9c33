//! Free text in requests (names, reasons, references, serials): trimmed,
//! bounded and free of control characters, with one wording for every service.

use crate::Violations;

/// A required text field, trimmed; adds a violation to `out` when it is empty,
/// longer than `max` characters, or holds a control character (NUL, a newline).
pub fn required(field: &str, value: &str, max: usize, out: &mut Violations) -> String {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        out.add(field, "is required");
    } else {
        bounded(field, trimmed, max, out);
    }
    trimmed.to_owned()
}

/// An optional text field, trimmed: empty is fine, otherwise as [`required`].
pub fn optional(field: &str, value: &str, max: usize, out: &mut Violations) -> String {
    let trimmed = value.trim();
    bounded(field, trimmed, max, out);
    trimmed.to_owned()
}

fn bounded(field: &str, value: &str, max: usize, out: &mut Violations) {
    if let Some(fault) = fault(value, max) {
        out.add(field, fault);
    }
}

/// What is wrong with a text, if anything: longer than `max` characters, or
/// holding a control character or an [`is_invisible`] one. For checks that
/// report in their own shape (the population domain's violations).
pub fn fault(value: &str, max: usize) -> Option<String> {
    if value.chars().count() > max {
        Some(format!("must be at most {max} characters"))
    } else if value.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else if value.chars().any(is_invisible) {
        Some(INVISIBLE.to_owned())
    } else {
        None
    }
}

/// What a text holding an [`is_invisible`] character is told.
pub const INVISIBLE: &str = "must not contain invisible or direction-changing characters";

/// Whether `c` shows nothing or turns the direction of what follows (zero-width
/// spaces and joiners, the soft hyphen, bidirectional marks, overrides and
/// isolates, the byte-order mark): text holding one displays unlike what is
/// stored (`SITI` U+202E `EBORP` shows as `SITIPROBE`), and two such names
/// of one person compare as two.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// The most characters of a card or blank serial.
pub const MAX_SERIAL: usize = 64;

/// A card or blank serial: 1 to 64 ASCII letters, digits, hyphens or slashes,
/// as printed on the blank (`KTP-0000001`). Returned in capitals: `ktp-1` and
/// `KTP-1` are one serial, read twice.
pub fn serial(field: &str, value: &str, out: &mut Violations) -> String {
    if value.is_empty() {
        out.add(field, "is required");
    } else if value.chars().count() > MAX_SERIAL {
        out.add(field, format!("must be at most {MAX_SERIAL} characters"));
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'/')
    {
        out.add(field, "must be ascii letters, digits, hyphens or slashes");
    }
    value.to_ascii_uppercase()
}

/// A person named in a report (who found it, who approved it): trimmed,
/// required, at most `max` characters of ASCII letters, digits, spaces and
/// `.'-_`. Names of officers are written in Latin letters; anything else
/// (zero-width and other invisible characters, full-width or Cyrillic look-
/// alikes) would let one person pass for two.
pub fn person(field: &str, value: &str, max: usize, out: &mut Violations) -> String {
    let before = out.len();
    let name = required(field, value, max, out);
    if out.len() == before
        && !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" .'-_".contains(&b))
    {
        out.add(
            field,
            "must be ascii letters, digits, spaces, dots, apostrophes, hyphens or underscores",
        );
    }
    name
}

/// A person's name as compared: its words of letters and digits, lowercase,
/// so that `" ANI "`, `"ani"` and `"Ani."` are one person, as are
/// `"Budi Santoso"` and `"budi  santoso."`.
pub fn person_key(name: &str) -> String {
    name.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether two names given for people name the same person.
pub fn same_person(a: &str, b: &str) -> bool {
    person_key(a) == person_key(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(check: impl FnOnce(&mut Violations)) -> Vec<String> {
        let mut v = Violations::new();
        check(&mut v);
        match v.into_result() {
            Ok(()) => Vec::new(),
            Err(err) => err
                .details()
                .bad_request()
                .map(|b| b.field_violations.iter().map(|f| f.description.clone()).collect())
                .unwrap_or_default(),
        }
    }

    #[test]
    fn text_that_would_display_unlike_what_is_stored_is_refused() {
        for name in [
            "SITI\u{202E}EBORP",
            "SITI\u{200B}PROBE",
            "\u{FEFF}SITI",
            "SI\u{00AD}TI",
            "SITI\u{2066}X",
        ] {
            assert_eq!(
                violations(|v| drop(required("full_name", name, 64, v))),
                [INVISIBLE],
                "{name:?}"
            );
        }
        // Letters of other scripts and accents are text, not tricks.
        for name in ["Siti Nurhaliza", "Andr\u{e9}", "\u{0627}\u{062D}\u{0645}\u{062F}"] {
            assert!(
                violations(|v| drop(required("full_name", name, 64, v))).is_empty(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn text_is_trimmed_bounded_and_free_of_control_characters() {
        let mut v = Violations::new();
        assert_eq!(required("reason", "  rusak  ", 10, &mut v), "rusak");
        assert!(v.is_empty());
        assert_eq!(
            violations(|v| drop(required("reason", "   ", 10, v))),
            ["is required"]
        );
        assert_eq!(
            violations(|v| drop(required("reason", &"x".repeat(11), 10, v))),
            ["must be at most 10 characters"]
        );
        assert_eq!(
            violations(|v| drop(required("reason", "a\0b", 10, v))),
            ["must not contain control characters"]
        );
        assert!(violations(|v| drop(optional("note", "", 10, v))).is_empty());
        // Characters, not bytes: ten letters with accents fit ten characters.
        assert!(violations(|v| drop(required("name", "éééééééééé", 10, v))).is_empty());
    }

    #[test]
    fn serials_are_short_and_plain() {
        assert!(violations(|v| drop(serial("card_serial", "KTP-0000001", v))).is_empty());
        assert_eq!(
            violations(|v| drop(serial("card_serial", "", v))),
            ["is required"]
        );
        assert_eq!(
            violations(|v| drop(serial("card_serial", &"9".repeat(10_000), v))),
            ["must be at most 64 characters"]
        );
        for bad in ["KTP\0-1", "KTP-1\n", " KTP-1", "KTP 1"] {
            assert_eq!(
                violations(|v| drop(serial("card_serial", bad, v))),
                ["must be ascii letters, digits, hyphens or slashes"],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names_of_one_person_compare_equal() {
        assert!(same_person(" ANI ", "ani"));
        assert!(same_person("Siti  Aminah", "siti aminah"));
        assert!(same_person("Budi Santoso", "budi  santoso."));
        assert!(!same_person("ani", "ana"));
        assert_eq!(person_key("\tBudi   Santoso "), "budi santoso");
    }

    #[test]
    fn a_person_is_named_in_plain_latin_letters() {
        assert!(violations(|v| drop(person("approved_by", "Kasi Pelayanan-1", 64, v))).is_empty());
        assert!(violations(|v| drop(person("approved_by", "d'Silva_2.", 64, v))).is_empty());
        // Invisible characters and look-alikes would make "ani" a second person.
        for invisible in ["a\u{200b}ni", "ani\u{200b}", "\u{feff}ani", "a\u{00ad}ni"] {
            assert_eq!(
                violations(|v| drop(person("approved_by", invisible, 64, v))),
                [INVISIBLE],
                "{invisible:?}"
            );
        }
        for lookalike in ["ａｎｉ", "ANİ", "a\u{0301}ni", "\u{0430}ni"] {
            assert_eq!(
                violations(|v| drop(person("approved_by", lookalike, 64, v))),
                ["must be ascii letters, digits, spaces, dots, apostrophes, hyphens or underscores"],
                "{lookalike:?}"
            );
        }
        assert_eq!(
            violations(|v| drop(person("approved_by", "  ", 64, v))),
            ["is required"]
        );
    }
}
