//! NIK numbers.
//!
//! The NIK (Nomor Induk Kependudukan) is the 16-digit number that identifies a
//! resident for life: `PP RR DD DDMMYY SSSS`, the province, regency and
//! district where it was first issued, the birth date with 40 added to the day
//! for women, and a serial among people with the same region and birth date.
//!
//! This module only checks the structure. Whether the region exists is a
//! question for the region table: codes change when regions split, so an
//! unknown region is reported elsewhere, while a malformed one is an error here.
//!
//! The digit helpers at the bottom are shared with [`super::kk`], whose number
//! has the same shape.

use std::fmt;

use chrono::{Datelike, NaiveDate};

/// A resident's sex as the NIK encodes it: women have 40 added to the birth day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sex {
    /// Birth day written as 01–31.
    Male,
    /// Birth day written as 41–71.
    Female,
}

/// A structurally valid NIK with its decoded birth date.
///
/// `Debug` and `Display` both mask it as `3275********0001`, so that a NIK is
/// never logged whole by accident; [`Nik::as_str`] is the explicit way out.
///
/// Equality includes the decoded birth date: the same 16 digits decoded with
/// a different century are a different value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nik {
    // ASCII digits only, by construction: `as_str` relies on it.
    digits: [u8; 16],
    birth_date: NaiveDate,
}

impl Nik {
    /// Parses and checks a NIK; `today` resolves the century: the latest date not after today.
    ///
    /// Every violation is reported, not only the first, unless the input is
    /// not 16 ASCII digits at all: then only length and characters are.
    pub fn parse(input: &str, today: NaiveDate) -> Result<Nik, NikError> {
        let digits = sixteen_digits(input).map_err(|f| NikError::new("nik", f, NikPart::from_fault))?;
        let mut faults = Faults::new();
        region_faults(&digits, &mut faults);

        let raw_day = two(&digits, 6);
        let day = match raw_day {
            1..=31 => Some(raw_day),
            41..=71 => Some(raw_day - 40),
            _ => {
                faults.push((
                    Fault::Day,
                    format!("day {raw_day:02} is not a valid day (01-31, or 41-71 for women)"),
                ));
                None
            }
        };
        let month = two(&digits, 8);
        let month_ok = month_faults(month, &mut faults);
        let yy = two(&digits, 10);

        let mut birth_date = None;
        // A date check on an out-of-range day or month would only repeat those violations.
        if let Some(day) = day
            && month_ok
        {
            match resolve_birth_date(day, month, yy, today) {
                Ok(date) => birth_date = Some(date),
                Err(message) => faults.push((Fault::Date, message)),
            }
        }
        serial_faults(&digits, &mut faults);

        match birth_date {
            Some(birth_date) if faults.is_empty() => Ok(Nik { digits, birth_date }),
            _ => Err(NikError::new("nik", faults, NikPart::from_fault)),
        }
    }

    /// Builds a NIK from its parts, for synthetic data and tests.
    ///
    /// The NIK keeps only two digits of the year, so `parse` reads a birth
    /// date more than 100 years before its `today` back 100 years later.
    pub fn from_parts(
        district_code: &str,
        birth_date: NaiveDate,
        sex: Sex,
        serial: u16,
    ) -> Result<Nik, NikError> {
        let mut faults = Faults::new();
        let region = region_digits(district_code, &mut faults);
        let year = birth_date.year();
        if !(1900..=2099).contains(&year) {
            faults.push((
                Fault::Date,
                format!("year {year} cannot be written in a nik (1900-2099)"),
            ));
        }
        serial_range_faults(serial, &mut faults);

        match region {
            Some(region) if faults.is_empty() => {
                let day_offset = match sex {
                    Sex::Male => 0,
                    Sex::Female => 40,
                };
                let mut digits = [b'0'; 16];
                digits[..6].copy_from_slice(&region);
                put_date(&mut digits, birth_date, day_offset);
                put4(&mut digits, 12, serial);
                Ok(Nik { digits, birth_date })
            }
            _ => Err(NikError::new("nik", faults, NikPart::from_fault)),
        }
    }

