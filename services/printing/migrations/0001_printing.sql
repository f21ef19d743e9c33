-- Print jobs and the cards they produce. Every card is in exactly one
-- card_state; a spoiled card keeps its own row in spoiled_cards.
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    nik              TEXT NOT NULL CHECK (length(nik) = 16),
    region_code      TEXT NOT NULL,
    village_code     TEXT NOT NULL,
    reason           TEXT NOT NULL CHECK (reason IN ('FIRST_CARD', 'LOST', 'DAMAGED', 'DATA_CHANGE', 'DISASTER')),
    priority         BIGINT NOT NULL CHECK (priority BETWEEN 1 AND 5),
    service_point    TEXT NOT NULL,
    day              TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('QUEUED', 'LEASED', 'PRINTED', 'CANCELLED')),
    -- 1 while the job or its card is still on its way to the resident: one per NIK.
    active           BIGINT NOT NULL CHECK (active IN (0, 1)),
    reservation_id   TEXT,
    blanks_taken     BIGINT NOT NULL DEFAULT 1,
    printer_id       TEXT,
    lease_expires_at BIGINT,
    card_serial      TEXT UNIQUE,
    card_state       TEXT CHECK (card_state IN ('PRINTED', 'IN_TRANSIT', 'AT_SERVICE_POINT', 'DELIVERED')),
    dispatch_method  TEXT CHECK (dispatch_method IN ('PICKUP', 'POST')),
    batch_reference  TEXT,
    return_reason    TEXT CHECK (return_reason IN ('DECEASED', 'MOVED', 'UNCLEAR_ADDRESS')),
    recalled         BIGINT NOT NULL DEFAULT 0,
    printed_at       BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    CHECK ((state = 'PRINTED') = (card_state IS NOT NULL))
);
CREATE UNIQUE INDEX jobs_one_active_per_nik ON jobs (nik) WHERE active = 1;
CREATE INDEX jobs_queue ON jobs (state, priority, created_at);
CREATE INDEX jobs_by_region ON jobs (region_code, state);

CREATE TABLE spoiled_cards (
    card_serial TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    region_code TEXT NOT NULL,
    reason      TEXT NOT NULL,
    reported_by TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    CHECK (reported_by <> approved_by)
);

-- Second applications refused because the NIK already had a job: cards not printed twice.
CREATE TABLE duplicates_prevented (
    id          {{serial_key}},
    first_job   TEXT NOT NULL,
    region_code TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE sukets (
    id            TEXT PRIMARY KEY,
    nik           TEXT NOT NULL,
    region_code   TEXT NOT NULL,
    service_point TEXT NOT NULL,
    valid_until   TEXT NOT NULL,
    converted_job TEXT,
    created_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX sukets_one_open ON sukets (nik) WHERE converted_job IS NULL;

-- Returned cards that ask the population registry to look again.
CREATE TABLE reviews (
    id         {{serial_key}},
    nik        TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('LIFE_STATUS', 'ADDRESS')),
    job_id     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Every card printed, as printed: counted apart from where cards are now, so
-- the funnel's "unaccounted" is a real check and not a sum of its parts.
CREATE TABLE print_log (
    card_serial TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL,
    region_code TEXT NOT NULL,
    printed_at  BIGINT NOT NULL
);
