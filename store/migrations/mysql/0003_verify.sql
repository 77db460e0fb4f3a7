-- Method A: one pending SMS code per number. The code is stored as an HMAC.
CREATE TABLE IF NOT EXISTS verify_codes (
    number       VARCHAR(20) NOT NULL PRIMARY KEY,
    device_id    VARCHAR(64) NOT NULL,
    sim_id       VARCHAR(64) NOT NULL,
    code_mac     VARBINARY(32) NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    checks       INT NOT NULL DEFAULT 0,
    sends        INT NOT NULL DEFAULT 1,
    next_send_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
-- Method C: a one-time token the handset texts to the short number.
CREATE TABLE IF NOT EXISTS verify_tokens (
    id          VARCHAR(32) NOT NULL PRIMARY KEY,
    token_mac   VARBINARY(32) NOT NULL,
    poll_hash   VARBINARY(32) NOT NULL,
    device_id   VARCHAR(64) NOT NULL,
    sim_id      VARCHAR(64) NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    state       VARCHAR(16) NOT NULL,
    number      VARCHAR(20) NULL,
    UNIQUE KEY verify_tokens_mac (token_mac)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
-- Server-generated secrets (HMAC keys), shared by every node.
CREATE TABLE IF NOT EXISTS secrets (
    name       VARCHAR(64) NOT NULL PRIMARY KEY,
    value      VARBINARY(64) NOT NULL,
    created_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
