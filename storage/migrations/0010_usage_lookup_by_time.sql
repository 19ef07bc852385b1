-- The request-id index made every usage insert a random B-tree insert, dearer as the
-- table grows (measured: the persistence thread's cost per request rose by a third
-- over four million rows). Spool replay now finds a record by its exact timestamp (the
-- append-only ts_ms index) and then its request id, so that index goes.
DROP INDEX IF EXISTS usage_records_request;
