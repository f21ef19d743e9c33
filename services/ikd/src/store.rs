//! IKD records in SQL, for SQLite and PostgreSQL alike.

use chrono::{DateTime, Utc};
use sqlx::Row as _;
use sqlx::any::{AnyQueryResult, AnyRow};

use adminduk_kit::storage::{Corrupt, Migrations, from_millis, is_unique_violation, millis};

use crate::domain::{ActivationState, RESTART_GRACE, hex, unhex};

/// This service's migrations.
pub const MIGRATIONS: Migrations =
    adminduk_kit::migrations!["0001_ikd.sql", "0003_mail_sender.sql", "0004_opaque_subject.sql"];

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An open activation of the NIK holds it: started moments ago, or
    /// verified at an office with a code that still works.
    #[error("an activation is already under way")]
    ActivationOpen(OpenActivation),
    /// The identity is active on a device.
    #[error("the identity is active on a device")]
    AlreadyActive,
    /// The row changed under us.
    #[error("changed concurrently")]
    Conflict,
    /// A stored row could not be read.
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// An update or insert that had to touch exactly one row; `otherwise` when it
/// did not (another request changed the row first).
fn one_row(done: &AnyQueryResult, otherwise: StoreError) -> Result<(), StoreError> {
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(otherwise)
    }
}

/// An identity bound to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// NIK.
    pub nik: String,
    /// Active or revoked.
    pub active: bool,
    /// The device's id.
    pub device_id: String,
    /// The device's Ed25519 public key.
    pub device_public_key: Vec<u8>,
    /// The kecamatan of the resident's address at activation.
    pub district_code: String,
    /// When activated.
    pub activated_at: DateTime<Utc>,
    /// The opaque subject session tokens name the resident by (never the NIK).
    pub subject: String,
}

/// A new opaque subject: 128 random bits as hex, unrelated to the NIK.
fn new_subject() -> Result<String, StoreError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Corrupt::new("no randomness for a subject"))?;
    Ok(hex(&bytes))
}

/// An activation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// Id.
    pub id: String,
    /// NIK.
    pub nik: String,
    /// E-mail for the code.
    pub email: String,
    /// The device's public key.
    pub device_public_key: Vec<u8>,
    /// The kecamatan of the resident's address.
    pub district_code: String,
    /// The QR nonce.
    pub nonce: String,
    /// What the device signs.
    pub challenge: Vec<u8>,
    /// State.
    pub state: ActivationState,
    /// Hash of the code, once sent.
    pub code_hash: Option<String>,
    /// Salt of the code hash.
    pub code_salt: Option<Vec<u8>>,
    /// When the code stops working.
    pub code_expires_at: Option<DateTime<Utc>>,
    /// Wrong codes so far.
    pub attempts: i64,
    /// When the activation lapses.
    pub expires_at: DateTime<Utc>,
}

/// What holds a NIK against a new start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenActivation {
    /// Started moments ago and not verified at an office: a new start
    /// replaces it from `replaceable_at` on.
    Started {
        /// When a new start is accepted.
        replaceable_at: DateTime<Utc>,
    },
    /// Verified at an office, with a code that works until `code_expires_at`;
    /// a new start is accepted once it has expired.
    CodeSent {
        /// When the code stops working (or the activation lapses, if sooner).
        code_expires_at: DateTime<Utc>,
    },
}

/// The open activation of a NIK, if any, as what holds it.
async fn open_activation(
    conn: &mut sqlx::AnyConnection,
    nik: &str,
) -> Result<Option<OpenActivation>, StoreError> {
    let row = sqlx::query(
        "SELECT state, created_at, code_expires_at, expires_at FROM activations \
         WHERE nik = $1 AND state IN ('STARTED', 'VERIFIED')",
    )
    .bind(nik)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let state: String = row.try_get("state")?;
    let expires_at = from_millis(row.try_get("expires_at")?)?;
    Ok(Some(match ActivationState::parse(&state) {
        Some(ActivationState::Started) => OpenActivation::Started {
            replaceable_at: (from_millis(row.try_get("created_at")?)? + RESTART_GRACE).min(expires_at),
        },
        Some(ActivationState::Verified) => {
            let code: Option<i64> = row.try_get("code_expires_at")?;
            OpenActivation::CodeSent {
                code_expires_at: code
                    .map(from_millis)
                    .transpose()?
                    .unwrap_or(expires_at)
                    .min(expires_at),
            }
        }
        _ => return Err(Corrupt::new("state").into()),
    }))
}

