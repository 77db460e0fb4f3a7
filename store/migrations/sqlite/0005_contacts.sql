-- Contacts (patent units 615/616/625, step S113) and status (units 617/618/624).
-- Times are BIGINT microseconds since the Unix epoch, UTC, in both engines.
--
-- book_entries/book_numbers hold the owner's address book exactly as the phone
-- wrote it, for restore: one entry (a card) has any number of phones, and the
-- same number may sit in several entries. contacts is derived from them: one
-- row per distinct valid number in the book, with the patent's flag
-- (1 = the other side has not added me, 2 = mutual).
CREATE TABLE book_entries (
    owner      VARCHAR(20) NOT NULL,
    entry_id   VARCHAR(64) NOT NULL,
    name       VARCHAR(191) NOT NULL DEFAULT '',
    group_name VARCHAR(191) NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (owner, entry_id)
)
;
CREATE TABLE book_numbers (
    owner    VARCHAR(20) NOT NULL,
    entry_id VARCHAR(64) NOT NULL,
    pos      INTEGER NOT NULL,
    raw      VARCHAR(64) NOT NULL,
    label    VARCHAR(32) NOT NULL DEFAULT '',
    number   VARCHAR(20),
    PRIMARY KEY (owner, entry_id, pos)
)
;
CREATE INDEX book_numbers_number ON book_numbers (owner, number)
;
CREATE TABLE contacts (
    owner      VARCHAR(20) NOT NULL,
    contact    VARCHAR(20) NOT NULL,
    name       VARCHAR(191) NOT NULL DEFAULT '',
    group_name VARCHAR(191) NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    flag       INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (owner, contact)
)
;
-- Reverse lookups: who has this number (joins, presence fan-out, flags).
CREATE INDEX contacts_contact ON contacts (contact, flag, owner)
;
CREATE TABLE user_status (
    number      VARCHAR(20) NOT NULL PRIMARY KEY,
    im_status   VARCHAR(8) NOT NULL DEFAULT 'offline',
    status_text VARCHAR(191) NOT NULL DEFAULT '',
    activity    VARCHAR(32) NOT NULL DEFAULT '',
    nickname    VARCHAR(64) NOT NULL DEFAULT '',
    signature   VARCHAR(191) NOT NULL DEFAULT '',
    site        VARCHAR(255) NOT NULL DEFAULT '',
    visibility  VARCHAR(8) NOT NULL DEFAULT '',
    updated_at  BIGINT NOT NULL
)
;
-- Anti-enumeration token bucket per owner; the row also serialises one
-- owner's syncs across nodes.
CREATE TABLE lookup_budget (
    owner        VARCHAR(20) NOT NULL PRIMARY KEY,
    tokens_milli BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
)
