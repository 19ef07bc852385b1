-- Least privilege. An MCP child gets a short allowlist of lowart's environment plus the
-- names listed here (a JSON array); nothing else.
ALTER TABLE mcp_servers ADD COLUMN inherit_env TEXT NOT NULL DEFAULT '[]';
-- A self-made key (POST /v1/me/keys) names the key that made it: its requests count
-- against that key's limits too, and revoking the maker revokes it.
ALTER TABLE virtual_keys ADD COLUMN parent_id TEXT;
-- Permissions beyond the role (JSON array: "register_agents") and allow lists of agents
-- and MCP servers/tools (JSON arrays; [] = no narrowing), on keys and on teams.
ALTER TABLE virtual_keys ADD COLUMN permissions TEXT NOT NULL DEFAULT '[]';
ALTER TABLE virtual_keys ADD COLUMN agents TEXT NOT NULL DEFAULT '[]';
ALTER TABLE virtual_keys ADD COLUMN tools TEXT NOT NULL DEFAULT '[]';
ALTER TABLE teams ADD COLUMN agents TEXT NOT NULL DEFAULT '[]';
ALTER TABLE teams ADD COLUMN tools TEXT NOT NULL DEFAULT '[]';
