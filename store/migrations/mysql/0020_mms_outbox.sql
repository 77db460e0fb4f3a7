-- The durable MMS outbox (mms/, docs/mms.md). Times are BIGINT microseconds
-- since the Unix epoch, UTC. One row per MMS; an MMS is one MM7 SubmitReq.
-- Claims are leases as in sms_outbox: a claimed row has
-- next_attempt_at = claimed_until, so it leaves the due index until its
-- lease ends. media is a JSON array of media ids (the content is read from
-- the media store at each attempt). state is queued, submitted, delivered,
-- failed, expired, to_sms (refused as MMS: waiting to be handed to the SMS
-- fallback, claimed like queued rows) or sms (handed to the SMS fallback).
-- mm7_message_id is the MMSC's MessageID from the SubmitRsp; delivery
-- reports are matched by (link, mm7_message_id).
CREATE TABLE IF NOT EXISTS mms_outbox (
    id              BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    dest            VARCHAR(20) NOT NULL,
    source          VARCHAR(21) NOT NULL DEFAULT '',
    sender          VARCHAR(20) NOT NULL DEFAULT '',
    subject         VARCHAR(191) NOT NULL DEFAULT '',
    caption         TEXT NOT NULL,
    media           TEXT NOT NULL,
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
    link            VARCHAR(64) NOT NULL DEFAULT '',
    mm7_message_id  VARCHAR(128) NOT NULL DEFAULT '',
    submitted_at    BIGINT NOT NULL DEFAULT 0,
    done_at         BIGINT NOT NULL DEFAULT 0,
    KEY mms_outbox_due (state, next_attempt_at),
    KEY mms_outbox_ref (kind, ref),
    KEY mms_outbox_msgid (mm7_message_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
-- Delivery reports whose MMS is not recorded as submitted yet (the MMSC
-- can report before our SubmitRsp is committed): applied when it is,
-- dropped after an hour.
CREATE TABLE IF NOT EXISTS mms_reports_pending (
    message_id  VARCHAR(128) NOT NULL,
    link        VARCHAR(64) NOT NULL,
    state       VARCHAR(16) NOT NULL,
    error       VARCHAR(255) NOT NULL DEFAULT '',
    received_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, link),
    KEY mms_reports_pending_at (received_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
