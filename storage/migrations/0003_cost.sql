-- Every usage record carries its cost and the price version it was computed with.
ALTER TABLE usage_records ADD COLUMN cost REAL NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN price_version INTEGER NOT NULL DEFAULT 0;
