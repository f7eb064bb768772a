-- Summaries (issue 14): one row per summary job, keyed by the job's id, so a job that
-- runs again after a crash stores its summary once.
CREATE TABLE summaries (
    bot_id          TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    summary_id      TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    body            TEXT    NOT NULL,
    PRIMARY KEY (bot_id, conversation_id, summary_id)
) WITHOUT ROWID;
