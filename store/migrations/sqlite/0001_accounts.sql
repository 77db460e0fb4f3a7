-- Times are BIGINT microseconds since the Unix epoch, UTC, in both engines.
CREATE TABLE users (
    number          VARCHAR(20) NOT NULL PRIMARY KEY,
    device_id       VARCHAR(64) NOT NULL,
    sim_id          VARCHAR(64) NOT NULL,
    device_key_hash BLOB NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    valid           INTEGER NOT NULL DEFAULT 1,
    last_login      BIGINT,
    login_count     BIGINT NOT NULL DEFAULT 0,
    rescue_hash     VARCHAR(255),
    secure_mode     INTEGER NOT NULL DEFAULT 0,
    proven_by       VARCHAR(16) NOT NULL
)
;
CREATE TABLE sessions (
    token_hash BLOB NOT NULL PRIMARY KEY,
    number     VARCHAR(20) NOT NULL,
    device_id  VARCHAR(64) NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0
)
;
CREATE INDEX sessions_number ON sessions (number)
;
CREATE TABLE counters (
    name         VARCHAR(191) NOT NULL PRIMARY KEY,
    window_start BIGINT NOT NULL,
    count        BIGINT NOT NULL
)
