-- Media (media/): what handsets upload to send with a message. Bodies live
-- in the media blob store (a directory, or the JetStream Object Store on a
-- cluster); this is their metadata. id is random (crypto/rand) but not a
-- secret: reading needs the uploader's session or a message (media_refs).
-- expires moves later while messages reference it; the janitor deletes a
-- medium (row and body) once it has passed. Times are microseconds.
CREATE TABLE IF NOT EXISTS media (
    id           VARCHAR(32) NOT NULL PRIMARY KEY,
    owner        VARCHAR(20) NOT NULL,
    content_type VARCHAR(64) NOT NULL,
    size         BIGINT NOT NULL,
    sha256       CHAR(64) NOT NULL,
    name         VARCHAR(255) NOT NULL DEFAULT '',
    width        INT NOT NULL DEFAULT 0,
    height       INT NOT NULL DEFAULT 0,
    thumbnail    INT NOT NULL DEFAULT 0,
    created      BIGINT NOT NULL,
    expires      BIGINT NOT NULL,
    KEY media_expires (expires),
    KEY media_owner (owner, created)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
-- media_refs: message message_id carries medium media_id to recipient, who
-- may read it until "until".
CREATE TABLE IF NOT EXISTS media_refs (
    media_id   VARCHAR(32) NOT NULL,
    message_id VARCHAR(40) NOT NULL,
    recipient  VARCHAR(20) NOT NULL,
    until      BIGINT NOT NULL,
    PRIMARY KEY (media_id, message_id),
    KEY media_refs_recipient (media_id, recipient)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
-- media_links: the short, expiring links an SMS carries in place of media
-- (an SMS fallback to a phone without MMS). Only the SHA-256 of the link's
-- token is kept; media_ids is a space-separated list.
CREATE TABLE IF NOT EXISTS media_links (
    token_hash CHAR(64) NOT NULL PRIMARY KEY,
    message_id VARCHAR(40) NOT NULL,
    recipient  VARCHAR(20) NOT NULL,
    media_ids  VARCHAR(1000) NOT NULL,
    created    BIGINT NOT NULL,
    expires    BIGINT NOT NULL,
    KEY media_links_expires (expires)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
