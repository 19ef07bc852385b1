#pragma once
// What the network side reads without sending a message: immutable snapshots that
// their owning actors publish, and the usage queue that the persistence actor drains.
// No CAF or Asio here; this header is cheap to include.
//
// Ownership: every snapshot is written only by its owning actor (keys: persistence;
// routes: router) and read by any thread. A reader keeps the shared_ptr it loaded
// for the length of one request, so a publish never pulls data from under it.

#include "actors/limits/fleet.hpp"
#include "actors/limits/limiter.hpp"
#include "config/config.hpp"
#include "core/crypto.hpp"
#include "core/metrics.hpp"
#include "core/tokenizer.hpp"
#include "scripting/script_table.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace boost::asio {
class io_context;
}
namespace lowart::net {
struct ui_bundle;
}

namespace lowart {

template <class T> class snapshot {
public:
  std::shared_ptr<const T> load() const { return ptr_.load(std::memory_order_acquire); }
  void publish(std::shared_ptr<const T> next) { ptr_.store(std::move(next), std::memory_order_release); }

private:
  std::atomic<std::shared_ptr<const T>> ptr_;
};

// --- keys --------------------------------------------------------------------------------------

struct key_entry {
  std::string id;
  std::string name;
  std::string hash;          ///< SHA-256 hex of the key
  std::string role = "user"; ///< admin | operator | viewer | user
  std::string team_id;
  std::string user_id;
  std::vector<std::string> models; ///< allowed models; empty means every model
  std::int64_t expires_at = 0;     ///< unix seconds; 0 = never
  limits lim;                      ///< the key's own limits (its team's are in key_table::teams)
  /// A self-made key (POST /v1/me/keys): the key that made it (the first of the chain),
  /// whose limits its requests count against too. "" for keys made through /admin.
  std::string parent_id;
  limits parent_lim; ///< the parent's limits, as they were when this snapshot was built

  /// Permissions beyond the role ("register_agents": may register agents through /v1/agents).
  std::vector<std::string> permissions;
  /// Allow lists like `models` (empty = no narrowing): agent names, and MCP servers or
  /// tools ("server" or "server__tool").
  std::vector<std::string> agents;
  std::vector<std::string> tools;
  bool log_bodies = false; ///< the request log keeps this key's bodies (its own or its team's setting)

  bool allows_model(std::string_view model) const { return listed(models, model); }
  bool has_permission(std::string_view p) const {
    for (const auto& x : permissions)
      if (x == p) return true;
    return false;
  }

  /// An empty allow list allows everything; else `name` must be on it.
  static bool listed(const std::vector<std::string>& list, std::string_view name) {
    if (list.empty()) return true;
    for (const auto& m : list)
      if (m == name) return true;
    return false;
  }
  /// A tool allow list names servers ("fs") or single tools ("fs__read_file").
  static bool tool_listed(const std::vector<std::string>& list, std::string_view tool) {
    if (list.empty()) return true;
    auto server = tool.substr(0, tool.find("__"));
    for (const auto& m : list)
      if (m == tool || m == server) return true;
    return false;
  }
};

/// A team's allow lists (every team, also those without limits).
struct team_entry {
  std::string id, name;
  std::vector<std::string> agents, tools;
};

/// Permission names a key may carry.
inline bool known_permission(std::string_view p) {
  return p == "register_agents";
}

/// Active (not revoked) keys by hash.
struct key_table {
  std::unordered_map<std::string, std::shared_ptr<const key_entry>> by_hash;
  std::unordered_map<std::string, std::shared_ptr<const key_entry>> by_id;
  std::unordered_map<std::string, limits> teams;         ///< team id -> limits shared by its keys
  std::unordered_map<std::string, team_entry> team_info; ///< team id -> allow lists

