//! The audit chain: a row for every read or change of personal data that
//! passes the door, naming the principal, the resident (masked, and by an
//! HMAC under a key kept outside the database, since NIKs are too few for a
//! plain hash to hide them), the method, the purpose, the outcome, the time and
//! the trace. Each row's hash covers its fields and the previous row's hash, so
//! a row changed or removed breaks the chain after it; the chain's head is
//! signed with the gateway's Ed25519 audit key every minute, so someone who
//! can write the database cannot recompute the chain without the signatures
//! giving it away (as X-Road's message log does).
//!
//! Rows are written by one task per gateway in batches (a group commit), off
//! the request's path: a request never waits for its row. Each batch reads and
//! moves the chain's head in its transaction, so replicas may share a chain.

use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use chrono::{DateTime, Utc};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use ring::{digest, hmac};
use sqlx::Row as _;
use tokio::sync::mpsc;

use adminduk_kit::metrics::code_name;
use adminduk_kit::storage::{Backend, Db, millis};

/// The hash before the first row.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The most rows waiting for the writer; past it a row is dropped, loudly.
const QUEUE: usize = 65_536;
/// The most rows in one batch.
const BATCH: usize = 512;

/// The audit's keys: the HMAC key for residents' references and the Ed25519
/// key that signs the chain's head. Both live outside the database.
pub struct AuditKeys {
    hash: hmac::Key,
    hash_key_id: String,
    signing: Option<Ed25519KeyPair>,
    public: Vec<u8>,
    signing_key_id: String,
}

impl std::fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKeys")
            .field("hash_key_id", &self.hash_key_id)
            .field("signing_key_id", &self.signing_key_id)
            .finish_non_exhaustive()
    }
}

/// The keys are not what they must be.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The HMAC key is not at least 32 bytes of hex.
    #[error("the audit hash key must be at least 64 hex digits (32 bytes)")]
    HashKey,
    /// The signing key is not a 32-byte Ed25519 seed in hex.
    #[error("the audit signing key must be 64 hex digits (an Ed25519 seed)")]
    SigningKey,
    /// The public key is not 32 bytes of hex.
    #[error("the audit public key must be 64 hex digits")]
    PublicKey,
}

fn key_id(bytes: &[u8]) -> String {
    adminduk_kit::hex::encode(&digest::digest(&digest::SHA256, bytes).as_ref()[..4])
}

/// The HMAC key from hex, and its id (derived from the key, so it needs no name).
fn hash_key_of(hex: &str) -> Result<(hmac::Key, String), KeyError> {
    let bytes = adminduk_kit::hex::decode(hex.trim())
        .filter(|k| k.len() >= 32)
        .ok_or(KeyError::HashKey)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &bytes);
    let id = key_id(hmac::sign(&key, b"key id").as_ref());
    Ok((key, id))
}

impl AuditKeys {
    /// Keys from their hex forms: the HMAC key and the signing key's seed.
    pub fn from_hex(hash_key: &str, signing_seed: &str) -> Result<Self, KeyError> {
        let (hash, hash_key_id) = hash_key_of(hash_key)?;
        let seed = adminduk_kit::hex::decode(signing_seed.trim())
            .filter(|k| k.len() == 32)
            .ok_or(KeyError::SigningKey)?;
        let signing = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| KeyError::SigningKey)?;
        let public = signing.public_key().as_ref().to_vec();
        Ok(Self {
            hash,
            hash_key_id,
            signing_key_id: key_id(&public),
            public,
            signing: Some(signing),
        })
    }

    /// Keys for checking only: the HMAC key (to search) and the signing key's
    /// public half (to verify), as an auditor holds them.
    pub fn for_checking(hash_key: &str, public_key: &str) -> Result<Self, KeyError> {
        let (hash, hash_key_id) = hash_key_of(hash_key)?;
        let public = adminduk_kit::hex::decode(public_key.trim())
            .filter(|k| k.len() == 32)
            .ok_or(KeyError::PublicKey)?;
        Ok(Self {
            hash,
            hash_key_id,
            signing_key_id: key_id(&public),
            public,
            signing: None,
        })
    }

    /// The HMAC key alone, to find a resident's rows.
    pub fn for_search(hash_key: &str) -> Result<Self, KeyError> {
        let (hash, hash_key_id) = hash_key_of(hash_key)?;
        Ok(Self {
            hash,
            hash_key_id,
            signing: None,
            public: Vec::new(),
            signing_key_id: String::new(),
        })
    }

    /// The signing key's public half, in hex: what an auditor verifies with.
    pub fn public_key_hex(&self) -> String {
        adminduk_kit::hex::encode(&self.public)
    }

    /// A resident's (or a family card's) keyed reference: HMAC-SHA256, in hex.
    pub fn reference(&self, kind: SubjectKind, value: &str) -> String {
        let mut input = Vec::with_capacity(value.len() + 4);
        input.extend_from_slice(kind.as_str().as_bytes());
        input.push(b':');
        input.extend_from_slice(value.as_bytes());
        adminduk_kit::hex::encode(hmac::sign(&self.hash, &input).as_ref())
    }
}

