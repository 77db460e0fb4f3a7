-- IM relay (relay/). Times are BIGINT microseconds since the Unix epoch, UTC.
-- offline_messages: messages accepted for a recipient who was not reachable;
-- a row lives until the recipient's client acknowledges it. seq orders a
-- recipient's messages.
CREATE TABLE offline_messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            VARCHAR(40) NOT NULL UNIQUE,
    sender        VARCHAR(20) NOT NULL,
    client_msg_id VARCHAR(64) NOT NULL,
    recipient     VARCHAR(20) NOT NULL,
    type          INTEGER NOT NULL,
    text          TEXT NOT NULL,
    content_type  VARCHAR(100) NOT NULL DEFAULT '',
    media_url     VARCHAR(1000) NOT NULL DEFAULT '',
    media_size    BIGINT NOT NULL DEFAULT 0,
    sent_at       BIGINT NOT NULL,
    via_sms       INTEGER NOT NULL DEFAULT 0,
    sms_due_at    BIGINT
)
;
CREATE INDEX offline_messages_recipient ON offline_messages (recipient, seq)
;
CREATE INDEX offline_messages_sms_due ON offline_messages (sms_due_at)
;
-- chat_records: the patent's chat record table, one row per accepted
-- message. (sender, client_msg_id) is unique: a client retry is recognised.
-- state holds relay/v1 MessageState numbers.
CREATE TABLE chat_records (
    id            VARCHAR(40) NOT NULL PRIMARY KEY,
    sender        VARCHAR(20) NOT NULL,
    client_msg_id VARCHAR(64) NOT NULL,
    receiver      VARCHAR(20) NOT NULL,
    content       TEXT NOT NULL,
    type          INTEGER NOT NULL,
    sent_at       BIGINT NOT NULL,
    received_at   BIGINT,
    offline       INTEGER NOT NULL DEFAULT 0,
    via_sms       INTEGER NOT NULL DEFAULT 0,
    state         INTEGER NOT NULL
)
;
CREATE UNIQUE INDEX chat_records_client ON chat_records (sender, client_msg_id)
;
CREATE INDEX chat_records_receiver ON chat_records (receiver, sent_at)
