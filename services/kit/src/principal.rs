//! Who a caller is, as its client certificate says: a principal travels in a
//! URI SAN (`adminduk://office/<service point>/<device>`, `adminduk://agency/<code>`)
//! rather than in the common name, because a URI has one strict parse
//! ([`parse_principal`]) while a common name is free text for people.
//!
//! `adminduk certs` writes these URIs; the gateway reads them back from the
//! peer certificate of each mTLS connection.

use std::fmt;

/// The scheme of every principal URI.
const SCHEME: &str = "adminduk://";

/// Who a client certificate speaks for, as read from its URI SAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A device at a service point (a kecamatan office, MPP, ...).
    Office {
        /// The service point code, e.g. `3275-KEC-01`.
        service_point: String,
        /// The device at that service point, e.g. `counter-01`.
        device: String,
    },
    /// Another agency (a bank, BPJS) verifying identities.
    Agency {
        /// The agency code, e.g. `demo-bank`.
        code: String,
    },
}

impl fmt::Display for Principal {
    /// The URI form, as carried in the certificate's SAN.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Office {
                service_point,
                device,
            } => {
                write!(f, "{SCHEME}office/{service_point}/{device}")
            }
            Principal::Agency { code } => write!(f, "{SCHEME}agency/{code}"),
        }
    }
}

/// Parses a principal URI (`adminduk://office/<service point>/<device>` or
/// `adminduk://agency/<code>`); `None` for anything else.
///
/// Strict on purpose, as its answer decides who a caller is: the scheme is matched
/// exactly, each part must be 1 to 32 letters, digits or hyphens, and no segment may
/// be missing, empty or extra (so no trailing slash, query, fragment or escapes).
pub fn parse_principal(uri: &str) -> Option<Principal> {
    let rest = uri.strip_prefix(SCHEME)?;
    let mut segments = rest.split('/');
    let kind = segments.next()?;
    let principal = match kind {
        "office" => Principal::Office {
            service_point: identifier(segments.next()?)?,
            device: identifier(segments.next()?)?,
        },
        "agency" => Principal::Agency {
            code: identifier(segments.next()?)?,
        },
        _ => return None,
    };
    match segments.next() {
        Some(_) => None,
        None => Some(principal),
    }
}

fn identifier(part: &str) -> Option<String> {
    is_identifier(part).then(|| part.to_owned())
}

/// The alphabet of principal parts: safe in a URI path, a common name, a log line
/// and a rate-limit key alike, without escaping.
pub fn is_identifier(part: &str) -> bool {
    (1..=32).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn office(service_point: &str, device: &str) -> Principal {
        Principal::Office {
            service_point: service_point.to_owned(),
            device: device.to_owned(),
        }
    }

    #[test]
    fn principal_uris_parse() {
        assert_eq!(
            parse_principal("adminduk://office/3275-KEC-01/counter-01"),
            Some(office("3275-KEC-01", "counter-01"))
        );
        assert_eq!(
            parse_principal("adminduk://agency/demo-bank"),
            Some(Principal::Agency {
                code: "demo-bank".to_owned()
            })
        );
        let longest = "a".repeat(32);
        assert_eq!(
            parse_principal(&format!("adminduk://office/{longest}/{longest}")),
            Some(office(&longest, &longest))
        );
    }

    #[test]
    fn principals_print_as_the_uri_they_parse_from() {
        for uri in [
            "adminduk://office/3275-KEC-01/counter-01",
            "adminduk://agency/demo-bank",
        ] {
            let principal = parse_principal(uri).expect("valid");
            assert_eq!(principal.to_string(), uri);
        }
    }

    #[test]
    fn malformed_principal_uris_are_refused() {
        let too_long = format!("adminduk://agency/{}", "a".repeat(33));
        let refused = [
            "",
            "adminduk://",
            "adminduk://office",
            "adminduk://office/",
            "adminduk://office/3275-KEC-01",
            "adminduk://office/3275-KEC-01/",
            "adminduk://office//counter-01",
            "adminduk://office/3275-KEC-01/counter-01/",
            "adminduk://office/3275-KEC-01/counter-01/extra",
            "adminduk://agency",
            "adminduk://agency/",
            "adminduk://agency/demo-bank/",
            "adminduk://agency/demo-bank/branch",
            "adminduk://agency/demo bank",
            "adminduk://agency/demo%2Dbank",
            "adminduk://agency/demo-bank?x=1",
            "adminduk://agency/demo-bank#x",
            "adminduk://agency/bank.example",
            "adminduk://agency/bänk",
            "adminduk://citizen/3275",
            "adminduk:/agency/demo-bank",
            "ADMINDUK://agency/demo-bank",
            "https://agency/demo-bank",
            "spiffe://adminduk/agency/demo-bank",
            " adminduk://agency/demo-bank",
            "adminduk://agency/demo-bank ",
            too_long.as_str(),
        ];
        for uri in refused {
            assert_eq!(parse_principal(uri), None, "{uri:?} should be refused");
        }
    }

    #[test]
    fn identifiers_are_1_to_32_letters_digits_or_hyphens() {
        assert!(is_identifier("3275-KEC-01"));
        assert!(is_identifier(&"a".repeat(32)));
        for bad in ["", "counter/01", "a b", "bänk", "x.y"] {
            assert!(!is_identifier(bad), "{bad:?}");
        }
        assert!(!is_identifier(&"a".repeat(33)));
    }
}
