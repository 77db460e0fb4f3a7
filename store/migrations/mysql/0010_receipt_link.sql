-- Receipts name the link they arrived on: message ids are unique only per
-- SMSC (short sequential ids collide across SMSCs), so a receipt matches
-- parts sent over its own link. unmatched says why a receipt is still
-- waiting ("" = its part may not be recorded yet, "ambiguous" = several
-- parts fit it), so that each reason is counted once. Rows stored before
-- this migration have link '' and match parts of any link.
ALTER TABLE sms_receipts_pending
    ADD COLUMN link VARCHAR(64) NOT NULL DEFAULT '' AFTER message_id,
    ADD COLUMN unmatched VARCHAR(16) NOT NULL DEFAULT '',
    DROP PRIMARY KEY,
    ADD PRIMARY KEY (message_id, link)
;
