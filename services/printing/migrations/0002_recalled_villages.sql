-- A recall stands: cards of a recalled kelurahan/desa printed later are sent
-- to the office too, never by post to an address that is gone.
CREATE TABLE recalled_villages (
    village_code TEXT PRIMARY KEY,
    reason       TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
