//! The little of gRPC's and protobuf's wire formats the gateway reads and
//! writes itself: one length-prefixed message per request, the string fields
//! a policy reads, and the fields it appends (protobuf takes the last value
//! of a field given twice, so an appended field replaces the client's).

use bytes::{BufMut as _, Bytes, BytesMut};

/// Why a request body is not one protobuf message the gateway can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// Not one whole, uncompressed, length-prefixed message.
    #[error("the request body is not one uncompressed gRPC message")]
    Frame,
    /// The message's bytes are not protobuf.
    #[error("the request is not a valid protobuf message")]
    Message,
}

/// The message of a unary request body: exactly one uncompressed frame.
pub(crate) fn unframe(body: &[u8]) -> Result<&[u8], WireError> {
    let [compressed, a, b, c, d, message @ ..] = body else {
        return Err(WireError::Frame);
    };
    let length = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
    if *compressed != 0 || message.len() != length {
        return Err(WireError::Frame);
    }
    Ok(message)
}

/// A message as one uncompressed frame.
pub(crate) fn frame(message: &[u8]) -> Result<Bytes, WireError> {
    let length = u32::try_from(message.len()).map_err(|_| WireError::Frame)?;
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(length);
    out.put_slice(message);
    Ok(out.freeze())
}

fn varint(bytes: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*pos).ok_or(WireError::Message)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::Message)
}

fn skip(bytes: &[u8], pos: &mut usize, n: usize) -> Result<(), WireError> {
    let end = pos.checked_add(n).ok_or(WireError::Message)?;
    if end > bytes.len() {
        return Err(WireError::Message);
    }
    *pos = end;
    Ok(())
}

/// The value of the string field `tag` (its last occurrence, as a decoder
/// would take it), `None` when absent. The whole message is walked, so bytes
/// that are not protobuf are an error rather than read in part.
pub(crate) fn string_field(message: &[u8], tag: u32) -> Result<Option<String>, WireError> {
    bytes_field(message, tag)?
        .map(|bytes| String::from_utf8(bytes).map_err(|_| WireError::Message))
        .transpose()
}

/// One field of a message as it stands on the wire.
struct Field {
    /// The field number.
    number: u32,
    /// The wire type (0 varint, 1 fixed 64, 2 length-delimited, 5 fixed 32).
    wire_type: u64,
    /// Where the field starts (its key) and ends, in the message.
    whole: std::ops::Range<usize>,
    /// Where a length-delimited field's bytes are.
    value: std::ops::Range<usize>,
}

/// Walks every field of a message, refusing bytes that are not protobuf
/// (field number 0, groups, unknown wire types, a field cut short).
fn walk(message: &[u8], mut each: impl FnMut(Field) -> Result<(), WireError>) -> Result<(), WireError> {
    let mut pos = 0;
    while pos < message.len() {
        let start = pos;
        let key = varint(message, &mut pos)?;
        let number = u32::try_from(key >> 3).map_err(|_| WireError::Message)?;
        if number == 0 {
            return Err(WireError::Message);
        }
        let mut value = pos..pos;
        match key & 7 {
            0 => {
                varint(message, &mut pos)?;
            }
            1 => skip(message, &mut pos, 8)?,
            2 => {
                let length = usize::try_from(varint(message, &mut pos)?).map_err(|_| WireError::Message)?;
                let from = pos;
                skip(message, &mut pos, length)?;
                value = from..pos;
            }
            5 => skip(message, &mut pos, 4)?,
            // Groups (3, 4) are not proto3; 6 and 7 are not wire types.
            _ => return Err(WireError::Message),
        }
        each(Field {
            number,
            wire_type: key & 7,
            whole: start..pos,
            value,
        })?;
    }
    Ok(())
}

/// The value of the bytes (or string) field `tag`, read as [`string_field`] reads.
pub(crate) fn bytes_field(message: &[u8], tag: u32) -> Result<Option<Vec<u8>>, WireError> {
    let mut found = None;
    walk(message, |field| {
        if field.number == tag {
            if field.wire_type != 2 {
                return Err(WireError::Message);
            }
            found = Some(message[field.value].to_vec());
        }
        Ok(())
    })?;
    Ok(found)
}

