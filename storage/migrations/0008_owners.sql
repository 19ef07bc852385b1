-- Several replicas on one database: unfinished jobs and agent tasks belong to the replica
-- that took them ('' = any; a single gateway leaves it empty), so a replica that starts
-- resumes only its own (and unowned) work, never another live replica's.
ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE a2a_tasks ADD COLUMN owner TEXT NOT NULL DEFAULT '';