    /// The 16 digits, unmasked: the one explicit way to see the whole NIK.
    pub fn as_str(&self) -> &str {
        ascii(&self.digits)
    }

    /// The province code, e.g. `32` (Jawa Barat).
    pub fn province_code(&self) -> &str {
        ascii(&self.digits[..2])
    }

    /// The regency or city code including its province, e.g. `3275` (Kota Bekasi).
    pub fn regency_code(&self) -> &str {
        ascii(&self.digits[..4])
    }

    /// The district (kecamatan) code including regency and province, e.g. `327501`.
    pub fn district_code(&self) -> &str {
        ascii(&self.digits[..6])
    }

    /// The decoded birth date, century included.
    pub fn birth_date(&self) -> NaiveDate {
        self.birth_date
    }

    /// The sex encoded in the birth day.
    pub fn sex(&self) -> Sex {
        if self.digits[6] >= b'4' {
            Sex::Female
        } else {
            Sex::Male
        }
    }

    /// The serial among residents with the same district and birth date, 1–9999.
    pub fn serial(&self) -> u16 {
        four(&self.digits, 12)
    }

    /// The NIK masked for logs: `3275********0001`.
    pub fn masked(&self) -> String {
        ascii(&masked_digits(&self.digits)).to_owned()
    }
}

/// Parses the NIK in a request's `field` against today in WIB, adding each
/// violation (named by the part at fault) to `out`.
///
/// The one check every service makes of a NIK it is given, so that none
/// believes 16 digits that population would refuse.
pub fn nik_field(field: &str, input: &str, out: &mut crate::Violations) -> Option<Nik> {
    number_field(field, Nik::parse(input, crate::time::today_wib()), out)
}

/// The NIK that is a request's `field`, or INVALID_ARGUMENT with its violations.
pub fn require_nik(field: &str, input: &str) -> Result<Nik, crate::ApiError> {
    let mut violations = crate::Violations::new();
    let nik = nik_field(field, input, &mut violations);
    violations.into_result()?;
    nik.ok_or_else(|| crate::ApiError::invalid_field(field, "is not a nik"))
}

/// The value, or its violations added to `out` under `field`.
pub(crate) fn number_field<T, P: Copy + Into<&'static str>>(
    field: &str,
    parsed: Result<T, NumberError<P>>,
    out: &mut crate::Violations,
) -> Option<T> {
    match parsed {
        Ok(value) => Some(value),
        Err(err) => {
            for v in err.violations() {
                let part: &'static str = v.part.into();
                out.add(field, format!("{part}: {}", v.message));
            }
            None
        }
    }
}

impl fmt::Debug for Nik {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_masked(&self.digits, f, Some("Nik"))
    }
}

impl fmt::Display for Nik {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_masked(&self.digits, f, None)
    }
}

/// Why a string is not a valid 16-digit number of its kind (a NIK or a KK):
/// every violation found, each naming the part of the number at fault.
///
/// Neither `Display` nor the messages ever contain the input: at most the
/// value of the one offending part (a day, a month).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberError<P> {
    kind: &'static str,
    violations: Vec<Violation<P>>,
}

impl<P> NumberError<P> {
    pub(crate) fn new(kind: &'static str, faults: Faults, part: fn(Fault) -> P) -> Self {
        let violations = faults
            .into_iter()
            .map(|(fault, message)| Violation {
                part: part(fault),
                message,
            })
            .collect();
        Self { kind, violations }
    }

    /// Every violation found, in the order of the number's parts; never empty.
    pub fn violations(&self) -> &[Violation<P>] {
        &self.violations
    }
}

impl<P> fmt::Display for NumberError<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}", self.kind)?;
        for (i, violation) in self.violations.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            f.write_str(&violation.message)?;
        }
        Ok(())
    }
}

impl<P: fmt::Debug> std::error::Error for NumberError<P> {}

/// One problem in a number: which part, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation<P> {
    /// The part of the number at fault.
    pub part: P,
    /// Lowercase, no trailing period; never contains the input number.
    pub message: String,
}

/// Why a string is not a NIK.
pub type NikError = NumberError<NikPart>;

/// One problem in a NIK.
pub type NikViolation = Violation<NikPart>;

