-- The durable MMS outbox; see the MySQL migration for the design notes.
CREATE TABLE mms_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    dest            VARCHAR(20) NOT NULL,
    source          VARCHAR(21) NOT NULL DEFAULT '',
    sender          VARCHAR(20) NOT NULL DEFAULT '',
    subject         VARCHAR(191) NOT NULL DEFAULT '',
    caption         TEXT NOT NULL,
    media           TEXT NOT NULL,
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
    claimed_until   BIGINT NOT NULL DEFAULT 0,
    link            VARCHAR(64) NOT NULL DEFAULT '',
    mm7_message_id  VARCHAR(128) NOT NULL DEFAULT '',
    submitted_at    BIGINT NOT NULL DEFAULT 0,
    done_at         BIGINT NOT NULL DEFAULT 0
)
;
CREATE INDEX mms_outbox_due ON mms_outbox (state, next_attempt_at)
;
CREATE INDEX mms_outbox_ref ON mms_outbox (kind, ref)
;
CREATE INDEX mms_outbox_msgid ON mms_outbox (mm7_message_id)
;
CREATE TABLE mms_reports_pending (
    message_id  VARCHAR(128) NOT NULL,
    link        VARCHAR(64) NOT NULL,
    state       VARCHAR(16) NOT NULL,
    error       VARCHAR(255) NOT NULL DEFAULT '',
    received_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, link)
)
;
CREATE INDEX mms_reports_pending_at ON mms_reports_pending (received_at)
