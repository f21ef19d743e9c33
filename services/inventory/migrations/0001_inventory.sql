-- The blank inventory. Instants are milliseconds since the epoch and days are
-- ISO-8601 TEXT, so SQLite and PostgreSQL share one store.

-- Regions' policies, service points and quota pools.
CREATE TABLE region_policies (
    region_code   TEXT PRIMARY KEY,
    monthly_cap   BIGINT NOT NULL CHECK (monthly_cap >= 0),
    next_shipment TEXT,
    version       BIGINT NOT NULL CHECK (version > 0)
);

CREATE TABLE quota_pools (
    region_code TEXT NOT NULL REFERENCES region_policies (region_code),
    code        TEXT NOT NULL,
    daily_quota BIGINT NOT NULL CHECK (daily_quota >= 0),
    PRIMARY KEY (region_code, code)
);

CREATE TABLE service_points (
    code          TEXT PRIMARY KEY,
    region_code   TEXT NOT NULL REFERENCES region_policies (region_code),
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('KECAMATAN', 'MPP', 'GPP', 'DISDUKCAPIL')),
    district_code TEXT NOT NULL,
    pool_code     TEXT NOT NULL
);

-- Buckets: stock per holder, and quotas per region/month/day/pool. The
-- database enforces the limit on its own, so even a wrong in-memory state
-- cannot hand out more than the capacity.
CREATE TABLE buckets (
    id        TEXT PRIMARY KEY,
    capacity  BIGINT NOT NULL CHECK (capacity >= 0),
    held      BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0),
    committed BIGINT NOT NULL DEFAULT 0 CHECK (committed >= 0),
    CHECK (held + committed <= capacity)
);

CREATE TABLE reservations (
    id              TEXT PRIMARY KEY,
    point_code      TEXT NOT NULL,
    day             TEXT NOT NULL,
    applicant_nik   TEXT NOT NULL CHECK (length(applicant_nik) = 16),
    purpose         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    state           TEXT NOT NULL CHECK (state IN ('HELD', 'COMMITTED', 'RELEASED', 'EXPIRED')),
    expires_at      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- One active hold per applicant and purpose, enforced here as well.
CREATE UNIQUE INDEX reservations_one_hold ON reservations (applicant_nik, purpose) WHERE state = 'HELD';
CREATE INDEX reservations_by_state ON reservations (state, created_at);

-- Every movement of stock. For each holder, SUM(on_hand_delta) is its stock on hand.
CREATE TABLE ledger (
    seq            {{serial_key}},
    holder_code    TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('SHIPMENT', 'TRANSFER', 'HOLD', 'COMMIT', 'RELEASE', 'EXPIRY', 'SPOILAGE')),
    quantity       BIGINT NOT NULL CHECK (quantity > 0),
    on_hand_delta  BIGINT NOT NULL,
    reference      TEXT NOT NULL,
    actor          TEXT NOT NULL,
    reason         TEXT NOT NULL,
    reservation_id TEXT,
    created_at     BIGINT NOT NULL
);
CREATE INDEX ledger_by_holder ON ledger (holder_code, seq);

-- Document references (shipments, transfers, spoilage reports): a replay is refused.
CREATE TABLE documents (
    reference  TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