/// Writes a 16-digit number masked (`3275********0001`), for `Debug` and `Display`.
pub(crate) fn fmt_masked(digits: &[u8; 16], f: &mut fmt::Formatter<'_>, name: Option<&str>) -> fmt::Result {
    let masked = masked_digits(digits);
    match name {
        Some(name) => write!(f, "{name}({})", ascii(&masked)),
        None => f.pad(ascii(&masked)),
    }
}

/// The parts of a NIK a violation can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NikPart {
    /// Not exactly 16 characters.
    Length,
    /// A character that is not an ASCII digit.
    Characters,
    /// Digits 1–2.
    Province,
    /// Digits 3–4.
    Regency,
    /// Digits 5–6.
    District,
    /// Digits 7–8: 01–31, or 41–71 for women.
    BirthDay,
    /// Digits 9–10: 01–12.
    BirthMonth,
    /// Digits 7–12 together: a day and month in range that make no real date.
    BirthDate,
    /// Digits 13–16: 0001–9999.
    Serial,
}

impl NikPart {
    /// The part's name as used in API error details, e.g. `birth_day`.
    pub fn as_str(&self) -> &'static str {
        match self {
            NikPart::Length => "length",
            NikPart::Characters => "characters",
            NikPart::Province => "province",
            NikPart::Regency => "regency",
            NikPart::District => "district",
            NikPart::BirthDay => "birth_day",
            NikPart::BirthMonth => "birth_month",
            NikPart::BirthDate => "birth_date",
            NikPart::Serial => "serial",
        }
    }

    fn from_fault(fault: Fault) -> NikPart {
        match fault {
            Fault::Length => NikPart::Length,
            Fault::Characters => NikPart::Characters,
            Fault::Province => NikPart::Province,
            Fault::Regency => NikPart::Regency,
            Fault::District => NikPart::District,
            Fault::Day => NikPart::BirthDay,
            Fault::Month => NikPart::BirthMonth,
            Fault::Date => NikPart::BirthDate,
            Fault::Serial => NikPart::Serial,
        }
    }
}

impl From<NikPart> for &'static str {
    fn from(part: NikPart) -> Self {
        part.as_str()
    }
}

impl fmt::Display for NikPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Two digits of year could be either century: the latest real date not after
/// `today` wins, which is right for everyone younger than 100.
fn resolve_birth_date(day: u8, month: u8, yy: u8, today: NaiveDate) -> Result<NaiveDate, String> {
    let (day32, month32, yy32) = (u32::from(day), u32::from(month), i32::from(yy));
    let recent = NaiveDate::from_ymd_opt(2000 + yy32, month32, day32);
    if let Some(date) = recent
        && date <= today
    {
        return Ok(date);
    }
    match NaiveDate::from_ymd_opt(1900 + yy32, month32, day32) {
        Some(date) if date <= today => Ok(date),
        // Only a clock set before the 2000s gets here; the date itself is real.
        Some(_) => Err("birth date is in the future".to_owned()),
        None if recent.is_some() => Err("birth date is in the future".to_owned()),
        None => Err(missing_date_message(day, month, yy)),
    }
}

// ---------------------------------------------------------------------------
// Shared with `kk`: a KK number has the same 16-digit shape and region prefix.
// ---------------------------------------------------------------------------

/// A problem in a 16-digit number, before the caller names it in its own part enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Length,
    Characters,
    Province,
    Regency,
    District,
    Day,
    Month,
    Date,
    Serial,
}

/// Faults found so far; empty (so unallocated) on the success path.
pub(crate) type Faults = Vec<(Fault, String)>;

