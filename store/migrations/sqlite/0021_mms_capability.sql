-- Who is MMS-capable; see the MySQL migration for the design notes.
CREATE TABLE mms_capability (
    number      VARCHAR(20) NOT NULL,
    source      VARCHAR(16) NOT NULL,
    capable     INTEGER NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (number, source)
)
