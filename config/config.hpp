#pragma once
// lowart's configuration: lowart.toml, then environment overrides. A plain value type
// with no TOML or Boost in sight, so any component can include it cheaply.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lowart::config {

enum class listen_mode { tcp, uds, both };

struct server_config {
  std::string listen = "127.0.0.1:3000";        ///< host:port of the TCP listener
  listen_mode mode = listen_mode::tcp;          ///< LISTEN_MODE: TCP | UDS | BOTH
  std::string uds_path = "lowart.sock";         ///< LOWART_UDS_PATH
  int io_threads = 1;                           ///< Asio threads (one io_context each)
  int actor_threads = 1;                        ///< CAF scheduler workers
  std::size_t max_body_bytes = 8 * 1024 * 1024; ///< larger request bodies get 413
  std::size_t max_header_bytes = 16 * 1024;     ///< larger request heads get 431
  int header_timeout_ms = 30'000;               ///< time to read a request head and body
  int idle_timeout_ms = 120'000;                ///< keep-alive idle time between requests
  int drain_timeout_ms = 30'000;                ///< SIGTERM: how long in-flight requests may finish
  int max_connections = 10'000;                 ///< accepted connections beyond this are closed
  int send_buffer_bytes = 256 * 1024;           ///< SO_SNDBUF of client sockets (0: the kernel's autotuning)
  std::string master_key;                       ///< LOWART_MASTER_KEY: the admin bearer token
  std::string log_level = "info";               ///< LOWART_LOG
  std::string ui_dir = "web/dist";              ///< LOWART_UI_DIR: the built web console, served at /ui
  /// LOWART_PUBLIC_URL: the scheme, host and optional path prefix clients reach lowart at
  /// ("https://gw.example.com"); agent cards name it. "" = from the request's Host header.
  std::string public_url;
  /// Peers (IP addresses) whose X-Forwarded-Proto / X-Forwarded-Host are believed.
  std::vector<std::string> trusted_proxies;
};

struct storage_config {
  std::string sqlite_path = "lowart.db"; ///< LOWART_DB
  /// Write-behind interval of usage records. Short on purpose: a flush is one
  /// transaction, and short batches keep each burst of SQLite work (which competes
  /// with the I/O threads on a small machine) under a millisecond.
  int usage_flush_ms = 25;
  /// A PostgreSQL URL (postgresql://user@host:port/db; LOWART_DATABASE_URL). When set,
  /// lowart stores everything there instead of in `sqlite_path`: replicas share it.
  std::string url;
  /// Usage records the database did not take (it is down) wait here, one JSON line
  /// each, and are written when it answers again ("" = beside sqlite_path).
  std::string spool_path;
  /// Stored responses (POST /v1/responses with store) are deleted this long after they
  /// were made; the persistence actor looks for them every min(ttl, 60 s).
  int responses_ttl_s = 30 * 86'400;
  /// Usage records (the request log, GET /admin/logs, and what /admin/usage reports) are
  /// deleted this long after the request; 0 keeps them. Looked for every min(ttl, 60 s).
  int usage_ttl_s = 0;
  /// Body capture (a model's, key's or team's log_bodies): at most this many bytes of a
  /// request and of its answer are kept, with these JSON fields' values redacted (any
  /// depth, names compared without case).
  int body_capture_bytes = 65'536;
  std::vector<std::string> redact_fields = {"api_key",   "apikey",       "password",      "secret",
                                            "token",     "access_token", "refresh_token", "authorization",
                                            "x-api-key", "client_secret"};
  /// Captured bodies are deleted this long after the request (they are the bulk).
  int body_ttl_s = 7 * 86'400;
};

/// Several replicas: shared limits, breakers and change broadcasts through Redis.
struct cluster_config {
  std::string redis_url; ///< redis://[:password@]host:port (LOWART_REDIS_URL); "" = one replica alone
  /// Redis down: "open" keeps serving with this replica's own limits (each replica then
  /// allows the full limit), "closed" refuses limited requests with 503.
  std::string on_redis_down = "open";
  int timeout_ms = 500;          ///< a Redis command unanswered this long counts as Redis down
  std::string replica_id;        ///< names this replica in logs, broadcasts and owned work ("" = host:listen)
  std::string prefix = "lowart"; ///< Redis key prefix (several fleets on one Redis)
};

/// What a request is assumed to use before it runs: reserved from TPM limits and budgets
/// at admission, settled to the real usage when it ends.
struct limits_config {
  /// Completion tokens assumed for a chat or messages request that states no max_tokens
  /// (nor max_completion_tokens); 0 reserves the prompt alone.
  std::int64_t default_max_tokens = 1024;
};

