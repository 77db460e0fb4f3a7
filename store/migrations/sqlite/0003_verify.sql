-- Method A: one pending SMS code per number. The code is stored as an HMAC.
CREATE TABLE verify_codes (
    number       VARCHAR(20) NOT NULL PRIMARY KEY,
    device_id    VARCHAR(64) NOT NULL,
    sim_id       VARCHAR(64) NOT NULL,
    code_mac     BLOB NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    checks       INTEGER NOT NULL DEFAULT 0,
    sends        INTEGER NOT NULL DEFAULT 1,
    next_send_at BIGINT NOT NULL
)
;
-- Method C: a one-time token the handset texts to the short number.
CREATE TABLE verify_tokens (
    id          VARCHAR(32) NOT NULL PRIMARY KEY,
    token_mac   BLOB NOT NULL,
    poll_hash   BLOB NOT NULL,
    device_id   VARCHAR(64) NOT NULL,
    sim_id      VARCHAR(64) NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    state       VARCHAR(16) NOT NULL,
    number      VARCHAR(20)
)
;
CREATE UNIQUE INDEX verify_tokens_mac ON verify_tokens (token_mac)
;
-- Server-generated secrets (HMAC keys), shared by every node.
CREATE TABLE secrets (
    name       VARCHAR(64) NOT NULL PRIMARY KEY,
    value      BLOB NOT NULL,
    created_at BIGINT NOT NULL
)
