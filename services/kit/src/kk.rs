//! KK numbers.
//!
//! The KK (Kartu Keluarga, family card) number is 16 digits: the 6-digit
//! region where the card was issued, the issue date as DDMMYY and a 4-digit
//! serial. The 16-digit KK came with SIAK in the 2000s, so the year is always
//! 20YY, and an issue date after today is an error.
//!
//! The digit helpers are shared with [`super::nik`]: both numbers have the
//! same shape and the same region prefix.

use std::fmt;

use chrono::{Datelike, NaiveDate};

use super::nik::{
    Fault, Faults, NumberError, Violation, ascii, fmt_masked, four, masked_digits, missing_date_message,
    month_faults, put_date, put4, region_digits, region_faults, serial_faults, serial_range_faults,
    sixteen_digits, two,
};

/// A structurally valid KK number with its decoded issue date.
///
/// `Debug` and `Display` both mask it as `3275********0001`: a KK number is
/// personal data too; [`Kk::as_str`] is the explicit way out.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kk {
    // ASCII digits only, by construction: `as_str` relies on it.
    digits: [u8; 16],
    issue_date: NaiveDate,
}

impl Kk {
    /// Parses and checks a KK number; an issue date after `today` is an error.
    ///
    /// Every violation is reported, not only the first, unless the input is
    /// not 16 ASCII digits at all: then only length and characters are.
    pub fn parse(input: &str, today: NaiveDate) -> Result<Kk, KkError> {
        let digits = sixteen_digits(input).map_err(|f| KkError::new("kk number", f, KkPart::from_fault))?;
        let mut faults = Faults::new();
        region_faults(&digits, &mut faults);

        let day = two(&digits, 6);
        let day_ok = (1..=31).contains(&day);
        if !day_ok {
            faults.push((Fault::Day, format!("day {day:02} is not a valid day (01-31)")));
        }
        let month = two(&digits, 8);
        let month_ok = month_faults(month, &mut faults);
        let yy = two(&digits, 10);

        let mut issue_date = None;
        // A date check on an out-of-range day or month would only repeat those violations.
        if day_ok && month_ok {
            match NaiveDate::from_ymd_opt(2000 + i32::from(yy), month.into(), day.into()) {
                Some(date) if date <= today => issue_date = Some(date),
                Some(_) => faults.push((Fault::Date, "issue date is in the future".to_owned())),
                None => faults.push((Fault::Date, missing_date_message(day, month, yy))),
            }
        }
        serial_faults(&digits, &mut faults);

        match issue_date {
            Some(issue_date) if faults.is_empty() => Ok(Kk { digits, issue_date }),
            _ => Err(KkError::new("kk number", faults, KkPart::from_fault)),
        }
    }

    /// Builds a KK number from its parts, for synthetic data and tests.
    ///
    /// The issue year must be 2000–2099; whether it is in the future is only
    /// known to `parse`, which is given `today`.
    pub fn from_parts(district_code: &str, issue_date: NaiveDate, serial: u16) -> Result<Kk, KkError> {
        let mut faults = Faults::new();
        let region = region_digits(district_code, &mut faults);
        let year = issue_date.year();
        if !(2000..=2099).contains(&year) {
            faults.push((
                Fault::Date,
                format!("year {year} cannot be written in a kk number (2000-2099)"),
            ));
        }
        serial_range_faults(serial, &mut faults);

        match region {
            Some(region) if faults.is_empty() => {
                let mut digits = [b'0'; 16];
                digits[..6].copy_from_slice(&region);
                put_date(&mut digits, issue_date, 0);
                put4(&mut digits, 12, serial);
                Ok(Kk { digits, issue_date })
            }
            _ => Err(KkError::new("kk number", faults, KkPart::from_fault)),
        }
    }

    /// The 16 digits, unmasked: the one explicit way to see the whole number.
    pub fn as_str(&self) -> &str {
        ascii(&self.digits)
    }

    /// The district (kecamatan) code including regency and province, e.g. `327501`.
    pub fn district_code(&self) -> &str {
        ascii(&self.digits[..6])
    }

    /// The regency or city code including its province, e.g. `3275`.
    pub fn regency_code(&self) -> &str {
        ascii(&self.digits[..4])
    }

