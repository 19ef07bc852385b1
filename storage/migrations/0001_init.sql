-- Virtual keys: only the SHA-256 of the key is stored, with a short prefix for humans.
CREATE TABLE virtual_keys (
  id          TEXT PRIMARY KEY,
  name        TEXT NOT NULL,
  key_hash    TEXT NOT NULL UNIQUE,
  key_prefix  TEXT NOT NULL,
  role        TEXT NOT NULL DEFAULT 'user',
  team        TEXT,
  models      TEXT NOT NULL DEFAULT '[]',   -- JSON array of model names; empty = all
  expires_at  INTEGER,                      -- unix seconds, NULL = never
  created_at  INTEGER NOT NULL,
  revoked_at  INTEGER
);

-- One row per proxied request, written behind in batches by the persistence actor.
CREATE TABLE usage_records (
  id                INTEGER PRIMARY KEY,
  request_id        TEXT NOT NULL,
  ts_ms             INTEGER NOT NULL,
  key_id            TEXT,
  route             TEXT NOT NULL,
  model             TEXT,
  deployment        TEXT,
  status            INTEGER NOT NULL,
  stream            INTEGER NOT NULL DEFAULT 0,
  prompt_tokens     INTEGER NOT NULL DEFAULT 0,
  completion_tokens INTEGER NOT NULL DEFAULT 0,
  cached_tokens     INTEGER NOT NULL DEFAULT 0,
  latency_ms        REAL NOT NULL DEFAULT 0
);
-- One index only: every extra index is another B-tree insert per proxied request.
CREATE INDEX usage_records_ts ON usage_records(ts_ms);

-- Who changed what and when (never secret values).
CREATE TABLE audit_log (
  id      INTEGER PRIMARY KEY,
  ts_ms   INTEGER NOT NULL,
  actor   TEXT NOT NULL,
  action  TEXT NOT NULL,
  target  TEXT,
  detail  TEXT
);
