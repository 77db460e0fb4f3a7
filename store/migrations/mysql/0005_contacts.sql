-- Contacts (patent units 615/616/625, step S113) and status (units 617/618/624).
-- Times are BIGINT microseconds since the Unix epoch, UTC, in both engines.
--
-- book_entries/book_numbers hold the owner's address book exactly as the phone
-- wrote it, for restore: one entry (a card) has any number of phones, and the
-- same number may sit in several entries. contacts is derived from them: one
-- row per distinct valid number in the book, with the patent's flag
-- (1 = the other side has not added me, 2 = mutual).
CREATE TABLE IF NOT EXISTS book_entries (
    owner      VARCHAR(20) NOT NULL,
    entry_id   VARCHAR(64) NOT NULL,
    name       VARCHAR(191) NOT NULL DEFAULT '',
    group_name VARCHAR(191) NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (owner, entry_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
CREATE TABLE IF NOT EXISTS book_numbers (
    owner    VARCHAR(20) NOT NULL,
    entry_id VARCHAR(64) NOT NULL,
    pos      INT NOT NULL,
    raw      VARCHAR(64) NOT NULL,
    label    VARCHAR(32) NOT NULL DEFAULT '',
    number   VARCHAR(20) NULL,
    PRIMARY KEY (owner, entry_id, pos),
    KEY book_numbers_number (owner, number)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
-- contacts_contact serves reverse lookups: who has this number (joins,
-- presence fan-out, flags).
CREATE TABLE IF NOT EXISTS contacts (
    owner      VARCHAR(20) NOT NULL,
    contact    VARCHAR(20) NOT NULL,
    name       VARCHAR(191) NOT NULL DEFAULT '',
    group_name VARCHAR(191) NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    flag       TINYINT NOT NULL DEFAULT 1,
    PRIMARY KEY (owner, contact),
    KEY contacts_contact (contact, flag, owner)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
CREATE TABLE IF NOT EXISTS user_status (
    number      VARCHAR(20) NOT NULL PRIMARY KEY,
    im_status   VARCHAR(8) NOT NULL DEFAULT 'offline',
    status_text VARCHAR(191) NOT NULL DEFAULT '',
    activity    VARCHAR(32) NOT NULL DEFAULT '',
    nickname    VARCHAR(64) NOT NULL DEFAULT '',
    signature   VARCHAR(191) NOT NULL DEFAULT '',
    site        VARCHAR(255) NOT NULL DEFAULT '',
    visibility  VARCHAR(8) NOT NULL DEFAULT '',
    updated_at  BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
-- Anti-enumeration token bucket per owner; the row also serialises one
-- owner's syncs across nodes.
CREATE TABLE IF NOT EXISTS lookup_budget (
    owner        VARCHAR(20) NOT NULL PRIMARY KEY,
    tokens_milli BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
