-- A destination is its bot, kind and name (`webhook:crm@st-1`), no longer a hash of its
-- target: a pending or dead job follows its action's current settings, so fixing a URL
-- delivers the queue. The name is the job's action up to a re-pointed marker or the `@`
-- of the jobs wrapup names itself (`crm@summary@7` is crm's, `summary@end` the summary's).
UPDATE jobs SET destination = kind || ':' ||
    CASE WHEN strpos(action, ' (re-pointed from ') > 0
              THEN substr(action, 1, strpos(action, ' (re-pointed from ') - 1)
         WHEN strpos(action, '@') > 0 THEN substr(action, 1, strpos(action, '@') - 1)
         ELSE action END
    || '@' || bot_id
WHERE destination <> '';
-- Claims read one destination's due (or lost) jobs through an index led by it: the same
-- cost whatever the backlog of other destinations.
DROP INDEX IF EXISTS jobs_lease;
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (destination, state, due_at);
CREATE INDEX IF NOT EXISTS jobs_claim_lease ON jobs (destination, state, lease_until);
