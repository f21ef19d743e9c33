-- A consumed blank is written off once. Before this rule a committed
-- reservation could be counted as spoiled again under each new reference;
-- those extra rows moved no stock (on_hand_delta 0) and only inflated the
-- spoiled count, so all but the first are removed.
DELETE FROM ledger
WHERE kind = 'SPOILAGE'
  AND reservation_id IS NOT NULL
  AND seq NOT IN (
      SELECT MIN(seq) FROM ledger
      WHERE kind = 'SPOILAGE' AND reservation_id IS NOT NULL
      GROUP BY reservation_id
  );

CREATE UNIQUE INDEX ledger_one_spoilage_per_reservation
    ON ledger (reservation_id)
    WHERE kind = 'SPOILAGE' AND reservation_id IS NOT NULL;