/// The input as 16 ASCII digits, or its length and character faults.
pub(crate) fn sixteen_digits(input: &str) -> Result<[u8; 16], Faults> {
    if let Ok(digits) = <[u8; 16]>::try_from(input.as_bytes())
        && digits.iter().all(u8::is_ascii_digit)
    {
        return Ok(digits);
    }

    // Counted in chars, so that a full-width digit is one bad character and
    // not a length error as well.
    let mut faults = Faults::new();
    let mut length = 0usize;
    let mut bad = 0usize;
    let mut first_bad = 0usize;
    for (i, c) in input.chars().enumerate() {
        length += 1;
        if !c.is_ascii_digit() {
            if bad == 0 {
                first_bad = i + 1;
            }
            bad += 1;
        }
    }
    if length != 16 {
        faults.push((
            Fault::Length,
            format!("expected 16 digits, found {length} characters"),
        ));
    }
    match bad {
        0 => {}
        1 => faults.push((
            Fault::Characters,
            format!("character {first_bad} is not an ascii digit"),
        )),
        _ => faults.push((
            Fault::Characters,
            format!("{bad} characters are not ascii digits, the first at position {first_bad}"),
        )),
    }
    Err(faults)
}

/// Flags each `00` segment of the 6-digit region prefix of `digits`.
pub(crate) fn region_faults(digits: &[u8], faults: &mut Faults) {
    const SEGMENTS: [(usize, Fault, &str); 3] = [
        (0, Fault::Province, "province code 00 is malformed"),
        (2, Fault::Regency, "regency code 00 is malformed"),
        (4, Fault::District, "district code 00 is malformed"),
    ];
    for (at, fault, message) in SEGMENTS {
        if digits.get(at..at + 2) == Some(b"00") {
            faults.push((fault, message.to_owned()));
        }
    }
}

/// Checks a 6-digit district code given to `from_parts`.
pub(crate) fn region_digits(code: &str, faults: &mut Faults) -> Option<[u8; 6]> {
    match <[u8; 6]>::try_from(code.as_bytes()) {
        Ok(region) if region.iter().all(u8::is_ascii_digit) => {
            let before = faults.len();
            region_faults(&region, faults);
            (faults.len() == before).then_some(region)
        }
        _ => {
            faults.push((Fault::District, "district code must be 6 ascii digits".to_owned()));
            None
        }
    }
}

/// Flags a month outside 01–12; true when the month is fine.
pub(crate) fn month_faults(month: u8, faults: &mut Faults) -> bool {
    let ok = (1..=12).contains(&month);
    if !ok {
        faults.push((
            Fault::Month,
            format!("month {month:02} is not a valid month (01-12)"),
        ));
    }
    ok
}

/// Flags the all-zero serial in digits 13–16.
pub(crate) fn serial_faults(digits: &[u8; 16], faults: &mut Faults) {
    if four(digits, 12) == 0 {
        faults.push((
            Fault::Serial,
            "serial 0000 is not allowed, serials start at 0001".to_owned(),
        ));
    }
}

/// Flags a serial given to `from_parts` that does not fit 0001–9999.
pub(crate) fn serial_range_faults(serial: u16, faults: &mut Faults) {
    if !(1..=9999).contains(&serial) {
        faults.push((Fault::Serial, format!("serial {serial} is outside 0001-9999")));
    }
}

