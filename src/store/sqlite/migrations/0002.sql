ALTER TABLE conversations ADD COLUMN sort_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN events_purged_at INTEGER;
ALTER TABLE conversations ADD COLUMN transcript_purged_at INTEGER;
UPDATE conversations SET sort_at = COALESCE(ended_at, last_event_at);
CREATE INDEX conversations_by_sort ON conversations (bot_id, sort_at, conversation_id);
CREATE INDEX conversations_by_end ON conversations (bot_id, status, ended_at);
