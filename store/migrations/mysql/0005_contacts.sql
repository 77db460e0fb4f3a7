-- Contacts (patent units 615/616/625, step S113) and status (units 617/618/624).
-- Times are BIGINT microseconds since the Unix epoch, UTC, in both engines.
--
-- book_entries holds the owner's address book exactly as the phone wrote
-- it, for restore: one row per entry (a card), its phones a JSON array of
-- {raw, label, number} (number null when raw is not a valid number), so one
-- person may have several numbers and one number may sit in several entries.
-- Nothing looks the book up by number; contacts serves that.
--
-- contacts is derived from the book: one row per distinct valid number in
-- it, with the patent's flag (1 = the other side has not added me,
-- 2 = mutual).
CREATE TABLE IF NOT EXISTS book_entries (
    owner      VARCHAR(20) NOT NULL,
    entry_id   VARCHAR(64) NOT NULL,
    name       VARCHAR(191) NOT NULL DEFAULT '',
    group_name VARCHAR(191) NOT NULL DEFAULT '',
    phones     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (owner, entry_id)
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
    KEY contacts_contact (contact, owner, flag)
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
