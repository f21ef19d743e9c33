//! Print jobs and cards in SQL, for SQLite and PostgreSQL alike.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use adminduk_kit::storage::{
    Backend, Corrupt, Migrations, from_day_text, from_millis, is_unique_violation, millis,
};

use crate::domain::{CardState, Outcome, PrintReason};

/// This service's migrations.
pub const MIGRATIONS: Migrations = adminduk_kit::migrations![
    "0001_printing.sql",
    "0002_recalled_villages.sql",
    "0003_card_serials.sql"
];

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The NIK already has an active job (a concurrent submission won).
    #[error("the NIK already has an active job")]
    ActiveJobExists,
    /// The row was not in the state the change needs.
    #[error("the job is not in the state this needs")]
    WrongState,
    /// The card serial is in use on another job, or was ruined or spoiled.
    #[error("the card serial is taken")]
    SerialTaken,
    /// Another report of the job is being recorded, with this serial.
    #[error("another report of the job is being recorded")]
    PrintInProgress {
        /// The serial that report records.
        serial: String,
    },
    /// The NIK holds an open suket already (its id).
    #[error("the NIK holds a suket")]
    SuketExists(String),
    /// A job named in the request does not exist.
    #[error("no such job")]
    JobNotFound(String),
    /// A job of a dispatch is not a printed card waiting to be sent.
    #[error("a job cannot be dispatched")]
    NotDispatchable {
        /// The job.
        job_id: String,
        /// Its card state, or its job state when no card was printed.
        state: String,
    },
    /// A stored row could not be read.
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for a printer.
    Queued,
    /// Leased to a printer.
    Leased,
    /// Printed.
    Printed,
    /// Cancelled.
    Cancelled,
}

adminduk_kit::text_codes!(JobState {
    Queued => "QUEUED",
    Leased => "LEASED",
    Printed => "PRINTED",
    Cancelled => "CANCELLED",
});

/// A print job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Id.
    pub id: String,
    /// Applicant NIK.
    pub nik: String,
    /// Regency of the service point.
    pub region_code: String,
    /// The resident's kelurahan (for recalls).
    pub village_code: String,
    /// Why.
    pub reason: PrintReason,
    /// 1 (first) to 5.
    pub priority: i64,
    /// Where handed out.
    pub service_point: String,
    /// Appointment day.
    pub day: NaiveDate,
    /// State.
    pub state: JobState,
    /// The inventory reservation holding its blank.
    pub reservation_id: Option<String>,
    /// Blanks taken so far (more than one after a spoiled print).
    pub blanks_taken: i64,
    /// The printer holding the lease, or (once printed) the printer that printed the card.
    pub printer_id: Option<String>,
    /// Lease deadline.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The card's serial once printed.
    pub card_serial: Option<String>,
    /// The card's state once printed.
    pub card_state: Option<CardState>,
    /// Why the post brought the card back, if it did.
    pub return_reason: Option<String>,
    /// The serial a report about the job (a print, a ruined blank, a damaged
    /// card) is recording now, if one is: one such report at a time.
    pub printing_serial: Option<String>,
    /// When submitted.
    pub created_at: DateTime<Utc>,
}

const JOB_COLUMNS: &str = "id, nik, region_code, village_code, reason, priority, service_point, day, state, \
     reservation_id, blanks_taken, printer_id, lease_expires_at, card_serial, card_state, return_reason, \
     printing_serial, created_at";

fn job_from_row(row: &AnyRow) -> Result<Job, StoreError> {
    let reason: String = row.try_get("reason")?;
    let state: String = row.try_get("state")?;
    let day: String = row.try_get("day")?;
    let card_state: Option<String> = row.try_get("card_state")?;
    let lease: Option<i64> = row.try_get("lease_expires_at")?;
    Ok(Job {
        id: row.try_get("id")?,
        nik: row.try_get("nik")?,
        region_code: row.try_get("region_code")?,
        village_code: row.try_get("village_code")?,
        reason: PrintReason::parse(&reason).ok_or(Corrupt::new("reason"))?,
        priority: row.try_get("priority")?,
        service_point: row.try_get("service_point")?,
        day: from_day_text(&day)?,
        state: JobState::parse(&state).ok_or(Corrupt::new("state"))?,
        reservation_id: row.try_get("reservation_id")?,
        blanks_taken: row.try_get("blanks_taken")?,
        printer_id: row.try_get("printer_id")?,
        lease_expires_at: lease.map(from_millis).transpose()?,
        card_serial: row.try_get("card_serial")?,
        card_state: card_state
            .as_deref()
            .map(|s| CardState::parse(s).ok_or(Corrupt::new("card state")))
            .transpose()?,
        return_reason: row.try_get("return_reason")?,
        printing_serial: row.try_get("printing_serial")?,
        created_at: from_millis(row.try_get("created_at")?)?,
    })
}

