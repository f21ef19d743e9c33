-- IKD: identities bound to one device, activations verified at an office,
-- token challenges, signing keys, the mail outbox and the audit trail.
-- Instants are milliseconds since the epoch; keys and challenges are hex.

CREATE TABLE identities (
    nik               TEXT PRIMARY KEY CHECK (length(nik) = 16),
    status            TEXT NOT NULL CHECK (status IN ('ACTIVE', 'REVOKED')),
    device_id         TEXT NOT NULL,
    device_public_key TEXT NOT NULL,
    district_code     TEXT NOT NULL,
    activated_at      BIGINT NOT NULL,
    revoked_at        BIGINT,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX identities_by_area ON identities (district_code, status);

CREATE TABLE activations (
    id                 TEXT PRIMARY KEY,
    nik                TEXT NOT NULL CHECK (length(nik) = 16),
    email              TEXT NOT NULL,
    phone              TEXT NOT NULL,
    device_public_key  TEXT NOT NULL,
    district_code      TEXT NOT NULL,
    nonce              TEXT NOT NULL,
    challenge          TEXT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('STARTED', 'VERIFIED', 'COMPLETED', 'LOCKED', 'EXPIRED')),
    code_hash          TEXT,
    code_salt          TEXT,
    code_expires_at    BIGINT,
    attempts           BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    officer_id         TEXT,
    service_point_code TEXT,
    verified_at        BIGINT,
    created_at         BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
-- One open activation per NIK: of two racing starts, exactly one proceeds.
CREATE UNIQUE INDEX activations_one_open ON activations (nik) WHERE state IN ('STARTED', 'VERIFIED');

CREATE TABLE token_challenges (
    challenge  TEXT PRIMARY KEY,
    nik        TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    private_pkcs8 TEXT NOT NULL,
    public_key    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    retired_at    BIGINT
);

-- Messages to residents; a mail sender drains it (in `adminduk up`, `adminduk outbox` shows it).
CREATE TABLE outbox (
    id         {{serial_key}},
    recipient  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    sent_at    BIGINT
);

-- Every attempt, success or failure. The NIK is masked.
CREATE TABLE audit (
    seq                {{serial_key}},
    nik_masked         TEXT NOT NULL,
    action             TEXT NOT NULL,
    outcome            TEXT NOT NULL,
    service_point_code TEXT NOT NULL,
    officer_id         TEXT NOT NULL,
    trace_id           TEXT NOT NULL,
    created_at         BIGINT NOT NULL
);
