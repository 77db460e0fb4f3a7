-- Times are BIGINT microseconds since the Unix epoch, UTC, in both engines.
CREATE TABLE IF NOT EXISTS users (
    number          VARCHAR(20) NOT NULL PRIMARY KEY,
    device_id       VARCHAR(64) NOT NULL,
    sim_id          VARCHAR(64) NOT NULL,
    device_key_hash VARBINARY(32) NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    valid           TINYINT NOT NULL DEFAULT 1,
    last_login      BIGINT NULL,
    login_count     BIGINT NOT NULL DEFAULT 0,
    rescue_hash     VARCHAR(255) NULL,
    secure_mode     TINYINT NOT NULL DEFAULT 0,
    proven_by       VARCHAR(16) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
CREATE TABLE IF NOT EXISTS sessions (
    token_hash VARBINARY(32) NOT NULL PRIMARY KEY,
    number     VARCHAR(20) NOT NULL,
    device_id  VARCHAR(64) NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked    TINYINT NOT NULL DEFAULT 0,
    KEY sessions_number (number)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
CREATE TABLE IF NOT EXISTS counters (
    name         VARCHAR(191) NOT NULL PRIMARY KEY,
    window_start BIGINT NOT NULL,
    count        BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
