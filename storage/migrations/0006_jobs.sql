-- Background jobs (ComfyUI): one row per job, written at every state change so that a
-- restarted gateway picks unfinished jobs up again. prompt_id is chosen by lowart and
-- stored before the job is handed to a backend, so a job is never queued twice.
CREATE TABLE jobs (
  id             TEXT PRIMARY KEY,
  prompt_id      TEXT NOT NULL,
  key_id         TEXT NOT NULL,
  team_id        TEXT NOT NULL DEFAULT '',
  model          TEXT NOT NULL,
  status         TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  progress       REAL,                         -- 0..1, NULL when unknown
  error          TEXT NOT NULL DEFAULT '',
  input          TEXT NOT NULL,                -- the client's input (JSON)
  workflow       TEXT NOT NULL,                -- the ComfyUI prompt graph built from it (JSON)
  deployment     TEXT NOT NULL DEFAULT '',     -- provider/model that runs it
  backend        TEXT NOT NULL DEFAULT '',     -- that provider's base URL
  submitted      INTEGER NOT NULL DEFAULT 0,   -- the backend accepted the prompt
  files          TEXT NOT NULL DEFAULT '[]',   -- [{"name","bytes","content_type"}]
  images         INTEGER NOT NULL DEFAULT 0,
  webhook        TEXT NOT NULL DEFAULT '',
  webhook_state  TEXT NOT NULL DEFAULT '',     -- '' (none) | pending | delivered | failed
  cost           REAL NOT NULL DEFAULT 0,
  attempts       INTEGER NOT NULL DEFAULT 0,
  request_id     TEXT NOT NULL DEFAULT '',
  created_ms     INTEGER NOT NULL,
  updated_ms     INTEGER NOT NULL,
  finished_ms    INTEGER
);
CREATE INDEX jobs_by_key ON jobs(key_id, created_ms);
CREATE INDEX jobs_by_status ON jobs(status);

-- Image and job prices: a job costs per_request + per_image x the images it produced.
ALTER TABLE prices ADD COLUMN per_image REAL NOT NULL DEFAULT 0;
