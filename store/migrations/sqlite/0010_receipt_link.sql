-- Receipts name the link they arrived on: message ids are unique only per
-- SMSC (short sequential ids collide across SMSCs), so a receipt matches
-- parts sent over its own link. unmatched says why a receipt is still
-- waiting ("" = its part may not be recorded yet, "ambiguous" = several
-- parts fit it), so that each reason is counted once. Rows stored before
-- this migration have link '' and match parts of any link.
CREATE TABLE sms_receipts_pending_new (
    message_id  VARCHAR(65) NOT NULL,
    link        VARCHAR(64) NOT NULL DEFAULT '',
    state       VARCHAR(16) NOT NULL,
    error       VARCHAR(255) NOT NULL DEFAULT '',
    received_at BIGINT NOT NULL,
    tries       INTEGER NOT NULL DEFAULT 0,
    next_check_at BIGINT NOT NULL,
    unmatched   VARCHAR(16) NOT NULL DEFAULT '',
    PRIMARY KEY (message_id, link)
)
;
INSERT INTO sms_receipts_pending_new (message_id, link, state, error, received_at, tries, next_check_at)
    SELECT message_id, '', state, error, received_at, tries, next_check_at FROM sms_receipts_pending
;
DROP TABLE sms_receipts_pending
;
ALTER TABLE sms_receipts_pending_new RENAME TO sms_receipts_pending
;
CREATE INDEX sms_receipts_pending_at ON sms_receipts_pending (received_at)
;
CREATE INDEX sms_receipts_pending_due ON sms_receipts_pending (next_check_at)
;
