-- What a conversation can be found by (domain::tags): one row per tag with the
-- conversation's sort time, so a filtered list reads one index range newest first.
-- A write replaces the conversation's rows.
CREATE TABLE conversation_tags (
    conversation    INTEGER NOT NULL,
    tag             TEXT    NOT NULL,
    bot_id          TEXT    NOT NULL,
    sort_at         INTEGER NOT NULL,
    conversation_id TEXT    NOT NULL,
    PRIMARY KEY (conversation, tag)
) WITHOUT ROWID;
CREATE INDEX conversation_tags_find ON conversation_tags (bot_id, tag, sort_at, conversation_id);
-- The console's search for a conversation id across bots.
CREATE INDEX conversations_by_id ON conversations (conversation_id);
-- The conversations stored before: the same tags, derived from their state.
INSERT OR IGNORE INTO conversation_tags (conversation, tag, bot_id, sort_at, conversation_id)
SELECT id, tag, bot_id, sort_at, conversation_id FROM (
    SELECT c.id, c.bot_id, c.sort_at, c.conversation_id, 'agent:' || json_extract(a.value, '$.identity') AS tag
        FROM conversations c, json_each(c.state, '$.agents') a
    UNION ALL
    SELECT c.id, c.bot_id, c.sort_at, c.conversation_id, 'queue:' || json_extract(a.value, '$.customFields.queueId')
        FROM conversations c, json_each(c.state, '$.agents') a
    UNION ALL
    SELECT c.id, c.bot_id, c.sort_at, c.conversation_id, 'queue:' || json_extract(a.value, '$.customFields.queueName')
        FROM conversations c, json_each(c.state, '$.agents') a
    UNION ALL
    SELECT c.id, c.bot_id, c.sort_at, c.conversation_id, 'anomaly:' || json_extract(a.value, '$.code')
        FROM conversations c, json_each(c.state, '$.anomalies') a
    UNION ALL
    SELECT id, bot_id, sort_at, conversation_id, 'anomaly' FROM conversations
        WHERE json_array_length(state, '$.anomalies') > 0 OR json_extract(state, '$.anomalies_dropped') > 0
    UNION ALL
    SELECT id, bot_id, sort_at, conversation_id, 'reason:' || json_extract(state, '$.end_reason') FROM conversations
    UNION ALL
    SELECT id, bot_id, sort_at, conversation_id, 'experience:' || json_extract(state, '$.experience') FROM conversations
) WHERE tag IS NOT NULL AND length(CAST(tag AS BLOB)) <= 268
    AND tag NOT IN ('agent:', 'queue:', 'anomaly:', 'reason:', 'experience:');
-- The console's traffic charts: each instance adds its counts per 10-second bucket.
CREATE TABLE traffic (
    at_ms          INTEGER PRIMARY KEY,
    events         INTEGER NOT NULL,
    ends           INTEGER NOT NULL,
    duplicate_ends INTEGER NOT NULL
);
-- Destination statistics read the attempts of the last day.
CREATE INDEX attempts_by_start ON attempts (started_at);