/// A new job to store.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// Id.
    pub id: &'a str,
    /// NIK.
    pub nik: &'a str,
    /// Regency.
    pub region_code: &'a str,
    /// Kelurahan.
    pub village_code: &'a str,
    /// Why.
    pub reason: PrintReason,
    /// Priority.
    pub priority: i64,
    /// Service point.
    pub service_point: &'a str,
    /// Day.
    pub day: NaiveDate,
}

/// The funnel of one region and period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Funnel {
    /// Cards printed, counted from the print log.
    pub printed: i64,
    /// Written off.
    pub spoiled: i64,
    /// Second jobs refused.
    pub duplicates_prevented: i64,
    /// Pulled back.
    pub recalled: i64,
    /// Sent for pickup.
    pub dispatched_pickup: i64,
    /// Sent by post.
    pub dispatched_post: i64,
    /// Delivered.
    pub delivered: i64,
    /// Returned: deceased.
    pub returned_deceased: i64,
    /// Returned: moved.
    pub returned_moved: i64,
    /// Returned: unclear address.
    pub returned_unclear_address: i64,
    /// Printed, not sent.
    pub waiting_dispatch: i64,
    /// With the post.
    pub in_transit: i64,
    /// At a service point.
    pub at_service_point: i64,
    /// Blanks ruined in the printer before a card came out (never printed).
    pub spoiled_in_printer: i64,
}

impl Funnel {
    /// Printed cards found in no state: 0 when every card is accounted for.
    pub fn unaccounted(&self) -> i64 {
        self.printed
            - (self.spoiled
                + self.waiting_dispatch
                + self.in_transit
                + self.at_service_point
                + self.delivered)
    }
}

/// Why a card or blank is written off, and the two people who say so.
#[derive(Debug, Clone, Copy)]
pub struct WriteOff<'a> {
    /// What happened.
    pub reason: &'a str,
    /// Who found it.
    pub reported_by: &'a str,
    /// Who approved the write-off (not the reporter).
    pub approved_by: &'a str,
}

/// Records a written-off card or blank in the transaction that changed its
/// job, and commits; `changed` is that change, which must have found the job
/// as it was read (else nothing is written).
async fn write_off_with(
    mut tx: sqlx::Transaction<'static, sqlx::Any>,
    changed: &sqlx::any::AnyQueryResult,
    serial: &str,
    job: &Job,
    write_off: &WriteOff<'_>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if changed.rows_affected() != 1 {
        return Err(StoreError::WrongState);
    }
    insert_spoiled(&mut tx, serial, job, write_off, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Records a written-off card or blank.
async fn insert_spoiled(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    serial: &str,
    job: &Job,
    write_off: &WriteOff<'_>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO spoiled_cards (card_serial, job_id, region_code, reason, reported_by, approved_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(serial)
    .bind(&job.id)
    .bind(&job.region_code)
    .bind(write_off.reason)
    .bind(write_off.reported_by)
    .bind(write_off.approved_by)
    .bind(millis(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A report about a job that changes another service's books, claimed on the
/// job first (see [`Store::claim_report`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report<'a> {
    /// A card printed with `serial` by the printer holding the lease.
    Print {
        /// The printer.
        printer: &'a str,
        /// The card's serial.
        serial: &'a str,
    },
    /// A blank with `serial` ruined in the printer holding the lease.
    Ruined {
        /// The printer.
        printer: &'a str,
        /// The ruined blank's serial.
        serial: &'a str,
    },
    /// The printed card with `serial`, found damaged before it went out.
    DamagedCard {
        /// The card's serial.
        serial: &'a str,
    },
}

impl Report<'_> {
    /// The serial the report records.
    pub fn serial(&self) -> &str {
        match self {
            Self::Print { serial, .. } | Self::Ruined { serial, .. } | Self::DamagedCard { serial } => serial,
        }
    }
}

/// What a card serial is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SerialUse {
    /// A card printed (or being printed) on the blank.
    Print,
    /// A blank ruined in the printer.
    Ruined,
}

adminduk_kit::text_codes!(pub(crate) SerialUse {
    Print => "PRINT",
    Ruined => "RUINED",
});

/// Claims a serial for a job: the first use wins, and only the same job and
/// use can claim it again (a retry). A serial written off on a card or blank
/// is never claimed for a print again.
async fn claim_serial(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    serial: &str,
    job: &str,
    use_kind: SerialUse,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO card_serials (card_serial, job_id, use_kind, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (card_serial) DO NOTHING",
    )
    .bind(serial)
    .bind(job)
    .bind(use_kind.as_str())
    .bind(millis(now))
    .execute(&mut **tx)
    .await?;
    let owner = sqlx::query("SELECT job_id, use_kind FROM card_serials WHERE card_serial = $1")
        .bind(serial)
        .fetch_one(&mut **tx)
        .await?;
    let (owner_job, owner_use): (String, String) = (owner.try_get("job_id")?, owner.try_get("use_kind")?);
    if owner_job != job || owner_use != use_kind.as_str() {
        return Err(StoreError::SerialTaken);
    }
    if use_kind == SerialUse::Print {
        let spoiled = sqlx::query("SELECT 1 AS one FROM spoiled_cards WHERE card_serial = $1")
            .bind(serial)
            .fetch_optional(&mut **tx)
            .await?;
        if spoiled.is_some() {
            return Err(StoreError::SerialTaken);
        }
    }
    Ok(())
}

/// How one job's card went out in a dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// As the dispatch asked: by post, or for pickup.
    AsAsked,
    /// Asked by post, but to the service point: its village is recalled.
    Rerouted,
}