/// The string field `inner` of the message field `outer`, as a decoder reads
/// it: protobuf merges every copy of a message field, so the last `inner`
/// found across all the copies is the value.
pub(crate) fn nested_string_field(
    message: &[u8],
    outer: u32,
    inner: u32,
) -> Result<Option<String>, WireError> {
    let mut copies = Vec::new();
    walk(message, |field| {
        if field.number == outer {
            if field.wire_type != 2 {
                return Err(WireError::Message);
            }
            copies.push(field.value);
        }
        Ok(())
    })?;
    let mut found = None;
    for copy in copies {
        if let Some(value) = string_field(&message[copy], inner)? {
            found = Some(value);
        }
    }
    Ok(found)
}

/// The value of the varint field `tag` (its last occurrence), `None` when absent.
pub(crate) fn varint_field(message: &[u8], tag: u32) -> Result<Option<u64>, WireError> {
    let mut found = None;
    walk(message, |field| {
        if field.number == tag {
            if field.wire_type != 0 {
                return Err(WireError::Message);
            }
            let mut pos = field.whole.start;
            varint(message, &mut pos)?;
            found = Some(varint(message, &mut pos)?);
        }
        Ok(())
    })?;
    Ok(found)
}

/// The field numbers the message gives a value, each once, in order. (A proto3
/// field left at its default is not on the wire, so it is not among them.)
pub(crate) fn present_fields(message: &[u8]) -> Result<Vec<u32>, WireError> {
    let mut found = Vec::new();
    walk(message, |field| {
        if !found.contains(&field.number) {
            found.push(field.number);
        }
        Ok(())
    })?;
    found.sort_unstable();
    Ok(found)
}

/// The message without any occurrence of field `tag`, the rest byte for byte.
/// Walking the whole message also refuses bytes that are not protobuf, so a
/// fact appended after it cannot be swallowed by a field the client left open.
pub(crate) fn without(message: &[u8], tag: u32) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(message.len());
    walk(message, |field| {
        if field.number != tag {
            out.extend_from_slice(&message[field.whole]);
        }
        Ok(())
    })?;
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends string field `tag`, replacing whatever value the message gave it.
pub(crate) fn set_string(message: &mut Vec<u8>, tag: u32, value: &str) {
    put_varint(message, (u64::from(tag) << 3) | 2);
    put_varint(message, value.len() as u64);
    message.extend_from_slice(value.as_bytes());
}

/// Appends bool field `tag`, replacing whatever value the message gave it.
pub(crate) fn set_bool(message: &mut Vec<u8>, tag: u32, value: bool) {
    put_varint(message, u64::from(tag) << 3);
    put_varint(message, u64::from(value));
}

#[cfg(test)]
mod tests {
    use adminduk_proto::ikd::v1 as ikd;
    use adminduk_proto::printing::v1 as printing;
    use prost::Message as _;

    use super::*;

