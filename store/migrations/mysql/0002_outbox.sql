-- The durable SMS outbox. A message is one row in sms_outbox; each part the
-- SMSC accepted (submit_sm_resp received) is one row in sms_outbox_parts, so
-- a part with a row is never submitted again. Claims are leases: a claimed
-- message has next_attempt_at = claimed_until, so it leaves the due index
-- until its lease ends.
CREATE TABLE IF NOT EXISTS sms_outbox (
    id              BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    dest            VARCHAR(20) NOT NULL,
    source          VARCHAR(21) NOT NULL DEFAULT '',
    text            TEXT NOT NULL,
    kind            VARCHAR(32) NOT NULL,
    ref             VARCHAR(191) NOT NULL DEFAULT '',
    state           VARCHAR(16) NOT NULL,
    attempts        INT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    error           VARCHAR(255) NOT NULL DEFAULT '',
    claimed_by      VARCHAR(64) NOT NULL DEFAULT '',
    claimed_until   BIGINT NOT NULL DEFAULT 0,
    KEY sms_outbox_due (state, next_attempt_at),
    KEY sms_outbox_ref (kind, ref)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
-- smsc_message_id is NormalizeMessageID of the submit_sm_resp id. Its index
-- is not unique: SMSCs recycle ids, and two SMSCs may issue the same one;
-- receipt matching prefers the newest part still waiting for a receipt.
CREATE TABLE IF NOT EXISTS sms_outbox_parts (
    outbox_id       BIGINT NOT NULL,
    seq             INT NOT NULL,
    total           INT NOT NULL,
    link            VARCHAR(64) NOT NULL,
    smsc_message_id VARCHAR(65) NOT NULL,
    state           VARCHAR(16) NOT NULL,
    error           VARCHAR(255) NOT NULL DEFAULT '',
    submitted_at    BIGINT NOT NULL,
    done_at         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (outbox_id, seq),
    KEY sms_outbox_parts_msgid (smsc_message_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
-- Final delivery receipts not yet applied. A receipt is stored here (one
-- cheap insert) before its deliver_sm is acknowledged; the outbox applies
-- them in batches. One whose part is not recorded yet (the SMSC can beat
-- our batched write of its submit_sm_resp, or another node sent it) waits
-- here, is looked at again with backoff, and is also matched the moment its
-- part is recorded.
CREATE TABLE IF NOT EXISTS sms_receipts_pending (
    message_id  VARCHAR(65) NOT NULL PRIMARY KEY,
    state       VARCHAR(16) NOT NULL,
    error       VARCHAR(255) NOT NULL DEFAULT '',
    received_at BIGINT NOT NULL,
    tries       INT NOT NULL DEFAULT 0,
    next_check_at BIGINT NOT NULL,
    KEY sms_receipts_pending_at (received_at),
    KEY sms_receipts_pending_due (next_check_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
-- Parts of concatenated inbound SMS, kept until the message is complete.
-- done rows stay as tombstones until they expire so that a part delivered
-- again does not deliver the message again.
CREATE TABLE IF NOT EXISTS sms_mo_fragments (
    link          VARCHAR(64) NOT NULL,
    source        VARCHAR(32) NOT NULL,
    ref           INT NOT NULL,
    total         INT NOT NULL,
    seq           INT NOT NULL,
    dest          VARCHAR(32) NOT NULL,
    data_coding   INT NOT NULL,
    body          BLOB NOT NULL,
    received_at   BIGINT NOT NULL,
    done          TINYINT NOT NULL DEFAULT 0,
    claimed_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (link, source, ref, total, seq),
    KEY sms_mo_fragments_at (received_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