/// What a row names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    /// A resident, by NIK.
    Nik,
    /// A family, by KK number.
    Kk,
}

impl SubjectKind {
    fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Nik => "nik",
            SubjectKind::Kk => "kk",
        }
    }
}

/// One read or change of personal data, as the door saw it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The caller, as its credential names it.
    pub principal: String,
    /// Whom the request names, if anyone: the kind and the whole number
    /// (masked and hashed before it is queued).
    pub subject: Option<(SubjectKind, String)>,
    /// `/package.Service/Method`.
    pub method: String,
    /// Why, as the caller said (digit runs masked), or the role's default.
    pub purpose: String,
    /// `OK`, or the code and reason of the refusal.
    pub outcome: String,
}

/// A row as stored (and as `audit search` shows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The chain.
    pub chain: String,
    /// Its place in the chain, from 1.
    pub seq: i64,
    /// When, in milliseconds since the epoch.
    pub at_ms: i64,
    /// The caller.
    pub principal: String,
    /// `nik`, `kk` or empty.
    pub subject_kind: String,
    /// The number, masked.
    pub subject_masked: String,
    /// Its keyed reference.
    pub subject_hash: String,
    /// The id of the key of the reference.
    pub key_id: String,
    /// The method.
    pub method: String,
    /// The purpose.
    pub purpose: String,
    /// The outcome.
    pub outcome: String,
    /// The trace, when one was recorded.
    pub trace_id: String,
    /// The previous row's hash.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

impl Row {
    /// The hash of the row's fields and the previous hash: each field
    /// length-prefixed, so no two rows encode alike.
    pub fn compute_hash(&self) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        let seq = self.seq.to_string();
        let at = self.at_ms.to_string();
        for part in [
            self.chain.as_str(),
            &seq,
            &at,
            &self.principal,
            &self.subject_kind,
            &self.subject_masked,
            &self.subject_hash,
            &self.key_id,
            &self.method,
            &self.purpose,
            &self.outcome,
            &self.trace_id,
            &self.prev_hash,
        ] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        adminduk_kit::hex::encode(ctx.finish().as_ref())
    }

    fn of(row: &sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            chain: row.try_get("chain")?,
            seq: row.try_get("seq")?,
            at_ms: row.try_get("at_ms")?,
            principal: row.try_get("principal")?,
            subject_kind: row.try_get("subject_kind")?,
            subject_masked: row.try_get("subject_masked")?,
            subject_hash: row.try_get("subject_hash")?,
            key_id: row.try_get("key_id")?,
            method: row.try_get("method")?,
            purpose: row.try_get("purpose")?,
            outcome: row.try_get("outcome")?,
            trace_id: row.try_get("trace_id")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        })
    }
}

/// The message a head's signature covers.
fn head_message(chain: &str, seq: i64, hash: &str) -> Vec<u8> {
    format!("adminduk audit head\n{chain}\n{seq}\n{hash}").into_bytes()
}

/// A row waiting for the writer: everything but its place in the chain.
#[derive(Debug)]
struct Pending {
    at_ms: i64,
    principal: String,
    subject_kind: &'static str,
    subject_masked: String,
    subject_hash: String,
    key_id: String,
    method: String,
    purpose: String,
    outcome: String,
    trace_id: String,
}