  std::shared_ptr<const key_entry> find_id(std::string_view id) const {
    auto it = by_id.find(std::string(id));
    return it == by_id.end() ? nullptr : it->second;
  }
  const team_entry* team(std::string_view id) const {
    auto it = team_info.find(std::string(id));
    return it == team_info.end() ? nullptr : &it->second;
  }
  /// May `key` use the agent `name` by its own and its team's allow lists?
  bool allows_agent(const key_entry& key, std::string_view name) const {
    if (!key_entry::listed(key.agents, name)) return false;
    const auto* t = key.team_id.empty() ? nullptr : team(key.team_id);
    return !t || key_entry::listed(t->agents, name);
  }
  /// ... and the MCP tool "server__tool"?
  bool allows_tool(const key_entry& key, std::string_view tool) const {
    if (!key_entry::tool_listed(key.tools, tool)) return false;
    const auto* t = key.team_id.empty() ? nullptr : team(key.team_id);
    return !t || key_entry::tool_listed(t->tools, tool);
  }
};

/// The limit subjects a key's requests count against: the key itself, the key that made
/// it (a self-made key shares its maker's counters, so minting keys multiplies nothing),
/// and its team. Holds the subject names the refs point at: keep it in place while used.
class key_subjects {
public:
  key_subjects(const key_table* keys, const key_entry& key) {
    if (key.lim.any()) list.push_back({ids_[0] = "key:" + key.id, &key.lim});
    if (!key.parent_id.empty() && key.parent_lim.any())
      list.push_back({ids_[1] = "key:" + key.parent_id, &key.parent_lim});
    if (!key.team_id.empty() && keys)
      if (auto t = keys->teams.find(key.team_id); t != keys->teams.end())
        list.push_back({ids_[2] = "team:" + key.team_id, &t->second});
  }
  key_subjects(const key_subjects&) = delete;
  key_subjects& operator=(const key_subjects&) = delete;

  std::vector<rate_limiter::subject_ref> list;

private:
  std::string ids_[3];
};

/// Token prices (currency units per 1M tokens) from a volume threshold on.
struct price_tier {
  std::int64_t above_tokens = 0; ///< a team's tokens for the model this month
  double input_per_1m = 0;
  double output_per_1m = 0;
  double cached_input_per_1m = 0;
};

/// Prices per model with their version; `tiers` (ascending) replace the base token
/// prices once a team's monthly volume for the model passes their threshold.
struct price {
  double input_per_1m = 0;
  double output_per_1m = 0;
  double cached_input_per_1m = 0;
  double per_request = 0;
  std::int64_t version = 0;
  std::vector<price_tier> tiers;
  double per_image = 0; ///< background jobs: per image (or other output file) produced

  /// Cost of one request at a team's monthly `volume` so far; cached prompt tokens are
  /// billed at the cached price.
  double cost(std::int64_t prompt, std::int64_t completion, std::int64_t cached, std::int64_t volume = 0) const {
    double in = input_per_1m, out = output_per_1m, cin = cached_input_per_1m;
    for (const auto& t : tiers)
      if (volume >= t.above_tokens) {
        in = t.input_per_1m;
        out = t.output_per_1m;
        cin = t.cached_input_per_1m;
      }
    auto fresh = prompt > cached ? prompt - cached : 0;
    return (static_cast<double>(fresh) * in + static_cast<double>(cached) * cin +
            static_cast<double>(completion) * out) /
               1e6 +
           per_request;
  }
};

/// Each team's tokens per model in the current UTC month, for volume tiers. Seeded
/// from usage_records at start; updated as requests finish.
class volume_tracker {
public:
  /// The team's volume before this request, then adds `tokens` to it.
  std::int64_t take(const std::string& team, const std::string& model, std::int64_t tokens, std::int64_t now_ms) {
    std::lock_guard guard{mutex_};
    roll(now_ms);
    auto& v = volume_[team + '\x1f' + model];
    auto before = v;
    v += tokens;
    return before;
  }
  void seed(const std::string& team, const std::string& model, std::int64_t tokens, std::int64_t now_ms) {
    std::lock_guard guard{mutex_};
    roll(now_ms);
    volume_[team + '\x1f' + model] = tokens;
  }

private:
  void roll(std::int64_t now_ms) {
    if (now_ms >= month_start_ && now_ms < month_end_) return;
    month_start_ = rate_limiter::period_start("month", now_ms);
    month_end_ = rate_limiter::period_end("month", now_ms);
    volume_.clear();
  }
  std::mutex mutex_;
  std::int64_t month_start_ = 0, month_end_ = 0;
  std::unordered_map<std::string, std::int64_t> volume_;
};

struct price_table {
  std::unordered_map<std::string, price> by_model;
};

// --- routes ------------------------------------------------------------------------------------

/// Where a provider's base_url points, split once at publish time.
struct upstream_target {
  bool tls = false;
  std::string host; ///< for SNI, certificate checks and the Host header
  std::uint16_t port = 0;
  std::string base_path;   ///< "/v1" of https://api.openai.com/v1 (no trailing slash)
  std::string host_header; ///< host, or host:port when the port is not the default
  std::string pool_key;    ///< identifies interchangeable connections
};

/// Live counters of one deployment: written by requests, read by its provider actor.
struct deployment_stats {
  std::atomic<std::int64_t> inflight{0};
  std::atomic<std::int64_t> requests{0};
  std::atomic<std::int64_t> latency_us_total{0};
  std::atomic<std::int64_t> latency_ewma_us{0}; ///< published by the provider actor
};

enum class breaker_mode : int { closed = 0, open = 1, half_open = 2 };

/// The hot-path face of a deployment's circuit breaker. Requests read `mode` and record
/// outcomes in one-second buckets with relaxed atomics; the breaker actor owns every
/// transition (it is told only about failures and probe results, never about each
/// success, so a healthy deployment costs no messages).
class breaker_control {
public:
  static constexpr int buckets = 64;

