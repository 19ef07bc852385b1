-- Teams, users, run-time providers and models, prices; limits on keys.

CREATE TABLE teams (
  id            TEXT PRIMARY KEY,
  name          TEXT NOT NULL UNIQUE,
  rpm           INTEGER,
  tpm           INTEGER,
  max_parallel  INTEGER,
  budget_tokens INTEGER,
  budget_cost   REAL,
  budget_period TEXT,                 -- day | month
  created_at    INTEGER NOT NULL,
  updated_at    INTEGER NOT NULL
);

CREATE TABLE users (
  id          TEXT PRIMARY KEY,
  name        TEXT NOT NULL UNIQUE,   -- login name or e-mail
  role        TEXT NOT NULL DEFAULT 'user',
  team_id     TEXT REFERENCES teams(id) ON DELETE SET NULL,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
);

-- Keys name their team by id from now on; the free-form 0001 column goes.
ALTER TABLE virtual_keys DROP COLUMN team;
ALTER TABLE virtual_keys ADD COLUMN team_id TEXT REFERENCES teams(id) ON DELETE SET NULL;
ALTER TABLE virtual_keys ADD COLUMN user_id TEXT REFERENCES users(id) ON DELETE SET NULL;
ALTER TABLE virtual_keys ADD COLUMN rpm INTEGER;
ALTER TABLE virtual_keys ADD COLUMN tpm INTEGER;
ALTER TABLE virtual_keys ADD COLUMN max_parallel INTEGER;
ALTER TABLE virtual_keys ADD COLUMN budget_tokens INTEGER;
ALTER TABLE virtual_keys ADD COLUMN budget_cost REAL;
ALTER TABLE virtual_keys ADD COLUMN budget_period TEXT;
CREATE INDEX virtual_keys_user ON virtual_keys(user_id);

-- Providers added or changed through the admin API. api_key is sealed with
-- AES-256-GCM (core/crypto.hpp): "lwenc:v1:<key id>:<base64 nonce|ciphertext|tag>",
-- bound to its row by the AAD "providers/<name>/api_key".
CREATE TABLE providers (
  name        TEXT PRIMARY KEY,
  kind        TEXT NOT NULL,
  base_url    TEXT NOT NULL,
  api_key     TEXT,
  settings    TEXT NOT NULL DEFAULT '{}',  -- JSON: timeouts, ca_file, verify_tls, include_usage
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
);

-- Models (routes) added or changed through the admin API.
CREATE TABLE models (
  name        TEXT PRIMARY KEY,
  deployments TEXT NOT NULL,               -- JSON array of {provider, model, priority, weight}
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
);

-- Prices per model in currency units per 1M tokens; every change bumps the version,
-- which usage records will carry.
CREATE TABLE prices (
  model                TEXT PRIMARY KEY,
  input_per_1m         REAL NOT NULL DEFAULT 0,
  output_per_1m        REAL NOT NULL DEFAULT 0,
  cached_input_per_1m  REAL NOT NULL DEFAULT 0,
  per_request          REAL NOT NULL DEFAULT 0,
  version              INTEGER NOT NULL DEFAULT 1,
  updated_at           INTEGER NOT NULL
);

CREATE INDEX audit_log_ts ON audit_log(ts_ms);
