-- What a conversation can be found by (domain::tags): one row per tag. A filtered list
-- reads `conversation_tags_find` (bot, tag, then newest first, the status included), one
-- range per page; a write replaces the conversation's rows through the key, which starts
-- with the conversation, so it never depends on the planner's statistics (a key starting
-- with the tag made a write without statistics scan every row of the bot).
CREATE TABLE conversation_tags (
    bot_id          TEXT   NOT NULL,
    conversation_id TEXT   NOT NULL,
    tag             TEXT   NOT NULL,
    sort_at         BIGINT NOT NULL,
    status          TEXT   NOT NULL,
    PRIMARY KEY (bot_id, conversation_id, tag)
);
CREATE INDEX conversation_tags_find ON conversation_tags (bot_id, tag, sort_at, conversation_id) INCLUDE (status);
-- The conversations stored before get their tags from the server itself after this
-- migration (the tags are the domain's, derived from the state in Rust): this row asks
-- for it, and goes once every conversation has them.
CREATE TABLE pending_backfill (name TEXT PRIMARY KEY);
INSERT INTO pending_backfill (name) VALUES ('conversation_tags');
-- The console's traffic charts: each instance adds its counts per 10-second bucket.
CREATE TABLE traffic (
    at_ms          BIGINT PRIMARY KEY,
    events         BIGINT NOT NULL,
    ends           BIGINT NOT NULL,
    duplicate_ends BIGINT NOT NULL
);
-- Destination statistics read the attempts of the last day.
CREATE INDEX attempts_by_start ON attempts (started_at);