struct provider_config {
  std::string name;
  std::string kind = "openai"; ///< openai | anthropic | comfyui
  std::string base_url;        ///< e.g. https://api.openai.com/v1
  std::string api_key;         ///< resolved: from api_key or the api_key_env variable
  std::string api_key_env;     ///< where api_key came from, if from the environment
  std::string ca_file;         ///< extra trust anchors for TLS upstreams
  bool verify_tls = true;
  bool include_usage = true; ///< upstream understands stream_options.include_usage
  bool responses = false;    ///< kind openai: the upstream serves /responses (the Responses API is passed through)
  int connect_timeout_ms = 5'000;
  int first_byte_timeout_ms = 120'000; ///< request sent -> response head
  int idle_timeout_ms = 120'000;       ///< between two reads of a streamed body
  int total_timeout_ms = 600'000;      ///< whole upstream exchange
  int max_idle_connections = 256;      ///< per I/O thread
  std::string script;                  ///< Lua hooks run on this provider's requests ([scripts] dir)

  bool operator==(const provider_config&) const = default;
};

struct deployment_config {
  std::string provider;
  std::string model; ///< what the upstream is asked for
  int priority = 0;  ///< lower first
  int weight = 1;    ///< share within one priority
};

struct model_config {
  std::string name; ///< what clients ask for
  std::vector<deployment_config> deployments;
  /// Models tried, in order, when every deployment of this one failed.
  std::vector<std::string> fallbacks;
  /// Choice within one priority: weighted (random by weight) | least_inflight | latency
  /// (power of two choices on the deployments' EWMA latency).
  std::string balancing = "weighted";
  int retries = 0;              ///< extra attempts on the same deployment before moving on
  int retry_backoff_ms = 100;   ///< first backoff; doubles per retry, with jitter
  int max_retry_wait_ms = 2000; ///< a longer retry-after moves on instead of waiting
  // Per-model timeouts; 0 means the provider's value.
  int timeout_ms = 0; ///< total deadline for the request, all attempts included
  int connect_timeout_ms = 0;
  int first_byte_timeout_ms = 0;
  int idle_timeout_ms = 0;
  // Limits of the model as a whole, over every key (0 = none).
  std::int64_t rpm = 0;
  std::int64_t tpm = 0;
  std::int64_t max_parallel = 0;
  std::string script;      ///< Lua hooks run on this model's requests (a file in [scripts] dir)
  std::string workflow;    ///< comfyui models: the workflow template (a JSON file in [scripts] dir)
  bool log_bodies = false; ///< the request log keeps this model's request and response bodies
};

/// Circuit breaker of every deployment (one breaker actor each).
struct breaker_config {
  int window_s = 10;         ///< sliding time window of outcomes
  double failure_rate = 0.5; ///< open at or above this share of failures ...
  int min_requests = 5;      ///< ... once the window holds this many outcomes
  int open_ms = 30'000;      ///< how long an open breaker sends nothing
  int half_open_probes = 1;  ///< requests let through to test a recovering deployment
  /// Failure classes that count: connect_error, timeout, 5xx, 429, mid_stream.
  std::vector<std::string> failure_on = {"connect_error", "timeout", "5xx", "429", "mid_stream"};
};

/// One entry of [mcp] allowed_commands: a command (as given, or its base name) and what
/// it may be started with.
struct mcp_command_rule {
  std::string command;
  /// Argument patterns, one per argument (`*` and `?` globs; a last "**" takes any rest).
  /// Empty with `plain`: any arguments, except that an interpreter (node, python3, a
  /// shell, ...) must be given a script file first: no inline code, no flags before it.
  std::vector<std::string> args;
  bool plain = true; ///< a bare string in the list
  bool operator==(const mcp_command_rule&) const = default;
};

/// MCP tool servers (stdio children) and their governance.
struct mcp_config {
  /// What a registered stdio server may run. Package runners (npx, uvx, ...) can be
  /// allowed only with their packages named; plain interpreters only with a script file.
  /// This list lives in lowart.toml alone: no API key can widen it.
  std::vector<mcp_command_rule> allowed_commands = {
      {"node", {}, true},
      {"python3", {}, true},
      {"npx", {"-y", "@modelcontextprotocol/server-filesystem", "**"}, false},
      {"npx", {"-y", "@modelcontextprotocol/server-everything", "**"}, false},
      {"npx", {"-y", "@modelcontextprotocol/server-memory", "**"}, false},
      {"uvx", {"mcp-server-fetch", "**"}, false},
      {"uvx", {"mcp-server-time", "**"}, false},
  };
  std::string default_policy = "auto"; ///< for tools without a policy: auto | confirm | deny
  int init_timeout_ms = 10'000;        ///< initialize handshake
  int call_timeout_ms = 60'000;        ///< one tools/call (then notifications/cancelled)
  int max_wait_ms = 60'000;            ///< longest a caller may wait for an approval (wait_ms)
  int session_grant_s = 3600;          ///< how long a session-scoped approval lasts
  int restart_max_backoff_ms = 30'000; ///< a crashed server restarts after 0.5 s, doubling up to this
};

