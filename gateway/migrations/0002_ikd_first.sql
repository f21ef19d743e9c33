-- IKD first: the residents deflected to IKD (by the keyed reference of their
-- NIK, never the NIK), and whether an activation followed within 30 days.
CREATE TABLE ikd_deflections (
    reference    TEXT PRIMARY KEY,
    deflected_at BIGINT NOT NULL,
    deflections  BIGINT NOT NULL CHECK (deflections > 0),
    activated_at BIGINT
);
CREATE INDEX ikd_deflections_by_time ON ikd_deflections (deflected_at);
