//! The office's calendar: "today" is the date in Western Indonesia Time.

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};

/// WIB, UTC+7: Kota Bekasi's offices keep this time.
pub fn wib() -> FixedOffset {
    // 7 hours is within FixedOffset's range, so the fallback never runs.
    FixedOffset::east_opt(7 * 3600).unwrap_or_else(|| Utc.fix())
}

use chrono::Offset as _;

/// Today's date in WIB.
pub fn today_wib() -> NaiveDate {
    Utc::now().with_timezone(&wib()).date_naive()
}

/// Whole years from `birth` to `today`.
pub fn age(birth: NaiveDate, today: NaiveDate) -> i32 {
    use chrono::Datelike as _;
    let mut years = today.year() - birth.year();
    if (today.month(), today.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    years
}

/// The end of a day in WIB (midnight that follows it), as an instant.
pub fn end_of_day_wib(day: NaiveDate) -> DateTime<Utc> {
    let next = day.succ_opt().unwrap_or(day);
    next.and_hms_opt(0, 0, 0)
        .and_then(|t| t.and_local_timezone(wib()).single())
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_ends_at_midnight_wib() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).expect("date");
        assert_eq!(end_of_day_wib(day).to_rfc3339(), "2026-11-23T17:00:00+00:00");
    }
}