    /// The province code, e.g. `32`.
    pub fn province_code(&self) -> &str {
        ascii(&self.digits[..2])
    }

    /// The date the card was issued.
    pub fn issue_date(&self) -> NaiveDate {
        self.issue_date
    }

    /// The serial among cards issued in the same district on the same day, 1–9999.
    pub fn serial(&self) -> u16 {
        four(&self.digits, 12)
    }

    /// The number masked for logs: `3275********0001`.
    pub fn masked(&self) -> String {
        ascii(&masked_digits(&self.digits)).to_owned()
    }
}

impl fmt::Debug for Kk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_masked(&self.digits, f, Some("Kk"))
    }
}

impl fmt::Display for Kk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_masked(&self.digits, f, None)
    }
}

/// Why a string is not a KK number.
pub type KkError = NumberError<KkPart>;

/// One problem in a KK number.
pub type KkViolation = Violation<KkPart>;

/// The parts of a KK number a violation can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KkPart {
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
    /// Digits 7–8: 01–31.
    IssueDay,
    /// Digits 9–10: 01–12.
    IssueMonth,
    /// Digits 7–12 together: no real date, or a date after today.
    IssueDate,
    /// Digits 13–16: 0001–9999.
    Serial,
}

impl KkPart {
    /// The part's name as used in API error details, e.g. `issue_day`.
    pub fn as_str(&self) -> &'static str {
        match self {
            KkPart::Length => "length",
            KkPart::Characters => "characters",
            KkPart::Province => "province",
            KkPart::Regency => "regency",
            KkPart::District => "district",
            KkPart::IssueDay => "issue_day",
            KkPart::IssueMonth => "issue_month",
            KkPart::IssueDate => "issue_date",
            KkPart::Serial => "serial",
        }
    }

    fn from_fault(fault: Fault) -> KkPart {
        match fault {
            Fault::Length => KkPart::Length,
            Fault::Characters => KkPart::Characters,
            Fault::Province => KkPart::Province,
            Fault::Regency => KkPart::Regency,
            Fault::District => KkPart::District,
            Fault::Day => KkPart::IssueDay,
            Fault::Month => KkPart::IssueMonth,
            Fault::Date => KkPart::IssueDate,
            Fault::Serial => KkPart::Serial,
        }
    }
}

impl From<KkPart> for &'static str {
    fn from(part: KkPart) -> Self {
        part.as_str()
    }
}

/// Parses the KK number in a request's `field` against today in WIB, adding
/// each violation (named by the part at fault) to `out`.
pub fn kk_field(field: &str, input: &str, out: &mut crate::Violations) -> Option<Kk> {
    super::nik::number_field(field, Kk::parse(input, crate::time::today_wib()), out)
}

