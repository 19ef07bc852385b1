-- The agent bus (A2A): registered agents and their tasks. A task row holds the whole
-- task (A2A Task object plus delivery bookkeeping) as JSON in `body`; the columns are
-- what the bus looks tasks up by.
CREATE TABLE a2a_agents (
  name        TEXT PRIMARY KEY,
  body        TEXT NOT NULL,            -- {"name","description","skills","push_url","url","key_id"}
  created_at  INTEGER NOT NULL
);

CREATE TABLE a2a_tasks (
  id          TEXT PRIMARY KEY,
  agent       TEXT NOT NULL,            -- the agent it is assigned to now
  state       TEXT NOT NULL,            -- submitted | working | input-required | completed | failed | canceled | rejected
  delivery    TEXT NOT NULL,            -- queued | delivered | acked | done | dead
  sender_key  TEXT NOT NULL,
  updated_ms  INTEGER NOT NULL,
  body        TEXT NOT NULL
);
CREATE INDEX a2a_tasks_live ON a2a_tasks(delivery);
CREATE INDEX a2a_tasks_sender ON a2a_tasks(sender_key, updated_ms);
