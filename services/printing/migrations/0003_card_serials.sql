-- Every card serial in use, once: a card printed, being printed, or a blank
-- ruined in the printer. A serial is claimed here before the inventory
-- consumes a blank for it, so two reports racing with one serial cannot both
-- reach the inventory; the primary key decides which one goes on.
CREATE TABLE card_serials (
    card_serial TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL,
    use_kind    TEXT NOT NULL CHECK (use_kind IN ('PRINT', 'RUINED')),
    created_at  BIGINT NOT NULL
);
INSERT INTO card_serials (card_serial, job_id, use_kind, created_at)
SELECT card_serial, job_id, 'PRINT', printed_at FROM print_log;
INSERT INTO card_serials (card_serial, job_id, use_kind, created_at)
SELECT s.card_serial, s.job_id, 'RUINED', s.created_at FROM spoiled_cards s
WHERE NOT EXISTS (SELECT 1 FROM card_serials c WHERE c.card_serial = s.card_serial);

-- The serial a printer's report is recording on a leased job: one report of a
-- job at a time, so two serials cannot both consume blanks for one card.
ALTER TABLE jobs ADD COLUMN printing_serial TEXT;

-- Whether a resident was ever given a card (a second first card is refused).
CREATE INDEX jobs_by_nik ON jobs (nik, state);
