-- Events are keyed by their conversation's integer id instead of the (bot id,
-- conversation id) text pair: a new conversation's events go to the right edge of a
-- small-keyed index instead of a random leaf of a wide one (one random page write per
-- request instead of two). The id is an explicit INTEGER PRIMARY KEY, so it survives
-- VACUUM.
CREATE TABLE conversations_v6 (
    id                   INTEGER PRIMARY KEY,
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
    UNIQUE (bot_id, conversation_id)
);
INSERT INTO conversations_v6 (id, bot_id, conversation_id, status, created_at, last_event_at, ended_at,
    state, sort_at, events_purged_at, transcript_purged_at)
    SELECT rowid, bot_id, conversation_id, status, created_at, last_event_at, ended_at, state,
    sort_at, events_purged_at, transcript_purged_at FROM conversations ORDER BY rowid;
CREATE TABLE events_v6 (
    conversation INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    name         TEXT    NOT NULL,
    received_at  INTEGER NOT NULL,
    body         TEXT    NOT NULL
);
INSERT INTO events_v6 SELECT c.id, e.seq, e.name, e.received_at, e.body
    FROM events e JOIN conversations_v6 c ON c.bot_id = e.bot_id AND c.conversation_id = e.conversation_id
    ORDER BY c.id, e.seq;
DROP TABLE events;
DROP TABLE conversations;
ALTER TABLE conversations_v6 RENAME TO conversations;
ALTER TABLE events_v6 RENAME TO events;
CREATE UNIQUE INDEX events_by_conversation ON events (conversation, seq);
CREATE INDEX conversations_by_sort ON conversations (bot_id, sort_at, conversation_id);
CREATE INDEX conversations_idle ON conversations (bot_id, last_event_at) WHERE status = 'active';
