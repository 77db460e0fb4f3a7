-- Messages carry media (relay Send/Deliver media): the stored message and
-- its chat record keep the media it carries as a JSON array of
-- {id, content_type, size, name, width, height, thumbnail}; NULL for text.
-- The older content_type, media_url and media_size columns are unused.
ALTER TABLE offline_messages ADD COLUMN media TEXT
;
ALTER TABLE chat_records ADD COLUMN media TEXT
