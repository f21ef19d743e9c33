//! The rules of printing, with no I/O: priorities when blanks are short, the
//! life of a card, and the backlog forecast.

use chrono::{Days, NaiveDate};

/// Why a card is applied for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrintReason {
    /// A first card.
    FirstCard,
    /// Lost.
    Lost,
    /// Damaged.
    Damaged,
    /// The data changed.
    DataChange,
    /// Lost in a disaster.
    Disaster,
}

/// Where a printed card is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CardState {
    /// Printed, not yet sent out.
    Printed,
    /// With the post.
    InTransit,
    /// At a service point, waiting for its owner.
    AtServicePoint,
    /// In its owner's hands.
    Delivered,
}

/// What happened to a dispatched card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Handed over.
    Delivered,
    /// Returned: owner deceased.
    ReturnedDeceased,
    /// Returned: owner moved.
    ReturnedMoved,
    /// Returned: unclear address.
    ReturnedUnclearAddress,
}

adminduk_kit::text_codes!(PrintReason {
    FirstCard => "FIRST_CARD",
    Lost => "LOST",
    Damaged => "DAMAGED",
    DataChange => "DATA_CHANGE",
    Disaster => "DISASTER",
});
adminduk_kit::text_codes!(CardState {
    Printed => "PRINTED",
    InTransit => "IN_TRANSIT",
    AtServicePoint => "AT_SERVICE_POINT",
    Delivered => "DELIVERED",
});

/// The priority of a job when blanks are short, 1 first: first-time
/// 17-year-olds, then disaster victims, then other first cards and suket
/// holders, then replacements, and among replacements those whose active IKD
/// serves meanwhile last.
pub fn priority(reason: PrintReason, age: i32, has_suket: bool, has_active_ikd: bool) -> i64 {
    match reason {
        PrintReason::FirstCard if age == 17 => 1,
        PrintReason::Disaster => 2,
        PrintReason::FirstCard => 3,
        _ if has_suket => 3,
        _ if !has_active_ikd => 4,
        _ => 5,
    }
}

/// Where a card goes after a delivery outcome, or why it cannot have one.
pub fn after_delivery(state: CardState, outcome: Outcome) -> Result<CardState, DeliveryRefusal> {
    match (state, outcome) {
        (CardState::Printed, _) => Err(DeliveryRefusal::NotDispatched),
        (CardState::Delivered, _) => Err(DeliveryRefusal::AlreadyDelivered),
        (CardState::InTransit | CardState::AtServicePoint, Outcome::Delivered) => Ok(CardState::Delivered),
        // Returned cards wait at the service point for their owner (or the registry's review).
        (CardState::InTransit, _) => Ok(CardState::AtServicePoint),
        (CardState::AtServicePoint, _) => Err(DeliveryRefusal::AtServicePoint),
    }
}

/// Why a delivery outcome cannot be recorded for a card where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryRefusal {
    /// Printed and still here: it was never sent out.
    NotDispatched,
    /// Already in its owner's hands.
    AlreadyDelivered,
    /// At the service point: only the handover to its owner can follow.
    AtServicePoint,
}

impl DeliveryRefusal {
    /// The ErrorInfo reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotDispatched => "NOT_DISPATCHED",
            Self::AlreadyDelivered => "ALREADY_DELIVERED",
            Self::AtServicePoint => "AT_SERVICE_POINT",
        }
    }

    /// What a client is told.
    pub fn message(self) -> &'static str {
        match self {
            Self::NotDispatched => "the card was never dispatched",
            Self::AlreadyDelivered => "the card was already delivered",
            Self::AtServicePoint => "the card is at the service point; only a handover can be recorded",
        }
    }
}

/// Whether `outcome` was already recorded for a card now in `state` (with
/// `return_reason` from the post): a retried report, answered the same.
pub fn delivery_recorded(state: CardState, return_reason: Option<&str>, outcome: Outcome) -> bool {
    match outcome {
        Outcome::Delivered => state == CardState::Delivered,
        returned => state == CardState::AtServicePoint && return_reason == returned.return_reason(),
    }
}

impl Outcome {
    /// The stored return reason of a returned card; `None` for a handover.
    pub fn return_reason(self) -> Option<&'static str> {
        match self {
            Self::Delivered => None,
            Self::ReturnedDeceased => Some("DECEASED"),
            Self::ReturnedMoved => Some("MOVED"),
            Self::ReturnedUnclearAddress => Some("UNCLEAR_ADDRESS"),
        }
    }
}

/// When `waiting` clears at `weekly` cards a week, from `today`; `None` when nothing is printed.
pub fn forecast_clear(waiting: i64, weekly: i64, today: NaiveDate) -> Option<NaiveDate> {
    if weekly <= 0 {
        return (waiting == 0).then_some(today);
    }
    let days = (waiting.max(0) * 7 + weekly - 1) / weekly;
    today.checked_add_days(Days::new(u64::try_from(days).ok()?))
}

/// A suket is valid for six months.
pub fn suket_valid_until(issued: NaiveDate) -> NaiveDate {
    issued
        .checked_add_months(chrono::Months::new(6))
        .unwrap_or(issued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_the_shortage_order() {
        assert_eq!(priority(PrintReason::FirstCard, 17, false, false), 1);
        assert_eq!(priority(PrintReason::Disaster, 40, false, true), 2);
        assert_eq!(priority(PrintReason::FirstCard, 25, false, false), 3);
        assert_eq!(
            priority(PrintReason::Lost, 30, true, true),
            3,
            "suket holders before replacements"
        );
        assert_eq!(priority(PrintReason::Lost, 30, false, false), 4);
        assert_eq!(
            priority(PrintReason::Damaged, 30, false, true),
            5,
            "an active IKD serves meanwhile"
        );
    }

    #[test]
    fn cards_move_only_forward() {
        assert_eq!(
            after_delivery(CardState::InTransit, Outcome::Delivered),
            Ok(CardState::Delivered)
        );
        assert_eq!(
            after_delivery(CardState::InTransit, Outcome::ReturnedMoved),
            Ok(CardState::AtServicePoint)
        );
        assert_eq!(
            after_delivery(CardState::AtServicePoint, Outcome::Delivered),
            Ok(CardState::Delivered)
        );
        assert!(after_delivery(CardState::Printed, Outcome::Delivered).is_err());
        assert!(after_delivery(CardState::Delivered, Outcome::Delivered).is_err());
        assert!(after_delivery(CardState::AtServicePoint, Outcome::ReturnedDeceased).is_err());
    }

    #[test]
    fn the_bekasi_backlog_clears_in_under_two_weeks() {
        let today = NaiveDate::from_ymd_opt(2020, 1, 20).expect("date");
        // Seed 004: 106,000 waiting, 60,000 printed a week.
        let clear = forecast_clear(106_000, 60_000, today).expect("a date");
        assert_eq!((clear - today).num_days(), 13);
        assert_eq!(forecast_clear(10, 0, today), None);
        assert_eq!(forecast_clear(0, 0, today), Some(today));
    }

    #[test]
    fn a_suket_lasts_six_months() {
        let issued = NaiveDate::from_ymd_opt(2026, 8, 31).expect("date");
        assert_eq!(
            suket_valid_until(issued),
            NaiveDate::from_ymd_opt(2027, 2, 28).expect("date")
        );
    }
}
