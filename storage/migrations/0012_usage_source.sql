-- Where a record's token counts come from: 'upstream' (the upstream's usage), 'counted'
-- (lowart's own count, exact for the model's tokenizer), 'estimated' (lowart's count, part
-- of it an estimate), '' (no tokens, and records from before this column).
ALTER TABLE usage_records ADD COLUMN usage_source TEXT NOT NULL DEFAULT '';
