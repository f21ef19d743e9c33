//! Residents and families in SQL, for SQLite and PostgreSQL alike.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::any::AnyRow;
use sqlx::{Any, Row as _, Transaction};

use adminduk_kit::storage::{
    Corrupt, Migrations, day_text, from_day_text, from_millis, is_unique_violation, millis,
};

use crate::domain::kk::Kk;
use crate::domain::nik::{Nik, Sex};
use crate::domain::resident::{
    Address, AgeRule, Family, LifeStatus, MaritalStatus, NewResident, RecordingStatus, Relationship,
    Resident, Violation, normalize_name,
};

/// This service's migrations.
pub const MIGRATIONS: Migrations = adminduk_kit::migrations!["0001_residents.sql"];

/// Why a store operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No resident with that NIK.
    #[error("resident not found")]
    ResidentNotFound,
    /// No family with that KK.
    #[error("family not found")]
    FamilyNotFound,
    /// A resident with that NIK exists: a person is active on one KK only.
    #[error("a resident with this NIK is already registered")]
    NikTaken,
    /// The KK has a living head already.
    #[error("the family already has a head")]
    SecondHead,
    /// A new KK's first member must be its head.
    #[error("a new family's first member must be its head")]
    FirstMemberNotHead,
    /// The change would leave a family with members but no head.
    #[error("the family would be left without a head")]
    WouldLoseHead,
    /// The record changed since it was read.
    #[error("the record changed since version {expected}; it is now at version {actual}")]
    StaleVersion {
        /// The version the caller read.
        expected: i64,
        /// The version stored.
        actual: i64,
    },
    /// The resident is not alive and registered here.
    #[error("the resident is {0}")]
    NotActive(&'static str),
    /// The request breaks a rule of the record.
    #[error("invalid record")]
    Invalid(Vec<Violation>),
    /// A stored row could not be read back (a bug or manual edit).
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Which fields an update changes, each with its new value.
#[derive(Debug, Clone, Default)]
pub struct ResidentChanges {
    /// New full name.
    pub full_name: Option<String>,
    /// New sex (a correction; a disagreement with the NIK is flagged).
    pub sex: Option<Sex>,
    /// New place of birth.
    pub birth_place: Option<String>,
    /// New birth date (a correction; a disagreement with the NIK is flagged).
    pub birth_date: Option<NaiveDate>,
    /// New address.
    pub address: Option<Address>,
    /// New marital status.
    pub marital_status: Option<MaritalStatus>,
    /// New relationship in the same KK.
    pub relationship: Option<Relationship>,
    /// New recording status.
    pub recording_status: Option<RecordingStatus>,
}

/// A move, already validated.
#[derive(Debug, Clone)]
pub enum Move {
    /// To a new address inside the area, optionally joining another KK.
    WithinArea {
        /// The new address.
        address: Address,
        /// The KK to join and the relationship there; `None` keeps the current KK.
        family: Option<(Kk, Relationship)>,
    },
    /// Out of the area.
    OutOfArea,
}

/// Where a search page starts: after this name and row id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchCursor {
    /// The last normalised name of the previous page.
    pub name_norm: String,
    /// The last row id of the previous page.
    pub id: i64,
}

adminduk_kit::store! {
    /// The population store.
    pub struct Store;
}

const RESIDENT_COLUMNS: &str = "id, nik, kk, full_name, sex, birth_place, birth_date, street, rt, rw, \
     village_code, marital_status, relationship, life_status, recording_status, death_date, version, \
     created_at, updated_at";

fn sex_code(sex: Sex) -> &'static str {
    match sex {
        Sex::Male => "M",
        Sex::Female => "F",
    }
}