    #[test]
    fn a_nested_field_is_read_across_every_copy_as_a_decoder_merges_them() {
        use adminduk_proto::population::v1 as population;
        let named = population::UpdateResidentRequest {
            resident: Some(population::Resident {
                nik: "3275010101900001".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        let unnamed = population::UpdateResidentRequest {
            resident: Some(population::Resident {
                full_name: "Nama".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        let both = [named.clone(), unnamed].concat();
        let decoded = population::UpdateResidentRequest::decode(&both[..]).expect("merged");
        let nik = decoded.resident.expect("resident").nik;
        assert_eq!(nested_string_field(&both, 1, 1), Ok(Some(nik)));
        assert_eq!(
            nested_string_field(&named, 1, 1),
            Ok(Some("3275010101900001".to_owned()))
        );
        assert_eq!(nested_string_field(&[], 1, 1), Ok(None));
    }

    #[test]
    fn present_fields_are_those_on_the_wire() {
        use adminduk_proto::population::v1 as population;
        let request = population::VerifyIdentityRequest {
            nik: "3275010101900001".into(),
            full_name: Some(String::new()),
            sex: 0,
            village_code: Some("3275010001".into()),
            ..Default::default()
        };
        // An optional field set to "" is on the wire; an enum at 0 is not.
        assert_eq!(present_fields(&request.encode_to_vec()), Ok(vec![1, 2, 6]));
        assert_eq!(present_fields(&[0x0a, 0x05, b'a']), Err(WireError::Message));
    }

    #[test]
    fn a_frame_round_trips_and_anything_else_is_refused() {
        let framed = frame(b"abc").expect("frame");
        assert_eq!(unframe(&framed), Ok(&b"abc"[..]));
        assert_eq!(unframe(&frame(b"").expect("frame")), Ok(&b""[..]));
        for bad in [
            &b""[..],
            &[0, 0, 0, 0],
            &[1, 0, 0, 0, 1, b'a'],
            &[0, 0, 0, 0, 2, b'a'],
            &[0, 0, 0, 0, 1, b'a', 0, 0, 0, 0, 0],
        ] {
            assert_eq!(unframe(bad), Err(WireError::Frame), "{bad:?}");
        }
    }

    #[test]
    fn string_fields_are_read_as_a_decoder_reads_them() {
        let request = ikd::VerifyAtOfficeRequest {
            activation_id: "a1".into(),
            nonce: "n".into(),
            officer_id: "someone".into(),
            service_point_code: "3275-KEC-99".into(),
        };
        let bytes = request.encode_to_vec();
        assert_eq!(string_field(&bytes, 1), Ok(Some("a1".to_owned())));
        assert_eq!(string_field(&bytes, 4), Ok(Some("3275-KEC-99".to_owned())));
        assert_eq!(string_field(&bytes, 9), Ok(None));
        // Truncated anywhere, the message is refused rather than read in part.
        // Field 4 comes last: cut short anywhere, it is never read in part.
        for cut in 1..bytes.len() {
            let read = string_field(&bytes[..cut], 4);
            assert!(!matches!(read, Ok(Some(_))), "{cut}: {read:?}");
        }
        assert_eq!(
            string_field(&[0x0a, 0x02, 0xff, 0xfe], 1),
            Err(WireError::Message)
        );
        assert_eq!(string_field(&[0x08, 0x01], 1), Err(WireError::Message));
    }

    #[test]
    fn a_field_left_open_at_the_end_cannot_swallow_an_appended_fact() {
        let sent = ikd::VerifyAtOfficeRequest {
            activation_id: "a1".into(),
            nonce: "n".into(),
            officer_id: "made-up".into(),
            service_point_code: "3275-KEC-99".into(),
        };
        let mut bytes = sent.encode_to_vec();
        // Field 9, length 14: what the gateway would append next, swallowed whole.
        bytes.extend_from_slice(&[0x4a, 14]);
        assert_eq!(
            without(&bytes, 4),
            Err(WireError::Message),
            "the open field is refused"
        );
        // A well-formed message loses every copy of the field, and nothing else.
        let mut twice = sent.encode_to_vec();
        set_string(&mut twice, 4, "3275-KEC-77");
        let mut stripped = without(&twice, 4).expect("walks");
        set_string(&mut stripped, 4, "3275-KEC-01");
        let received = ikd::VerifyAtOfficeRequest::decode(stripped.as_slice()).expect("decodes");
        assert_eq!(received.service_point_code, "3275-KEC-01");
        assert_eq!(received.officer_id, "made-up");
        assert_eq!(string_field(&stripped, 4), Ok(Some("3275-KEC-01".to_owned())));
        assert_eq!(
            without(&twice, 4).expect("walks").len() + 2 + 11 + 2 + 11,
            twice.len()
        );
    }

    #[test]
    fn appended_fields_replace_the_clients_for_the_service_that_decodes_them() {
        let sent = printing::SubmitPrintJobRequest {
            nik: "3275014101900001".into(),
            service_point_code: "3275-KEC-09".into(),
            has_active_ikd: true,
            ..Default::default()
        };
        let mut bytes = sent.encode_to_vec();
        set_string(&mut bytes, 3, "3275-KEC-01");
        set_bool(&mut bytes, 5, false);
        let received = printing::SubmitPrintJobRequest::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(received.service_point_code, "3275-KEC-01");
        assert!(!received.has_active_ikd);
        assert_eq!(received.nik, sent.nik);
        assert_eq!(string_field(&bytes, 3), Ok(Some("3275-KEC-01".to_owned())));
        let long = "x".repeat(300);
        let mut empty = Vec::new();
        set_string(&mut empty, 3, &long);
        let received = printing::SubmitPrintJobRequest::decode(empty.as_slice()).expect("decodes");
        assert_eq!(received.service_point_code, long);
    }
}
