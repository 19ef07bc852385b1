-- MCP tool servers (stdio children), tool policies, approvals of confirm-policy calls and
-- the session grants those approvals may create.
CREATE TABLE mcp_servers (
  name        TEXT PRIMARY KEY,
  command     TEXT NOT NULL,
  args        TEXT NOT NULL DEFAULT '[]',  -- JSON array of strings
  env         TEXT NOT NULL DEFAULT '',    -- sealed JSON object (may hold secrets)
  cwd         TEXT NOT NULL DEFAULT '',
  created_at  INTEGER NOT NULL
);

CREATE TABLE mcp_policies (
  id          TEXT PRIMARY KEY,
  tool        TEXT NOT NULL,               -- "server__tool"
  policy      TEXT NOT NULL CHECK (policy IN ('auto', 'confirm', 'deny')),
  team_id     TEXT NOT NULL DEFAULT '',    -- '' = every team
  key_id      TEXT NOT NULL DEFAULT '',    -- '' = every key
  created_at  INTEGER NOT NULL,
  UNIQUE (tool, team_id, key_id)
);

CREATE TABLE mcp_approvals (
  id          TEXT PRIMARY KEY,
  tool        TEXT NOT NULL,
  arguments   TEXT NOT NULL,               -- JSON object
  key_id      TEXT NOT NULL,
  team_id     TEXT NOT NULL DEFAULT '',
  session_id  TEXT NOT NULL DEFAULT '',
  status      TEXT NOT NULL,               -- pending | approved | denied | completed | failed
  scope       TEXT NOT NULL DEFAULT '',    -- call | session (once decided)
  decided_by  TEXT NOT NULL DEFAULT '',
  result      TEXT,                        -- the tools/call result (JSON) once run
  error       TEXT,
  created_at  INTEGER NOT NULL,
  decided_at  INTEGER
);
CREATE INDEX mcp_approvals_status ON mcp_approvals(status, created_at);

CREATE TABLE mcp_grants (
  id          TEXT PRIMARY KEY,
  tool        TEXT NOT NULL,
  key_id      TEXT NOT NULL,
  session_id  TEXT NOT NULL,
  expires_at  INTEGER NOT NULL              -- unix seconds
);