fn resident_from_row(row: &AnyRow) -> Result<Resident, StoreError> {
    // The day the numbers were checked against when written: today in WIB.
    // (Today in UTC is a day behind from 00:00 to 07:00 WIB, and a KK issued
    // on the day would read back as corrupt.)
    let today = adminduk_kit::time::today_wib();
    let text = |name: &str| row.try_get::<String, _>(name);
    let corrupt = |what: &'static str| StoreError::from(Corrupt::new(what));
    let nik = Nik::parse(&text("nik")?, today).map_err(|_| corrupt("nik"))?;
    let kk = Kk::parse(&text("kk")?, today).map_err(|_| corrupt("kk"))?;
    let death_date: Option<String> = row.try_get("death_date")?;
    Ok(Resident {
        id: row.try_get("id")?,
        nik,
        kk,
        full_name: text("full_name")?,
        sex: match text("sex")?.as_str() {
            "M" => Sex::Male,
            "F" => Sex::Female,
            _ => return Err(corrupt("sex")),
        },
        birth_place: text("birth_place")?,
        birth_date: from_day_text(&text("birth_date")?)?,
        address: Address {
            street: text("street")?,
            rt: text("rt")?,
            rw: text("rw")?,
            village_code: text("village_code")?,
        },
        marital_status: MaritalStatus::parse(&text("marital_status")?)
            .ok_or_else(|| corrupt("marital_status"))?,
        relationship: Relationship::from_code(row.try_get("relationship")?)
            .ok_or_else(|| corrupt("relationship"))?,
        life_status: LifeStatus::parse(&text("life_status")?).ok_or_else(|| corrupt("life_status"))?,
        recording_status: RecordingStatus::parse(&text("recording_status")?)
            .ok_or_else(|| corrupt("recording_status"))?,
        death_date: death_date.as_deref().map(from_day_text).transpose()?,
        version: row.try_get("version")?,
        created_at: from_millis(row.try_get("created_at")?)?,
        updated_at: from_millis(row.try_get("updated_at")?)?,
    })
}

