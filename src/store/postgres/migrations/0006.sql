-- Lost attempts in a row (a worker that stopped before recording the attempt): a recorded
-- attempt or an operator's retry sets it back to 0; at 10 the job is dead.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS lost_in_row INTEGER NOT NULL DEFAULT 0;
