//! A region's quota policy and the pacing rule.

use chrono::NaiveDate;

/// Days the stock is spread over when no next shipment is known: a month,
/// as the office does ("given 10,000, we do not spend them all in one month").
pub const DEFAULT_PACING_DAYS: i64 = 30;

/// What kind of place a service point is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PointKind {
    /// A kecamatan office.
    Kecamatan,
    /// Mal Pelayanan Publik.
    Mpp,
    /// Gerai Pelayanan Publik.
    Gpp,
    /// The Disdukcapil office.
    Disdukcapil,
}

/// A service point and the pool its quota comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointSpec {
    /// Code, e.g. `3275-KEC-01`.
    pub code: String,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: PointKind,
    /// The kecamatan it is in (6 digits).
    pub district_code: String,
    /// The quota pool it draws from.
    pub pool_code: String,
}

/// A daily quota shared by the points that name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// Code.
    pub code: String,
    /// Units per day.
    pub daily_quota: i64,
}

/// A region's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Regency code, 4 digits.
    pub region_code: String,
    /// Service points.
    pub points: Vec<PointSpec>,
    /// Pools.
    pub pools: Vec<PoolSpec>,
    /// Units per calendar month at most.
    pub monthly_cap: i64,
    /// The next expected shipment.
    pub next_shipment: Option<NaiveDate>,
    /// Raised by each change.
    pub version: i64,
}

/// A policy problem, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyViolation {
    /// Field path, e.g. `pools[1].daily_quota`.
    pub field: String,
    /// What is wrong.
    pub description: String,
}

impl Policy {
    /// The sum of the pools' daily quotas: the most the region hands out in a day.
    pub fn daily_total(&self) -> i64 {
        self.pools.iter().map(|p| p.daily_quota).sum()
    }

    /// A pool's daily quota.
    pub fn pool_quota(&self, pool: &str) -> Option<i64> {
        self.pools.iter().find(|p| p.code == pool).map(|p| p.daily_quota)
    }

    /// Checks the policy's own consistency.
    pub fn check(&self) -> Result<(), Vec<PolicyViolation>> {
        let mut out = Vec::new();
        let mut bad = |field: String, description: &str| {
            out.push(PolicyViolation {
                field,
                description: description.to_owned(),
            })
        };
        if self.points.is_empty() {
            bad("service_points".into(), "must name at least one service point");
        }
        if self.monthly_cap < 0 {
            bad("monthly_cap".into(), "must not be negative");
        }
        for (i, pool) in self.pools.iter().enumerate() {
            if !valid_code(&pool.code) {
                bad(
                    format!("pools[{i}].code"),
                    "must be 1 to 32 letters, digits or hyphens",
                );
            }
            if !(0..=100_000).contains(&pool.daily_quota) {
                bad(format!("pools[{i}].daily_quota"), "must be between 0 and 100000");
            }
            if self.pools[..i].iter().any(|p| p.code == pool.code) {
                bad(format!("pools[{i}].code"), "is listed twice");
            }
        }
        for (i, point) in self.points.iter().enumerate() {
            self.check_point(i, point, &mut bad);
        }
        if out.is_empty() { Ok(()) } else { Err(out) }
    }

    /// Checks the `i`th service point against the rest of the policy, telling
    /// `bad` each violation.
    fn check_point(&self, i: usize, point: &PointSpec, bad: &mut impl FnMut(String, &str)) {
        if !valid_code(&point.code) {
            bad(
                format!("service_points[{i}].code"),
                "must be 1 to 32 letters, digits or hyphens",
            );
        }
        if self.points[..i].iter().any(|p| p.code == point.code) {
            bad(format!("service_points[{i}].code"), "is listed twice");
        }
        if self.pool_quota(&point.pool_code).is_none() {
            bad(
                format!("service_points[{i}].pool_code"),
                "names no pool of this policy",
            );
        }
        // The code names its region: `3275-KEC-01` is Kota Bekasi's, and
        // no other region's policy can claim it.
        let prefixed = point
            .code
            .strip_prefix(self.region_code.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|rest| !rest.is_empty());
        if valid_code(&point.code) && !prefixed {
            bad(
                format!("service_points[{i}].code"),
                "must start with the policy's region code and a hyphen, e.g. 3275-KEC-01",
            );
        }
        if point.name.trim().is_empty() {
            bad(format!("service_points[{i}].name"), "must not be empty");
        } else if point.name.chars().count() > 128 {
            bad(
                format!("service_points[{i}].name"),
                "must be at most 128 characters",
            );
        } else if point.name.chars().any(char::is_control) {
            bad(
                format!("service_points[{i}].name"),
                "must not contain control characters",
            );
        }
        if point.district_code.len() != 6 || !point.district_code.starts_with(&self.region_code) {
            bad(
                format!("service_points[{i}].district_code"),
                "must be a 6-digit kecamatan code of the region",
            );
        }
    }
}

fn valid_code(code: &str) -> bool {
    (1..=32).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The day's budget under pacing: the available stock spread evenly over the
/// days until the next shipment, never more than the pools' quotas together.
pub fn pacing_budget(
    available: i64,
    daily_total: i64,
    day: NaiveDate,
    next_shipment: Option<NaiveDate>,
) -> i64 {
    let days = next_shipment
        .map(|next| (next - day).num_days())
        .filter(|d| *d >= 1)
        .unwrap_or(DEFAULT_PACING_DAYS);
    (available.max(0) / days).min(daily_total).max(0)
}

/// Days the available stock lasts at a daily budget; infinite when nothing is spent.
pub fn runway_days(available: i64, daily_budget: i64) -> f64 {
    if daily_budget <= 0 {
        f64::INFINITY
    } else {
        available.max(0) as f64 / daily_budget as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("date")
    }

    #[test]
    fn pacing_spreads_the_stock_until_the_next_shipment() {
        // Kota Bekasi: 510 a day at most.
        assert_eq!(
            pacing_budget(15_000, 510, d(2026, 11, 1), Some(d(2026, 12, 1))),
            500
        );
        // "Given 10,000, we do not spend them all in one month": 60 days to go.
        assert_eq!(
            pacing_budget(10_000, 510, d(2026, 11, 1), Some(d(2026, 12, 31))),
            166
        );
        // Plenty of stock: the quotas bind.
        assert_eq!(
            pacing_budget(1_000_000, 510, d(2026, 11, 1), Some(d(2026, 11, 8))),
            510
        );
        // No date known: a month.
        assert_eq!(pacing_budget(3_000, 510, d(2026, 11, 1), None), 100);
        // A shipment date in the past is no guide either.
        assert_eq!(
            pacing_budget(3_000, 510, d(2026, 11, 1), Some(d(2026, 10, 1))),
            100
        );
        assert_eq!(pacing_budget(-5, 510, d(2026, 11, 1), None), 0);
    }

    #[test]
    fn runway_is_stock_over_budget() {
        assert!((runway_days(10_000, 500) - 20.0).abs() < 1e-9);
        assert!(runway_days(10, 0).is_infinite());
    }
}
