-- What a conversation can be found by (domain::tags): one row per tag with the
-- conversation's sort time, so a filtered list reads one index range newest first.
-- A write replaces the conversation's rows.
CREATE TABLE conversation_tags (
    bot_id          TEXT   NOT NULL,
    conversation_id TEXT   NOT NULL,
    tag             TEXT   NOT NULL,
    sort_at         BIGINT NOT NULL,
    PRIMARY KEY (bot_id, conversation_id, tag)
);
CREATE INDEX conversation_tags_find ON conversation_tags (bot_id, tag, sort_at, conversation_id);
-- The console's search for a conversation id across bots.
CREATE INDEX conversations_by_id ON conversations (conversation_id);
-- The conversations stored before: the same tags, derived from their state.
INSERT INTO conversation_tags (bot_id, conversation_id, tag, sort_at)
SELECT DISTINCT bot_id, conversation_id, tag, sort_at FROM (
    SELECT c.bot_id, c.conversation_id, c.sort_at, 'agent:' || (a ->> 'identity') AS tag
        FROM conversations c, jsonb_array_elements(COALESCE(c.state::jsonb -> 'agents', '[]')) a
    UNION ALL
    SELECT c.bot_id, c.conversation_id, c.sort_at, 'queue:' || (a -> 'customFields' ->> 'queueId')
        FROM conversations c, jsonb_array_elements(COALESCE(c.state::jsonb -> 'agents', '[]')) a
    UNION ALL
    SELECT c.bot_id, c.conversation_id, c.sort_at, 'queue:' || (a -> 'customFields' ->> 'queueName')
        FROM conversations c, jsonb_array_elements(COALESCE(c.state::jsonb -> 'agents', '[]')) a
    UNION ALL
    SELECT c.bot_id, c.conversation_id, c.sort_at, 'anomaly:' || (a ->> 'code')
        FROM conversations c, jsonb_array_elements(COALESCE(c.state::jsonb -> 'anomalies', '[]')) a
    UNION ALL
    SELECT bot_id, conversation_id, sort_at, 'anomaly' FROM conversations
        WHERE jsonb_array_length(COALESCE(state::jsonb -> 'anomalies', '[]')) > 0
           OR COALESCE((state::jsonb ->> 'anomalies_dropped')::bigint, 0) > 0
    UNION ALL
    SELECT bot_id, conversation_id, sort_at, 'reason:' || (state::jsonb ->> 'end_reason') FROM conversations
    UNION ALL
    SELECT bot_id, conversation_id, sort_at, 'experience:' || (state::jsonb ->> 'experience') FROM conversations
) t WHERE tag IS NOT NULL AND octet_length(tag) <= 268
    AND tag NOT IN ('agent:', 'queue:', 'anomaly:', 'reason:', 'experience:');
-- The console's traffic charts: each instance adds its counts per 10-second bucket.
CREATE TABLE traffic (
    at_ms          BIGINT PRIMARY KEY,
    events         BIGINT NOT NULL,
    ends           BIGINT NOT NULL,
    duplicate_ends BIGINT NOT NULL
);
-- Destination statistics read the attempts of the last day.
CREATE INDEX attempts_by_start ON attempts (started_at);
