-- The durable SMS outbox; see the MySQL migration for the design notes.
CREATE TABLE sms_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    dest            VARCHAR(20) NOT NULL,
    source          VARCHAR(21) NOT NULL DEFAULT '',
    text            TEXT NOT NULL,
    kind            VARCHAR(32) NOT NULL,
    ref             VARCHAR(191) NOT NULL DEFAULT '',
    state           VARCHAR(16) NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    error           VARCHAR(255) NOT NULL DEFAULT '',
    claimed_by      VARCHAR(64) NOT NULL DEFAULT '',
    claimed_until   BIGINT NOT NULL DEFAULT 0
)
;
CREATE INDEX sms_outbox_due ON sms_outbox (state, next_attempt_at)
;
CREATE INDEX sms_outbox_ref ON sms_outbox (kind, ref)
;
CREATE TABLE sms_outbox_parts (
    outbox_id       BIGINT NOT NULL,
    seq             INTEGER NOT NULL,
    total           INTEGER NOT NULL,
    link            VARCHAR(64) NOT NULL,
    smsc_message_id VARCHAR(65) NOT NULL,
    state           VARCHAR(16) NOT NULL,
    error           VARCHAR(255) NOT NULL DEFAULT '',
    submitted_at    BIGINT NOT NULL,
    done_at         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (outbox_id, seq)
)
;
CREATE INDEX sms_outbox_parts_msgid ON sms_outbox_parts (smsc_message_id)
;
CREATE TABLE sms_receipts_pending (
    message_id  VARCHAR(65) NOT NULL PRIMARY KEY,
    state       VARCHAR(16) NOT NULL,
    error       VARCHAR(255) NOT NULL DEFAULT '',
    received_at BIGINT NOT NULL,
    tries       INTEGER NOT NULL DEFAULT 0,
    next_check_at BIGINT NOT NULL
)
;
CREATE INDEX sms_receipts_pending_at ON sms_receipts_pending (received_at)
;
CREATE INDEX sms_receipts_pending_due ON sms_receipts_pending (next_check_at)
;
CREATE TABLE sms_mo_fragments (
    link          VARCHAR(64) NOT NULL,
    source        VARCHAR(32) NOT NULL,
    ref           INTEGER NOT NULL,
    total         INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    dest          VARCHAR(32) NOT NULL,
    data_coding   INTEGER NOT NULL,
    body          BLOB NOT NULL,
    received_at   BIGINT NOT NULL,
    done          INTEGER NOT NULL DEFAULT 0,
    claimed_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (link, source, ref, total, seq)
)
;
CREATE INDEX sms_mo_fragments_at ON sms_mo_fragments (received_at)