/// A new activation to store.
#[derive(Debug, Clone)]
pub struct NewActivation<'a> {
    /// Id.
    pub id: &'a str,
    /// NIK.
    pub nik: &'a str,
    /// E-mail.
    pub email: &'a str,
    /// Phone.
    pub phone: &'a str,
    /// Device key.
    pub device_public_key: &'a [u8],
    /// Kecamatan.
    pub district_code: &'a str,
    /// QR nonce.
    pub nonce: &'a str,
    /// Challenge.
    pub challenge: &'a [u8],
    /// Lapse time.
    pub expires_at: DateTime<Utc>,
}

/// One audit row.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    /// Masked NIK.
    pub nik_masked: &'a str,
    /// Which operation.
    pub action: &'a str,
    /// OK or the refusal's reason.
    pub outcome: &'a str,
    /// The office, if any.
    pub service_point_code: &'a str,
    /// The officer, if any.
    pub officer_id: &'a str,
    /// The trace, if any.
    pub trace_id: &'a str,
}

/// One outbox message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Id.
    pub id: i64,
    /// Recipient.
    pub recipient: String,
    /// Subject.
    pub subject: String,
    /// Body.
    pub body: String,
    /// When written.
    pub created_at: DateTime<Utc>,
}

fn activation_from_row(row: &AnyRow) -> Result<Activation, StoreError> {
    let key: String = row.try_get("device_public_key")?;
    let challenge: String = row.try_get("challenge")?;
    let state: String = row.try_get("state")?;
    let salt: Option<String> = row.try_get("code_salt")?;
    let code_expires: Option<i64> = row.try_get("code_expires_at")?;
    Ok(Activation {
        id: row.try_get("id")?,
        nik: row.try_get("nik")?,
        email: row.try_get("email")?,
        device_public_key: unhex(&key).ok_or(Corrupt::new("device key"))?,
        district_code: row.try_get("district_code")?,
        nonce: row.try_get("nonce")?,
        challenge: unhex(&challenge).ok_or(Corrupt::new("challenge"))?,
        state: ActivationState::parse(&state).ok_or(Corrupt::new("state"))?,
        code_hash: row.try_get("code_hash")?,
        code_salt: salt
            .as_deref()
            .map(|s| unhex(s).ok_or(Corrupt::new("salt")))
            .transpose()?,
        code_expires_at: code_expires.map(from_millis).transpose()?,
        attempts: row.try_get("attempts")?,
        expires_at: from_millis(row.try_get("expires_at")?)?,
    })
}

const ACTIVATION_COLUMNS: &str = "id, nik, email, device_public_key, district_code, nonce, challenge, state, \
     code_hash, code_salt, code_expires_at, attempts, expires_at";

adminduk_kit::store! {
    /// The IKD store.
    pub struct Store;
}

impl Store {
    /// The identity of a NIK, active or revoked.
    pub async fn identity(&self, nik: &str) -> Result<Option<Identity>, StoreError> {
        self.identity_where("nik = $1", nik).await
    }

    /// The identity a session token's opaque subject stands for.
    pub async fn identity_by_subject(&self, subject: &str) -> Result<Option<Identity>, StoreError> {
        self.identity_where("subject = $1", subject).await
    }

