-- Who is MMS-capable (mms/, docs/mms.md#capability): one row per number and
-- source of the knowledge: 'operator' (provisioning: admin CLI or HTTP),
-- 'client' (the handset's report at login), 'mmsc' (an MMSC answered "not
-- MMS-capable"). The operator's row wins; otherwise the newest of the
-- others; numbers with no row take the default of their prefix.
CREATE TABLE IF NOT EXISTS mms_capability (
    number      VARCHAR(20) NOT NULL,
    source      VARCHAR(16) NOT NULL,
    capable     TINYINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (number, source)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
