-- IM relay (relay/). Times are BIGINT microseconds since the Unix epoch, UTC.
-- offline_messages: messages accepted for a recipient who was not reachable;
-- a row lives until the recipient's client acknowledges it. seq orders a
-- recipient's messages.
CREATE TABLE IF NOT EXISTS offline_messages (
    seq           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    id            VARCHAR(40) NOT NULL,
    sender        VARCHAR(20) NOT NULL,
    client_msg_id VARCHAR(64) NOT NULL,
    recipient     VARCHAR(20) NOT NULL,
    type          INT NOT NULL,
    text          MEDIUMTEXT NOT NULL,
    content_type  VARCHAR(100) NOT NULL DEFAULT '',
    media_url     VARCHAR(1000) NOT NULL DEFAULT '',
    media_size    BIGINT NOT NULL DEFAULT 0,
    sent_at       BIGINT NOT NULL,
    via_sms       TINYINT NOT NULL DEFAULT 0,
    sms_due_at    BIGINT NULL,
    UNIQUE KEY offline_messages_id (id),
    KEY offline_messages_recipient (recipient, seq),
    KEY offline_messages_sms_due (sms_due_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
-- chat_records: the patent's chat record table, one row per accepted
-- message. (sender, client_msg_id) is unique: a client retry is recognised.
-- state holds relay/v1 MessageState numbers.
CREATE TABLE IF NOT EXISTS chat_records (
    id            VARCHAR(40) NOT NULL PRIMARY KEY,
    sender        VARCHAR(20) NOT NULL,
    client_msg_id VARCHAR(64) NOT NULL,
    receiver      VARCHAR(20) NOT NULL,
    content       MEDIUMTEXT NOT NULL,
    type          INT NOT NULL,
    sent_at       BIGINT NOT NULL,
    received_at   BIGINT NULL,
    offline       TINYINT NOT NULL DEFAULT 0,
    via_sms       TINYINT NOT NULL DEFAULT 0,
    state         INT NOT NULL,
    UNIQUE KEY chat_records_client (sender, client_msg_id),
    KEY chat_records_receiver (receiver, sent_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
