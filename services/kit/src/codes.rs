//! Codes: fixed-width numeric ones (NIK and KK with 16 digits, villages 10,
//! districts 6, regencies 4), and the text codes enums are stored as.

/// Whether `text` is exactly `len` ASCII digits.
pub fn is_digits(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_digit())
}

/// A regency or city code of a request (`3275`): 4 digits, and in the
/// official region list; adds the violation to `out` under `field`.
pub fn regency_field(field: &str, code: &str, out: &mut crate::Violations) {
    if !is_digits(code, 4) {
        out.add(field, "must be a 4-digit regency code");
    } else if crate::region::Regions::global().regency(code).is_none() {
        out.add(field, "is not a regency or city in the official region list");
    }
}

/// An area code of a request: a regency (4 digits) or a kecamatan (6 digits)
/// in the official region list, or INVALID_ARGUMENT naming `field`.
pub fn area_code(field: &str, code: &str) -> Result<(), crate::ApiError> {
    let regions = crate::region::Regions::global();
    let known = match code.len() {
        4 => regions.regency(code).is_some(),
        6 => regions.district(code).is_some(),
        _ => false,
    };
    if known {
        Ok(())
    } else {
        Err(crate::ApiError::invalid_field(
            field,
            "must be a known regency (4 digits) or kecamatan (6 digits) code",
        ))
    }
}

/// The most characters of a service point's code (`3275-KEC-01`).
pub const MAX_SERVICE_POINT: usize = 32;

/// Why a service point's code has not the shape of one.
pub fn check_service_point(code: &str) -> Result<(), &'static str> {
    let shaped = code.len() <= MAX_SERVICE_POINT
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && code.get(..4).zip(code.get(4..)).is_some_and(|(regency, rest)| {
            is_digits(regency, 4) && rest.strip_prefix('-').is_some_and(|rest| !rest.is_empty())
        });
    if !shaped {
        return Err(
            "must be a service point code: the regency code, a hyphen, then letters, digits or \
                    hyphens, at most 32 characters, e.g. 3275-KEC-01",
        );
    }
    if crate::region::Regions::global().regency(&code[..4]).is_none() {
        return Err(
            "must start with the code of a regency or city in the official region list, e.g. 3275-KEC-01",
        );
    }
    Ok(())
}

/// A required service point code, trimmed: the kit's rules for text first
/// (so a control character is named as such), then the shape every service
/// point has, as the inventory's policies require it: the 4-digit code of a
/// regency of the official region list, a hyphen, then letters, digits and
/// hyphens, at most [`MAX_SERVICE_POINT`] characters in all. Whether the point
/// is one the inventory has configured is not known here.
pub fn service_point_field(field: &str, value: &str, out: &mut crate::Violations) -> String {
    let before = out.len();
    let code = crate::text::required(field, value, MAX_SERVICE_POINT, out);
    if out.len() == before
        && let Err(why) = check_service_point(&code)
    {
        out.add(field, why);
    }
    code
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

    #[test]
    fn service_points_are_a_known_regency_a_hyphen_and_a_code() {
        for good in [
            "3275-KEC-01",
            "3216-DISDUK",
            "3275-a-9",
            &format!("3275-{}", "K".repeat(27)),
        ] {
            assert_eq!(check_service_point(good), Ok(()), "{good}");
            let mut v = crate::Violations::new();
            assert_eq!(service_point_field("point", &format!(" {good} "), &mut v), good);
            assert!(v.is_empty(), "{good}");
        }
        for bad in [
            "XYZ",
            "3275",
            "3275-",
            "3275KEC-01",
            "327-KEC-01",
            "3275_KEC_01",
            "3275-KEC 01",
            "3275-KEC/01",
            "KEC-3275-01",
            "٣٢٧٥-KEC-01",
            &format!("3275-{}", "K".repeat(28)),
        ] {
            let why = check_service_point(bad).expect_err(bad);
            assert!(why.starts_with("must be a service point code"), "{bad}: {why}");
        }
        // The shape, but no such regency.
        for unknown in ["9999-KEC-01", "0000-KEC-01", "3299-KEC-01"] {
            let why = check_service_point(unknown).expect_err(unknown);
            assert!(why.contains("official region list"), "{unknown}: {why}");
        }
        let mut v = crate::Violations::new();
        service_point_field("a", "", &mut v);
        service_point_field("b", "3275\0KEC", &mut v);
        service_point_field("c", &"3".repeat(40), &mut v);
        service_point_field("d", "XYZ", &mut v);
        let err = v.into_result().expect_err("four");
        let found: Vec<(String, String)> = err
            .details()
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|f| (f.field.clone(), f.description.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let fields: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["a", "b", "c", "d"], "one violation each");
        assert_eq!(found[0].1, "is required");
        assert_eq!(found[1].1, "must not contain control characters");
        assert_eq!(found[2].1, "must be at most 32 characters");
        assert!(found[3].1.starts_with("must be a service point code"));
    }
}
