-- What a conversation can be found by (domain::tags): one row per tag with the
-- conversation's sort time, so a filtered list reads one index range newest first.
-- A write replaces the conversation's rows.
CREATE TABLE conversation_tags (
    bot_id          TEXT   NOT NULL,
    conversation_id TEXT   NOT NULL,
    tag             TEXT   NOT NULL,
    sort_at         BIGINT NOT NULL,
    status          TEXT   NOT NULL,
    PRIMARY KEY (bot_id, conversation_id, tag)
);
-- A filtered page (status included) is read from this index newest first; the
-- conversations' rows are read only for the page's own.
CREATE INDEX conversation_tags_find ON conversation_tags (bot_id, tag, sort_at, conversation_id) INCLUDE (status);
-- The console's search for a conversation id across bots.
CREATE INDEX conversations_by_id ON conversations (conversation_id);
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