    async fn identity_where(
        &self,
        condition: &'static str,
        value: &str,
    ) -> Result<Option<Identity>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT nik, status, device_id, device_public_key, district_code, activated_at, subject \
             FROM identities WHERE {condition}"
        ));
        let row = sqlx::query(sql)
            .bind(value)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| {
            let key: String = r.try_get("device_public_key")?;
            let status: String = r.try_get("status")?;
            Ok(Identity {
                nik: r.try_get("nik")?,
                active: status == "ACTIVE",
                device_id: r.try_get("device_id")?,
                device_public_key: unhex(&key).ok_or(Corrupt::new("device key"))?,
                district_code: r.try_get("district_code")?,
                activated_at: from_millis(r.try_get("activated_at")?)?,
                subject: r
                    .try_get::<Option<String>, _>("subject")?
                    .ok_or(Corrupt::new("subject"))?,
            })
        })
        .transpose()
    }

    /// Whether the NIK has an open activation (started or verified, not lapsed).
    pub async fn has_open_activation(&self, nik: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT id FROM activations WHERE nik = $1 AND state IN ('STARTED', 'VERIFIED') AND expires_at > $2",
        )
        .bind(nik)
        .bind(millis(now))
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.is_some())
    }

    /// Stores a new activation. Open activations of the NIK are closed first
    /// when they have lapsed, when their code has expired (a resident whose
    /// code expired may start over), or when no office has verified them
    /// within [`RESTART_GRACE`] of their start (starting needs only the NIK,
    /// so a start by whoever knows it must not hold the NIK for days). Of two
    /// racing starts exactly one is stored; the other is told what holds the
    /// NIK and until when.
    pub async fn start_activation(
        &self,
        new: &NewActivation<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "UPDATE activations SET state = 'EXPIRED', updated_at = $2 \
             WHERE nik = $1 AND state IN ('STARTED', 'VERIFIED') \
               AND (expires_at <= $2 OR (state = 'VERIFIED' AND code_expires_at <= $2) \
                    OR (state = 'STARTED' AND created_at <= $3))",
        )
        .bind(new.nik)
        .bind(millis(now))
        .bind(millis(now - RESTART_GRACE))
        .execute(&mut *tx)
        .await?;
        let active = sqlx::query("SELECT nik FROM identities WHERE nik = $1 AND status = 'ACTIVE'")
            .bind(new.nik)
            .fetch_optional(&mut *tx)
            .await?;
        if active.is_some() {
            return Err(StoreError::AlreadyActive);
        }
        if let Some(open) = open_activation(&mut tx, new.nik).await? {
            return Err(StoreError::ActivationOpen(open));
        }
        let inserted = sqlx::query(
            "INSERT INTO activations (id, nik, email, phone, device_public_key, district_code, nonce, challenge, \
             state, attempts, created_at, expires_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'STARTED', 0, $9, $10, $9)",
        )
        .bind(new.id)
        .bind(new.nik)
        .bind(new.email)
        .bind(new.phone)
        .bind(hex(new.device_public_key))
        .bind(new.district_code)
        .bind(new.nonce)
        .bind(hex(new.challenge))
        .bind(millis(now))
        .bind(millis(new.expires_at))
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(err) if is_unique_violation(&err) => {
                // A start racing this one was stored first (PostgreSQL; on
                // SQLite the write transactions take turns). Say what holds
                // the NIK, read after that start committed.
                drop(tx);
                let mut conn = self.db.pool().acquire().await?;
                let open = open_activation(&mut conn, new.nik)
                    .await?
                    .unwrap_or(OpenActivation::Started {
                        replaceable_at: now + RESTART_GRACE,
                    });
                return Err(StoreError::ActivationOpen(open));
            }
            other => {
                other?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// An activation by id.
    pub async fn activation(&self, id: &str) -> Result<Option<Activation>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ACTIVATION_COLUMNS} FROM activations WHERE id = $1"
        ));
        let row = sqlx::query(sql).bind(id).fetch_optional(self.db.pool()).await?;
        row.as_ref().map(activation_from_row).transpose()
    }

    /// Marks a started activation verified at an office, with the code's hash,
    /// and queues the code's message, in one transaction. A verified one whose
    /// code has expired is verified again: a fresh code, its attempts from zero;
    /// of two racing scans exactly one sends a code.
    #[allow(clippy::too_many_arguments)]
    pub async fn verify_at_office(
        &self,
        id: &str,
        code_hash: &str,
        code_salt: &[u8],
        code_expires_at: DateTime<Utc>,
        officer: &str,
        point: &str,
        message: (&str, &str, &str),
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE activations SET state = 'VERIFIED', code_hash = $2, code_salt = $3, code_expires_at = $4, \
             attempts = 0, officer_id = $5, service_point_code = $6, verified_at = $7, updated_at = $7 \
             WHERE id = $1 AND expires_at > $7 \
               AND (state = 'STARTED' OR (state = 'VERIFIED' AND code_expires_at <= $7))",
        )
        .bind(id)
        .bind(code_hash)
        .bind(hex(code_salt))
        .bind(millis(code_expires_at))
        .bind(officer)
        .bind(point)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        one_row(&updated, StoreError::Conflict)?;
        let (recipient, subject, body) = message;
        sqlx::query("INSERT INTO outbox (recipient, subject, body, created_at) VALUES ($1, $2, $3, $4)")
            .bind(recipient)
            .bind(subject)
            .bind(body)
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Counts a wrong guess at the activation's code as read; locks the
    /// activation at `max_attempts`. Returns the attempts so far.
    pub async fn wrong_code(
        &self,
        activation: &Activation,
        max_attempts: i64,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.db.begin_write().await?;
        // Only against the code that was read: a guess at a code sent again meanwhile counts for nothing.
        let updated = sqlx::query(
            "UPDATE activations SET attempts = attempts + 1, \
             state = CASE WHEN attempts + 1 >= $2 THEN 'LOCKED' ELSE state END, updated_at = $3 \
             WHERE id = $1 AND state = 'VERIFIED' AND code_hash = $4",
        )
        .bind(&activation.id)
        .bind(max_attempts)
        .bind(millis(now))
        .bind(activation.code_hash.as_deref())
        .execute(&mut *tx)
        .await?;
        one_row(&updated, StoreError::Conflict)?;
        let attempts: i64 = sqlx::query("SELECT attempts FROM activations WHERE id = $1")
            .bind(&activation.id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("attempts")?;
        tx.commit().await?;
        Ok(attempts)
    }

    /// Completes a verified activation and binds the device, in one transaction.
    pub async fn complete(
        &self,
        activation: &Activation,
        device_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        // The code that was checked must still be the live one: not expired, not sent again meanwhile.
        let updated = sqlx::query(
            "UPDATE activations SET state = 'COMPLETED', updated_at = $2 \
             WHERE id = $1 AND state = 'VERIFIED' AND code_hash = $3 AND code_expires_at > $2",
        )
        .bind(&activation.id)
        .bind(millis(now))
        .bind(activation.code_hash.as_deref())
        .execute(&mut *tx)
        .await?;
        one_row(&updated, StoreError::Conflict)?;
        // A revoked identity is bound anew; an active one on another device is not touched.
        let bound = sqlx::query(
            "INSERT INTO identities (nik, status, device_id, device_public_key, district_code, activated_at, updated_at, \
             subject) VALUES ($1, 'ACTIVE', $2, $3, $4, $5, $5, $6) \
             ON CONFLICT (nik) DO UPDATE SET status = 'ACTIVE', device_id = $2, device_public_key = $3, \
               district_code = $4, activated_at = $5, revoked_at = NULL, updated_at = $5 \
             WHERE identities.status = 'REVOKED'",
        )
        .bind(&activation.nik)
        .bind(device_id)
        .bind(hex(&activation.device_public_key))
        .bind(&activation.district_code)
        .bind(millis(now))
        .bind(new_subject()?)
        .execute(&mut *tx)
        .await?;
        one_row(&bound, StoreError::AlreadyActive)?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes an active identity; returns its device id.
    pub async fn revoke(&self, nik: &str, now: DateTime<Utc>) -> Result<Option<String>, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let row = sqlx::query("SELECT device_id FROM identities WHERE nik = $1 AND status = 'ACTIVE'")
            .bind(nik)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let device: String = row.try_get("device_id")?;
        sqlx::query(
            "UPDATE identities SET status = 'REVOKED', revoked_at = $2, updated_at = $2 WHERE nik = $1",
        )
        .bind(nik)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(device))
    }

    /// Stores a token challenge.
    pub async fn add_challenge(
        &self,
        challenge: &[u8],
        nik: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO token_challenges (challenge, nik, expires_at) VALUES ($1, $2, $3)")
            .bind(hex(challenge))
            .bind(nik)
            .bind(millis(expires_at))
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Uses a challenge once: true only for the first use of a live challenge of this NIK.
    pub async fn use_challenge(
        &self,
        challenge: &[u8],
        nik: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let used = sqlx::query(
            "UPDATE token_challenges SET used_at = $3 WHERE challenge = $1 AND nik = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(hex(challenge))
        .bind(nik)
        .bind(millis(now))
        .execute(self.db.pool())
        .await?;
        Ok(used.rows_affected() == 1)
    }

    /// Signing keys, newest first: (kid, PKCS#8, retired).
    pub async fn signing_keys(&self) -> Result<Vec<(String, Vec<u8>, bool)>, StoreError> {
        let rows =
            sqlx::query("SELECT kid, private_pkcs8, retired_at FROM signing_keys ORDER BY created_at DESC")
                .fetch_all(self.db.pool())
                .await?;
        rows.iter()
            .map(|r| {
                let pkcs8: String = r.try_get("private_pkcs8")?;
                let retired: Option<i64> = r.try_get("retired_at")?;
                Ok((
                    r.try_get("kid")?,
                    unhex(&pkcs8).ok_or(Corrupt::new("signing key"))?,
                    retired.is_some(),
                ))
            })
            .collect()
    }

    /// Stores a new signing key.
    pub async fn add_signing_key(
        &self,
        kid: &str,
        pkcs8: &[u8],
        public_key: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, private_pkcs8, public_key, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(kid)
        .bind(hex(pkcs8))
        .bind(hex(public_key))
        .bind(millis(now))
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Active identities whose kecamatan starts with `area`.
    pub async fn count_active(&self, area: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query(
            "SELECT COUNT(*) AS n FROM identities WHERE status = 'ACTIVE' AND district_code LIKE $1",
        )
        .bind(format!("{area}%"))
        .fetch_one(self.db.pool())
        .await?
        .try_get("n")?)
    }

    /// Writes an audit row.
    pub async fn audit(&self, entry: &AuditEntry<'_>, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit (nik_masked, action, outcome, service_point_code, officer_id, trace_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(entry.nik_masked)
        .bind(entry.action)
        .bind(entry.outcome)
        .bind(entry.service_point_code)
        .bind(entry.officer_id)
        .bind(entry.trace_id)
        .bind(millis(now))
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Audit rows, newest first: (action, outcome, nik_masked).
    pub async fn audit_trail(&self, limit: i64) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query("SELECT action, outcome, nik_masked FROM audit ORDER BY seq DESC LIMIT $1")
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("action")?,
                    r.try_get("outcome")?,
                    r.try_get("nik_masked")?,
                ))
            })
            .collect()
    }

    /// Messages not yet sent, oldest first.
    pub async fn outbox(&self, limit: i64) -> Result<Vec<OutboxMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, recipient, subject, body, created_at FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxMessage {
                    id: r.try_get("id")?,
                    recipient: r.try_get("recipient")?,
                    subject: r.try_get("subject")?,
                    body: r.try_get("body")?,
                    created_at: from_millis(r.try_get("created_at")?)?,
                })
            })
            .collect()
    }

    /// Seeds an active identity directly (demo data only).
    pub async fn seed_identity(
        &self,
        nik: &str,
        device_public_key: &[u8],
        device_id: &str,
        district_code: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO identities (nik, status, device_id, device_public_key, district_code, activated_at, updated_at, \
             subject) VALUES ($1, 'ACTIVE', $2, $3, $4, $5, $5, $6) ON CONFLICT (nik) DO NOTHING",
        )
        .bind(nik)
        .bind(device_id)
        .bind(hex(device_public_key))
        .bind(district_code)
        .bind(millis(now))
        .bind(new_subject()?)
        .execute(self.db.pool())
        .await?;
        Ok(inserted.rows_affected() == 1)
    }
}

