-- A destination is its bot, kind and name (`webhook:crm@st-1`), no longer a hash of its
-- target: a pending or dead job follows its action's current settings, so fixing a URL
-- delivers the queue. The name is the job's action up to a re-pointed marker or the `@`
-- of the jobs wrapup names itself (`crm@summary@7` is crm's, `summary@end` the summary's).
UPDATE jobs SET destination = kind || ':' ||
    CASE WHEN instr(action, ' (re-pointed from ') > 0
              THEN substr(action, 1, instr(action, ' (re-pointed from ') - 1)
         WHEN instr(action, '@') > 0 THEN substr(action, 1, instr(action, '@') - 1)
         ELSE action END
    || '@' || bot_id
WHERE destination <> '';
-- Claims read one destination's due (or lost) jobs through an index led by it: the same
-- cost whatever the backlog of other destinations.
DROP INDEX IF EXISTS jobs_lease;
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (destination, state, due_at);
CREATE INDEX IF NOT EXISTS jobs_claim_lease ON jobs (destination, state, lease_until);
-- Every job's typed origin, in columns, so no code reads it back out of the job's name:
-- the action it belongs to, its event (`conversation.ended`, `conversation.summarized`,
-- or `summary`: the summary itself), the event number of the trigger it came from (none
-- for the end's), and the action it was re-pointed from.
ALTER TABLE jobs ADD COLUMN action_name TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN event TEXT NOT NULL DEFAULT 'conversation.ended';
ALTER TABLE jobs ADD COLUMN trigger_seq INTEGER;
ALTER TABLE jobs ADD COLUMN repointed_from TEXT;
-- The names as wrapup wrote them (read here once, at the upgrade): `crm`, `summary@7`,
-- `summary@end`, `crm@summary@7`, `crm (re-pointed from hook)`.
UPDATE jobs SET
    action_name = CASE WHEN instr(action, ' (re-pointed from ') > 0
                            THEN substr(action, 1, instr(action, ' (re-pointed from ') - 1)
                       WHEN instr(action, '@') > 0 THEN substr(action, 1, instr(action, '@') - 1)
                       ELSE action END,
    event = CASE WHEN kind = 'summary' THEN 'summary'
                 WHEN instr(action, '@summary@') > 0 THEN 'conversation.summarized'
                 ELSE 'conversation.ended' END,
    trigger_seq = CASE WHEN instr(action, 'summary@') > 0
                       THEN CAST(substr(action, instr(action, 'summary@') + 8) AS INTEGER) END,
    repointed_from = CASE WHEN instr(action, ' (re-pointed from ') > 0
                          THEN substr(action, instr(action, ' (re-pointed from ') + 18,
                                      length(action) - instr(action, ' (re-pointed from ') - 18) END;
-- `summary@end` reads as 0 above: the end's summary has no trigger.
UPDATE jobs SET trigger_seq = NULL WHERE trigger_seq = 0;
