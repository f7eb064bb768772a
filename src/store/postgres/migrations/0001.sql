CREATE TABLE conversations (
    bot_id               TEXT   NOT NULL,
    conversation_id      TEXT   NOT NULL,
    status               TEXT   NOT NULL,
    created_at           BIGINT NOT NULL,
    last_event_at        BIGINT NOT NULL,
    ended_at             BIGINT,
    sort_at              BIGINT NOT NULL,
    events_purged_at     BIGINT,
    transcript_purged_at BIGINT,
    state                TEXT   NOT NULL,
    PRIMARY KEY (bot_id, conversation_id)
);
CREATE INDEX conversations_idle ON conversations (bot_id, last_event_at) WHERE status = 'active';
CREATE INDEX conversations_by_sort ON conversations (bot_id, sort_at, conversation_id);
CREATE INDEX conversations_by_end ON conversations (bot_id, status, ended_at);
CREATE TABLE events (
    bot_id          TEXT   NOT NULL,
    conversation_id TEXT   NOT NULL,
    seq             BIGINT NOT NULL,
    name            TEXT   NOT NULL,
    received_at     BIGINT NOT NULL,
    body            TEXT   NOT NULL,
    PRIMARY KEY (bot_id, conversation_id, seq)
);
CREATE TABLE used_jti (
    client_id  TEXT   NOT NULL,
    jti        TEXT   NOT NULL,
    used_at    BIGINT NOT NULL,
    expires_at BIGINT,
    PRIMARY KEY (client_id, jti)
);
CREATE TABLE heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at BIGINT  NOT NULL
);
CREATE TABLE jobs (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    bot_id          TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    budget          INTEGER NOT NULL,
    due_at          BIGINT  NOT NULL,
    lease_until     BIGINT,
    lease_token     TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    last_error      TEXT,
    payload         TEXT    NOT NULL
);
CREATE UNIQUE INDEX jobs_once ON jobs (bot_id, conversation_id, action);
CREATE INDEX jobs_due ON jobs (state, due_at);
CREATE INDEX jobs_lease ON jobs (state, lease_until);
CREATE TABLE attempts (
    job_id      TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    started_at  BIGINT  NOT NULL,
    duration_ms BIGINT  NOT NULL,
    outcome     TEXT    NOT NULL,
    status_code INTEGER,
    error       TEXT,
    response    TEXT,
    PRIMARY KEY (job_id, attempt)
);