/// Where the door records events: a queue to the writer.
#[derive(Debug, Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<Pending>,
    keys: std::sync::Arc<AuditKeys>,
    /// Rows dropped since the writer last wrote: it writes their number as a row of its own.
    dropped: std::sync::Arc<AtomicU64>,
}

/// An event whose outcome is not known yet. Dropped before it is finished
/// (the client went away and the request's work with it), it is recorded as
/// CANCELLED, so no request that reached the door is missing from the chain.
#[derive(Debug)]
pub(crate) struct Unfinished {
    log: AuditLog,
    event: Option<Event>,
}

impl Unfinished {
    pub(crate) fn new(log: AuditLog, event: Event) -> Self {
        Self {
            log,
            event: Some(event),
        }
    }

    /// The event, to add to (an exemption to its purpose).
    pub(crate) fn event_mut(&mut self) -> Option<&mut Event> {
        self.event.as_mut()
    }

    /// The event, for its outcome to be written; the guard is done.
    pub(crate) fn finish(mut self) -> Option<Event> {
        self.event.take()
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(mut event) = self.event.take() {
            event.outcome = code_name(tonic::Code::Cancelled).to_owned();
            self.log.record(event);
        }
    }
}

/// The writer, running: stop it to write what is queued and sign the head.
#[derive(Debug)]
pub struct Writer {
    task: tokio::task::JoinHandle<()>,
    checker: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Waits for the writer to drain its queue and sign the head (every
    /// [`AuditLog`] must be dropped first).
    pub async fn finish(self) {
        self.checker.abort();
        if let Err(err) = self.task.await {
            tracing::error!(error = %err, "the audit writer failed");
        }
    }
}

impl AuditLog {
    /// Starts the writer of `chain` in `db`, signing its head every `sign_every`.
    pub fn start(db: Db, keys: AuditKeys, chain: String, sign_every: Duration) -> (Self, Writer) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let keys = std::sync::Arc::new(keys);
        let dropped = std::sync::Arc::new(AtomicU64::new(0));
        let checker = tokio::spawn(check_forever(db.clone(), keys.clone(), chain.clone(), sign_every));
        let task = tokio::spawn(write(db, keys.clone(), chain, sign_every, rx, dropped.clone()));
        (Self { queue, keys, dropped }, Writer { task, checker })
    }

    /// A resident's keyed reference under the audit's HMAC key (what `audit
    /// search` finds them by), for the gateway's other records of them.
    pub(crate) fn nik_reference(&self, nik: &str) -> String {
        self.keys.reference(SubjectKind::Nik, nik)
    }

    /// Records an event (never waits: a full queue drops the row and says so in the log).
    pub fn record(&self, event: Event) {
        let (subject_kind, subject_masked, subject_hash) = match &event.subject {
            Some((kind, value)) => (
                kind.as_str(),
                adminduk_kit::mask_nik(value),
                self.keys.reference(*kind, value),
            ),
            None => ("", String::new(), String::new()),
        };
        let pending = Pending {
            at_ms: millis(Utc::now()),
            principal: event.principal,
            subject_kind,
            subject_masked,
            subject_hash,
            key_id: self.keys.hash_key_id.clone(),
            method: event.method,
            purpose: event.purpose,
            outcome: event.outcome,
            trace_id: adminduk_kit::telemetry::current_trace_id().unwrap_or_default(),
        };
        if let Err(err) = self.queue.try_send(pending) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            count_rows("dropped", 1);
            tracing::error!(error = %err, "an audit row was dropped: the writer is behind (the chain will say how many)");
        }
    }
}

/// An audit row's outcome: `OK`, or the code and the reason when there is one
/// (`PERMISSION_DENIED:OUT_OF_SCOPE`).
pub(crate) fn outcome(code: tonic::Code, reason: Option<&str>) -> String {
    let name = code_name(code);
    match reason {
        Some(reason) if code != tonic::Code::Ok && !reason.is_empty() => format!("{name}:{reason}"),
        _ => name.to_owned(),
    }
}

