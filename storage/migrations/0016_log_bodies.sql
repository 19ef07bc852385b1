-- Body capture for the request log, off by default: a key's or a team's requests keep
-- their request and response bodies (capped, secrets redacted) in request_bodies.
ALTER TABLE virtual_keys ADD COLUMN log_bodies INTEGER NOT NULL DEFAULT 0;
ALTER TABLE teams ADD COLUMN log_bodies INTEGER NOT NULL DEFAULT 0;
CREATE TABLE request_bodies (
  request_id TEXT NOT NULL,
  ts_ms      INTEGER NOT NULL,
  request    TEXT,
  response   TEXT
);
CREATE INDEX request_bodies_by_time ON request_bodies(ts_ms);
CREATE INDEX request_bodies_by_request ON request_bodies(request_id);