  breaker_mode mode() const { return static_cast<breaker_mode>(mode_.load(std::memory_order_acquire)); }
  void set_mode(breaker_mode m) { mode_.store(static_cast<int>(m), std::memory_order_release); }

  /// Whether a request may go to this deployment now; in half-open, takes one probe.
  /// `probe` tells the caller to report the outcome as a probe.
  bool admit(bool& probe) {
    probe = false;
    switch (mode()) {
    case breaker_mode::closed:
      return true;
    case breaker_mode::open:
      return false;
    case breaker_mode::half_open: {
      auto left = probes_left_.load(std::memory_order_relaxed);
      while (left > 0) {
        if (probes_left_.compare_exchange_weak(left, left - 1, std::memory_order_acq_rel)) {
          probe = true;
          return true;
        }
      }
      return false;
    }
    }
    return true;
  }
  void allow_probes(int n) { probes_left_.store(n, std::memory_order_release); }
  /// A probe that decided nothing (no answer: the request's deadline, the client gone)
  /// gives its place back, while the breaker is still half-open.
  void return_probe() {
    if (mode() == breaker_mode::half_open) probes_left_.fetch_add(1, std::memory_order_acq_rel);
  }

  /// Records one outcome in the bucket of second `now_s`.
  void record(std::int64_t now_s, bool failed) {
    auto& b = window_[static_cast<std::size_t>(now_s % buckets)];
    if (b.second.load(std::memory_order_relaxed) != now_s) {
      b.ok.store(0, std::memory_order_relaxed);
      b.failed.store(0, std::memory_order_relaxed);
      b.second.store(now_s, std::memory_order_relaxed);
    }
    (failed ? b.failed : b.ok).fetch_add(1, std::memory_order_relaxed);
  }

  /// Outcomes of the last `seconds` seconds up to `now_s`.
  void totals(std::int64_t now_s, int seconds, std::int64_t& ok, std::int64_t& failed) const {
    ok = failed = 0;
    for (const auto& b : window_) {
      auto s = b.second.load(std::memory_order_relaxed);
      if (s > now_s - seconds && s <= now_s) {
        ok += b.ok.load(std::memory_order_relaxed);
        failed += b.failed.load(std::memory_order_relaxed);
      }
    }
  }
  void clear() {
    for (auto& b : window_)
      b.second.store(-1, std::memory_order_relaxed);
  }

