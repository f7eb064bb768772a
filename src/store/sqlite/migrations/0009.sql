-- What a conversation can be found by (domain::tags): one row per tag, keyed by what a
-- filtered list reads (the tag, then newest first), so each row is one B-tree entry and
-- a page is one range of it. Rows are integers only (~20 bytes): the tag as a 64-bit
-- hash of bot and tag, the conversation's integer id, and its status (1 ended); with text
-- keys each row cost the writer several times as many instructions (BENCHMARKS.md). A
-- listed page is checked against its conversations' own tags, so a hash collision could
-- only shorten a page, never add a wrong row. A write deletes the rows of the state
-- before (their keys are known from it) and inserts the new state's.
CREATE TABLE conversation_tags (
    tag_key      INTEGER NOT NULL,
    sort_at      INTEGER NOT NULL,
    conversation INTEGER NOT NULL,
    ended        INTEGER NOT NULL,
    PRIMARY KEY (tag_key, sort_at, conversation)
) WITHOUT ROWID;
-- The conversations stored before get their tags from the server itself after this
-- migration (the tags are the domain's, derived from the state in Rust): this row asks
-- for it, and goes once every conversation has them.
CREATE TABLE pending_backfill (name TEXT PRIMARY KEY);
INSERT INTO pending_backfill (name) VALUES ('conversation_tags');
-- The console's traffic charts: each instance adds its counts per 10-second bucket.
CREATE TABLE traffic (
    at_ms          INTEGER PRIMARY KEY,
    events         INTEGER NOT NULL,
    ends           INTEGER NOT NULL,
    duplicate_ends INTEGER NOT NULL
);
-- Destination statistics read the attempts of the last day.
CREATE INDEX attempts_by_start ON attempts (started_at);