/// Explains why a day and month, each in range, make no date with this year.
pub(crate) fn missing_date_message(day: u8, month: u8, yy: u8) -> String {
    const MOST_DAYS: [u8; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let most = MOST_DAYS
        .get(usize::from(month).wrapping_sub(1))
        .copied()
        .unwrap_or(31);
    if day > most {
        format!("month {month:02} has no day {day:02}")
    } else {
        format!("29 february does not exist in year {yy:02}")
    }
}

/// The two-digit number at `at`; the caller has checked the digits.
pub(crate) fn two(digits: &[u8; 16], at: usize) -> u8 {
    (digits[at] - b'0') * 10 + (digits[at + 1] - b'0')
}

/// The four-digit number at `at`; the caller has checked the digits.
pub(crate) fn four(digits: &[u8; 16], at: usize) -> u16 {
    digits[at..at + 4]
        .iter()
        .fold(0, |n, d| n * 10 + u16::from(d - b'0'))
}

/// Writes `date` as DDMMYY at digits 7–12, `day_offset` added to the day.
pub(crate) fn put_date(digits: &mut [u8; 16], date: NaiveDate, day_offset: u32) {
    put2(digits, 6, date.day() + day_offset);
    put2(digits, 8, date.month());
    put2(digits, 10, date.year().rem_euclid(100).unsigned_abs());
}

fn put2(digits: &mut [u8; 16], at: usize, value: u32) {
    digits[at] = b'0' + (value / 10 % 10) as u8;
    digits[at + 1] = b'0' + (value % 10) as u8;
}

/// Writes a serial below 10000 as four digits at `at`.
pub(crate) fn put4(digits: &mut [u8; 16], at: usize, value: u16) {
    let mut value = value;
    for slot in digits[at..at + 4].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The digits with the district and date starred out: `3275********0001`.
pub(crate) fn masked_digits(digits: &[u8; 16]) -> [u8; 16] {
    let mut masked = *digits;
    masked[4..12].fill(b'*');
    masked
}

/// Views ASCII bytes as text; the bytes come from checked digits or `*`.
pub(crate) fn ascii(bytes: &[u8]) -> &str {
    // Never empty in practice: every caller passes ASCII.
    std::str::from_utf8(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::number_props::{self, Number, date, district_code, today};

    impl Number for Nik {
        type Part = NikPart;
        const LENGTH: NikPart = NikPart::Length;
        const CHARACTERS: NikPart = NikPart::Characters;

        fn parse(input: &str, today: NaiveDate) -> Result<Self, NikError> {
            Nik::parse(input, today)
        }

        fn as_str(&self) -> &str {
            Nik::as_str(self)
        }

        fn check_parsed(&self) -> Result<(), TestCaseError> {
            prop_assert!(is_latest_not_after_today(self.birth_date()));
            Ok(())
        }
    }

    fn parse(input: &str) -> Result<Nik, NikError> {
        Nik::parse(input, today())
    }

    fn ok(input: &str) -> Nik {
        number_props::ok(input)
    }

    fn parts(input: &str) -> Vec<NikPart> {
        number_props::parts::<Nik>(input)
    }

    #[test]
    fn valid_nik_decodes_every_part() {
        let nik = ok("3275010507900001");
        assert_eq!(nik.as_str(), "3275010507900001");
        assert_eq!(nik.province_code(), "32");
        assert_eq!(nik.regency_code(), "3275");
        assert_eq!(nik.district_code(), "327501");
        assert_eq!(nik.birth_date(), date(1990, 7, 5));
        assert_eq!(nik.sex(), Sex::Male);
        assert_eq!(nik.serial(), 1);
    }

    #[test]
    fn women_have_40_added_to_the_day() {
        let nik = ok("3275014507909999");
        assert_eq!(nik.birth_date(), date(1990, 7, 5));
        assert_eq!(nik.sex(), Sex::Female);
        assert_eq!(nik.serial(), 9999);
        assert_eq!(ok("3275017112990001").birth_date(), date(1999, 12, 31));
        assert_eq!(ok("3275014101990001").birth_date(), date(1999, 1, 1));
    }

    #[test]
    fn wrong_length_is_a_length_violation_only() {
        assert_eq!(parts("327501050790001"), [NikPart::Length]);
        assert_eq!(parts("32750105079000011"), [NikPart::Length]);
        assert_eq!(parts(""), [NikPart::Length]);
    }

    #[test]
    fn non_digits_are_a_characters_violation() {
        assert_eq!(parts("32750105079000a1"), [NikPart::Characters]);
        assert_eq!(parts("3275 10507900001"), [NikPart::Characters]);
        // A full-width digit is one character, three bytes: not a length error.
        assert_eq!(parts("３275010507900001"), [NikPart::Characters]);
        assert_eq!(parts("-275010507900001"), [NikPart::Characters]);
    }

    #[test]
    fn wrong_length_and_characters_are_both_reported() {
        assert_eq!(parts("3275O10507900O1"), [NikPart::Length, NikPart::Characters]);
    }

    #[test]
    fn a_string_of_bad_shape_is_not_decoded_further() {
        // Day 32 and serial 0000 would be violations too, if it were decoded.
        assert_eq!(parts("327501320790000a"), [NikPart::Characters]);
    }

    #[test]
    fn out_of_range_days_are_birth_day_violations() {
        for day in ["00", "32", "40", "72", "99"] {
            let input = format!("327501{day}07900001");
            assert_eq!(parts(&input), [NikPart::BirthDay], "day {day}");
        }
    }

    #[test]
    fn out_of_range_months_are_birth_month_violations() {
        assert_eq!(parts("3275010500900001"), [NikPart::BirthMonth]);
        assert_eq!(parts("3275010513900001"), [NikPart::BirthMonth]);
        assert_eq!(
            parts("3275013213900001"),
            [NikPart::BirthDay, NikPart::BirthMonth]
        );
    }

    #[test]
    fn days_that_do_not_exist_are_birth_date_violations() {
        assert_eq!(parts("3275013002900001"), [NikPart::BirthDate]);
        assert_eq!(parts("3275017002900001"), [NikPart::BirthDate]);
        assert_eq!(parts("3275013104900001"), [NikPart::BirthDate]);
        assert_eq!(parts("3275012902230001"), [NikPart::BirthDate]);
        assert_eq!(ok("3275012902240001").birth_date(), date(2024, 2, 29));
        assert_eq!(ok("3275016902240001").birth_date(), date(2024, 2, 29));
        // 2000 is a leap year (divisible by 400), unlike 1900.
        assert_eq!(ok("3275012902000001").birth_date(), date(2000, 2, 29));
    }

    #[test]
    fn date_messages_say_what_is_missing() {
        let message = |input: &str| parse(input).expect_err("invalid").violations()[0].message.clone();
        assert_eq!(message("3275013002900001"), "month 02 has no day 30");
        assert_eq!(
            message("3275012902230001"),
            "29 february does not exist in year 23"
        );
        assert_eq!(
            message("3275013207900001"),
            "day 32 is not a valid day (01-31, or 41-71 for women)"
        );
    }

    #[test]
    fn the_all_zero_serial_is_a_serial_violation() {
        assert_eq!(parts("3275010507900000"), [NikPart::Serial]);
    }

    #[test]
    fn zero_region_segments_are_malformed() {
        assert_eq!(parts("0075010507900001"), [NikPart::Province]);
        assert_eq!(parts("3200010507900001"), [NikPart::Regency]);
        assert_eq!(parts("3275000507900001"), [NikPart::District]);
        assert_eq!(
            parts("0000000507900001"),
            [NikPart::Province, NikPart::Regency, NikPart::District]
        );
        // Unknown is not malformed: 99.99.99 is for the region table to judge.
        assert_eq!(ok("9999990507900001").district_code(), "999999");
    }

    #[test]
    fn all_violations_are_collected() {
        assert_eq!(
            parts("0075003213900000"),
            [
                NikPart::Province,
                NikPart::District,
                NikPart::BirthDay,
                NikPart::BirthMonth,
                NikPart::Serial
            ]
        );
    }

    #[test]
    fn century_is_the_latest_date_not_after_today() {
        assert_eq!(ok("3275010101260001").birth_date(), date(2026, 1, 1));
        assert_eq!(ok("3275010112260001").birth_date(), date(1926, 12, 1));
        assert_eq!(ok("3275012211260001").birth_date(), date(2026, 11, 22));
        assert_eq!(ok("3275012311260001").birth_date(), date(1926, 11, 23));
        assert_eq!(ok("3275010101990001").birth_date(), date(1999, 1, 1));
        assert_eq!(ok("3275010101000001").birth_date(), date(2000, 1, 1));
    }

    #[test]
    fn a_clock_before_the_birth_date_is_an_error() {
        let err = Nik::parse("3275010101600001", date(1950, 1, 1)).expect_err("future");
        assert_eq!(err.violations()[0].part, NikPart::BirthDate);
        assert_eq!(err.violations()[0].message, "birth date is in the future");
    }

    #[test]
    fn debug_and_display_are_masked() {
        let nik = ok("3275014507900001");
        assert_eq!(nik.masked(), "3275********0001");
        assert_eq!(format!("{nik}"), "3275********0001");
        assert_eq!(format!("{nik:?}"), "Nik(3275********0001)");
        assert_eq!(format!("{nik:>18}"), "  3275********0001");
        assert!(!format!("{nik:?} {nik:#?} {nik}").contains(nik.as_str()));
        assert!(!format!("{:?}", Some(nik)).contains("4507"));
    }

    #[test]
    fn error_display_never_contains_the_input() {
        for input in ["3275013207900000", "32750132079000", "3275O13207900000"] {
            let err = parse(input).expect_err("invalid");
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(input), "{shown}");
            assert!(shown.starts_with("invalid nik: "), "{shown}");
        }
    }

    #[test]
    fn from_parts_builds_the_digits() {
        let nik = Nik::from_parts("327501", date(1990, 7, 5), Sex::Female, 42).expect("valid");
        assert_eq!(nik.as_str(), "3275014507900042");
        assert_eq!(nik, ok("3275014507900042"));
        let nik = Nik::from_parts("327501", date(2000, 2, 29), Sex::Male, 9999).expect("valid");
        assert_eq!(nik.as_str(), "3275012902009999");
    }

    #[test]
    fn from_parts_rejects_what_parse_would() {
        let errs = |code: &str, year: i32, serial: u16| -> Vec<NikPart> {
            Nik::from_parts(code, date(year, 1, 1), Sex::Male, serial)
                .expect_err("invalid")
                .violations()
                .iter()
                .map(|v| v.part)
                .collect()
        };
        assert_eq!(errs("327501", 1990, 0), [NikPart::Serial]);
        assert_eq!(errs("327501", 1990, 10000), [NikPart::Serial]);
        assert_eq!(errs("32750", 1990, 1), [NikPart::District]);
        assert_eq!(errs("3275011", 1990, 1), [NikPart::District]);
        assert_eq!(errs("32a501", 1990, 1), [NikPart::District]);
        assert_eq!(errs("３27501", 1990, 1), [NikPart::District]);
        assert_eq!(errs("007501", 1990, 1), [NikPart::Province]);
        assert_eq!(errs("320001", 1990, 1), [NikPart::Regency]);
        assert_eq!(errs("327500", 1990, 1), [NikPart::District]);
        assert_eq!(errs("327501", 1899, 1), [NikPart::BirthDate]);
        assert_eq!(errs("327501", 2100, 1), [NikPart::BirthDate]);
        assert_eq!(
            errs("x", 1899, 0),
            [NikPart::District, NikPart::BirthDate, NikPart::Serial]
        );
    }

    #[test]
    fn part_names() {
        let all = [
            (NikPart::Length, "length"),
            (NikPart::Characters, "characters"),
            (NikPart::Province, "province"),
            (NikPart::Regency, "regency"),
            (NikPart::District, "district"),
            (NikPart::BirthDay, "birth_day"),
            (NikPart::BirthMonth, "birth_month"),
            (NikPart::BirthDate, "birth_date"),
            (NikPart::Serial, "serial"),
        ];
        for (part, name) in all {
            assert_eq!(part.as_str(), name);
            assert_eq!(part.to_string(), name);
        }
    }

    // ---- property tests ---------------------------------------------------

    fn date_in(from: NaiveDate, to: NaiveDate) -> impl Strategy<Value = NaiveDate> {
        (from.num_days_from_ce()..=to.num_days_from_ce())
            .prop_map(|days| NaiveDate::from_num_days_from_ce_opt(days).expect("in chrono's range"))
    }

    fn sex() -> impl Strategy<Value = Sex> {
        prop_oneof![Just(Sex::Male), Just(Sex::Female)]
    }

    /// Valid NIKs as `parse` decodes them, so their birth dates are in the
    /// 100 years up to `today`.
    fn valid_nik() -> impl Strategy<Value = Nik> {
        (
            district_code(),
            date_in(date(1900, 1, 1), today()),
            sex(),
            1u16..=9999,
        )
            .prop_map(|(code, birth, sex, serial)| {
                let built = Nik::from_parts(&code, birth, sex, serial).expect("valid parts");
                Nik::parse(built.as_str(), today()).expect("built nik parses")
            })
    }

    /// The part (or parts) a digit position belongs to.
    fn parts_at(i: usize) -> &'static [NikPart] {
        match i {
            0..=1 => &[NikPart::Province],
            2..=3 => &[NikPart::Regency],
            4..=5 => &[NikPart::District],
            6..=7 => &[NikPart::BirthDay, NikPart::BirthDate],
            8..=9 => &[NikPart::BirthMonth, NikPart::BirthDate],
            10..=11 => &[NikPart::BirthDate],
            _ => &[NikPart::Serial],
        }
    }

    /// The century rule, stated independently of `resolve_birth_date`.
    fn is_latest_not_after_today(d: NaiveDate) -> bool {
        let later = d.with_year(d.year() + 100);
        d <= today() && later.is_none_or(|later| later > today())
    }

    proptest! {
        #[test]
        fn from_parts_round_trips(
            code in district_code(),
            birth in date_in(date(1900, 1, 1), today()),
            sex in sex(),
            serial in 1u16..=9999,
        ) {
            let nik = Nik::from_parts(&code, birth, sex, serial).expect("valid parts");
            let parsed = Nik::parse(nik.as_str(), today()).expect("built nik parses");
            prop_assert_eq!(parsed.as_str(), nik.as_str());
            prop_assert_eq!(parsed.district_code(), code.as_str());
            prop_assert_eq!(parsed.sex(), sex);
            prop_assert_eq!(parsed.serial(), serial);
            // Two year digits cannot tell 1926 from 2026: the later one wins
            // when it is not in the future.
            let expected = birth
                .with_year(birth.year() + 100)
                .filter(|later| *later <= today())
                .unwrap_or(birth);
            prop_assert_eq!(parsed.birth_date(), expected);
            if expected == birth {
                prop_assert_eq!(parsed, nik);
            }
        }

        #[test]
        fn single_digit_corruption_is_caught_or_decoded_in_its_part(
            original in valid_nik(),
            i in 0usize..16,
            shift in 1u8..=9,
        ) {
            let mut digits = original.digits;
            digits[i] = b'0' + (digits[i] - b'0' + shift) % 10;
            let input = ascii(&digits).to_owned();
            match Nik::parse(&input, today()) {
                Err(e) => {
                    prop_assert!(!e.violations().is_empty());
                    for v in e.violations() {
                        prop_assert!(parts_at(i).contains(&v.part), "position {} gave {:?}", i, v);
                    }
                }
                Ok(nik) => {
                    prop_assert_eq!(nik.as_str(), input.as_str());
                    let (o, n) = (original.birth_date(), nik.birth_date());
                    let same_region = |a: usize| nik.digits[a..a + 2] == original.digits[a..a + 2];
                    prop_assert_eq!(same_region(0), i > 1);
                    prop_assert_eq!(same_region(2), !(2..=3).contains(&i));
                    prop_assert_eq!(same_region(4), !(4..=5).contains(&i));
                    prop_assert_eq!(nik.serial() == original.serial(), i < 12);
                    let day_part = (n.day(), nik.sex()) == (o.day(), original.sex());
                    prop_assert_eq!(day_part, !(6..=7).contains(&i));
                    prop_assert_eq!(n.month() == o.month(), !(8..=9).contains(&i));
                    prop_assert_eq!(n.year() % 100 == o.year() % 100, !(10..=11).contains(&i));
                    prop_assert!(is_latest_not_after_today(n));
                    if !(6..=11).contains(&i) {
                        prop_assert_eq!(n, o);
                    }
                }
            }
        }

        #[test]
        fn a_letter_in_place_of_a_digit_is_a_characters_violation(
            original in valid_nik(),
            i in 0usize..16,
            letter in prop::char::range('a', 'z'),
        ) {
            number_props::letter_for_a_digit(&original, i, letter)?;
        }

        #[test]
        fn a_deleted_or_inserted_digit_is_a_length_violation(
            original in valid_nik(),
            i in 0usize..=16,
            digit in prop::char::range('0', '9'),
        ) {
            number_props::a_digit_more_or_less(&original, i, digit)?;
        }

        #[test]
        fn arbitrary_strings_never_panic(input in number_props::mostly_digits(1, 0..=40)) {
            number_props::any_input::<Nik>(&input)?;
        }

        #[test]
        fn arbitrary_digit_strings_never_panic_nor_leak(input in number_props::mostly_digits(8, 14..=18)) {
            number_props::any_input::<Nik>(&input)?;
        }
    }
}