  /// Set by the router: tells the breaker actor (probe?, success?). Called on failures
  /// and on probe outcomes only.
  std::function<void(bool probe, bool success)> report;

private:
  struct bucket {
    std::atomic<std::int64_t> second{-1};
    std::atomic<std::int64_t> ok{0};
    std::atomic<std::int64_t> failed{0};
  };
  std::atomic<int> mode_{0};
  std::atomic<int> probes_left_{0};
  std::array<bucket, buckets> window_;
};

struct deployment {
  std::string id; ///< "provider/model": the metrics label
  std::string provider;
  std::string upstream_model; ///< what the upstream is asked for
  int priority = 0;
  int weight = 1;
  std::shared_ptr<const config::provider_config> settings; ///< kind, key, timeouts, TLS
  upstream_target target;
  std::shared_ptr<deployment_stats> stats;
  std::shared_ptr<breaker_control> breaker;
  metrics::histogram upstream_duration;
};

struct model_route {
  std::string name;
  /// Sorted by priority (stable within one priority, so config order breaks ties).
  std::vector<std::shared_ptr<const deployment>> deployments;
  std::vector<std::string> fallbacks; ///< models tried after every deployment failed
  enum class balance { weighted, least_inflight, latency } balancing = balance::weighted;
  int retries = 0;
  int retry_backoff_ms = 100;
  int max_retry_wait_ms = 2000;
  int timeout_ms = 0;         ///< 0: the provider's total_timeout_ms
  int connect_timeout_ms = 0; ///< 0: the provider's values
  int first_byte_timeout_ms = 0;
  int idle_timeout_ms = 0;
  metrics::counter fallbacks_used; ///< gateway_fallbacks_total{model}
  limits lim;                      ///< limits of the model as a whole (rpm, tpm, max_parallel)
  metrics::counter prompt_tokens;
  metrics::counter completion_tokens;
  metrics::counter cached_tokens;
  metrics::counter cost;   ///< gateway_cost_total{model}
  std::string script;      ///< Lua hooks of this model ("" = none)
  std::string workflow;    ///< comfyui: the workflow template file
  bool log_bodies = false; ///< the request log keeps its requests' bodies
};

struct route_table {
  std::unordered_map<std::string, model_route> models;
  std::vector<std::string> names; ///< sorted, for /v1/models
  /// Which failure classes count for breakers (config [breaker] failure_on).
  bool fail_on_connect = true, fail_on_timeout = true, fail_on_5xx = true, fail_on_429 = true,
       fail_on_mid_stream = true;
  /// Some model or provider names a script: requests carry their headers to the hooks.
  bool any_script = false;
  /// Every deployment once, for /admin/breakers.
  std::vector<std::shared_ptr<const deployment>> all_deployments;
};

/// Parses an http(s) base URL; false when it is not one.
bool parse_upstream(const std::string& url, upstream_target& out);

// --- usage -------------------------------------------------------------------------------------

struct usage_record {
  std::string request_id;
  std::int64_t ts_ms = 0;
  std::string key_id;
  std::string route; ///< chat | embeddings
  std::string model;
  std::string deployment;
  int status = 0;
  bool stream = false;
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t cached_tokens = 0;
  double latency_ms = 0;
  double cost = 0;
  std::int64_t price_version = 0;
  /// Where the token counts come from: "upstream" (its usage), "counted" (lowart's own
  /// count, exact for the model's tokenizer), "estimated" (lowart's count, part of it an
  /// estimate: tools, images, a tokenizer that is not public), "" (no tokens).
  std::string_view usage_source;
  /// A refused request (auth, limits, budgets, validation, policy): its reason code
  /// ("invalid_api_key", "rate_limit_exceeded", "model_not_allowed", ...); "" otherwise.
  std::string error_code;
  // The request log's part of the record (GET /admin/logs):
  std::string team_id, user_id; ///< the key's, when the request was made (or from `key`)
  /// The request's key (no copies of its team and user on the hot path): team_id and
  /// user_id are read from it when they are empty.
  std::shared_ptr<const key_entry> key;
  std::string_view team() const { return team_id.empty() && key ? std::string_view(key->team_id) : team_id; }
  std::string_view user() const { return user_id.empty() && key ? std::string_view(key->user_id) : user_id; }
  /// The deployments tried, in order, as a JSON array of {deployment, outcome, status,
  /// ms} ("breaker_open" outcomes were skipped); "" when exactly one attempt answered
  /// with the final status (the log shows that one from the record itself).
  std::string attempts;
  double ttfb_ms = 0;     ///< until the answer's head went to the client
  std::string client_ip;  ///< the peer (or a trusted proxy's X-Forwarded-For)
  std::string user_agent; ///< the client's User-Agent, at most 256 bytes
  /// Body capture (log_bodies): the client's request and the answer it got (a stream as
  /// the events relayed), each cut at [storage] body_capture_bytes; redacted when
  /// written. Both empty without capture.
  std::string request_body, response_body;
  bool captured = false;
};

/// Requests append, the persistence actor takes everything at each flush. A mutex
/// held for a vector push_back is far cheaper than one actor message per request.
/// Bounded: should the database refuse writes for long, the oldest records beyond
/// `max_rows` are dropped (and counted) rather than growing memory without end.
class usage_queue {
public:
  static constexpr std::size_t max_rows = 1'000'000;

