-- Volume tiers: once a team's tokens for a model this month pass a tier's threshold, the
-- tier's prices apply. JSON array of {above_tokens, input_per_1m, output_per_1m,
-- cached_input_per_1m}, ascending.
ALTER TABLE prices ADD COLUMN tiers TEXT NOT NULL DEFAULT '[]';
