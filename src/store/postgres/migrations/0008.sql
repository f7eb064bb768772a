-- Claims read through partial indexes that hold only what they look for: a destination's
-- pending jobs by due time, its running jobs by lease. The planner has one index that
-- answers each claim in order (with the full (destination, state, …) indexes and no
-- statistics yet, it could take the lease index for a due claim: every pending job of the
-- destination read and sorted), and a claim reads only the rows it takes.
CREATE INDEX IF NOT EXISTS jobs_pending ON jobs (destination, due_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (destination, lease_until) WHERE state = 'running';
DROP INDEX IF EXISTS jobs_claim_lease;
-- A job passes through pending and running once each: the old row versions are vacuumed
-- after 2 % of the table changed (not the default 20 %), so claims do not step over a
-- growing run of dead index entries between vacuums.
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02,
                      autovacuum_vacuum_insert_scale_factor = 0.02);