impl Store {
    /// One resident by NIK.
    pub async fn resident(&self, nik: &Nik) -> Result<Option<Resident>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {RESIDENT_COLUMNS} FROM residents WHERE nik = $1"));
        let row = sqlx::query(sql)
            .bind(nik.as_str())
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(resident_from_row).transpose()
    }

    /// One family with all its members, the head first.
    pub async fn family(&self, kk: &Kk) -> Result<Option<Family>, StoreError> {
        let exists = sqlx::query("SELECT kk FROM families WHERE kk = $1")
            .bind(kk.as_str())
            .fetch_optional(self.db.pool())
            .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {RESIDENT_COLUMNS} FROM residents WHERE kk = $1 ORDER BY relationship, birth_date, id"
        ));
        let rows = sqlx::query(sql)
            .bind(kk.as_str())
            .fetch_all(self.db.pool())
            .await?;
        let members = rows
            .iter()
            .map(resident_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Family { kk: *kk, members }))
    }

    /// Residents of a kecamatan whose normalised name contains `query`, by name, one page.
    pub async fn search(
        &self,
        district_code: &str,
        query: &str,
        after: Option<&SearchCursor>,
        limit: usize,
    ) -> Result<Vec<Resident>, StoreError> {
        // The normalised query holds only letters and digits, so it has no LIKE wildcards of its own.
        let pattern = format!("%{query}%");
        let (after_name, after_id) = after.map_or((String::new(), 0), |c| (c.name_norm.clone(), c.id));
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {RESIDENT_COLUMNS}, name_norm FROM residents \
             WHERE district_code = $1 AND name_norm LIKE $2 \
               AND (name_norm > $3 OR (name_norm = $3 AND id > $4)) \
             ORDER BY name_norm, id LIMIT $5"
        ));
        let rows = sqlx::query(sql)
            .bind(district_code)
            .bind(pattern)
            .bind(after_name)
            .bind(after_id)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(resident_from_row).collect()
    }

    /// Registers a new resident, creating the family when its first member is the head.
    pub async fn register(&self, new: &NewResident, now: DateTime<Utc>) -> Result<Resident, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let taken = sqlx::query("SELECT id FROM residents WHERE nik = $1")
            .bind(new.nik.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::NikTaken);
        }
        let family_exists = sqlx::query("SELECT kk FROM families WHERE kk = $1")
            .bind(new.kk.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if family_exists {
            if new.relationship == Relationship::Head && living_heads(&mut tx, &new.kk).await? > 0 {
                return Err(StoreError::SecondHead);
            }
        } else {
            if new.relationship != Relationship::Head {
                return Err(StoreError::FirstMemberNotHead);
            }
            insert_family(&mut tx, &new.kk, false, now).await?;
        }
        insert_resident(&mut tx, new, now)
            .await
            .map_err(|err| unique_to(err, StoreError::NikTaken))?;
        tx.commit().await?;
        self.resident(&new.nik).await?.ok_or(StoreError::ResidentNotFound)
    }

    /// Loads many residents at once (seeding); families are created as needed.
    /// Rows already present (same NIK) are skipped, so a seed can be re-run.
    pub async fn insert_batch(&self, batch: &[NewResident], now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let mut inserted = 0;
        for new in batch {
            insert_family(&mut tx, &new.kk, true, now).await?;
            let exists = sqlx::query("SELECT id FROM residents WHERE nik = $1")
                .bind(new.nik.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                insert_resident(&mut tx, new, now).await?;
                inserted += 1;
            }
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Applies changes guarded by the version the caller read.
    pub async fn update(
        &self,
        nik: &Nik,
        expected_version: i64,
        changes: &ResidentChanges,
        now: DateTime<Utc>,
    ) -> Result<Resident, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let mut record = load_for_change(&mut tx, nik, expected_version).await?;
        let before = record.relationship;
        let broken_before = record.age_rules(wib_day(now));
        if let Some(v) = &changes.full_name {
            record.full_name = v.trim().to_owned();
        }
        if let Some(v) = changes.sex {
            record.sex = v;
        }
        if let Some(v) = &changes.birth_place {
            record.birth_place = v.trim().to_owned();
        }
        if let Some(v) = changes.birth_date {
            record.birth_date = v;
        }
        if let Some(v) = &changes.address {
            record.address = v.clone();
        }
        if let Some(v) = changes.marital_status {
            record.marital_status = v;
        }
        if let Some(v) = changes.recording_status {
            record.recording_status = v;
        }
        if let Some(v) = changes.relationship {
            record.relationship = v;
        }
        no_new_age_rule_broken(&record, &broken_before, now, |rule| {
            format!("resident.{}", rule.field())
        })?;
        if record.is_active() && before != record.relationship {
            if record.relationship == Relationship::Head && living_heads(&mut tx, &record.kk).await? > 0 {
                return Err(StoreError::SecondHead);
            }
            if before == Relationship::Head && active_members(&mut tx, &record.kk).await? > 1 {
                return Err(StoreError::WouldLoseHead);
            }
        }
        save(&mut tx, &record, expected_version, now).await?;
        tx.commit().await?;
        self.resident(nik).await?.ok_or(StoreError::ResidentNotFound)
    }

    /// Records a death; the person stays on record, no longer active.
    pub async fn record_death(
        &self,
        nik: &Nik,
        expected_version: i64,
        date: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<Resident, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let mut record = load_for_change(&mut tx, nik, expected_version).await?;
        require_active(&record)?;
        if date < record.birth_date {
            return Err(StoreError::Invalid(vec![Violation::new(
                "death_date",
                "is before the birth date",
            )]));
        }
        record.life_status = LifeStatus::Deceased;
        record.death_date = Some(date);
        save(&mut tx, &record, expected_version, now).await?;
        tx.commit().await?;
        self.resident(nik).await?.ok_or(StoreError::ResidentNotFound)
    }

    /// Records a move within the area (new address, maybe another KK) or out of it.
    pub async fn record_move(
        &self,
        nik: &Nik,
        expected_version: i64,
        change: &Move,
        now: DateTime<Utc>,
    ) -> Result<Resident, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let mut record = load_for_change(&mut tx, nik, expected_version).await?;
        require_active(&record)?;
        match change {
            Move::OutOfArea => record.life_status = LifeStatus::MovedOut,
            Move::WithinArea { address, family } => {
                record.address = address.clone();
                if let Some((kk, relationship)) = family
                    && *kk != record.kk
                {
                    let exists = sqlx::query("SELECT kk FROM families WHERE kk = $1")
                        .bind(kk.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                    if exists.is_none() {
                        return Err(StoreError::FamilyNotFound);
                    }
                    let broken_before = record.age_rules(wib_day(now));
                    let mut moved = record.clone();
                    moved.relationship = *relationship;
                    no_new_age_rule_broken(&moved, &broken_before, now, |rule| match rule {
                        AgeRule::Head => "new_relationship".to_owned(),
                        other => other.field().to_owned(),
                    })?;
                    if record.relationship == Relationship::Head
                        && active_members(&mut tx, &record.kk).await? > 1
                    {
                        return Err(StoreError::WouldLoseHead);
                    }
                    if *relationship == Relationship::Head && living_heads(&mut tx, kk).await? > 0 {
                        return Err(StoreError::SecondHead);
                    }
                    record.kk = *kk;
                    record.relationship = *relationship;
                }
            }
        }
        save(&mut tx, &record, expected_version, now).await?;
        tx.commit().await?;
        self.resident(nik).await?.ok_or(StoreError::ResidentNotFound)
    }

    /// Living residents of an area (4-digit regency or 6-digit kecamatan), and
    /// those of them eligible for a KTP-el with their biometrics recorded.
    pub async fn count_area(&self, area_code: &str, today: NaiveDate) -> Result<(i64, i64), StoreError> {
        use chrono::Datelike as _;
        let adult_born_by = today.with_year(today.year() - 17).unwrap_or(today);
        let row = sqlx::query(
            "SELECT COUNT(*) AS alive, \
               CAST(COALESCE(SUM(CASE WHEN (birth_date <= $2 OR marital_status <> 'SINGLE') \
                 AND recording_status IN ('RECORDED', 'PRINT_READY') THEN 1 ELSE 0 END), 0) AS BIGINT) AS eligible \
             FROM residents WHERE district_code LIKE $1 AND life_status = 'ALIVE'",
        )
        .bind(format!("{area_code}%"))
        .bind(day_text(adult_born_by))
        .fetch_one(self.db.pool())
        .await?;
        Ok((row.try_get("alive")?, row.try_get("eligible")?))
    }

    /// Some residents with a print-ready KTP-el record (eligible for IKD and a card), by NIK (for demos).
    pub async fn eligible_niks(&self, today: NaiveDate, limit: i64) -> Result<Vec<String>, StoreError> {
        use chrono::Datelike as _;
        let adult_born_by = today.with_year(today.year() - 17).unwrap_or(today);
        let rows = sqlx::query(
            "SELECT nik FROM residents WHERE life_status = 'ALIVE' AND recording_status = 'PRINT_READY' \
             AND (birth_date <= $1 OR marital_status <> 'SINGLE') ORDER BY id LIMIT $2",
        )
        .bind(day_text(adult_born_by))
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("nik")?)).collect()
    }

    /// How many residents are stored.
    pub async fn count_residents(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM residents")
            .fetch_one(self.db.pool())
            .await?
            .try_get("n")?)
    }
}

