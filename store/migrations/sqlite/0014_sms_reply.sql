-- Two-way SMS (smsreply/). Times are BIGINT microseconds since the Unix epoch, UTC.
-- sms_conversations: an IM user (sender) who reached a number without the
-- app (recipient) by SMS fallback. ext is the extension code appended to the
-- short number as the SMS source (extension mode), unique per recipient;
-- NULL when the conversation has none (sticky mode, or its code was reused).
-- last_sent_at is the last fallback SMS (sticky routing); last_used_at also
-- counts replies (least-recently-used reuse of codes).
CREATE TABLE sms_conversations (
    recipient     VARCHAR(20) NOT NULL,
    sender        VARCHAR(20) NOT NULL,
    ext           VARCHAR(8),
    last_sent_at  BIGINT NOT NULL,
    last_used_at  BIGINT NOT NULL,
    PRIMARY KEY (recipient, sender)
)
;
CREATE UNIQUE INDEX sms_conversations_ext ON sms_conversations (recipient, ext)
;
CREATE INDEX sms_conversations_used ON sms_conversations (recipient, last_used_at)
;
-- sms_optouts: numbers that asked for no more fallback SMS, from every
-- sender (sender = '') or from one.
CREATE TABLE sms_optouts (
    number      VARCHAR(20) NOT NULL,
    sender      VARCHAR(20) NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (number, sender)
)
