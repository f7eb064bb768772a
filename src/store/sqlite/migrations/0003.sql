-- Only active conversations are swept for inactivity: ended ones leave this index.
DROP INDEX conversations_by_last_event;
CREATE INDEX conversations_idle ON conversations (bot_id, last_event_at) WHERE status = 'active';
