-- The operator console (console/): every action an operator takes (block,
-- unblock, revoke sessions, resend an SMS, sign-ins) is kept in audit_log:
-- who (the name given at sign-in, and the address), what, when, on which
-- number. Times are microseconds since the epoch, as everywhere.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      BIGINT NOT NULL,
    actor   VARCHAR(64) NOT NULL,
    remote  VARCHAR(64) NOT NULL DEFAULT '',
    action  VARCHAR(32) NOT NULL,
    target  VARCHAR(64) NOT NULL DEFAULT '',
    detail  VARCHAR(255) NOT NULL DEFAULT ''
)
;
CREATE INDEX audit_log_target ON audit_log (target, id)
;
-- A number's page lists its recent SMS.
CREATE INDEX sms_outbox_dest ON sms_outbox (dest, id)