impl fmt::Display for KkPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::number_props::{self, Number, date, district_code, today};

    impl Number for Kk {
        type Part = KkPart;
        const LENGTH: KkPart = KkPart::Length;
        const CHARACTERS: KkPart = KkPart::Characters;

        fn parse(input: &str, today: NaiveDate) -> Result<Self, KkError> {
            Kk::parse(input, today)
        }

        fn as_str(&self) -> &str {
            Kk::as_str(self)
        }

        fn check_parsed(&self) -> Result<(), TestCaseError> {
            prop_assert!(self.issue_date() <= today());
            Ok(())
        }
    }

    fn parse(input: &str) -> Result<Kk, KkError> {
        Kk::parse(input, today())
    }

    fn ok(input: &str) -> Kk {
        number_props::ok(input)
    }

    fn parts(input: &str) -> Vec<KkPart> {
        number_props::parts::<Kk>(input)
    }

    #[test]
    fn valid_kk_decodes_every_part() {
        let kk = ok("3275011503150007");
        assert_eq!(kk.as_str(), "3275011503150007");
        assert_eq!(kk.province_code(), "32");
        assert_eq!(kk.regency_code(), "3275");
        assert_eq!(kk.district_code(), "327501");
        assert_eq!(kk.issue_date(), date(2015, 3, 15));
        assert_eq!(kk.serial(), 7);
        assert_eq!(ok("3216232211269999").issue_date(), today());
        assert_eq!(ok("3216230101000001").issue_date(), date(2000, 1, 1));
    }

    #[test]
    fn an_issue_date_after_today_is_an_error() {
        let err = parse("3275012311260001").expect_err("tomorrow");
        assert_eq!(err.violations().len(), 1);
        assert_eq!(err.violations()[0].part, KkPart::IssueDate);
        assert_eq!(err.violations()[0].message, "issue date is in the future");
        // No century fallback: 99 is 2099, not 1999.
        assert_eq!(parts("3275010101990001"), [KkPart::IssueDate]);
    }

    #[test]
    fn women_days_are_not_valid_in_a_kk() {
        assert_eq!(parts("3275014503150001"), [KkPart::IssueDay]);
    }

    #[test]
    fn shape_violations() {
        assert_eq!(parts("327501150315001"), [KkPart::Length]);
        assert_eq!(parts("32750115031500071"), [KkPart::Length]);
        assert_eq!(parts("32750115031500a7"), [KkPart::Characters]);
        assert_eq!(parts("３275011503150007"), [KkPart::Characters]);
        assert_eq!(parts("32750115031500a"), [KkPart::Length, KkPart::Characters]);
    }

    #[test]
    fn date_violations() {
        assert_eq!(parts("3275010003150001"), [KkPart::IssueDay]);
        assert_eq!(parts("3275013203150001"), [KkPart::IssueDay]);
        assert_eq!(parts("3275011500150001"), [KkPart::IssueMonth]);
        assert_eq!(parts("3275011513150001"), [KkPart::IssueMonth]);
        assert_eq!(parts("3275013002150001"), [KkPart::IssueDate]);
        assert_eq!(parts("3275012902230001"), [KkPart::IssueDate]);
        assert_eq!(ok("3275012902240001").issue_date(), date(2024, 2, 29));
    }

    #[test]
    fn region_and_serial_violations() {
        assert_eq!(parts("0075011503150001"), [KkPart::Province]);
        assert_eq!(parts("3200011503150001"), [KkPart::Regency]);
        assert_eq!(parts("3275001503150001"), [KkPart::District]);
        assert_eq!(parts("3275011503150000"), [KkPart::Serial]);
        assert_eq!(
            parts("0000003213150000"),
            [
                KkPart::Province,
                KkPart::Regency,
                KkPart::District,
                KkPart::IssueDay,
                KkPart::IssueMonth,
                KkPart::Serial
            ]
        );
    }

    #[test]
    fn debug_and_display_are_masked() {
        let kk = ok("3275011503150007");
        assert_eq!(kk.masked(), "3275********0007");
        assert_eq!(format!("{kk}"), "3275********0007");
        assert_eq!(format!("{kk:?}"), "Kk(3275********0007)");
        assert!(!format!("{kk:?} {kk:#?} {kk}").contains(kk.as_str()));
        let err = parse("3275013203150000").expect_err("invalid");
        assert!(!format!("{err} {err:?}").contains("3275013203150000"));
    }

    #[test]
    fn from_parts_builds_and_rejects() {
        let kk = Kk::from_parts("327501", date(2015, 3, 15), 7).expect("valid");
        assert_eq!(kk.as_str(), "3275011503150007");
        assert_eq!(kk, ok("3275011503150007"));
        let errs = |code: &str, year: i32, serial: u16| -> Vec<KkPart> {
            Kk::from_parts(code, date(year, 1, 1), serial)
                .expect_err("invalid")
                .violations()
                .iter()
                .map(|v| v.part)
                .collect()
        };
        assert_eq!(errs("327501", 1999, 1), [KkPart::IssueDate]);
        assert_eq!(errs("327501", 2015, 0), [KkPart::Serial]);
        assert_eq!(errs("327501", 2015, 10000), [KkPart::Serial]);
        assert_eq!(errs("32750", 2015, 1), [KkPart::District]);
        assert_eq!(errs("007501", 2015, 1), [KkPart::Province]);
    }

    #[test]
    fn part_names() {
        let all = [
            (KkPart::Length, "length"),
            (KkPart::Characters, "characters"),
            (KkPart::Province, "province"),
            (KkPart::Regency, "regency"),
            (KkPart::District, "district"),
            (KkPart::IssueDay, "issue_day"),
            (KkPart::IssueMonth, "issue_month"),
            (KkPart::IssueDate, "issue_date"),
            (KkPart::Serial, "serial"),
        ];
        for (part, name) in all {
            assert_eq!(part.as_str(), name);
            assert_eq!(part.to_string(), name);
        }
    }

    // ---- property tests ---------------------------------------------------

    fn issue_date() -> impl Strategy<Value = NaiveDate> {
        (date(2000, 1, 1).num_days_from_ce()..=today().num_days_from_ce())
            .prop_map(|days| NaiveDate::from_num_days_from_ce_opt(days).expect("in chrono's range"))
    }

    fn valid_kk() -> impl Strategy<Value = Kk> {
        (district_code(), issue_date(), 1u16..=9999)
            .prop_map(|(code, issued, serial)| Kk::from_parts(&code, issued, serial).expect("valid parts"))
    }

    fn parts_at(i: usize) -> &'static [KkPart] {
        match i {
            0..=1 => &[KkPart::Province],
            2..=3 => &[KkPart::Regency],
            4..=5 => &[KkPart::District],
            6..=7 => &[KkPart::IssueDay, KkPart::IssueDate],
            8..=9 => &[KkPart::IssueMonth, KkPart::IssueDate],
            10..=11 => &[KkPart::IssueDate],
            _ => &[KkPart::Serial],
        }
    }

    proptest! {
        #[test]
        fn from_parts_round_trips(
            code in district_code(),
            issued in issue_date(),
            serial in 1u16..=9999,
        ) {
            let kk = Kk::from_parts(&code, issued, serial).expect("valid parts");
            let parsed = Kk::parse(kk.as_str(), today()).expect("built kk parses");
            prop_assert_eq!(parsed, kk);
            prop_assert_eq!(parsed.district_code(), code.as_str());
            prop_assert_eq!(parsed.issue_date(), issued);
            prop_assert_eq!(parsed.serial(), serial);
        }

        #[test]
        fn single_digit_corruption_is_caught_or_decoded_in_its_part(
            original in valid_kk(),
            i in 0usize..16,
            shift in 1u8..=9,
        ) {
            let mut digits = original.digits;
            digits[i] = b'0' + (digits[i] - b'0' + shift) % 10;
            let input = ascii(&digits).to_owned();
            match Kk::parse(&input, today()) {
                Err(e) => {
                    prop_assert!(!e.violations().is_empty());
                    for v in e.violations() {
                        prop_assert!(parts_at(i).contains(&v.part), "position {} gave {:?}", i, v);
                    }
                }
                Ok(kk) => {
                    prop_assert_eq!(kk.as_str(), input.as_str());
                    let (o, n) = (original.issue_date(), kk.issue_date());
                    let same_region = |a: usize| kk.digits[a..a + 2] == original.digits[a..a + 2];
                    prop_assert_eq!(same_region(0), i > 1);
                    prop_assert_eq!(same_region(2), !(2..=3).contains(&i));
                    prop_assert_eq!(same_region(4), !(4..=5).contains(&i));
                    prop_assert_eq!(kk.serial() == original.serial(), i < 12);
                    prop_assert_eq!(n.day() == o.day(), !(6..=7).contains(&i));
                    prop_assert_eq!(n.month() == o.month(), !(8..=9).contains(&i));
                    prop_assert_eq!(n.year() == o.year(), !(10..=11).contains(&i));
                    prop_assert!(n <= today());
                }
            }
        }

        #[test]
        fn a_letter_in_place_of_a_digit_is_a_characters_violation(
            original in valid_kk(),
            i in 0usize..16,
            letter in prop::char::range('a', 'z'),
        ) {
            number_props::letter_for_a_digit(&original, i, letter)?;
        }

        #[test]
        fn a_deleted_or_inserted_digit_is_a_length_violation(
            original in valid_kk(),
            i in 0usize..=16,
            digit in prop::char::range('0', '9'),
        ) {
            number_props::a_digit_more_or_less(&original, i, digit)?;
        }

        #[test]
        fn arbitrary_strings_never_panic(input in number_props::mostly_digits(1, 0..=40)) {
            number_props::any_input::<Kk>(&input)?;
        }

        #[test]
        fn arbitrary_digit_strings_never_panic_nor_leak(input in number_props::mostly_digits(8, 14..=18)) {
            number_props::any_input::<Kk>(&input)?;
        }
    }
}
