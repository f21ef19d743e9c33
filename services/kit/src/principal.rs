//! Who a caller is, as its client certificate says: a principal travels in a
//! URI SAN (`adminduk://office/<service point>/<device>`, `adminduk://agency/<code>`)
//! rather than in the common name, because a URI has one strict parse
//! ([`parse_principal`]) while a common name is free text for people.
//!
//! `adminduk certs` writes these URIs; the gateway reads them back from the
//! peer certificate of each mTLS connection ([`principal_of_certificate`]).

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
    /// An administrator of the Disdukcapil office (stock, quota policy, recalls).
    Admin {
        /// Who, e.g. `kadis-3275`.
        name: String,
    },
    /// One of the mesh's own services (the gateway, printing, IKD) calling
    /// another: what a backend run apart accepts, and the gateway refuses.
    Service {
        /// Which, e.g. `mesh`.
        name: String,
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
            Principal::Admin { name } => write!(f, "{SCHEME}admin/{name}"),
            Principal::Service { name } => write!(f, "{SCHEME}service/{name}"),
        }
    }
}

/// Parses a principal URI (`adminduk://office/<service point>/<device>`,
/// `adminduk://agency/<code>` or `adminduk://admin/<name>`); `None` for anything else.
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
        "admin" => Principal::Admin {
            name: identifier(segments.next()?)?,
        },
        "service" => Principal::Service {
            name: identifier(segments.next()?)?,
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

/// The principal a client certificate speaks for: the one URI among the
/// subject alternative names of `der` (a certificate as `Request::peer_certs`
/// gives it), parsed by [`parse_principal`]. `None` when it has no URI, more
/// than one, or a subject alternative name extension twice, or when the DER
/// cannot be read.
///
/// It reads, it does not verify: call it only on a certificate the TLS
/// handshake has verified against the CA.
pub fn principal_of_certificate(der: &[u8]) -> Option<Principal> {
    let uris = subject_alt_uris(der)?;
    let [uri] = uris.as_slice() else {
        return None;
    };
    parse_principal(std::str::from_utf8(uri).ok()?)
}

// DER tags (X.690) and the subject alternative name's OID (RFC 5280 §4.2.1.6).
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
/// `[3]` in TBSCertificate.
const EXTENSIONS: u8 = 0xA3;
/// `uniformResourceIdentifier [6] IA5String` in GeneralName.
const URI: u8 = 0x86;
/// 2.5.29.17
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];

