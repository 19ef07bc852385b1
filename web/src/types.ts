// Shapes of the admin API's answers (as lowart sends them).

export interface Limits {
  rpm: number | null;
  tpm: number | null;
  max_parallel: number | null;
  budget_tokens: number | null;
  budget_cost: number | null;
  budget_period: string | null;
}

export interface Team extends Limits {
  id: string;
  name: string;
  created_at: number;
  updated_at: number;
  agents?: string[];
  tools?: string[];
}

export interface User {
  id: string;
  name: string;
  role: string;
  team_id: string | null;
  created_at: number;
  updated_at: number;
}

export interface Key extends Limits {
  id: string;
  name: string;
  key_prefix: string;
  role: string;
  team_id: string | null;
  user_id: string | null;
  models: string[];
  expires_at: number | null;
  created_at: number;
  revoked_at: number | null;
  permissions?: string[];
  agents?: string[];
  tools?: string[];
  parent_id?: string | null;
}

export interface CreatedKey extends Key {
  key: string;
}

export interface Provider {
  name: string;
  kind: string;
  base_url: string;
  api_key_set: boolean;
  source: string;
  settings: Record<string, unknown>;
}

export interface Deployment {
  provider: string;
  model: string;
  priority: number;
  weight: number;
}

export interface Model {
  name: string;
  deployments: Deployment[];
  source: string;
}

export interface Breaker {
  deployment: string;
  provider: string;
  model: string;
  state: string;
  window_requests: number;
  window_failures: number;
  inflight: number;
  latency_ewma_seconds: number;
}

export interface Price {
  model: string;
  input_per_1m: number;
  output_per_1m: number;
  cached_input_per_1m: number;
  per_request: number;
  per_image: number;
  version: number;
  updated_at: number;
  tiers: unknown[];
}

export interface UsageRow {
  [group: string]: string | number;
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  cached_tokens: number;
  errors: number;
  cost: number;
}

export interface JobFile {
  name: string;
  url: string;
  bytes: number;
  content_type: string;
}

export interface Job {
  id: string;
  model: string;
  status: string;
  progress: number | null;
  error: string | null;
  files: JobFile[];
  created_at: number;
  finished_at: number | null;
  cost?: number;
}

export interface McpServer {
  name: string;
  command: string;
  args: string[];
  env_keys: string[];
  cwd: string;
  created_at: number;
  state: string;
  pid: number;
  restarts: number;
  last_error: string;
  protocol_version: string;
  tools: string[];
}

export interface McpPolicy {
  id: string;
  tool: string;
  policy: string;
  team: string | null;
  key_id: string | null;
  created_at: number;
}

export interface Approval {
  approval_id: string;
  tool: string;
  arguments: unknown;
  key_id: string;
  team_id: string;
  session_id: string;
  status: string;
  scope: string;
  decided_by: string;
  result: unknown;
  error: unknown;
  created_at: number;
  decided_at: number | null;
}

export interface AgentSkill {
  id: string;
  name: string;
  description: string;
  tags: string[];
}

export interface Agent {
  name: string;
  description: string;
  skills: AgentSkill[];
  delivery: string;
  url: string;
  push_url: string;
  key_id: string;
  live: boolean;
  last_seen_ms: number;
  load: number;
  queued: number;
}

export interface DeadLetter {
  task: {
    id?: string;
    contextId?: string;
    status?: { state?: string; timestamp?: string };
    history?: { parts?: { kind?: string; text?: string }[] }[];
  };
  agent: string;
  attempts: number;
  last_error: string;
}

export interface Script {
  name: string;
  active: boolean;
  version: number;
  sha256: string;
  loaded_at: number;
  origin: string;
  hooks: string[];
  error: string | null;
  error_at?: number;
  source?: string;
}

export interface ScriptList {
  object: 'list';
  dir: string;
  data: Script[];
  files: { name: string; bytes: number }[];
}

export interface V1Model {
  id: string;
  display_name?: string;
}

/** GET /admin/agents/tasks: a task not finished yet, with its delivery state. */
export interface OpenTask extends DeadLetter {
  skill: string;
  delivery: string;
  lease_until_ms: number;
}

/** GET /admin/audit: one change, newest first. `actor` is the key id ("master" for the master key). */
export interface AuditEntry {
  id: number;
  ts_ms: number;
  actor: string;
  action: string;
  target: string | null;
  detail: unknown;
}

/** GET /admin/logs: one deployment tried for a request, in order ("breaker_open": skipped, no status or ms). */
export interface LogAttempt {
  deployment: string;
  /** "200", "500", "429", "timeout", "reset", "dns_error", "script", "breaker_open", ... */
  outcome: string;
  status?: number;
  ms?: number;
}

/** GET /admin/logs, /admin/logs/{request_id}: one request (refused ones included). */
export interface LogRow {
  ts_ms: number;
  request_id: string;
  key_id: string | null;
  team_id: string | null;
  user_id: string | null;
  route: string;
  model: string | null;
  deployment: string | null;
  status: number;
  error_code: string | null;
  stream: boolean;
  latency_ms: number;
  ttfb_ms: number;
  prompt_tokens: number;
  completion_tokens: number;
  cached_tokens: number;
  cost: number;
  usage_source: string;
  client_ip: string | null;
  user_agent: string | null;
  attempts: LogAttempt[];
}

/** GET /admin/logs: a page, newest first; `next_cursor` is passed as `cursor` for the next. */
export interface LogPage {
  object: 'list';
  data: LogRow[];
  has_more: boolean;
  next_cursor: string | null;
}
