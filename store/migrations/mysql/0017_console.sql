-- The operator console (console/): every action an operator takes (block,
-- unblock, revoke sessions, resend an SMS, sign-ins) is kept in audit_log:
-- who (the name given at sign-in, and the address), what, when, on which
-- number. Times are microseconds since the epoch, as everywhere.
CREATE TABLE IF NOT EXISTS audit_log (
    id      BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   VARCHAR(64) NOT NULL,
    remote  VARCHAR(64) NOT NULL DEFAULT '',
    action  VARCHAR(32) NOT NULL,
    target  VARCHAR(64) NOT NULL DEFAULT '',
    detail  VARCHAR(255) NOT NULL DEFAULT '',
    KEY audit_log_target (target, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
-- A number's page lists its recent SMS.
ALTER TABLE sms_outbox ADD KEY sms_outbox_dest (dest, id)
