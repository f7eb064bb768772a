CREATE TABLE conversations (
    bot_id          TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    last_event_at   INTEGER NOT NULL,
    ended_at        INTEGER,
    state           TEXT    NOT NULL,
    PRIMARY KEY (bot_id, conversation_id)
) WITHOUT ROWID;
CREATE INDEX conversations_by_last_event ON conversations (bot_id, status, last_event_at);
CREATE TABLE events (
    bot_id          TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    name            TEXT    NOT NULL,
    received_at     INTEGER NOT NULL,
    body            TEXT    NOT NULL,
    PRIMARY KEY (bot_id, conversation_id, seq)
) WITHOUT ROWID;
CREATE TABLE used_jti (
    client_id  TEXT    NOT NULL,
    jti        TEXT    NOT NULL,
    used_at    INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (client_id, jti)
) WITHOUT ROWID;
CREATE TABLE heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
CREATE TABLE jobs (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    bot_id          TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    budget          INTEGER NOT NULL,
    due_at          INTEGER NOT NULL,
    lease_until     INTEGER,
    lease_token     TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    last_error      TEXT,
    payload         TEXT    NOT NULL
);
CREATE UNIQUE INDEX jobs_once ON jobs (bot_id, conversation_id, action);
CREATE INDEX jobs_due ON jobs (state, due_at);
CREATE INDEX jobs_lease ON jobs (state, lease_until);
CREATE TABLE attempts (
    job_id      TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,
    status_code INTEGER,
    error       TEXT,
    response    TEXT,
    PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;
