-- Rows of conversations (their state) and events (their JSON) are large: SQLite keeps
-- such rows cheaper in rowid tables, with the key in a small index beside them. The
-- purge finds its conversations through the sort index (sort_at is ended_at once ended).
CREATE TABLE conversations_v4 (
    bot_id               TEXT    NOT NULL,
    conversation_id      TEXT    NOT NULL,
    status               TEXT    NOT NULL,
    created_at           INTEGER NOT NULL,
    last_event_at        INTEGER NOT NULL,
    ended_at             INTEGER,
    state                TEXT    NOT NULL,
    sort_at              INTEGER NOT NULL DEFAULT 0,
    events_purged_at     INTEGER,
    transcript_purged_at INTEGER,
    PRIMARY KEY (bot_id, conversation_id)
);
INSERT INTO conversations_v4 SELECT bot_id, conversation_id, status, created_at, last_event_at, ended_at, state,
    sort_at, events_purged_at, transcript_purged_at FROM conversations;
DROP TABLE conversations;
ALTER TABLE conversations_v4 RENAME TO conversations;
CREATE INDEX conversations_by_sort ON conversations (bot_id, sort_at, conversation_id);
CREATE INDEX conversations_idle ON conversations (bot_id, last_event_at) WHERE status = 'active';
CREATE TABLE events_v4 (
    bot_id          TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    name            TEXT    NOT NULL,
    received_at     INTEGER NOT NULL,
    body            TEXT    NOT NULL,
    PRIMARY KEY (bot_id, conversation_id, seq)
);
INSERT INTO events_v4 SELECT * FROM events;
DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;
