//! Codes: fixed-width numeric ones (NIK and KK with 16 digits, villages 10,
//! districts 6, regencies 4), and the text codes enums are stored as.

/// Whether `text` is exactly `len` ASCII digits.
pub fn is_digits(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_digit())
}

/// Gives a fieldless enum its stored text codes, `as_str` and `parse`, from
/// one list of pairs, so a code cannot be added in one direction only. The
/// methods are `pub`, or `pub(crate)` when the list starts with it (for an
/// enum private to its crate).
///
/// ```
/// #[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// pub enum Light { Red, Green }
/// adminduk_kit::text_codes!(Light { Red => "RED", Green => "GREEN" });
/// assert_eq!(Light::Red.as_str(), "RED");
/// assert_eq!(Light::parse("GREEN"), Some(Light::Green));
/// assert_eq!(Light::parse("green"), None);
/// ```
#[macro_export]
macro_rules! text_codes {
    (pub(crate) $ty:ty { $($variant:ident => $text:literal),+ $(,)? }) => {
        $crate::text_codes!(@impl [pub(crate)] $ty { $($variant => $text),+ });
    };
    ($ty:ty { $($variant:ident => $text:literal),+ $(,)? }) => {
        $crate::text_codes!(@impl [pub] $ty { $($variant => $text),+ });
    };
    (@impl [$($vis:tt)*] $ty:ty { $($variant:ident => $text:literal),+ }) => {
        impl $ty {
            /// The stored code.
            $($vis)* fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// The value of a stored code; `None` for any other text.
            $($vis)* fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        First,
        Second,
    }

    crate::text_codes!(pub(crate) Kind {
        First => "FIRST",
        Second => "SECOND",
    });

    #[test]
    fn text_codes_round_trip_and_nothing_else_parses() {
        for kind in [Kind::First, Kind::Second] {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::First.as_str(), "FIRST");
        for other in ["", "first", "FIRST ", "THIRD"] {
            assert_eq!(Kind::parse(other), None, "{other:?}");
        }
    }

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
