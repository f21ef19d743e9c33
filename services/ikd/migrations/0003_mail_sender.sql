-- The mail sender's bookkeeping for each outbox message: failed attempts so
-- far, the instant before which it is not tried again (a back-off after a
-- failure, or a lease while one sender has it in hand), and the last failure.
ALTER TABLE outbox ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN next_attempt_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN last_error TEXT;

-- What is due, in order, without reading what was sent.
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE sent_at IS NULL;