/// An outbox message with the mail sender's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The message.
    pub message: OutboxMessage,
    /// When it was handed to the mail relay (or written to the mailbox); `None` while it waits.
    pub sent_at: Option<DateTime<Utc>>,
    /// Failed attempts so far.
    pub attempts: i64,
    /// Not tried again before this instant.
    pub next_attempt_at: DateTime<Utc>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

const MAIL_COLUMNS: &str =
    "id, recipient, subject, body, created_at, sent_at, attempts, next_attempt_at, last_error";

fn mail_from_row(r: &AnyRow) -> Result<Mail, StoreError> {
    let sent_at: Option<i64> = r.try_get("sent_at")?;
    Ok(Mail {
        message: OutboxMessage {
            id: r.try_get("id")?,
            recipient: r.try_get("recipient")?,
            subject: r.try_get("subject")?,
            body: r.try_get("body")?,
            created_at: from_millis(r.try_get("created_at")?)?,
        },
        sent_at: sent_at.map(from_millis).transpose()?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: from_millis(r.try_get("next_attempt_at")?)?,
        last_error: r.try_get("last_error")?,
    })
}

/// The mail sender's side of the outbox.
impl Store {
    /// Puts a message in the outbox; returns its id.
    pub async fn queue_mail(
        &self,
        recipient: &str,
        subject: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO outbox (recipient, subject, body, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(recipient)
        .bind(subject)
        .bind(body)
        .bind(millis(now))
        .fetch_one(self.db.pool())
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Unsent messages whose next attempt is due at `now`, oldest first.
    pub async fn due_mail(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Mail>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {MAIL_COLUMNS} FROM outbox WHERE sent_at IS NULL AND next_attempt_at <= $1 ORDER BY id LIMIT $2"
        ));
        let rows = sqlx::query(sql)
            .bind(millis(now))
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(mail_from_row).collect()
    }

