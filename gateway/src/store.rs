//! The gateway's records in SQL, for SQLite and PostgreSQL alike: agencies'
//! agreements and their daily usage, and accounts flagged as suspected brokers.
//! (The audit chain keeps its own statements, in [`crate::audit`].)

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use adminduk_kit::storage::{Corrupt, Migrations, day_text, from_day_text, from_millis, millis};
use adminduk_proto::gateway::v1::{AgreementStatus, VerificationField};

/// The gateway's migrations.
pub const MIGRATIONS: Migrations = adminduk_kit::migrations!["0001_gateway.sql", "0002_ikd_first.sql"];

/// The gateway's schema on a shared PostgreSQL database.
pub const SCHEMA: &str = "gateway";

adminduk_kit::store! {
    /// The gateway's store.
    pub struct Store;
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A revoked agreement is never changed again.
    #[error("the agreement is revoked")]
    Revoked,
    /// A stored row could not be read.
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// An agency's agreement (PKS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    /// The agency code its certificate names.
    pub agency_code: String,
    /// Its name.
    pub name: String,
    /// The fields it may compare.
    pub allowed_fields: Vec<VerificationField>,
    /// Verifications per day.
    pub daily_quota: i64,
    /// Active, suspended or revoked.
    pub status: AgreementStatus,
    /// Pays nothing (government bodies, BPJS).
    pub fee_exempt: bool,
    /// Why it was last changed.
    pub reason: String,
    /// When.
    pub updated_at: DateTime<Utc>,
    /// By whom.
    pub updated_by: String,
}

/// An account flagged as a suspected broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// The account (the resident's bound device).
    pub account: String,
    /// The holder's NIK, masked.
    pub nik_masked: String,
    /// Refusals counted when it was flagged.
    pub refusals: i64,
    /// When it was flagged.
    pub flagged_at: DateTime<Utc>,
    /// When the block ends by itself.
    pub blocked_until: DateTime<Utc>,
}

/// One day of an agency's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayUsage {
    /// The day (Asia/Jakarta).
    pub day: NaiveDate,
    /// Verifications.
    pub checks: i64,
    /// Their cost in rupiah.
    pub amount_rupiah: i64,
}

fn status_name(status: AgreementStatus) -> &'static str {
    let name = status.as_str_name();
    name.strip_prefix("AGREEMENT_STATUS_").unwrap_or(name)
}

fn field_name(field: VerificationField) -> &'static str {
    let name = field.as_str_name();
    name.strip_prefix("VERIFICATION_FIELD_").unwrap_or(name)
}

