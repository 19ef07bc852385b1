-- Every refusal is on the record: a request refused by auth, limits, budgets, validation
-- or policy leaves a usage record with its status, no tokens, and its reason code here.
ALTER TABLE usage_records ADD COLUMN error_code TEXT;