  void push(usage_record&& r) {
    std::lock_guard guard{mutex_};
    if (items_.size() >= max_rows) {
      items_.erase(items_.begin(), items_.begin() + static_cast<long>(max_rows / 10));
      dropped_ += max_rows / 10;
    }
    items_.push_back(std::move(r));
  }
  /// Records dropped so far because the queue was full.
  std::size_t dropped() const {
    std::lock_guard guard{mutex_};
    return dropped_;
  }
  /// Everything queued. The queue goes on with room for about as many again, allocated
  /// here rather than grown by doubling under the requests' pushes.
  std::vector<usage_record> take() {
    std::vector<usage_record> out;
    out.reserve(expected_.load(std::memory_order_relaxed));
    std::lock_guard guard{mutex_};
    out.swap(items_);
    expected_.store(std::min(max_rows, std::max<std::size_t>(64, out.size() + out.size() / 2)),
                    std::memory_order_relaxed);
    return out;
  }
  std::size_t size() const {
    std::lock_guard guard{mutex_};
    return items_.size();
  }

private:
  mutable std::mutex mutex_;
  std::vector<usage_record> items_;
  std::size_t dropped_ = 0;
  std::atomic<std::size_t> expected_{64};
};

// --- MCP ---------------------------------------------------------------------------------------

/// A registered stdio MCP server as stored (env already opened).
struct mcp_server_spec {
  std::string name;
  std::string command;
  std::vector<std::string> args;
  std::vector<std::pair<std::string, std::string>> env;
  std::vector<std::string> inherit_env; ///< lowart's variables passed on besides the allowlist
  std::string cwd;
  bool operator==(const mcp_server_spec&) const = default;
};

struct mcp_policy {
  std::string tool;   ///< "server__tool"
  std::string policy; ///< auto | confirm | deny
  std::string team_id;
  std::string key_id;
};

/// A session-scoped approval: this key's calls of this tool in this session run.
struct mcp_grant {
  std::string tool;
  std::string key_id;
  std::string session_id;
  std::int64_t expires_at = 0; ///< unix seconds
};

/// Servers, policies and grants as stored (persistence publishes it after each change).
struct mcp_table {
  std::vector<mcp_server_spec> servers;
  std::vector<mcp_policy> policies;
  std::vector<mcp_grant> grants;