/// The URIs among a certificate's subject alternative names; `None` when the
/// DER is malformed or the extension appears twice.
fn subject_alt_uris(der: &[u8]) -> Option<Vec<&[u8]>> {
    let (certificate, rest) = expect(der, SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let (mut tbs, _) = expect(certificate, SEQUENCE)?;
    let mut extensions = None;
    while !tbs.is_empty() {
        let (tag, contents, rest) = element(tbs)?;
        tbs = rest;
        if tag == EXTENSIONS {
            if extensions.is_some() {
                return None;
            }
            extensions = Some(contents);
        }
    }
    let (mut list, rest) = expect(extensions?, SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let mut uris = None;
    while !list.is_empty() {
        let (extension, rest) = expect(list, SEQUENCE)?;
        list = rest;
        let (oid, mut fields) = expect(extension, OID)?;
        if oid != SUBJECT_ALT_NAME {
            continue;
        }
        if uris.is_some() {
            return None;
        }
        if let Some((_critical, rest)) = expect(fields, BOOLEAN) {
            fields = rest;
        }
        let (value, rest) = expect(fields, OCTET_STRING)?;
        let (mut names, inner) = expect(value, SEQUENCE)?;
        if !rest.is_empty() || !inner.is_empty() {
            return None;
        }
        let mut found = Vec::new();
        while !names.is_empty() {
            let (tag, name, rest) = element(names)?;
            names = rest;
            if tag == URI {
                found.push(name);
            }
        }
        uris = Some(found);
    }
    uris
}

/// One DER element of the wanted tag: its contents and what follows it.
fn expect(input: &[u8], wanted: u8) -> Option<(&[u8], &[u8])> {
    let (tag, contents, rest) = element(input)?;
    (tag == wanted).then_some((contents, rest))
}

/// One DER element: its tag, its contents and what follows it. Definite
/// lengths only (DER has no other), of at most four length bytes.
pub(crate) fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1F == 0x1F {
        // A tag number above 30: none of the elements read here has one.
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (bytes.iter().fold(0, |acc, &b| (acc << 8) | usize::from(b)), rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    Some((tag, contents, after))
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

    /// A client certificate as `adminduk certs` writes it (office `3275-KEC-01`, `counter-01`).
    const OFFICE_PEM: &str = "-----BEGIN CERTIFICATE-----\n\
MIICNjCCAdygAwIBAgIUdyN53hY6fbXlqOzbuvXy/2ThSrAwCgYIKoZIzj0EAwIw\n\
QTEdMBsGA1UECgwUYWRtaW5kdWsgZGV2ZWxvcG1lbnQxIDAeBgNVBAMMF2FkbWlu\n\
ZHVrIGRldmVsb3BtZW50IENBMB4XDTI2MTEzMDIxMDgwMloXDTI3MTIwMTIxMDgw\n\
MlowRzEdMBsGA1UECgwUYWRtaW5kdWsgZGV2ZWxvcG1lbnQxJjAkBgNVBAMMHW9m\n\
ZmljZSAzMjc1LUtFQy0wMSBjb3VudGVyLTAxMFkwEwYHKoZIzj0CAQYIKoZIzj0D\n\
AQcDQgAE+T+txGkpnNDzM3fztjCaQd24u2QRZS9M1a6UjDQbdSDZl9djxFAakjLy\n\
FbU/jXEdQpzbCD3yEuVa8nHauA/vYKOBqzCBqDAfBgNVHSMEGDAWgBRPeBnepq9q\n\
zhzgoVas+grBq/iicjAzBgNVHREELDAqhihhZG1pbmR1azovL29mZmljZS8zMjc1\n\
LUtFQy0wMS9jb3VudGVyLTAxMA4GA1UdDwEB/wQEAwIHgDATBgNVHSUEDDAKBggr\n\
BgEFBQcDAjAdBgNVHQ4EFgQUU2dw3KBLf7s4kKGO3+15HURc9C0wDAYDVR0TAQH/\n\
BAIwADAKBggqhkjOPQQDAgNIADBFAiAvk9mfFosoqhsWDjxszDkUbgtAeqJi1QDp\n\
aPxN58qVswIhAIl0ofDyKJyGfk/hplsqCkiDoa1lE7RO1dfWXxfA8pMU\n\
-----END CERTIFICATE-----";
    /// The server certificate of the same run: DNS and IP names, no URI.
    const SERVER_PEM: &str = "-----BEGIN CERTIFICATE-----\n\
MIICLTCCAdOgAwIBAgIUTF/M4QLVRHSd0XpOcBhhRiy3prEwCgYIKoZIzj0EAwIw\n\
QTEdMBsGA1UECgwUYWRtaW5kdWsgZGV2ZWxvcG1lbnQxIDAeBgNVBAMMF2FkbWlu\n\
ZHVrIGRldmVsb3BtZW50IENBMB4XDTI2MTEzMDIxMDgwMloXDTI3MTIwMTIxMDgw\n\
MlowRTEdMBsGA1UECgwUYWRtaW5kdWsgZGV2ZWxvcG1lbnQxJDAiBgNVBAMMG2Fk\n\
bWluZHVrIGRldmVsb3BtZW50IHNlcnZlcjBZMBMGByqGSM49AgEGCCqGSM49AwEH\n\
A0IABMhUzXQVDSVTM+vUGW9y2Wqyl3L7tPqwh0EN7gIzxpWSqboskGzl6q1IBOiw\n\
00Dv15GxCmLQNm53rHazRTgkAb6jgaQwgaEwHwYDVR0jBBgwFoAUT3gZ3qavas4c\n\
4KFWrPoKwav4onIwLAYDVR0RBCUwI4IJbG9jYWxob3N0hwR/AAABhxAAAAAAAAAA\n\
AAAAAAAAAAABMA4GA1UdDwEB/wQEAwIHgDATBgNVHSUEDDAKBggrBgEFBQcDATAd\n\
BgNVHQ4EFgQUfuRVaEG8S06eqGylEe86IOafeyQwDAYDVR0TAQH/BAIwADAKBggq\n\
hkjOPQQDAgNIADBFAiBHPDqVInvX9fJYocf/EeILtZvu8M/41QpcM1D/9eDbrgIh\n\
AIPtkJaALyRzecs7pMd5d0LRRLhIIt9tpJgn5LOmvaAQ\n\
-----END CERTIFICATE-----";

    fn der(pem: &str) -> Vec<u8> {
        use base64::Engine as _;
        let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("base64")
    }

    #[test]
    fn a_client_certificate_names_its_principal() {
        assert_eq!(
            principal_of_certificate(&der(OFFICE_PEM)),
            Some(office("3275-KEC-01", "counter-01"))
        );
    }

    #[test]
    fn a_certificate_without_a_principal_uri_names_nobody() {
        assert_eq!(principal_of_certificate(&der(SERVER_PEM)), None);
        assert_eq!(principal_of_certificate(&[]), None);
        assert_eq!(principal_of_certificate(b"adminduk://agency/demo-bank"), None);
    }

    #[test]
    fn a_damaged_certificate_names_nobody_and_never_panics() {
        let office = der(OFFICE_PEM);
        for len in 0..office.len() {
            assert_eq!(principal_of_certificate(&office[..len]), None, "cut at {len}");
        }
        let mut longer = office.clone();
        longer.push(0);
        assert_eq!(principal_of_certificate(&longer), None, "trailing bytes");
        for at in 0..office.len() {
            for bit in 0..8 {
                let mut flipped = office.clone();
                flipped[at] ^= 1 << bit;
                // Whatever it answers, it answers: only a well-formed URI can name someone.
                if let Some(principal) = principal_of_certificate(&flipped) {
                    assert!(parse_principal(&principal.to_string()).is_some());
                }
            }
        }
    }

    /// A DER element (lengths up to 65535).
    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match u16::try_from(contents.len()).expect("short") {
            len @ 0..=0x7F => out.push(len as u8),
            len @ 0x80..=0xFF => out.extend([0x81, len as u8]),
            len => out.extend([0x82, (len >> 8) as u8, len as u8]),
        }
        out.extend_from_slice(contents);
        out
    }

    /// A subject alternative name extension: critical or not, and its names (tag, value).
    type San<'a> = (bool, &'a [(u8, &'a str)]);

    /// A certificate reduced to what is read here: extensions of SANs, each a list of names.
    fn certificate(sans: &[San<'_>]) -> Vec<u8> {
        let extensions: Vec<u8> = sans
            .iter()
            .flat_map(|(critical, names)| {
                let names: Vec<u8> = names
                    .iter()
                    .flat_map(|(tag, name)| tlv(*tag, name.as_bytes()))
                    .collect();
                let mut extension = tlv(OID, SUBJECT_ALT_NAME);
                if *critical {
                    extension.extend(tlv(BOOLEAN, &[0xFF]));
                }
                extension.extend(tlv(OCTET_STRING, &tlv(SEQUENCE, &names)));
                tlv(SEQUENCE, &extension)
            })
            .collect();
        let mut tbs = tlv(0xA0, &tlv(0x02, &[2]));
        tbs.extend(tlv(0x02, &[1]));
        tbs.extend(tlv(EXTENSIONS, &tlv(SEQUENCE, &extensions)));
        tlv(SEQUENCE, &tlv(SEQUENCE, &tbs))
    }

    #[test]
    fn exactly_one_principal_uri_names_someone() {
        const DNS: u8 = 0x82;
        let agency = "adminduk://agency/demo-bank";
        let named = Some(Principal::Agency {
            code: "demo-bank".to_owned(),
        });
        assert_eq!(
            principal_of_certificate(&certificate(&[(false, &[(URI, agency)])])),
            named
        );
        assert_eq!(
            principal_of_certificate(&certificate(&[(true, &[(DNS, "localhost"), (URI, agency)])])),
            named,
            "critical, beside a DNS name"
        );
        let refused: [&[San<'_>]; 5] = [
            &[],
            &[(false, &[(DNS, "localhost")])],
            &[(false, &[(URI, agency), (URI, agency)])],
            &[(false, &[(URI, agency)]), (false, &[(URI, agency)])],
            &[(false, &[(URI, "adminduk://agency/demo-bank/")])],
        ];
        for sans in refused {
            assert_eq!(principal_of_certificate(&certificate(sans)), None, "{sans:?}");
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
            "adminduk://admin/kadis-3275",
            "adminduk://service/mesh",
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
            "adminduk://admin/",
            "adminduk://admin/kadis/extra",
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