fn agreement_of(row: &AnyRow) -> Result<Agreement, StoreError> {
    let status: String = row.try_get("status")?;
    let fields: String = row.try_get("allowed_fields")?;
    let allowed_fields = fields
        .split(',')
        .filter(|f| !f.is_empty())
        .map(|f| {
            VerificationField::from_str_name(&format!("VERIFICATION_FIELD_{f}"))
                .ok_or(Corrupt::new("allowed field"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Agreement {
        agency_code: row.try_get("agency_code")?,
        name: row.try_get("name")?,
        allowed_fields,
        daily_quota: row.try_get("daily_quota")?,
        status: AgreementStatus::from_str_name(&format!("AGREEMENT_STATUS_{status}"))
            .ok_or(Corrupt::new("agreement status"))?,
        fee_exempt: row.try_get::<i64, _>("fee_exempt")? != 0,
        reason: row.try_get("reason")?,
        updated_at: from_millis(row.try_get("updated_at")?)?,
        updated_by: row.try_get("updated_by")?,
    })
}

fn flag_of(row: &AnyRow) -> Result<Flag, StoreError> {
    Ok(Flag {
        account: row.try_get("account")?,
        nik_masked: row.try_get("nik_masked")?,
        refusals: row.try_get("refusals")?,
        flagged_at: from_millis(row.try_get("flagged_at")?)?,
        blocked_until: from_millis(row.try_get("blocked_until")?)?,
    })
}

const AGREEMENT_COLUMNS: &str =
    "agency_code, name, allowed_fields, daily_quota, status, fee_exempt, reason, updated_at, updated_by";

impl Store {
    /// Writes an agreement whole; a revoked one is not changed ([`StoreError::Revoked`]).
    pub async fn put_agreement(&self, agreement: &Agreement) -> Result<(), StoreError> {
        let mut tx = self.db().begin_write().await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT status FROM agreements WHERE agency_code = $1")
                .bind(&agreement.agency_code)
                .fetch_optional(&mut *tx)
                .await?;
        if current.as_deref() == Some(status_name(AgreementStatus::Revoked)) {
            return Err(StoreError::Revoked);
        }
        let fields: Vec<&str> = agreement.allowed_fields.iter().map(|f| field_name(*f)).collect();
        let written = sqlx::query(
            "INSERT INTO agreements (agency_code, name, allowed_fields, daily_quota, status, fee_exempt, reason, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (agency_code) DO UPDATE SET name = excluded.name,
                 allowed_fields = excluded.allowed_fields, daily_quota = excluded.daily_quota,
                                  status = excluded.status, fee_exempt = excluded.fee_exempt, reason = excluded.reason,
                 updated_at = excluded.updated_at, updated_by = excluded.updated_by
             WHERE agreements.status <> 'REVOKED'",
        )
        .bind(&agreement.agency_code)
        .bind(&agreement.name)
        .bind(fields.join(","))
        .bind(agreement.daily_quota)
        .bind(status_name(agreement.status))
        .bind(i64::from(agreement.fee_exempt))
        .bind(&agreement.reason)
        .bind(millis(agreement.updated_at))
                .bind(&agreement.updated_by)
        .execute(&mut *tx)
        .await?;
        // Revoked by another writer since it was read: the revocation stands.
        if written.rows_affected() == 0 {
            return Err(StoreError::Revoked);
        }
        tx.commit().await?;
        Ok(())
    }

    /// An agency's agreement, if it has one.
    pub async fn agreement(&self, agency_code: &str) -> Result<Option<Agreement>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {AGREEMENT_COLUMNS} FROM agreements WHERE agency_code = $1"
        )))
        .bind(agency_code)
        .fetch_optional(self.db().pool())
        .await?;
        row.as_ref().map(agreement_of).transpose()
    }

    /// Counts one verification of `day` costing `fee_rupiah`, if the day has
    /// fewer than `quota`: the day's count after it, or `None` at the quota.
    /// One statement, so racing verifications never pass the quota.
    pub async fn count_check(
        &self,
        agency_code: &str,
        day: NaiveDate,
        fee_rupiah: i64,
        quota: i64,
    ) -> Result<Option<i64>, StoreError> {
        let count: Option<i64> = sqlx::query_scalar(
            "INSERT INTO agency_usage (agency_code, day, checks, amount_rupiah) VALUES ($1, $2, 1, $3)
             ON CONFLICT (agency_code, day) DO UPDATE SET checks = agency_usage.checks + 1,
                 amount_rupiah = agency_usage.amount_rupiah + excluded.amount_rupiah
             WHERE agency_usage.checks < $4
             RETURNING checks",
        )
        .bind(agency_code)
        .bind(day_text(day))
        .bind(fee_rupiah)
        .bind(quota)
        .fetch_optional(self.db().pool())
        .await?;
        Ok(count)
    }

    /// Takes back a verification counted by [`Store::count_check`] that the
    /// population service did not answer.
    pub async fn uncount_check(
        &self,
        agency_code: &str,
        day: NaiveDate,
        fee_rupiah: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE agency_usage SET checks = checks - 1, amount_rupiah = amount_rupiah - $3
             WHERE agency_code = $1 AND day = $2 AND checks > 0 AND amount_rupiah >= $3",
        )
        .bind(agency_code)
        .bind(day_text(day))
        .bind(fee_rupiah)
        .execute(self.db().pool())
        .await?;
        Ok(())
    }

    /// An agency's usage on each day from `first` to `last`, both included, in order.
    pub async fn usage(
        &self,
        agency_code: &str,
        first: NaiveDate,
        last: NaiveDate,
    ) -> Result<Vec<DayUsage>, StoreError> {
        let rows = sqlx::query(
            "SELECT day, checks, amount_rupiah FROM agency_usage
             WHERE agency_code = $1 AND day >= $2 AND day <= $3 ORDER BY day",
        )
        .bind(agency_code)
        .bind(day_text(first))
        .bind(day_text(last))
        .fetch_all(self.db().pool())
        .await?;
        rows.iter()
            .map(|row| {
                let day: String = row.try_get("day")?;
                Ok(DayUsage {
                    day: from_day_text(&day)?,
                    checks: row.try_get("checks")?,
                    amount_rupiah: row.try_get("amount_rupiah")?,
                })
            })
            .collect()
    }

    /// Records an account's flag (again, if it was flagged before).
    pub async fn flag(&self, flag: &Flag) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO flagged_accounts (account, nik_masked, refusals, flagged_at, blocked_until)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (account) DO UPDATE SET nik_masked = excluded.nik_masked,
                 refusals = excluded.refusals, flagged_at = excluded.flagged_at,
                 blocked_until = excluded.blocked_until,
                 cleared_at = NULL, cleared_by = NULL, clear_reason = NULL",
        )
        .bind(&flag.account)
        .bind(&flag.nik_masked)
        .bind(flag.refusals)
        .bind(millis(flag.flagged_at))
        .bind(millis(flag.blocked_until))
        .execute(self.db().pool())
        .await?;
        Ok(())
    }

    /// The flags neither cleared nor ended by `now`, newest first.
    pub async fn open_flags(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Flag>, StoreError> {
        let rows = sqlx::query(
            "SELECT account, nik_masked, refusals, flagged_at, blocked_until FROM flagged_accounts
             WHERE cleared_at IS NULL AND blocked_until > $1 ORDER BY flagged_at DESC, account LIMIT $2",
        )
        .bind(millis(now))
        .bind(limit)
        .fetch_all(self.db().pool())
        .await?;
        rows.iter().map(flag_of).collect()
    }

    /// Whether the account has a flag neither cleared nor ended by `now`.
    pub async fn is_flagged(&self, account: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT refusals FROM flagged_accounts WHERE account = $1 AND cleared_at IS NULL AND blocked_until > $2",
        )
        .bind(account)
        .bind(millis(now))
        .fetch_optional(self.db().pool())
        .await?;
        Ok(found.is_some())
    }

    /// Clears an open flag with its reason; `false` when the account has none open.
    pub async fn clear_flag(
        &self,
        account: &str,
        now: DateTime<Utc>,
        by: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE flagged_accounts SET cleared_at = $2, cleared_by = $3, clear_reason = $4
             WHERE account = $1 AND cleared_at IS NULL AND blocked_until > $2",
        )
        .bind(account)
        .bind(millis(now))
        .bind(by)
        .bind(reason)
        .execute(self.db().pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Counts a deflection of the resident `reference` names: the first in a
    /// window starts it (and forgets an activation that ended the last one).
    pub async fn deflect(
        &self,
        reference: &str,
        now: DateTime<Utc>,
        window: chrono::Duration,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ikd_deflections (reference, deflected_at, deflections) VALUES ($1, $2, 1)
             ON CONFLICT (reference) DO UPDATE SET
                 deflections = CASE WHEN ikd_deflections.activated_at IS NULL AND ikd_deflections.deflected_at >= $3
                     THEN ikd_deflections.deflections + 1 ELSE 1 END,
                 deflected_at = CASE WHEN ikd_deflections.activated_at IS NULL AND ikd_deflections.deflected_at >= $3
                     THEN ikd_deflections.deflected_at ELSE $2 END,
                 activated_at = NULL",
        )
        .bind(reference)
        .bind(millis(now))
        .bind(millis(now - window))
        .execute(self.db().pool())
        .await?;
        Ok(())
    }

    /// Marks the resident's open deflection (within `window`) as followed by an activation.
    pub async fn activated_after_deflection(
        &self,
        reference: &str,
        now: DateTime<Utc>,
        window: chrono::Duration,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE ikd_deflections SET activated_at = $2
             WHERE reference = $1 AND activated_at IS NULL AND deflected_at >= $3",
        )
        .bind(reference)
        .bind(millis(now))
        .bind(millis(now - window))
        .execute(self.db().pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Residents deflected since `since`, and of them those who activated after.
    pub async fn deflections_since(&self, since: DateTime<Utc>) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS deflected, COUNT(activated_at) AS activated
             FROM ikd_deflections WHERE deflected_at >= $1",
        )
        .bind(millis(since))
        .fetch_one(self.db().pool())
        .await?;
        Ok((row.try_get("deflected")?, row.try_get("activated")?))
    }
}
