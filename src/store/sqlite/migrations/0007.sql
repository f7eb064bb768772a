-- A job's payload (the record at the end, ~0.8 KiB) moves out of its row into a table
-- written once and shared by the end's jobs: claims and finishes update small rows,
-- ~20 to a page instead of ~3.
CREATE TABLE job_payloads (
    id      INTEGER PRIMARY KEY,
    payload TEXT    NOT NULL
);
ALTER TABLE jobs ADD COLUMN payload_id INTEGER NOT NULL DEFAULT 0;
INSERT INTO job_payloads (id, payload) SELECT seq, payload FROM jobs ORDER BY seq;
UPDATE jobs SET payload_id = seq;
ALTER TABLE jobs DROP COLUMN payload;
