-- Issue 11. sessions.udp_id: a public id of the session token
-- (phonebook.UDPTokenID) that a UDP login names instead of sending the token;
-- sessions issued before this have none and log in over UDP after a new login.
ALTER TABLE sessions ADD COLUMN udp_id BLOB
;
CREATE INDEX sessions_udp_id ON sessions (udp_id)
;
-- A pending SMS code per (number, identity): another identity's start
-- cannot replace the code of the one that started first.
CREATE TABLE verify_codes_new (
    number       VARCHAR(20) NOT NULL,
    device_id    VARCHAR(64) NOT NULL,
    sim_id       VARCHAR(64) NOT NULL,
    code_mac     BLOB NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    checks       INTEGER NOT NULL DEFAULT 0,
    sends        INTEGER NOT NULL DEFAULT 1,
    next_send_at BIGINT NOT NULL,
    PRIMARY KEY (number, device_id, sim_id)
)
;
INSERT INTO verify_codes_new SELECT number, device_id, sim_id, code_mac, created_at, expires_at, checks, sends, next_send_at FROM verify_codes
;
DROP TABLE verify_codes
;
ALTER TABLE verify_codes_new RENAME TO verify_codes
