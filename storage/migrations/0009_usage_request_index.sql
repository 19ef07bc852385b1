-- Spooled usage is written only if no record has its request id yet (the connection may
-- have died during a COMMIT that succeeded): that lookup needs an index.
CREATE INDEX usage_records_request ON usage_records(request_id);
