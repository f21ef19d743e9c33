-- The gateway's own records: agencies' agreements (PKS) and what they used,
-- accounts flagged as suspected brokers, and the audit chain of every read or
-- change of personal data. Instants are milliseconds since the epoch.

CREATE TABLE agreements (
    agency_code    TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    -- The VerificationField names it may compare, comma-separated.
    allowed_fields TEXT NOT NULL,
    daily_quota    BIGINT NOT NULL CHECK (daily_quota > 0),
    status         TEXT NOT NULL CHECK (status IN ('ACTIVE', 'SUSPENDED', 'REVOKED')),
    fee_exempt     BIGINT NOT NULL CHECK (fee_exempt IN (0, 1)),
    reason         TEXT NOT NULL,
    updated_at     BIGINT NOT NULL,
    updated_by     TEXT NOT NULL
);

-- Verifications per agency and day (YYYY-MM-DD, Asia/Jakarta), with what they
-- cost at the fee in force when each was made.
CREATE TABLE agency_usage (
    agency_code   TEXT NOT NULL REFERENCES agreements (agency_code),
    day           TEXT NOT NULL CHECK (length(day) = 10),
    checks        BIGINT NOT NULL CHECK (checks >= 0),
    amount_rupiah BIGINT NOT NULL CHECK (amount_rupiah >= 0),
    PRIMARY KEY (agency_code, day)
);

-- An account (a resident's bound device) flagged as a suspected broker; a
-- flag ends when its block ends or an office clears it.
CREATE TABLE flagged_accounts (
    account       TEXT PRIMARY KEY,
    nik_masked    TEXT NOT NULL,
    refusals      BIGINT NOT NULL CHECK (refusals > 0),
    flagged_at    BIGINT NOT NULL,
    blocked_until BIGINT NOT NULL,
    cleared_at    BIGINT,
    cleared_by    TEXT,
    clear_reason  TEXT
);
CREATE INDEX flagged_accounts_open ON flagged_accounts (blocked_until, flagged_at);

-- The audit chain: each row's hash covers its fields and the previous row's
-- hash, so a row changed or removed breaks every hash after it. The resident
-- is named masked and by an HMAC under a key kept outside the database.
CREATE TABLE audit_rows (
    chain          TEXT NOT NULL,
    seq            BIGINT NOT NULL CHECK (seq > 0),
    at_ms          BIGINT NOT NULL,
    principal      TEXT NOT NULL,
    subject_kind   TEXT NOT NULL CHECK (subject_kind IN ('', 'nik', 'kk')),
    subject_masked TEXT NOT NULL,
    subject_hash   TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    method         TEXT NOT NULL,
    purpose        TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    trace_id       TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
);
CREATE INDEX audit_rows_by_subject ON audit_rows (subject_hash);

-- Each chain's last row, written in the same transaction as the rows.
CREATE TABLE audit_heads (
    chain TEXT PRIMARY KEY,
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL
);

-- Heads signed with the gateway's Ed25519 audit key: a chain recomputed by
-- someone who can write the database no longer matches its signatures.
CREATE TABLE audit_signatures (
    chain     TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    hash      TEXT NOT NULL,
    signed_at BIGINT NOT NULL,
    key_id    TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
);