    /// Takes a due message in hand until `until`, so that of several senders
    /// (replicas) one sends it; false when another has it or it was sent.
    pub async fn claim_mail(
        &self,
        id: i64,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let claimed = sqlx::query(
            "UPDATE outbox SET next_attempt_at = $3 WHERE id = $1 AND sent_at IS NULL AND next_attempt_at <= $2",
        )
        .bind(id)
        .bind(millis(now))
        .bind(millis(until))
        .execute(self.db.pool())
        .await?;
        Ok(claimed.rows_affected() == 1)
    }

    /// Records that a message was sent; false when it was marked already.
    pub async fn mark_mail_sent(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let marked = sqlx::query(
            "UPDATE outbox SET sent_at = $2, last_error = NULL WHERE id = $1 AND sent_at IS NULL",
        )
        .bind(id)
        .bind(millis(now))
        .execute(self.db.pool())
        .await?;
        Ok(marked.rows_affected() == 1)
    }

    /// Records a failed attempt and when to try again; returns the failed attempts so far.
    pub async fn mark_mail_failed(
        &self,
        id: i64,
        retry_at: DateTime<Utc>,
        error: &str,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 \
             WHERE id = $1 AND sent_at IS NULL RETURNING attempts",
        )
        .bind(id)
        .bind(millis(retry_at))
        .bind(error)
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.map(|r| r.try_get("attempts")).transpose()?.unwrap_or(0))
    }

    /// The `limit` newest messages, sent or not, to `recipient` if given; newest first.
    pub async fn recent_mail(&self, recipient: Option<&str>, limit: i64) -> Result<Vec<Mail>, StoreError> {
        let rows = match recipient {
            Some(recipient) => {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {MAIL_COLUMNS} FROM outbox WHERE recipient = $1 ORDER BY id DESC LIMIT $2"
                ));
                sqlx::query(sql)
                    .bind(recipient)
                    .bind(limit)
                    .fetch_all(self.db.pool())
                    .await?
            }
            None => {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {MAIL_COLUMNS} FROM outbox ORDER BY id DESC LIMIT $1"
                ));
                sqlx::query(sql).bind(limit).fetch_all(self.db.pool()).await?
            }
        };
        rows.iter().map(mail_from_row).collect()
    }
}
