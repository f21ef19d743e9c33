-- Families (KK) and residents. Dates are ISO-8601 TEXT and instants are
-- milliseconds since the epoch, so SQLite and PostgreSQL share one store.
CREATE TABLE families (
    kk            TEXT PRIMARY KEY CHECK (length(kk) = 16),
    district_code TEXT NOT NULL CHECK (length(district_code) = 6),
    issue_date    TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE residents (
    id               {{serial_key}},
    nik              TEXT NOT NULL UNIQUE CHECK (length(nik) = 16),
    kk               TEXT NOT NULL REFERENCES families (kk),
    full_name        TEXT NOT NULL CHECK (length(full_name) > 0),
    name_norm        TEXT NOT NULL,
    sex              TEXT NOT NULL CHECK (sex IN ('M', 'F')),
    birth_place      TEXT NOT NULL,
    birth_date       TEXT NOT NULL,
    street           TEXT NOT NULL,
    rt               TEXT NOT NULL,
    rw               TEXT NOT NULL,
    village_code     TEXT NOT NULL CHECK (length(village_code) = 10),
    district_code    TEXT NOT NULL CHECK (length(district_code) = 6),
    marital_status   TEXT NOT NULL CHECK (marital_status IN ('SINGLE', 'MARRIED', 'DIVORCED', 'WIDOWED')),
    relationship     BIGINT NOT NULL CHECK (relationship BETWEEN 1 AND 11),
    life_status      TEXT NOT NULL CHECK (life_status IN ('ALIVE', 'DECEASED', 'MOVED_OUT')),
    recording_status TEXT NOT NULL CHECK (recording_status IN ('NOT_RECORDED', 'RECORDED', 'PRINT_READY', 'DUPLICATE_RECORD')),
    death_date       TEXT,
    version          BIGINT NOT NULL CHECK (version > 0),
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

-- A KK has at most one living head; the store keeps it at exactly one while the family has members.
CREATE UNIQUE INDEX residents_one_head ON residents (kk) WHERE relationship = 1 AND life_status = 'ALIVE';
CREATE INDEX residents_kk ON residents (kk);
CREATE INDEX residents_by_name ON residents (district_code, name_norm, id);
