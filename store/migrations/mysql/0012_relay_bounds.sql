-- Relay bounds (issue 12). sms_attempts counts SMS fallback attempts, for
-- the sweeper's backoff. The sender index counts a sender's stored messages
-- (relay.max_offline_per_sender); the sent_at index finds expired ones
-- (relay.offline_ttl).
ALTER TABLE offline_messages ADD COLUMN sms_attempts INT NOT NULL DEFAULT 0,
    ADD KEY offline_messages_sender (sender),
    ADD KEY offline_messages_sent (sent_at)
