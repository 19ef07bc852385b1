-- The request log (GET /admin/logs) is the usage records with these: who (the key's team
-- and user when the request was made), the deployments tried (a JSON array, NULL when one
-- attempt answered), time to the answer's first byte, the client's address and agent.
ALTER TABLE usage_records ADD COLUMN team_id TEXT;
ALTER TABLE usage_records ADD COLUMN user_id TEXT;
ALTER TABLE usage_records ADD COLUMN attempts TEXT;
ALTER TABLE usage_records ADD COLUMN ttfb_ms REAL NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN client_ip TEXT;
ALTER TABLE usage_records ADD COLUMN user_agent TEXT;
