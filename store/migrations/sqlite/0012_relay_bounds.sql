-- Relay bounds (issue 12). sms_attempts counts SMS fallback attempts, for
-- the sweeper's backoff. The sender index counts a sender's stored messages
-- (relay.max_offline_per_sender); the sent_at index finds expired ones
-- (relay.offline_ttl).
ALTER TABLE offline_messages ADD COLUMN sms_attempts INTEGER NOT NULL DEFAULT 0
;
CREATE INDEX offline_messages_sender ON offline_messages (sender)
;
CREATE INDEX offline_messages_sent ON offline_messages (sent_at)