/// The office's date of an instant: the day in WIB.
fn wib_day(now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&adminduk_kit::time::wib()).date_naive()
}

/// Refuses a change that breaks an age rule the record kept before it (a
/// child made head of family, a birth date corrected to make a wife 12); a
/// rule the stored record already broke is left to an officer to correct and
/// does not block unrelated changes.
fn no_new_age_rule_broken(
    changed: &Resident,
    broken_before: &[AgeRule],
    now: DateTime<Utc>,
    field: impl Fn(AgeRule) -> String,
) -> Result<(), StoreError> {
    let newly: Vec<Violation> = changed
        .age_rules(wib_day(now))
        .into_iter()
        .filter(|rule| !broken_before.contains(rule))
        .map(|rule| Violation::new(field(rule), rule.description()))
        .collect();
    if newly.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Invalid(newly))
    }
}

fn require_active(record: &Resident) -> Result<(), StoreError> {
    match record.life_status {
        LifeStatus::Alive => Ok(()),
        LifeStatus::Deceased => Err(StoreError::NotActive("deceased")),
        LifeStatus::MovedOut => Err(StoreError::NotActive("moved out")),
    }
}

fn unique_to(err: sqlx::Error, mapped: StoreError) -> StoreError {
    if is_unique_violation(&err) {
        mapped
    } else {
        StoreError::Db(err)
    }
}

async fn living_heads(tx: &mut Transaction<'static, Any>, kk: &Kk) -> Result<i64, StoreError> {
    Ok(sqlx::query(
        "SELECT COUNT(*) AS n FROM residents WHERE kk = $1 AND relationship = 1 AND life_status = 'ALIVE'",
    )
    .bind(kk.as_str())
    .fetch_one(&mut **tx)
    .await?
    .try_get("n")?)
}