async fn write(
    db: Db,
    keys: std::sync::Arc<AuditKeys>,
    chain: String,
    sign_every: Duration,
    mut rx: mpsc::Receiver<Pending>,
    dropped: std::sync::Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut ticker = tokio::time::interval(sign_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut signed: Option<i64> = None;
    loop {
        tokio::select! {
            received = rx.recv_many(&mut batch, BATCH) => {
                                if received == 0 {
                    break;
                }
                // Rows that could not wait are not forgotten: their number is a row.
                let lost = dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    batch.insert(0, Pending {
                        at_ms: millis(Utc::now()),
                        principal: "adminduk://gateway".to_owned(),
                        subject_kind: "",
                        subject_masked: String::new(),
                        subject_hash: String::new(),
                        key_id: keys.hash_key_id.clone(),
                        method: "audit".to_owned(),
                        purpose: "rows the writer could not take".to_owned(),
                        outcome: format!("ROWS_DROPPED:{lost}"),
                        trace_id: String::new(),
                    });
                }
                let mut wait = Duration::from_millis(50);
                while let Err(err) = append(&db, &chain, &batch).await {
                    tracing::error!(error = %err, rows = batch.len(), "audit rows not written yet; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                count_rows("written", batch.len());
                batch.clear();
            }
            _ = ticker.tick() => {
                signed = sign_head(&db, &keys, &chain, signed).await;
            }
        }
    }
    sign_head(&db, &keys, &chain, signed).await;
}

/// How often the gateway checks its own chain (as `adminduk audit verify` does).
const CHECK_CHAIN_EVERY: Duration = Duration::from_secs(600);

/// Checks the chain a minute after the start, then every
/// [`CHECK_CHAIN_EVERY`], and keeps the outcome in
/// `adminduk_gateway_audit_chain_ok` (1 whole, 0 broken) and the time of
/// the check in `adminduk_gateway_audit_chain_checked_timestamp_seconds`. A
/// check that cannot read the database changes neither. The check reads the
/// whole chain, as `adminduk audit verify` does: its cost grows with the
/// chain (every replica checks it).
async fn check_forever(db: Db, keys: std::sync::Arc<AuditKeys>, chain: String, sign_every: Duration) {
    tokio::time::sleep(Duration::from_secs(60)).await;
    let mut tick = tokio::time::interval(CHECK_CHAIN_EVERY);
    loop {
        tick.tick().await;
        let now = Utc::now();
        match verify(&db, &keys, &chain, sign_every, now).await {
            Ok(report) => {
                let m = adminduk_kit::metrics::get();
                let gateway = adminduk_kit::metrics::ServiceLabel { service: "gateway" };
                if let Some((seq, why)) = &report.broken {
                    tracing::error!(chain = %chain, seq, why = %why, "the audit chain is broken");
                }
                m.audit_chain_ok
                    .get_or_create(&gateway)
                    .set(i64::from(report.broken.is_none()));
                m.audit_chain_checked.get_or_create(&gateway).set(now.timestamp());
            }
            Err(err) => tracing::warn!(error = %err, "the audit chain was not checked"),
        }
    }
}

/// Counts audit rows by what became of them (`written` or `dropped`).
fn count_rows(outcome: &'static str, rows: usize) {
    adminduk_kit::metrics::get()
        .audit_rows
        .get_or_create(&adminduk_kit::metrics::OutcomeLabels {
            service: "gateway",
            outcome,
        })
        .inc_by(u64::try_from(rows).unwrap_or(u64::MAX));
}

/// Appends a batch after the chain's head, moving the head, in one transaction.
async fn append(db: &Db, chain: &str, batch: &[Pending]) -> Result<(), sqlx::Error> {
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "INSERT INTO audit_heads (chain, seq, hash) VALUES ($1, 0, $2) ON CONFLICT (chain) DO NOTHING",
    )
    .bind(chain)
    .bind(GENESIS)
    .execute(&mut *tx)
    .await?;
    // Another replica writing the same chain waits here (SQLite's write lock is taken already).
    let lock = match db.backend() {
        Backend::Postgres => "SELECT seq, hash FROM audit_heads WHERE chain = $1 FOR UPDATE",
        Backend::Sqlite => "SELECT seq, hash FROM audit_heads WHERE chain = $1",
    };
    let head = sqlx::query(lock).bind(chain).fetch_one(&mut *tx).await?;
    let mut seq: i64 = head.try_get("seq")?;
    let mut prev: String = head.try_get("hash")?;
    for pending in batch {
        seq += 1;
        let mut row = Row {
            chain: chain.to_owned(),
            seq,
            at_ms: pending.at_ms,
            principal: pending.principal.clone(),
            subject_kind: pending.subject_kind.to_owned(),
            subject_masked: pending.subject_masked.clone(),
            subject_hash: pending.subject_hash.clone(),
            key_id: pending.key_id.clone(),
            method: pending.method.clone(),
            purpose: pending.purpose.clone(),
            outcome: pending.outcome.clone(),
            trace_id: pending.trace_id.clone(),
            prev_hash: prev,
            hash: String::new(),
        };
        row.hash = row.compute_hash();
        sqlx::query(
            "INSERT INTO audit_rows (chain, seq, at_ms, principal, subject_kind, subject_masked, subject_hash,
                 key_id, method, purpose, outcome, trace_id, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&row.chain)
        .bind(row.seq)
        .bind(row.at_ms)
        .bind(&row.principal)
        .bind(&row.subject_kind)
        .bind(&row.subject_masked)
        .bind(&row.subject_hash)
        .bind(&row.key_id)
        .bind(&row.method)
        .bind(&row.purpose)
        .bind(&row.outcome)
        .bind(&row.trace_id)
        .bind(&row.prev_hash)
        .bind(&row.hash)
        .execute(&mut *tx)
        .await?;
        prev = row.hash;
    }
    sqlx::query("UPDATE audit_heads SET seq = $2, hash = $3 WHERE chain = $1")
        .bind(chain)
        .bind(seq)
        .bind(&prev)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Signs the chain's head if it moved since `signed`; the head signed now.
async fn sign_head(db: &Db, keys: &AuditKeys, chain: &str, signed: Option<i64>) -> Option<i64> {
    let signing = keys.signing.as_ref()?;
    let head = sqlx::query("SELECT seq, hash FROM audit_heads WHERE chain = $1")
        .bind(chain)
        .fetch_optional(db.pool())
        .await;
    let (seq, hash): (i64, String) = match head {
        Ok(Some(row)) => match (row.try_get("seq"), row.try_get("hash")) {
            (Ok(seq), Ok(hash)) => (seq, hash),
            _ => return signed,
        },
        Ok(None) => return signed,
        Err(err) => {
            tracing::warn!(error = %err, "audit head not signed");
            return signed;
        }
    };
    if seq == 0 || signed == Some(seq) {
        return signed;
    }
    let signature = signing.sign(&head_message(chain, seq, &hash));
    let written = sqlx::query(
        "INSERT INTO audit_signatures (chain, seq, hash, signed_at, key_id, signature)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (chain, seq) DO NOTHING",
    )
    .bind(chain)
    .bind(seq)
    .bind(&hash)
    .bind(millis(Utc::now()))
    .bind(&keys.signing_key_id)
    .bind(adminduk_kit::hex::encode(signature.as_ref()))
    .execute(db.pool())
    .await;
    match written {
        Ok(_) => Some(seq),
        Err(err) => {
            tracing::warn!(error = %err, "audit head signature not written");
            signed
        }
    }
}

/// What `audit verify` found in one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The chain.
    pub chain: String,
    /// Rows read (up to the head as it was when the check began).
    pub rows: i64,
    /// The last row a valid signature covers (0 when none).
    pub signed_through: i64,
    /// Signatures checked and found good.
    pub signatures: i64,
    /// The first row that breaks the chain, and why; `None` when whole.
    pub broken: Option<(i64, String)>,
}

/// A head's signature as stored.
struct Signed {
    seq: i64,
    hash: String,
    signed_at: i64,
}

/// Checks a chain: every row's hash and its link to the row before, the head,
/// every signature of the head against `keys`' public key, and that each row
/// was signed within two of the writer's signing intervals (`sign_every`): a
/// chain recomputed and its signatures removed leaves rows no signature
/// covers. Only the rows up to the head read first are checked, so a gateway
/// writing meanwhile is no fault; rows younger than two intervals may wait
/// for their signature (as of `now`).
pub async fn verify(
    db: &Db,
    keys: &AuditKeys,
    chain: &str,
    sign_every: Duration,
    now: DateTime<Utc>,
) -> Result<Verification, sqlx::Error> {
    let mut report = Verification {
        chain: chain.to_owned(),
        rows: 0,
        signed_through: 0,
        signatures: 0,
        broken: None,
    };
    let head: i64 = sqlx::query_scalar("SELECT seq FROM audit_heads WHERE chain = $1")
        .bind(chain)
        .fetch_optional(db.pool())
        .await?
        .unwrap_or(0);
    let signed = match signatures(db, keys, chain, head).await? {
        Ok(signed) => signed,
        Err(broken) => {
            report.broken = Some(broken);
            return Ok(report);
        }
    };
    let slack = i64::try_from((sign_every * 2 + Duration::from_secs(60)).as_millis()).unwrap_or(i64::MAX);
    let now = millis(now);
    let mut next_signed = signed.iter().peekable();
    let mut prev = GENESIS.to_owned();
    let mut after = 0i64;
    while after < head {
        let page = rows(db, chain, after, (head - after).min(1_000)).await?;
        if page.is_empty() {
            break;
        }
        for row in page {
            let expected = after + 1;
            while next_signed.peek().is_some_and(|s| s.seq < row.seq) {
                next_signed.next();
            }
            let covering = next_signed.peek();
            if let Some(why) = fault(&row, expected, &prev, covering.copied(), slack, now) {
                report.broken = Some((expected.min(row.seq), why));
                return Ok(report);
            }
            if covering.is_some_and(|s| s.seq == row.seq) {
                report.signed_through = row.seq;
                report.signatures += 1;
            }
            prev = row.hash;
            after = row.seq;
            report.rows += 1;
        }
    }
    // Rows cut from the end: the head beyond the last row.
    if head > after {
        report.broken = Some((
            after + 1,
            format!("row {} is missing (the chain was cut short)", after + 1),
        ));
    }
    Ok(report)
}

/// The head's signatures stored for a chain up to `head`, in order, each
/// checked against `keys`' public key; `Ok(Err(..))` names the first that is
/// not the audit key's (its row, and why).
async fn signatures(
    db: &Db,
    keys: &AuditKeys,
    chain: &str,
    head: i64,
) -> Result<Result<Vec<Signed>, (i64, String)>, sqlx::Error> {
    let stored = sqlx::query(
        "SELECT seq, hash, signed_at, key_id, signature FROM audit_signatures
         WHERE chain = $1 AND seq <= $2 ORDER BY seq",
    )
    .bind(chain)
    .bind(head)
    .fetch_all(db.pool())
    .await?;
    let public = UnparsedPublicKey::new(&ED25519, &keys.public);
    let mut signed = Vec::with_capacity(stored.len());
    for row in &stored {
        let seq: i64 = row.try_get("seq")?;
        let hash: String = row.try_get("hash")?;
        let key: String = row.try_get("key_id")?;
        let signature: String = row.try_get("signature")?;
        let good = key == keys.signing_key_id
            && adminduk_kit::hex::decode(&signature)
                .is_some_and(|sig| public.verify(&head_message(chain, seq, &hash), &sig).is_ok());
        if !good {
            return Ok(Err((
                seq,
                "the signature of the head at this row is not the audit key's".to_owned(),
            )));
        }
        signed.push(Signed {
            seq,
            hash,
            signed_at: row.try_get("signed_at")?,
        });
    }
    Ok(Ok(signed))
}

/// Why a row breaks the chain, if it does: the row `expected` next, after the
/// row whose hash is `prev`, with the first signature at or past it
/// (`covering`), which must come within `slack` of it (as of `now`).
fn fault(
    row: &Row,
    expected: i64,
    prev: &str,
    covering: Option<&Signed>,
    slack: i64,
    now: i64,
) -> Option<String> {
    if row.seq != expected {
        Some(format!("row {expected} is missing"))
    } else if row.prev_hash != prev {
        Some("it does not link to the row before it".to_owned())
    } else if row.compute_hash() != row.hash {
        Some("its fields do not match its hash (changed after it was written)".to_owned())
    } else if covering.is_some_and(|s| s.seq == row.seq && s.hash != row.hash) {
        Some("its hash is not the one signed (the chain was recomputed)".to_owned())
    } else if match covering {
        Some(s) => s.signed_at > row.at_ms.saturating_add(slack),
        None => row.at_ms.saturating_add(slack) < now,
    } {
        Some(
            "no signature came within two signing intervals of it (signatures removed, or the gateway stopped without signing)"
                .to_owned(),
        )
    } else {
        None
    }
}

/// A chain's rows after `after_seq`, in order, at most `limit`.
pub async fn rows(db: &Db, chain: &str, after_seq: i64, limit: i64) -> Result<Vec<Row>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT chain, seq, at_ms, principal, subject_kind, subject_masked, subject_hash, key_id,
                method, purpose, outcome, trace_id, prev_hash, hash
         FROM audit_rows WHERE chain = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(chain)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(Row::of).collect()
}

