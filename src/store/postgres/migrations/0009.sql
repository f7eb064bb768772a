-- A due claim has one index that answers it: `jobs_pending` (destination, due_at). Beside it,
-- `jobs_due` (state, due_at) let the planner's plan for a claim whose destination and room
-- are parameters read every pending job of every destination and filter by destination:
-- beside a stalled receiver's 86,000 due jobs, 87,008 rows and 20-30 ms for each claim of a
-- healthy destination, whose deliveries then waited about a second. The reads that need
-- (state, due_at) are of settled jobs (the oldest dead or orphaned one, the purge of
-- finished ones): a partial index without pending jobs serves them.
CREATE INDEX IF NOT EXISTS jobs_settled ON jobs (state, due_at) WHERE state <> 'pending';
DROP INDEX IF EXISTS jobs_due;