/// Sends one job's printed card out in a dispatch's transaction, or says why
/// it cannot go (which refuses the whole dispatch). A retry of the same
/// dispatch is answered as the first was.
async fn dispatch_job(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &str,
    post: bool,
    batch: &str,
    now: DateTime<Utc>,
) -> Result<Sent, StoreError> {
    if let Some(sent) = sent_before(tx, id, post, batch).await? {
        return Ok(sent);
    }
    if post {
        let kept = sqlx::query(
            "UPDATE jobs SET card_state = 'AT_SERVICE_POINT', dispatch_method = 'PICKUP', recalled = 1, \
             batch_reference = $3, updated_at = $2 \
             WHERE id = $1 AND card_state = 'PRINTED' AND printing_serial IS NULL \
             AND village_code IN (SELECT village_code FROM recalled_villages)",
        )
        .bind(id)
        .bind(millis(now))
        .bind(batch)
        .execute(&mut **tx)
        .await?;
        if kept.rows_affected() == 1 {
            return Ok(Sent::Rerouted);
        }
    }
    let (card_state, method) = if post {
        ("IN_TRANSIT", "POST")
    } else {
        ("AT_SERVICE_POINT", "PICKUP")
    };
    let updated = sqlx::query(
        "UPDATE jobs SET card_state = $2, dispatch_method = $3, batch_reference = $4, updated_at = $5 \
         WHERE id = $1 AND card_state = 'PRINTED' AND printing_serial IS NULL",
    )
    .bind(id)
    .bind(card_state)
    .bind(method)
    .bind(batch)
    .bind(millis(now))
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() != 1 {
        return Err(not_dispatchable(tx, id).await?);
    }
    Ok(Sent::AsAsked)
}

/// How the job went out before in this same dispatch, if it did: a retry is
/// answered as the first was. `None` when this is not such a retry.
async fn sent_before(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &str,
    post: bool,
    batch: &str,
) -> Result<Option<Sent>, StoreError> {
    // The same dispatch again (a retry) is answered as the first was: the
    // card went out in this batch, or for pickup, already.
    let before: Option<(Option<String>, Option<String>)> =
        sqlx::query("SELECT dispatch_method, batch_reference FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| {
                Ok::<_, sqlx::Error>((row.try_get("dispatch_method")?, row.try_get("batch_reference")?))
            })
            .transpose()?;
    let Some((Some(method), reference)) = before else {
        return Ok(None);
    };
    let reference = reference.unwrap_or_default();
    let same = if post {
        reference == batch
    } else {
        method == "PICKUP" && reference == batch
    };
    if !same {
        return Ok(None);
    }
    Ok(Some(if post && method == "PICKUP" {
        Sent::Rerouted
    } else {
        Sent::AsAsked
    }))
}

/// Why a job of a dispatch cannot go out: it does not exist, or it is not a
/// printed, undispatched card (named by its card state, or its job state when
/// no card was printed, or as being written off).
async fn not_dispatchable(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &str,
) -> Result<StoreError, StoreError> {
    let state: Option<(String, Option<String>, Option<String>)> =
        sqlx::query("SELECT state, card_state, printing_serial FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| {
                Ok::<_, sqlx::Error>((
                    row.try_get("state")?,
                    row.try_get("card_state")?,
                    row.try_get("printing_serial")?,
                ))
            })
            .transpose()?;
    Ok(match state {
        None => StoreError::JobNotFound(id.to_owned()),
        Some((state, card, writing)) => StoreError::NotDispatchable {
            job_id: id.to_owned(),
            state: match (card, writing) {
                (Some(_), Some(_)) => "WRITE_OFF_IN_PROGRESS".to_owned(),
                (Some(card), None) => card,
                (None, _) => state,
            },
        },
    })
}