/// Operator scripts (Lua hooks), watched for changes.
struct scripts_config {
  std::string dir = "scripts";                ///< where `script = "x.lua"` is looked up
  std::int64_t instructions = 1'000'000;      ///< budget of one hook call
  std::size_t memory_bytes = 8 * 1024 * 1024; ///< per Lua state (one per thread and script)
  int poll_ms = 500;                          ///< how often the directory is checked for changes
};

/// Background jobs (ComfyUI).
struct jobs_config {
  std::string dir = "lowart-data/jobs"; ///< output files, one directory per job
  int poll_ms = 1000;                   ///< how often a running job asks its backend
  int submit_attempts = 4;              ///< tries to hand a job to a backend before it fails
  int retry_backoff_ms = 500;           ///< first wait between tries, doubling
  int unreachable_ms = 30'000;          ///< a backend silent this long fails its running jobs
  int request_timeout_ms = 10'000;      ///< one HTTP exchange with a backend or webhook
  int ttl_s = 86'400;                   ///< finished jobs and their files are deleted after this
  int sweep_s = 60;                     ///< how often expired jobs are looked for
  int webhook_attempts = 5;             ///< deliveries of a completion webhook before giving up
  std::string webhook_secret;           ///< LOWART_WEBHOOK_SECRET: HMAC-SHA256 key of webhook signatures
  int sync_timeout_ms = 300'000;        ///< /v1/images/generations without async waits this long
};

/// The agent bus (A2A).
struct a2a_config {
  int ack_timeout_ms = 30'000; ///< a delivered task not acknowledged by then is delivered again
  int lease_ms = 60'000;       ///< an acknowledged task with no status report by then is delivered again
  /// Deliveries before a task goes to the dead letters. Between two, lowart waits
  /// retry_backoff_ms doubling up to retry_max_backoff_ms (each +-50 % jitter): with the
  /// defaults a task is tried for about four minutes.
  int max_attempts = 8;
  int retry_backoff_ms = 5'000;
  int retry_max_backoff_ms = 60'000;
  /// A task queued at a pulling agent that does not take it this long (or that stops being
  /// live) goes to another live agent with the skill; a task sent by name waits.
  int handout_ms = 30'000;
  /// A task no agent has taken by this long after it was sent fails ("no agent took it").
  int task_deadline_ms = 600'000;
  int max_wait_ms = 60'000;        ///< longest blocking message/send and long poll
  int live_ms = 30'000;            ///< a pulling agent seen this recently is live (for skill dispatch)
  int request_timeout_ms = 10'000; ///< one push delivery or remote agent call
  std::string push_secret;         ///< LOWART_A2A_SECRET: HMAC-SHA256 key of push deliveries
};

struct gateway_config {
  server_config server;
  mcp_config mcp;
  storage_config storage;
  std::vector<provider_config> providers;
  std::vector<model_config> models;
  breaker_config breaker;
  cluster_config cluster;
  limits_config limits;
  scripts_config scripts;
  jobs_config jobs;
  a2a_config a2a;
};

/// Reads a TOML file (or none, when `path` is empty) and applies the environment.
/// On error, `error` names the file position or field and the value is empty.
struct load_result {
  std::optional<gateway_config> config;
  std::string error;
};
load_result load(const std::string& path);

/// Parses TOML text (tests); `origin` names the source in error messages.
load_result parse(const std::string& toml_text, const std::string& origin);

/// Applies LOWART_LISTEN, LISTEN_MODE, LOWART_UDS_PATH, LOWART_DB, LOWART_MASTER_KEY,
/// LOWART_LOG, LOWART_IO_THREADS, LOWART_ACTOR_THREADS; returns an error text or "".
std::string apply_environment(gateway_config& cfg);

/// Cross-field checks (providers exist, kinds known, ...); returns an error or "".
std::string validate(gateway_config& cfg);

/// True for commands that fetch and run a package they are given (npx, uvx, ...).
bool package_runner(std::string_view command);
/// True for interpreters that can run inline code (node, python3, shells, ...).
bool interpreter(std::string_view command);

/// Whether [mcp] allowed_commands lets `command` run with `args` (a relative script path
/// is looked up in `cwd`, or lowart's directory when empty): "" when it does, else why
/// not, with `field` set to "command" or "args".
std::string check_mcp_command(const mcp_config& mcp, const std::string& command, const std::vector<std::string>& args,
                              const std::string& cwd, std::string& field);

/// Splits "host:port" ("[::1]:80" too); false when malformed.
bool split_host_port(const std::string& text, std::string& host, std::uint16_t& port);

} // namespace lowart::config