  /// The policy of `tool` for a caller: a key's own policy wins over its team's, which
  /// wins over the tool's global one; `fallback` when none is set.
  std::string policy_for(std::string_view tool, std::string_view key_id, std::string_view team_id,
                         const std::string& fallback) const {
    const mcp_policy* best = nullptr;
    int best_rank = -1;
    for (const auto& p : policies) {
      if (p.tool != tool) continue;
      int rank = -1;
      if (!p.key_id.empty())
        rank = p.key_id == key_id ? 2 : -1;
      else if (!p.team_id.empty())
        rank = p.team_id == team_id ? 1 : -1;
      else
        rank = 0;
      if (rank > best_rank) {
        best_rank = rank;
        best = &p;
      }
    }
    return best ? best->policy : fallback;
  }
  bool granted(std::string_view tool, std::string_view key_id, std::string_view session_id, std::int64_t now_s) const {
    if (session_id.empty()) return false;
    for (const auto& g : grants)
      if (g.tool == tool && g.key_id == key_id && g.session_id == session_id && g.expires_at > now_s) return true;
    return false;
  }
};

/// What the MCP actors report about their servers (GET /admin/mcp, tool listings).
struct mcp_server_live {
  std::string state = "starting"; ///< starting | ready | restarting | failed
  int pid = 0;
  int restarts = 0;
  std::string last_error;
  std::string protocol_version;
  /// The server's tools as it listed them: (tool name, the tool object as JSON).
  std::vector<std::pair<std::string, std::string>> tools;
};
struct mcp_live_table {
  std::map<std::string, mcp_server_live> servers;
};

/// Server-sent-event responses that actors write to (A2A message/stream, agent
/// subscriptions): the HTTP side registers a sink under an id and names the id in its
/// request; the actor emits chunks to it. A sink posts to its connection's thread.
class stream_registry {
public:
  using sink = std::function<bool(std::string chunk, bool last)>; ///< false: the client is gone
  void add(const std::string& id, sink s) {
    std::lock_guard guard{mutex_};
    sinks_[id] = std::move(s);
  }
  void remove(const std::string& id) {
    sink gone;
    std::lock_guard guard{mutex_};
    if (auto it = sinks_.find(id); it != sinks_.end()) {
      gone = std::move(it->second); // destroyed after the lock is released
      sinks_.erase(it);
    }
  }
  /// Drops every sink (shutdown, while the I/O threads still run).
  void clear() {
    std::unordered_map<std::string, sink> gone;
    std::lock_guard guard{mutex_};
    gone.swap(sinks_);
  }
  /// Sends one chunk (the last one ends the response); false when the stream is gone.
  bool emit(const std::string& id, std::string chunk, bool last = false) {
    sink s;
    {
      std::lock_guard guard{mutex_};
      auto it = sinks_.find(id);
      if (it == sinks_.end()) return false;
      s = it->second;
      if (last) sinks_.erase(it);
    }
    return s(std::move(chunk), last);
  }

private:
  std::mutex mutex_;
  std::unordered_map<std::string, sink> sinks_;
};

/// Everything both worlds share. Created by main before either starts.
struct gateway_state {
  explicit gateway_state(config::gateway_config c, std::string path = {})
      : config(std::move(c)), config_path(std::move(path)) {
    routing.publish(std::make_shared<const config::gateway_config>(config));
    catalog.publish(std::make_shared<const config::gateway_config>());
    prices.publish(std::make_shared<const price_table>());
    mcp.publish(std::make_shared<const mcp_table>());
    mcp_live.publish(std::make_shared<const mcp_live_table>());
    scripts.publish(std::make_shared<const scripting::script_table>());
  }
  /// The configuration the process started with. `server` and `storage` settings
  /// apply for the whole run (listeners and the database are not re-opened).
  const config::gateway_config config;
  /// lowart.toml, watched by the config actor ("" when started without a file).
  const std::string config_path;
  /// The latest valid configuration: providers and models come from here and change
  /// at run time when the file changes (published by the config actor).
  snapshot<config::gateway_config> routing;
  /// Providers and models created or changed through the admin API (persistence
  /// publishes it, provider keys already opened). By name, these win over `routing`.
  snapshot<config::gateway_config> catalog;
  /// Seals and opens provider keys at rest; set by main before the actors start.
  crypto::keyring keyring;
  snapshot<key_table> keys;
  snapshot<route_table> routes;
  usage_queue usage;
  snapshot<price_table> prices;
  volume_tracker volumes;
  snapshot<mcp_table> mcp;                   ///< published by persistence
  snapshot<mcp_live_table> mcp_live;         ///< published by the MCP manager actor
  snapshot<scripting::script_table> scripts; ///< published by the scripts actor
  stream_registry streams;                   ///< SSE responses written by actors (A2A)
  std::shared_ptr<const net::ui_bundle> ui;  ///< the web console's files (null: not built); set by main
  /// The one thread's io_context that MCP child processes use (owned by the runtime).
  boost::asio::io_context* mcp_io = nullptr;
  /// Counts tokens when an upstream reports no usage (null when the ranks are missing):
  /// o200k_base, and cl100k_base for the models tiktoken maps to it.
  std::shared_ptr<const bpe_tokenizer> tokenizer;
  std::shared_ptr<const bpe_tokenizer> tokenizer_cl100k;
  rate_limiter limiter;
  std::atomic<bool> ready{false};     ///< storage open, snapshots published
  std::atomic<bool> draining{false};  ///< SIGTERM seen: refuse new work
  std::atomic<bool> storage_ok{true}; ///< last database write succeeded
  /// Several replicas: limits, breakers and change broadcasts shared through Redis
  /// (null when cluster.redis_url is not set). Set by main before the actors start.
  std::shared_ptr<lowart::fleet> fleet;

  /// Why the database last failed ("" while it works), for /readyz.
  void set_storage_problem(std::string text) {
    std::lock_guard guard{problem_mutex_};
    storage_problem_ = std::move(text);
    storage_ok.store(storage_problem_.empty(), std::memory_order_relaxed);
  }
  std::string storage_problem() const {
    std::lock_guard guard{problem_mutex_};
    return storage_problem_;
  }

private:
  mutable std::mutex problem_mutex_;
  std::string storage_problem_;
};

} // namespace lowart