adminduk_kit::store! {
    /// The printing store.
    pub struct Store;
}

impl Store {
    /// A job by id.
    pub async fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        self.job_where("id = $1", id).await
    }

    /// The first job matching a condition on one bound value.
    async fn job_where(&self, condition: &'static str, value: &str) -> Result<Option<Job>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {condition}"));
        let row = sqlx::query(sql)
            .bind(value)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// The active job of a NIK (queued, leased, or printed and not yet delivered).
    pub async fn active_job(&self, nik: &str) -> Result<Option<Job>, StoreError> {
        self.job_where("nik = $1 AND active = 1", nik).await
    }

    /// Counts a refused second application.
    pub async fn record_duplicate(
        &self,
        first_job: &str,
        region: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO duplicates_prevented (first_job, region_code, created_at) VALUES ($1, $2, $3)",
        )
        .bind(first_job)
        .bind(region)
        .bind(millis(now))
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Stores a job before its blank is held, so that it claims the NIK's one
    /// active job at once: of two racing submissions one is stored, and the
    /// other is told which job won. No printer leases it until
    /// [`Store::attach_reservation`] gives it a blank.
    pub async fn insert_job(&self, new: &NewJob<'_>, now: DateTime<Utc>) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO jobs (id, nik, region_code, village_code, reason, priority, service_point, day, state, active, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'QUEUED', 1, $9, $9)",
        )
        .bind(new.id)
        .bind(new.nik)
        .bind(new.region_code)
        .bind(new.village_code)
        .bind(new.reason.as_str())
        .bind(new.priority)
        .bind(new.service_point)
        .bind(new.day.to_string())
        .bind(millis(now))
        .execute(self.db.pool())
        .await;
        match result {
            Err(err) if is_unique_violation(&err) => Err(StoreError::ActiveJobExists),
            other => other.map(drop).map_err(StoreError::from),
        }
    }

    /// Gives a stored job the inventory's hold on its blank: from now on it can be printed.
    pub async fn attach_reservation(&self, id: &str, reservation: &str) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE jobs SET reservation_id = $2 WHERE id = $1 AND reservation_id IS NULL AND state = 'QUEUED'",
        )
        .bind(id)
        .bind(reservation)
        .execute(self.db.pool())
        .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::WrongState);
        }
        Ok(())
    }

    /// Removes a job that never got its blank (the inventory refused, or the
    /// submission died before it was answered), freeing the NIK's active job.
    pub async fn discard_unheld(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM jobs WHERE id = $1 AND reservation_id IS NULL AND state = 'QUEUED'")
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// A job of this NIK that printed a card (delivered or not), if any.
    pub async fn printed_job_of(&self, nik: &str) -> Result<Option<Job>, StoreError> {
        self.job_where("nik = $1 AND state = 'PRINTED' ORDER BY created_at LIMIT 1", nik)
            .await
    }

    /// Claims a job for one report before anything is written elsewhere (the
    /// inventory consumes or writes off a blank): the job records one report
    /// at a time, and a serial is used once across every job. A retry of the
    /// same report finds its own claim and goes on; any other report of the
    /// job meanwhile is told which serial is being recorded.
    pub async fn claim_report(
        &self,
        id: &str,
        report: Report<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        let (condition, serial, printer) = match report {
            // A print or a ruined blank: the printer holds a live lease on a held job.
            Report::Print { printer, serial } | Report::Ruined { printer, serial } => (
                "state = 'LEASED' AND printer_id = $4 AND lease_expires_at > $3 AND reservation_id IS NOT NULL",
                serial,
                printer,
            ),
            // A damaged card: printed, still here, and this job's card.
            Report::DamagedCard { serial } => (
                "state = 'PRINTED' AND card_state = 'PRINTED' AND card_serial = $2 AND $4 = $4",
                serial,
                "",
            ),
        };
        let sql = format!(
            "UPDATE jobs SET printing_serial = $2, updated_at = $3 WHERE id = $1 AND {condition} \
             AND (printing_serial IS NULL OR printing_serial = $2)"
        );
        let updated = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(serial)
            .bind(millis(now))
            .bind(printer)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            let current: Option<Option<String>> =
                sqlx::query("SELECT printing_serial FROM jobs WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|row| row.try_get("printing_serial"))
                    .transpose()?;
            return Err(match current {
                Some(Some(serial)) => StoreError::PrintInProgress { serial },
                _ => StoreError::WrongState,
            });
        }
        match report {
            Report::Print { .. } => claim_serial(&mut tx, serial, id, SerialUse::Print, now).await?,
            Report::Ruined { .. } => claim_serial(&mut tx, serial, id, SerialUse::Ruined, now).await?,
            // The card's serial is this job's already.
            Report::DamagedCard { .. } => {}
        }
        tx.commit().await?;
        Ok(())
    }

    /// Gives up a report's claim after the inventory refused it: the job can
    /// be reported again, and the serial is free again unless a card or a
    /// written-off blank used it.
    pub async fn release_report(&self, id: &str, report: Report<'_>) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        let serial = report.serial();
        sqlx::query("UPDATE jobs SET printing_serial = NULL WHERE id = $1 AND printing_serial = $2")
            .bind(id)
            .bind(serial)
            .execute(&mut *tx)
            .await?;
        let free = match report {
            Report::Print { .. } => Some("PRINT"),
            Report::Ruined { .. } => Some("RUINED"),
            Report::DamagedCard { .. } => None,
        };
        if let Some(use_kind) = free {
            sqlx::query(
                "DELETE FROM card_serials WHERE card_serial = $1 AND job_id = $2 AND use_kind = $3 \
                 AND NOT EXISTS (SELECT 1 FROM print_log WHERE card_serial = $1) \
                 AND NOT EXISTS (SELECT 1 FROM spoiled_cards WHERE card_serial = $1)",
            )
            .bind(serial)
            .bind(id)
            .bind(use_kind)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Puts jobs whose lease lapsed back in the queue; returns how many.
    pub async fn requeue_lapsed(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE jobs SET state = 'QUEUED', printer_id = NULL, lease_expires_at = NULL, printing_serial = NULL, \
             updated_at = $1 WHERE state = 'LEASED' AND lease_expires_at <= $1",
        )
        .bind(millis(now))
        .execute(self.db.pool())
        .await?;
        Ok(result.rows_affected())
    }

    /// Leases up to `n` queued jobs to a printer, highest priority and oldest first.
    pub async fn lease(
        &self,
        printer: &str,
        n: i64,
        deadline: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Job>, StoreError> {
        let mut tx = self.db.begin_write().await?;
        // On Postgres, printers leasing at once each lock their own rows and skip
        // the others'; SQLite's write transactions are serial already.
        let select = match self.db.backend() {
            Backend::Postgres => {
                "SELECT id FROM jobs WHERE state = 'QUEUED' AND reservation_id IS NOT NULL \
                 ORDER BY priority, created_at, id LIMIT $1 FOR UPDATE SKIP LOCKED"
            }
            Backend::Sqlite => {
                "SELECT id FROM jobs WHERE state = 'QUEUED' AND reservation_id IS NOT NULL \
                 ORDER BY priority, created_at, id LIMIT $1"
            }
        };
        let candidates = sqlx::query(select).bind(n).fetch_all(&mut *tx).await?;
        let mut leased = Vec::new();
        for row in candidates {
            let id: String = row.try_get("id")?;
            // Conditional, so two printers racing for a job get it once.
            let updated = sqlx::query(
                "UPDATE jobs SET state = 'LEASED', printer_id = $2, lease_expires_at = $3, updated_at = $4 \
                 WHERE id = $1 AND state = 'QUEUED' AND reservation_id IS NOT NULL",
            )
            .bind(&id)
            .bind(printer)
            .bind(millis(deadline))
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 1 {
                leased.push(id);
            }
        }
        tx.commit().await?;
        let mut jobs = Vec::with_capacity(leased.len());
        for id in leased {
            jobs.extend(self.job(&id).await?);
        }
        Ok(jobs)
    }

    /// Cancels a leased job whose card must not be printed (its resident died
    /// or moved away); true when this call cancelled it.
    pub async fn cancel_leased(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE jobs SET state = 'CANCELLED', active = 0, printer_id = NULL, lease_expires_at = NULL, \
             updated_at = $2 WHERE id = $1 AND state = 'LEASED' AND printing_serial IS NULL",
        )
        .bind(id)
        .bind(millis(now))
        .execute(self.db.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Whether a serial was used before: a card printed (on any job, spoiled
    /// cards included) or a blank ruined in the printer.
    pub async fn serial_taken(&self, serial: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT card_serial FROM card_serials WHERE card_serial = $1 \
             UNION ALL SELECT card_serial FROM spoiled_cards WHERE card_serial = $1",
        )
        .bind(serial)
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.is_some())
    }

    /// The job on which the blank with `serial` was ruined in the printer, if it was.
    pub async fn ruined_blank_job(&self, serial: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT job_id FROM spoiled_cards s WHERE card_serial = $1 \
             AND NOT EXISTS (SELECT 1 FROM print_log p WHERE p.card_serial = s.card_serial)",
        )
        .bind(serial)
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.map(|r| r.try_get("job_id")).transpose()?)
    }

    /// A blank ruined in the printer while `printer` holds a live lease on the
    /// job: written off (with two people's names). The job keeps its lease
    /// and its hold, to print on another blank, and counts one blank more.
    pub async fn spoil_blank(
        &self,
        job: &Job,
        printer: &str,
        serial: &str,
        write_off: &WriteOff<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE jobs SET blanks_taken = blanks_taken + 1, printing_serial = NULL, updated_at = $3 \
             WHERE id = $1 AND state = 'LEASED' AND printer_id = $2 AND printing_serial = $4",
        )
        .bind(&job.id)
        .bind(printer)
        .bind(millis(now))
        .bind(serial)
        .execute(&mut *tx)
        .await?;
        write_off_with(tx, &updated, serial, job, write_off, now).await
    }

    /// The job of an applicant that holds an inventory reservation, if any. The
    /// NIK leads the lookup, so it is an index scan (`jobs_by_nik`) of one
    /// resident's few jobs, not a scan of the whole table.
    pub async fn job_with_reservation(
        &self,
        nik: &str,
        reservation: &str,
    ) -> Result<Option<Job>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE nik = $1 AND reservation_id = $2"
        ));
        let row = sqlx::query(sql)
            .bind(nik)
            .bind(reservation)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Puts a new blank under a job whose hold lapsed (its appointment day passed while it waited).
    pub async fn replace_reservation(
        &self,
        id: &str,
        reservation: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE jobs SET reservation_id = $2, blanks_taken = blanks_taken + 1, updated_at = $3 \
             WHERE id = $1 AND state = 'LEASED'",
        )
        .bind(id)
        .bind(reservation)
        .bind(millis(now))
        .execute(self.db.pool())
        .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::WrongState);
        }
        Ok(())
    }

    /// Records a print claimed by [`Store::claim_print`] (the job keeps the
    /// printer's id, so only it can retry the report). The claim was made
    /// under a live lease; the blank is consumed by then, so a lease that
    /// lapses in between does not undo the print.
    pub async fn mark_printed(
        &self,
        id: &str,
        printer: &str,
        serial: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE jobs SET state = 'PRINTED', card_serial = $3, card_state = 'PRINTED', printed_at = $4, \
             lease_expires_at = NULL, printing_serial = NULL, updated_at = $4 \
             WHERE id = $1 AND state = 'LEASED' AND printer_id = $2 AND printing_serial = $3",
        )
        .bind(id)
        .bind(printer)
        .bind(serial)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::WrongState);
        }
        sqlx::query(
            "INSERT INTO print_log (card_serial, job_id, region_code, printed_at) \
             SELECT card_serial, id, region_code, printed_at FROM jobs WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A printed, undispatched card was damaged: it is written off (with two
    /// people's names) and the job queues again on a new reservation.
    pub async fn spoil_card(
        &self,
        job: &Job,
        write_off: &WriteOff<'_>,
        new_reservation: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let serial = job.card_serial.as_deref().ok_or(StoreError::WrongState)?;
        let mut tx = self.db.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE jobs SET state = 'QUEUED', card_serial = NULL, card_state = NULL, printed_at = NULL, \
             printer_id = NULL, reservation_id = $2, blanks_taken = blanks_taken + 1, printing_serial = NULL, \
             updated_at = $3 \
             WHERE id = $1 AND state = 'PRINTED' AND card_state = 'PRINTED' AND printing_serial = card_serial",
        )
        .bind(&job.id)
        .bind(new_reservation)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        write_off_with(tx, &updated, serial, job, write_off, now).await
    }

    /// Sends printed cards out; returns how many went and how many of them,
    /// sent by post but from a recalled village, went to the service point
    /// instead. All or none: a job that is not a printed, undispatched card
    /// refuses the whole dispatch, unless it went out in this same dispatch
    /// before (a retry, counted as it was the first time).
    pub async fn dispatch(
        &self,
        ids: &[String],
        post: bool,
        batch: &str,
        now: DateTime<Utc>,
    ) -> Result<(u64, u64), StoreError> {
        let mut tx = self.db.begin_write().await?;
        let mut rerouted = 0;
        for id in ids {
            if dispatch_job(&mut tx, id, post, batch, now).await? == Sent::Rerouted {
                rerouted += 1;
            }
        }
        tx.commit().await?;
        Ok((ids.len() as u64, rerouted))
    }

    /// Moves a card after a delivery outcome (already checked by the domain).
    pub async fn record_delivery(
        &self,
        job: &Job,
        from: CardState,
        to: CardState,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        let returned = outcome.return_reason();
        let updated = sqlx::query(
            "UPDATE jobs SET card_state = $3, return_reason = COALESCE($4, return_reason), \
             active = CASE WHEN $3 = 'DELIVERED' THEN 0 ELSE active END, updated_at = $5 \
             WHERE id = $1 AND card_state = $2",
        )
        .bind(&job.id)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(returned)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::WrongState);
        }
        let review = match outcome {
            Outcome::ReturnedDeceased => Some("LIFE_STATUS"),
            Outcome::ReturnedMoved => Some("ADDRESS"),
            _ => None,
        };
        if let Some(kind) = review {
            sqlx::query("INSERT INTO reviews (nik, kind, job_id, created_at) VALUES ($1, $2, $3, $4)")
                .bind(&job.nik)
                .bind(kind)
                .bind(&job.id)
                .bind(millis(now))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Pulls back the undelivered cards of a kelurahan to its office and
    /// records the recall, which stands for its cards dispatched later;
    /// returns how many cards were pulled back now.
    pub async fn recall(&self, village: &str, reason: &str, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.db.begin_write().await?;
        // The first recall's reason stays; the village's cards are pulled back either way.
        sqlx::query(
            "INSERT INTO recalled_villages (village_code, reason, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (village_code) DO NOTHING",
        )
        .bind(village)
        .bind(reason)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        let result = sqlx::query(
            "UPDATE jobs SET card_state = 'AT_SERVICE_POINT', recalled = 1, updated_at = $2 \
             WHERE village_code = $1 AND card_state IN ('PRINTED', 'IN_TRANSIT') AND printing_serial IS NULL",
        )
        .bind(village)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(result.rows_affected())
    }

    /// Review requests written for returned cards: (kind, job id).
    pub async fn reviews(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT kind, job_id FROM reviews ORDER BY id")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("kind")?, r.try_get("job_id")?)))
            .collect()
    }

    /// The funnel of a region for cards printed between two instants.
    pub async fn funnel(
        &self,
        region: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Funnel, StoreError> {
        let (from, to) = (millis(from), millis(to));
        // Every count is of one region in the period: `$1`, `$2`, `$3`.
        let count = |sql: &str| {
            let sql = sql.to_owned();
            let pool = self.db.pool().clone();
            async move {
                let n: i64 = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(region)
                    .bind(from)
                    .bind(to)
                    .fetch_one(&pool)
                    .await?
                    .try_get("n")?;
                Ok::<i64, StoreError>(n)
            }
        };
        let by = |condition: &str| {
            count(&format!(
                "SELECT COUNT(*) AS n FROM jobs WHERE region_code = $1 AND printed_at >= $2 AND printed_at <= $3 AND {condition}"
            ))
        };
        Ok(Funnel {
            printed: count("SELECT COUNT(*) AS n FROM print_log WHERE region_code = $1 AND printed_at >= $2 AND printed_at <= $3").await?,
            // A spoiled card's print is in the log; it is counted in the period it was printed.
            spoiled: count(
                "SELECT COUNT(*) AS n FROM spoiled_cards s JOIN print_log p ON p.card_serial = s.card_serial \
                 WHERE s.region_code = $1 AND p.printed_at >= $2 AND p.printed_at <= $3",
            )
            .await?,
            duplicates_prevented: count(
                "SELECT COUNT(*) AS n FROM duplicates_prevented WHERE region_code = $1 AND created_at >= $2 AND created_at <= $3",
            )
            .await?,
            recalled: by("recalled = 1").await?,
            dispatched_pickup: by("dispatch_method = 'PICKUP'").await?,
            dispatched_post: by("dispatch_method = 'POST'").await?,
            delivered: by("card_state = 'DELIVERED'").await?,
            returned_deceased: by("return_reason = 'DECEASED'").await?,
            returned_moved: by("return_reason = 'MOVED'").await?,
            returned_unclear_address: by("return_reason = 'UNCLEAR_ADDRESS'").await?,
            waiting_dispatch: by("card_state = 'PRINTED'").await?,
            in_transit: by("card_state = 'IN_TRANSIT'").await?,
            at_service_point: by("card_state = 'AT_SERVICE_POINT'").await?,
            spoiled_in_printer: count(
                "SELECT COUNT(*) AS n FROM spoiled_cards s WHERE s.region_code = $1 \
                 AND s.created_at >= $2 AND s.created_at <= $3 \
                 AND NOT EXISTS (SELECT 1 FROM print_log p WHERE p.card_serial = s.card_serial)",
            )
            .await?,
        })
    }

    /// Jobs by where they stand (the job's state, or its card's once
    /// printed), and how many wait to print (queued or leased, with a blank).
    pub async fn job_states(&self) -> Result<(Vec<(String, i64)>, i64), StoreError> {
        let rows = sqlx::query(
            "SELECT COALESCE(card_state, state) AS s, COUNT(*) AS n FROM jobs GROUP BY COALESCE(card_state, state)",
        )
        .fetch_all(self.db.pool())
        .await?;
        let states = rows
            .iter()
            .map(|r| Ok((r.try_get("s")?, r.try_get("n")?)))
            .collect::<Result<Vec<(String, i64)>, StoreError>>()?;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE state IN ('QUEUED', 'LEASED') AND reservation_id IS NOT NULL",
        )
        .fetch_one(self.db.pool())
        .await?;
        Ok((states, waiting))
    }

    /// Jobs waiting, by priority.
    pub async fn waiting_by_priority(&self, region: &str) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT priority, COUNT(*) AS n FROM jobs WHERE region_code = $1 AND state IN ('QUEUED', 'LEASED') \
             AND reservation_id IS NOT NULL GROUP BY priority ORDER BY priority",
        )
        .bind(region)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("priority")?, r.try_get("n")?)))
            .collect()
    }

    /// Cards printed since an instant.
    pub async fn printed_since(&self, region: &str, since: DateTime<Utc>) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM print_log WHERE region_code = $1 AND printed_at >= $2")
                .bind(region)
                .bind(millis(since))
                .fetch_one(self.db.pool())
                .await?
                .try_get("n")?,
        )
    }

    /// Stores a suket; one open per NIK.
    pub async fn insert_suket(
        &self,
        id: &str,
        nik: &str,
        region: &str,
        point: &str,
        valid_until: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO sukets (id, nik, region_code, service_point, valid_until, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(nik)
        .bind(region)
        .bind(point)
        .bind(valid_until.to_string())
        .bind(millis(now))
        .execute(self.db.pool())
        .await;
        match result {
            Err(err) if is_unique_violation(&err) => {
                let held: Option<String> =
                    sqlx::query("SELECT id FROM sukets WHERE nik = $1 AND converted_job IS NULL")
                        .bind(nik)
                        .fetch_optional(self.db.pool())
                        .await?
                        .map(|row| row.try_get("id"))
                        .transpose()?;
                Err(StoreError::SuketExists(held.unwrap_or_default()))
            }
            other => other.map(drop).map_err(StoreError::from),
        }
    }

    /// Whether the NIK holds an open suket valid on `today`.
    pub async fn has_suket(&self, nik: &str, today: NaiveDate) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT id FROM sukets WHERE nik = $1 AND converted_job IS NULL AND valid_until >= $2",
        )
        .bind(nik)
        .bind(today.to_string())
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.is_some())
    }

    /// Marks a NIK's open suket converted into a job.
    pub async fn convert_suket(&self, nik: &str, job: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE sukets SET converted_job = $2 WHERE nik = $1 AND converted_job IS NULL")
            .bind(nik)
            .bind(job)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Open sukets valid on `today`, oldest first: (NIK, service point).
    pub async fn open_sukets(
        &self,
        today: NaiveDate,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT nik, service_point FROM sukets WHERE converted_job IS NULL AND valid_until >= $1 \
             ORDER BY created_at LIMIT $2",
        )
        .bind(today.to_string())
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("nik")?, r.try_get("service_point")?)))
            .collect()
    }

    /// Open sukets of a region valid on `today`.
    pub async fn suket_holders(&self, region: &str, today: NaiveDate) -> Result<i64, StoreError> {
        Ok(sqlx::query(
            "SELECT COUNT(*) AS n FROM sukets WHERE region_code = $1 AND converted_job IS NULL AND valid_until >= $2",
        )
        .bind(region)
        .bind(today.to_string())
        .fetch_one(self.db.pool())
        .await?
        .try_get("n")?)
    }
}