/// The chains in the database.
pub async fn chains(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT chain FROM audit_heads ORDER BY chain")
        .fetch_all(db.pool())
        .await
}

/// A resident's rows, found by the keyed reference of their NIK, oldest first.
pub async fn search_nik(db: &Db, keys: &AuditKeys, nik: &str, limit: i64) -> Result<Vec<Row>, sqlx::Error> {
    let reference = keys.reference(SubjectKind::Nik, nik);
    let rows = sqlx::query(
        "SELECT chain, seq, at_ms, principal, subject_kind, subject_masked, subject_hash, key_id,
                method, purpose, outcome, trace_id, prev_hash, hash
         FROM audit_rows WHERE subject_hash = $1 ORDER BY at_ms, chain, seq LIMIT $2",
    )
    .bind(reference)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(Row::of).collect()
}

/// When a stored instant was.
pub fn at(row: &Row) -> Option<DateTime<Utc>> {
    adminduk_kit::storage::from_millis(row.at_ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> AuditKeys {
        AuditKeys::from_hex(&"ab".repeat(32), &"cd".repeat(32)).expect("keys")
    }

    #[test]
    fn references_are_keyed_and_kinds_apart() {
        let a = keys();
        let b = AuditKeys::from_hex(&"ef".repeat(32), &"cd".repeat(32)).expect("keys");
        let nik = "3275014101900001";
        assert_eq!(
            a.reference(SubjectKind::Nik, nik),
            a.reference(SubjectKind::Nik, nik)
        );
        assert_ne!(
            a.reference(SubjectKind::Nik, nik),
            b.reference(SubjectKind::Nik, nik)
        );
        assert_ne!(
            a.reference(SubjectKind::Nik, nik),
            a.reference(SubjectKind::Kk, nik)
        );
        assert!(!a.reference(SubjectKind::Nik, nik).contains(nik));
        assert_ne!(a.hash_key_id, b.hash_key_id);
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(matches!(
            AuditKeys::from_hex("ab", &"cd".repeat(32)),
            Err(KeyError::HashKey)
        ));
        assert!(matches!(
            AuditKeys::from_hex(&"ab".repeat(32), "cd"),
            Err(KeyError::SigningKey)
        ));
        let k = keys();
        let checker = AuditKeys::for_checking(&"ab".repeat(32), &k.public_key_hex()).expect("checker");
        assert_eq!(checker.signing_key_id, k.signing_key_id);
        assert!(checker.signing.is_none());
    }

    #[test]
    fn a_row_hash_covers_every_field() {
        let row = Row {
            chain: "gateway".into(),
            seq: 1,
            at_ms: 1,
            principal: "p".into(),
            subject_kind: "nik".into(),
            subject_masked: "m".into(),
            subject_hash: "h".into(),
            key_id: "k".into(),
            method: "/a/b".into(),
            purpose: "x".into(),
            outcome: "OK".into(),
            trace_id: String::new(),
            prev_hash: GENESIS.into(),
            hash: String::new(),
        };
        let base = row.compute_hash();
        // Fields are length-prefixed: moving a byte from one field to the next
        // ("p"|"nik" against "pn"|"ik") changes the hash.
        let mut moved = row.clone();
        moved.principal = "pn".into();
        moved.subject_kind = "ik".into();
        assert_ne!(moved.compute_hash(), base);
        let mut outcome = row.clone();
        outcome.outcome = "PERMISSION_DENIED".into();
        assert_ne!(outcome.compute_hash(), base);
    }
}
