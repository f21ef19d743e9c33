//! What the NIK's and the KK's tests share: both are 16 digits with the same
//! shape errors, the same masked display and the same rules for what an error
//! may say, so the properties that follow from that are written once, over
//! [`Number`], and each type's `proptest!` block calls them.

use std::fmt;
use std::ops::RangeInclusive;

use chrono::NaiveDate;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::nik::NumberError;

pub(crate) fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("test date exists")
}

/// The day every test parses on.
pub(crate) fn today() -> NaiveDate {
    date(2026, 11, 22)
}

/// A 16-digit number under test.
pub(crate) trait Number: Sized + fmt::Debug + fmt::Display {
    /// Its parts, as violations name them.
    type Part: Copy + PartialEq + fmt::Debug;
    /// The part a wrong length is.
    const LENGTH: Self::Part;
    /// The part a character other than a digit is.
    const CHARACTERS: Self::Part;

    fn parse(input: &str, today: NaiveDate) -> Result<Self, NumberError<Self::Part>>;
    fn as_str(&self) -> &str;
    /// What a parsed number must hold beyond showing its input (its dates).
    fn check_parsed(&self) -> Result<(), TestCaseError>;
}

/// Parses on [`today`], panicking on a refusal.
pub(crate) fn ok<N: Number>(input: &str) -> N {
    N::parse(input, today()).unwrap_or_else(|err| panic!("valid: {err}"))
}

/// The parts a refused input violates, in order (panics when it parses).
pub(crate) fn parts<N: Number>(input: &str) -> Vec<N::Part> {
    match N::parse(input, today()) {
        Ok(number) => panic!("expected an error, parsed {number:?}"),
        Err(e) => e.violations().iter().map(|v| v.part).collect(),
    }
}

/// Six digits of province, regency and district, none of them zero.
pub(crate) fn district_code() -> impl Strategy<Value = String> {
    (1u8..=99, 1u8..=99, 1u8..=99).prop_map(|(p, r, d)| format!("{p:02}{r:02}{d:02}"))
}

/// Strings of `lengths` characters, a digit `digit_weight` times as often as any other character.
pub(crate) fn mostly_digits(
    digit_weight: u32,
    lengths: RangeInclusive<usize>,
) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![digit_weight => prop::char::range('0', '9'), 1 => any::<char>()],
        lengths,
    )
    .prop_map(|chars| chars.into_iter().collect::<String>())
}

/// A letter at position `i` of a valid number is a characters violation, and only that.
pub(crate) fn letter_for_a_digit<N: Number>(
    original: &N,
    i: usize,
    letter: char,
) -> Result<(), TestCaseError> {
    let mut input: Vec<char> = original.as_str().chars().collect();
    input[i] = letter;
    let input: String = input.into_iter().collect();
    prop_assert_eq!(
        refused_parts::<N>(&input, "a letter is not a digit")?,
        [N::CHARACTERS]
    );
    Ok(())
}

/// A digit inserted at `i` or the digit at `i` deleted is a length violation, and only that.
pub(crate) fn a_digit_more_or_less<N: Number>(
    original: &N,
    i: usize,
    digit: char,
) -> Result<(), TestCaseError> {
    let mut inserted = original.as_str().to_owned();
    inserted.insert(i, digit);
    let mut deleted = original.as_str().to_owned();
    deleted.remove(i.min(15));
    for input in [inserted, deleted] {
        prop_assert_eq!(refused_parts::<N>(&input, "wrong length")?, [N::LENGTH]);
    }
    Ok(())
}

fn refused_parts<N: Number>(input: &str, why: &str) -> Result<Vec<N::Part>, TestCaseError> {
    match N::parse(input, today()) {
        Ok(number) => Err(TestCaseError::fail(format!("{why}, yet parsed {number:?}"))),
        Err(err) => Ok(err.violations().iter().map(|v| v.part).collect()),
    }
}

/// Whatever the input, parsing does not panic; a parsed number shows its
/// input and its display never does; an error names at least one violation,
/// never contains the input, and says each in lowercase without a full stop.
pub(crate) fn any_input<N: Number>(input: &str) -> Result<(), TestCaseError> {
    match N::parse(input, today()) {
        Ok(number) => {
            prop_assert_eq!(number.as_str(), input);
            prop_assert!(!number.to_string().contains(input));
            number.check_parsed()?;
        }
        Err(err) => {
            prop_assert!(!err.violations().is_empty());
            let shown = err.to_string();
            if input.len() >= 5 {
                prop_assert!(!shown.contains(input), "{}", shown);
            }
            for v in err.violations() {
                prop_assert_eq!(v.message.to_lowercase(), v.message.clone());
                prop_assert!(!v.message.ends_with('.'));
            }
        }
    }
    Ok(())
}