async fn active_members(tx: &mut Transaction<'static, Any>, kk: &Kk) -> Result<i64, StoreError> {
    Ok(
        sqlx::query("SELECT COUNT(*) AS n FROM residents WHERE kk = $1 AND life_status = 'ALIVE'")
            .bind(kk.as_str())
            .fetch_one(&mut **tx)
            .await?
            .try_get("n")?,
    )
}

async fn load_for_change(
    tx: &mut Transaction<'static, Any>,
    nik: &Nik,
    expected_version: i64,
) -> Result<Resident, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {RESIDENT_COLUMNS} FROM residents WHERE nik = $1"));
    let row = sqlx::query(sql)
        .bind(nik.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    let record = row
        .as_ref()
        .map(resident_from_row)
        .transpose()?
        .ok_or(StoreError::ResidentNotFound)?;
    if record.version != expected_version {
        return Err(StoreError::StaleVersion {
            expected: expected_version,
            actual: record.version,
        });
    }
    Ok(record)
}

/// Stores a family by its KK. A KK already stored fails the insert, or with
/// `skip_stored` is left as it is.
async fn insert_family(
    tx: &mut Transaction<'static, Any>,
    kk: &Kk,
    skip_stored: bool,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let sql = if skip_stored {
        "INSERT INTO families (kk, district_code, issue_date, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (kk) DO NOTHING"
    } else {
        "INSERT INTO families (kk, district_code, issue_date, created_at) VALUES ($1, $2, $3, $4)"
    };
    sqlx::query(sql)
        .bind(kk.as_str())
        .bind(kk.district_code())
        .bind(day_text(kk.issue_date()))
        .bind(millis(now))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_resident(
    tx: &mut Transaction<'static, Any>,
    new: &NewResident,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO residents (nik, kk, full_name, name_norm, sex, birth_place, birth_date, street, rt, rw, \
         village_code, district_code, marital_status, relationship, life_status, recording_status, death_date, \
         version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'ALIVE', $15, NULL, 1, $16, $16)",
    )
    .bind(new.nik.as_str())
    .bind(new.kk.as_str())
    .bind(new.full_name.trim())
    .bind(normalize_name(&new.full_name))
    .bind(sex_code(new.sex))
    .bind(new.birth_place.trim())
    .bind(day_text(new.birth_date))
    .bind(new.address.street.trim())
    .bind(new.address.rt.as_str())
    .bind(new.address.rw.as_str())
    .bind(new.address.village_code.as_str())
    .bind(new.address.district_code())
    .bind(new.marital_status.as_str())
    .bind(new.relationship.code())
    .bind(new.recording_status.as_str())
    .bind(millis(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn save(
    tx: &mut Transaction<'static, Any>,
    record: &Resident,
    expected_version: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let result = sqlx::query(
        "UPDATE residents SET kk = $1, full_name = $2, name_norm = $3, sex = $4, birth_place = $5, birth_date = $6, \
         street = $7, rt = $8, rw = $9, village_code = $10, district_code = $11, marital_status = $12, \
         relationship = $13, life_status = $14, recording_status = $15, death_date = $16, \
         version = version + 1, updated_at = $17 \
         WHERE nik = $18 AND version = $19",
    )
    .bind(record.kk.as_str())
    .bind(record.full_name.as_str())
    .bind(normalize_name(&record.full_name))
    .bind(sex_code(record.sex))
    .bind(record.birth_place.as_str())
    .bind(day_text(record.birth_date))
    .bind(record.address.street.as_str())
    .bind(record.address.rt.as_str())
    .bind(record.address.rw.as_str())
    .bind(record.address.village_code.as_str())
    .bind(record.address.district_code())
    .bind(record.marital_status.as_str())
    .bind(record.relationship.code())
    .bind(record.life_status.as_str())
    .bind(record.recording_status.as_str())
    .bind(record.death_date.map(day_text))
    .bind(millis(now))
    .bind(record.nik.as_str())
    .bind(expected_version)
    .execute(&mut **tx)
    .await
    .map_err(|err| unique_to(err, StoreError::SecondHead))?;
    if result.rows_affected() != 1 {
        // Read and write share a transaction, so only a concurrent writer on Postgres
        // (read committed) can get here: the caller retries with the new version.
        return Err(StoreError::StaleVersion {
            expected: expected_version,
            actual: expected_version + 1,
        });
    }
    Ok(())
}
