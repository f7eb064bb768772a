-- Each job carries its destination's identity (kind and target, hashed): it runs only
-- against the action with the same identity. Jobs from before have none ('') and are
-- still found by their action's name.
ALTER TABLE jobs ADD COLUMN destination TEXT NOT NULL DEFAULT '';
