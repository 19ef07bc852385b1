#include "net/proxy.hpp"

#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "core/log.hpp"
#include "net/responses.hpp"
#include "net/sse.hpp"
#include "net/translate.hpp"
#include "net/usage_count.hpp"
#include "net/validate.hpp"
#include "net/worker.hpp"
#include "net/write_now.hpp"
#include "scripting/hooks.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/read.hpp>
#include <simdjson.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <random>

namespace lowart::net {

namespace {

/// One JSON parser per I/O thread (simdjson parsers are not thread-safe).
simdjson::dom::parser& thread_parser() {
  thread_local simdjson::dom::parser parser;
  return parser;
}

/// Cheap per-thread randomness for balancing and jitter; not for secrets.
std::uint64_t next_random() {
  thread_local std::uint64_t s = std::random_device{}() | 1ull;
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

/// Parses `text` with the thread's parser through a reused padded buffer (no allocation
/// once warm; simdjson reads past the end of what it is given).
simdjson::error_code parse_reused(std::string_view text, simdjson::dom::element& doc) {
  thread_local std::string buf;
  if (buf.capacity() > 1024 * 1024 && text.size() < 64 * 1024) std::string().swap(buf); // after a huge body
  buf.reserve(text.size() + simdjson::SIMDJSON_PADDING);
  buf.assign(text);
  return thread_parser().parse(buf.data(), buf.size(), false).get(doc);
}

bool contains(std::string_view hay, std::string_view needle) {
  return ::memmem(hay.data(), hay.size(), needle.data(), needle.size()) != nullptr;
}

/// What a hook handed back: the parts of a request, response or chunk it may change.
struct hook_answer {
  bool dropped = false;                                     ///< it returned nil (a chunk hook: drop the event)
  std::string body;                                         ///< "body" (or a chunk's "data") as JSON; "" when absent
  std::string text;                                         ///< "text": a raw (non-JSON) body
  std::vector<std::pair<std::string, std::string>> headers; ///< "headers" (unsafe ones skipped)
  std::string path;                                         ///< "path" (provider on_request: the upstream path)
  std::string event;                                        ///< "event" (chunk hooks: the SSE event name)
  int status = 0;                                           ///< "status" (response hooks)
};

bool header_token(std::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return false;
  return true;
}

/// Reads a hook's JSON answer; false when it is neither null nor an object.
bool read_hook_answer(std::string_view json, hook_answer& out) {
  simdjson::dom::element doc;
  if (parse_reused(json, doc) != simdjson::SUCCESS) return false;
  if (doc.is_null()) {
    out.dropped = true;
    return true;
  }
  simdjson::dom::object obj;
  if (doc.get_object().get(obj) != simdjson::SUCCESS) return false;
  simdjson::dom::element v;
  if (obj["body"].get(v) == simdjson::SUCCESS || obj["data"].get(v) == simdjson::SUCCESS)
    out.body = simdjson::minify(v);
  std::string_view sv;
  if (obj["text"].get_string().get(sv) == simdjson::SUCCESS) out.text = std::string(sv);
  if (obj["path"].get_string().get(sv) == simdjson::SUCCESS && !sv.empty() && sv.front() == '/' &&
      sv.find_first_of("\r\n ") == std::string_view::npos)
    out.path = std::string(sv);
  if (obj["event"].get_string().get(sv) == simdjson::SUCCESS && sv.find_first_of("\r\n") == std::string_view::npos)
    out.event = std::string(sv);
  std::int64_t status = 0;
  if (obj["status"].get_int64().get(status) == simdjson::SUCCESS && status >= 100 && status <= 599)
    out.status = static_cast<int>(status);
  simdjson::dom::object headers;
  if (obj["headers"].get_object().get(headers) == simdjson::SUCCESS)
    for (auto field : headers) {
      std::string_view value;
      if (field.value.get_string().get(value) != simdjson::SUCCESS) continue;
      // Framing stays lowart's business: a hook cannot set these or split a header.
      auto name = field.key;
      if (!header_token(name) || value.find_first_of("\r\n") != std::string_view::npos) continue;
      std::string lower(name);
      for (auto& c : lower)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (lower == "host" || lower == "content-length" || lower == "transfer-encoding" || lower == "connection")
        continue;
      out.headers.emplace_back(lower, value);
    }
  return true;
}

/// The headers a hook set as "name: value\r\n" lines: those it added or changed, not the
/// client's own that it handed back untouched (`original`: the JSON object it was given).
std::string changed_headers(const std::vector<std::pair<std::string, std::string>>& headers,
                            std::string_view original) {
  std::string out;
  if (headers.empty()) return out;
  simdjson::dom::parser parser; // not the thread's: its document may still be in use
  simdjson::dom::object before;
  bool have_before = !original.empty() && parser.parse(original).get_object().get(before) == simdjson::SUCCESS;
  for (const auto& [name, value] : headers) {
    std::string_view old;
    if (have_before && before[name].get_string().get(old) == simdjson::SUCCESS && old == value) continue;
    out.append(name).append(": ").append(value).append("\r\n");
  }
  return out;
}

/// "1a2f\r\n": the chunk-size line of chunked transfer encoding.
void append_chunk_size(std::string& out, std::size_t n) {
  char buf[20];
  int i = sizeof buf;
  buf[--i] = '\n';
  buf[--i] = '\r';
  do {
    buf[--i] = "0123456789abcdef"[n & 0xF];
    n >>= 4;
  } while (n);
  out.append(buf + i, sizeof buf - static_cast<std::size_t>(i));
}

/// The prompt of a body in `proto`'s shape (see count_prompt in net/usage_count.hpp).
own_count count_prompt(const bpe_tokenizer& tok, protocol proto, proxy_kind kind, std::string_view body,
                       std::string_view encoding) {
  simdjson::dom::element doc;
  if (parse_reused(body, doc) != simdjson::SUCCESS) return {};
  auto shape = kind == proxy_kind::embeddings ? prompt_shape::embeddings
               : proto == protocol::anthropic ? prompt_shape::anthropic_messages
                                              : prompt_shape::openai_chat;
  return count_prompt(tok, shape, doc, encoding);
}

protocol protocol_of(const deployment& dep) {
  return dep.settings->kind == "anthropic" ? protocol::anthropic : protocol::openai;
}

using deployment_ptr = std::shared_ptr<const deployment>;

/// Orders one priority group by the model's balancing policy.
void order_group(std::vector<deployment_ptr>& group, model_route::balance policy) {
  if (group.size() < 2) return;
  switch (policy) {
  case model_route::balance::least_inflight: {
    // Random start so ties spread, then fewest in flight first.
    std::rotate(group.begin(), group.begin() + static_cast<long>(next_random() % group.size()), group.end());
    std::stable_sort(group.begin(), group.end(), [](const auto& a, const auto& b) {
      return a->stats->inflight.load(std::memory_order_relaxed) < b->stats->inflight.load(std::memory_order_relaxed);
    });
    return;
  }
  case model_route::balance::latency: {
    // Power of two choices: of two random deployments, the lower EWMA goes first.
    auto i = next_random() % group.size();
    auto j = (i + 1 + next_random() % (group.size() - 1)) % group.size();
    auto ei = group[i]->stats->latency_ewma_us.load(std::memory_order_relaxed);
    auto ej = group[j]->stats->latency_ewma_us.load(std::memory_order_relaxed);
    std::swap(group[0], group[ei <= ej ? i : j]);
    return;
  }
  case model_route::balance::weighted: {
    // Weighted random order without replacement.
    for (std::size_t k = 0; k + 1 < group.size(); ++k) {
      std::uint64_t total = 0;
      for (std::size_t m = k; m < group.size(); ++m)
        total += static_cast<std::uint64_t>(group[m]->weight);
      auto pick = next_random() % total;
      for (std::size_t m = k; m < group.size(); ++m) {
        auto w = static_cast<std::uint64_t>(group[m]->weight);
        if (pick < w) {
          std::swap(group[k], group[m]);
          break;
        }
        pick -= w;
      }
    }
    return;
  }
  }
}

/// Why an attempt failed, for breakers, retries and fallback.
enum class failure_class { connect_error, timeout, status_5xx, status_429, mid_stream };

class proxy_call : public std::enable_shared_from_this<proxy_call> {
public:
  proxy_call(session_ptr client, request_context&& ctx, proxy_kind kind, std::string&& body,
             std::shared_ptr<responses::exchange> responses)
      : client_(std::move(client)), ctx_(std::move(ctx)), kind_(kind), responses_(std::move(responses)),
        client_proto_(kind == proxy_kind::messages ? protocol::anthropic : protocol::openai), body_(std::move(body)),
        retry_timer_(client_->worker().ioc) {}

  void start();

private:
  bool parse_request();
  bool read_body(simdjson::dom::object& obj);
  bool check_request(simdjson::dom::object& obj);
  /// Everything checked and reserved: pick a deployment and go.
  void admitted();
  /// The request's deadline, all attempts included (ms from its start).
  std::int64_t total_ms() const {
    return route_->timeout_ms ? route_->timeout_ms : candidates_.front()->settings->total_timeout_ms;
  }
  /// How long past its deadline a fleet reservation outlives a replica that died holding it.
  static constexpr std::int64_t reservation_margin_ms = 2000;
  /// What `prompt` and `completion` tokens of the requested model would cost at most
  /// (the dearest of its base and tier prices, cached input at the input price).
  double estimated_cost(std::int64_t prompt, std::int64_t completion) const;
  /// Fleet mode: asks Redis (true: the answer comes later through fleet_answer).
  bool ask_fleet(const std::vector<rate_limiter::subject_ref>& subjects, std::int64_t estimate);
  void fleet_answer(bool reached, const limit_decision& d);
  /// Redis did not answer: the policy (true: admitted by this replica's own limits).
  bool fleet_down();
  void refuse_limited();
  void add_candidates(const model_route& route);
  void next_candidate();
  void begin_attempt();
  bool build_upstream_request();
  /// The hook argument's common part: model, route, deployment, request id, key.
  void describe_call(json::object_writer& w) const;
  /// Runs `hook` of `script`; on a refusal or failure answers the client (true: go on).
  bool run_hook(const std::string& script, std::string_view hook, const std::string& argument, hook_answer& out);
  bool model_request_hook(simdjson::dom::object& obj);
  bool response_hooks(int& status, std::string& body, std::string& type, bool provider_stage);
  /// on_chunk of the provider and the model; false drops the event.
  bool chunk_hooks(sse_event& ev);
  void script_failed(std::string message, int status = 500);
  void acquire(bool fresh);
  void on_connection(connect_failure failure, std::string detail, upstream_ptr conn);
  void send_request();
  void read_header();
  void upstream_failed(beast::error_code ec, std::string_view during);
  void read_full_body();
  void on_full_body(beast::error_code ec);
  void read_stream();
  void on_stream_read(beast::error_code ec);
  void on_event(const sse_event& ev);
  bool has_content(const sse_event& ev);
  void on_anthropic_event(const sse_event& ev);
  void close_translation();
  void flush_to_client(bool done);
  void stream_broke(std::string_view message);
  void finish_stream();
  void client_gone();
  void attempt_failed(failure_class cls, error_kind kind, std::string message, std::string_view label,
                      std::string_view code, int retry_after_ms = 0);
  void give_up();
  void settle_attempt(std::string_view label, bool failed, bool breaker_counts);
  void finish_request(int status);
  std::string gateway_headers() const;
  std::string ratelimit_headers() const;
  void count_usage();
  /// The encoding of the current deployment's model ("" when tiktoken does not know it:
  /// o200k_base stands in, and lowart's counts are estimates), and its tokenizer (null
  /// without ranks); chosen when the attempt begins.
  std::string_view encoding() const { return encoding_; }
  const bpe_tokenizer* tokenizer() const { return tok_; }
  void choose_tokenizer() {
    const auto& state = client_->worker().state;
    encoding_ = encoding_for_model(dep_->upstream_model);
    tok_ = state.tokenizer_cl100k && encoding_ == "cl100k_base" ? state.tokenizer_cl100k.get() : state.tokenizer.get();
  }
  /// lowart's own count of the prompt as the current upstream gets it (the translated
  /// body when protocols differ), computed once per tokenizer and protocol.
  std::int64_t prompt_count() {
    auto tok = tokenizer();
    if (!tok) return 0;
    if (prompt_tok_ != tok || prompt_proto_ != up_proto_) {
      bool translated = up_proto_ != client_proto_ && translated_;
      prompt_count_ = count_prompt(*tok, up_proto_, kind_, translated ? *translated_ : body_, encoding());
      prompt_tok_ = tok;
      prompt_proto_ = up_proto_;
    }
    return prompt_count_.tokens;
  }
  /// lowart's count of the relayed completion (marks the usage as lowart's).
  std::int64_t count_completion();
  std::chrono::milliseconds remaining() const;
  /// A timeout of `ms`, shortened to the request's deadline (and noted when it was).
  std::chrono::milliseconds capped(int ms) {
    auto left = remaining();
    deadline_bound_ = left < std::chrono::milliseconds(ms);
    return deadline_bound_ ? left : std::chrono::milliseconds(ms);
  }
  bool deadline_reached() const { return deadline_ - std::chrono::steady_clock::now() < std::chrono::milliseconds(5); }
  int first_byte_ms() const {
    return route_->first_byte_timeout_ms ? route_->first_byte_timeout_ms : dep_->settings->first_byte_timeout_ms;
  }
  int idle_ms() const { return route_->idle_timeout_ms ? route_->idle_timeout_ms : dep_->settings->idle_timeout_ms; }
  int connect_ms() const {
    return route_->connect_timeout_ms ? route_->connect_timeout_ms : dep_->settings->connect_timeout_ms;
  }

  template <class F> void with_stream(F&& f) { conn_->visit(std::forward<F>(f)); }

  session_ptr client_;
  request_context ctx_;
  proxy_kind kind_;
  /// POST /v1/responses: the exchange converting to and from the chat request in body_.
  std::shared_ptr<responses::exchange> responses_;
  bool passthrough_ = false;             ///< ... and the current deployment speaks Responses itself
  protocol client_proto_;                ///< what the client speaks
  protocol up_proto_ = protocol::openai; ///< what the current attempt's upstream speaks
  protocol last_upstream_proto_ = protocol::openai;
  std::unique_ptr<stream_translator> xlate_; ///< set when the two differ on a stream
  bool usage_final_ = false;                 ///< the upstream's closing usage arrived (not just message_start's)
  std::string_view encoding_;                ///< see encoding()
  const bpe_tokenizer* tok_ = nullptr;       ///< see tokenizer()
  own_count prompt_count_;                   ///< see prompt_count()
  const bpe_tokenizer* prompt_tok_ = nullptr;
  protocol prompt_proto_ = protocol::openai;
  bool counted_ = false;                  ///< some of usage_ is lowart's own count
  bool estimated_ = false;                ///< ... and some of that is an estimate
  std::optional<std::string> translated_; ///< the body in the other protocol, once made
  bool translated_usage_ = false;         ///< ... with stream_options.include_usage
  std::string body_;                      ///< the client's body (usage option already injected); model set per attempt
  std::shared_ptr<const scripting::script_table> scripts_; ///< set when a script applies
  std::string hook_headers_;                               ///< added by the model's on_request, sent to every upstream
  bool chunk_hooks_ = false;                               ///< the model or the deployment has on_chunk
  std::string script_error_;                               ///< a chunk hook failed inside the SSE parser's callback
  std::shared_ptr<const route_table> routes_;              ///< keeps route_ and the deployments alive
  const model_route* route_ = nullptr;                     ///< the requested model
  std::vector<deployment_ptr> candidates_;
  std::size_t next_ = 0;
  deployment_ptr dep_; ///< the deployment of the current attempt
  bool probe_ = false; ///< the current attempt is a half-open probe
  int attempts_on_dep_ = 0;
  int fallbacks_ = 0;
  std::chrono::steady_clock::time_point deadline_;
  bool deadline_bound_ = false; ///< the running timeout is the request's deadline, not the deployment's
  asio::steady_timer retry_timer_;
  // The best answer to give if every candidate fails.
  error_kind last_kind_ = error_kind::unavailable;
  std::string last_message_ = "no deployment of this model is available (breakers open)";
  std::string last_code_ = "no_deployment_available";
  std::optional<http::response<http::string_body>> last_upstream_; ///< a 5xx/429 to pass on

  bool stream_ = false;
  bool strip_usage_chunk_ = false; ///< we asked for include_usage, the client did not
  bool client_usage_ = false;      ///< the client asked for stream_options.include_usage
  /// What was relayed, kept for counting should the upstream report no usage (bounded:
  /// see completion_text).
  completion_text completion_;
  std::string upstream_request_;
  upstream_ptr conn_;
  bool retried_stale_ = false;
  bool request_written_ = false; ///< the upstream request was taken whole by the connection
  std::optional<http::response_parser<http::buffer_body>> parser_;
  std::optional<http::response_parser<http::string_body>> full_;
  /// A stream's read buffer, made when the first stream read starts: a JSON answer does
  /// not carry 16 KiB it never uses (that made every request a large allocation).
  static constexpr std::size_t read_buf_size = 16 * 1024;
  std::unique_ptr<char[]> read_buf_;
  sse_parser sse_;
  std::string pending_;       ///< complete SSE events not yet written to the client
  bool content_seen_ = false; ///< held-back preamble released
  bool head_sent_ = false;
  bool attempt_open_ = false;
  bool finished_ = false;
  int upstream_status_ = 0;
  token_usage usage_;
  std::chrono::steady_clock::time_point upstream_start_;
  std::int64_t prompt_estimate_ = 0;
  std::shared_ptr<const key_table> keys_; ///< keeps the team limits of ticket_ alive
  rate_limiter::ticket ticket_;
  limit_decision limit_;
  // Fleet mode: the subjects as Redis checks them, and whether Redis holds a reservation.
  std::vector<fleet_subject> fleet_subjects_;
  std::int64_t fleet_estimate_ = 0;
  double estimate_cost_ = 0; ///< what the estimate would cost (reserved from cost budgets)
  std::string fleet_reservation_;
  bool fleet_wait_ = false;
  bool fleet_ticket_ = false;
};

void proxy_call::start() {
  if (!parse_request()) return;
  if (fleet_wait_) return; // the fleet's answer goes on (fleet_answer)
  admitted();
}

void proxy_call::admitted() {
  deadline_ = ctx_.start + std::chrono::milliseconds(total_ms());
  if (stream_) pending_.reserve(8 * 1024); // one burst of events without regrowing
  next_candidate();
}

std::chrono::milliseconds proxy_call::remaining() const {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds(1));
}

bool proxy_call::parse_request() {
  simdjson::dom::object obj;
  if (!read_body(obj)) return false;
  routes_ = client_->worker().state.routes.load();
  if (routes_ && routes_->any_script && !model_request_hook(obj)) return false;
  return check_request(obj);
}

bool proxy_call::read_body(simdjson::dom::object& obj) {
  // Parsed from the thread's padded copy: making room in body_ itself reallocated it
  // (a malloc and a copy as large as the body), the copy alone is cheaper.
  simdjson::dom::element doc;
  if (body_.empty() || parse_reused(body_, doc) != simdjson::SUCCESS) {
    client_->respond_error(ctx_, error_kind::bad_request, "the request body is not valid JSON", "invalid_json");
    return false;
  }
  if (doc.get_object().get(obj) != simdjson::SUCCESS) {
    client_->respond_error(ctx_, error_kind::bad_request, "the request body must be a JSON object", "invalid_json");
    return false;
  }
  std::string_view model;
  auto model_field = obj["model"];
  if (model_field.error() == simdjson::NO_SUCH_FIELD) {
    client_->respond_error(ctx_, error_kind::bad_request, "you must provide a model parameter", "missing_model", {},
                           "model");
    return false;
  }
  if (model_field.get_string().get(model) != simdjson::SUCCESS || model.empty()) {
    client_->respond_error(ctx_, error_kind::bad_request, "model must be a non-empty string", "invalid_model", {},
                           "model");
    return false;
  }
  ctx_.model = std::string(model);
  if (kind_ != proxy_kind::embeddings)
    if (auto problem = check_chat_request(obj, kind_ == proxy_kind::messages)) {
      client_->respond_error(ctx_, error_kind::bad_request, problem.message, {}, {}, problem.param);
      return false;
    }
  stream_ = false;
  client_usage_ = false;
  if (kind_ != proxy_kind::embeddings) {
    bool flag = false;
    if (obj["stream"].get_bool().get(flag) == simdjson::SUCCESS) stream_ = flag;
    if (obj.at_pointer("/stream_options/include_usage").get_bool().get(flag) == simdjson::SUCCESS) client_usage_ = flag;
  }
  return true;
}

bool proxy_call::check_request(simdjson::dom::object& obj) {
  auto it = routes_ ? routes_->models.find(ctx_.model) : decltype(routes_->models.end()){};
  if (!routes_ || it == routes_->models.end() || it->second.deployments.empty()) {
    client_->respond_error(ctx_, error_kind::not_found,
                           "The model `" + ctx_.model + "` does not exist or you do not have access to it.",
                           "model_not_found", {}, "model");
    return false;
  }
  if (!ctx_.who->master && !ctx_.who->key->allows_model(ctx_.model)) {
    client_->respond_error(ctx_, error_kind::forbidden, "this key is not allowed to use model `" + ctx_.model + "`",
                           "model_not_allowed", {}, "model");
    return false;
  }
  route_ = &it->second;

  add_candidates(*route_);
  for (const auto& name : route_->fallbacks)
    if (auto f = routes_->models.find(name); f != routes_->models.end()) add_candidates(f->second);
  if (candidates_.empty()) {
    client_->respond_error(ctx_, error_kind::bad_request,
                           "model `" + ctx_.model + "` has no deployment that serves " +
                               (kind_ == proxy_kind::embeddings ? "embeddings" : "chat"),
                           "unsupported_model", {}, "model");
    return false;
  }

  // Limits and budgets of the key, its team and the model: all or nothing, before any
  // upstream is asked. The estimate is the prompt (about 4 bytes a token) plus max_tokens.
  prompt_estimate_ = static_cast<std::int64_t>(body_.size() / 4);
  auto keys = client_->worker().state.keys.load();
  std::optional<key_subjects> of_key; // the subject names, alive for the reservation
  std::vector<rate_limiter::subject_ref> subjects;
  if (!ctx_.who->master) {
    of_key.emplace(keys.get(), *ctx_.who->key);
    subjects = of_key->list;
  }
  std::string model_id;
  if (route_->lim.any()) {
    model_id = "model:" + route_->name;
    subjects.push_back({model_id, &route_->lim});
  }
  if (stream_ && !client_usage_) {
    // Ask upstreams for their usage chunk so streams are metered exactly, and keep that
    // chunk from a client that did not ask for it. (Per provider: see build_upstream_request.)
    strip_usage_chunk_ = true;
  }
  if (!subjects.empty()) {
    keys_ = std::move(keys); // the limits referenced by the ticket live in these snapshots
    auto& state = client_->worker().state;
    // The completion: max_tokens (or max_completion_tokens) for each of n choices, else
    // the configured default; embeddings have none.
    std::int64_t max_tokens = 0, n = 1;
    if (kind_ != proxy_kind::embeddings) {
      if (obj["max_tokens"].get_int64().get(max_tokens) != simdjson::SUCCESS &&
          obj["max_completion_tokens"].get_int64().get(max_tokens) != simdjson::SUCCESS)
        max_tokens = state.config.limits.default_max_tokens;
      if (obj["n"].get_int64().get(n) != simdjson::SUCCESS || n < 1) n = 1;
    }
    auto completion = std::max<std::int64_t>(0, max_tokens) * n;
    auto estimate = prompt_estimate_ + completion;
    bool cost_budget = false, shared = false;
    for (const auto& sub : subjects) {
      cost_budget = cost_budget || sub.lim->budget_cost > 0;
      shared = shared || sub.lim->rpm || sub.lim->tpm || sub.lim->budget_tokens || sub.lim->budget_cost > 0;
    }
    if (cost_budget) estimate_cost_ = estimated_cost(prompt_estimate_, completion);
    if (state.fleet && shared) return ask_fleet(subjects, estimate);
    limit_ = state.limiter.reserve(subjects, estimate, clock::unix_ms(), ticket_, false, estimate_cost_);
    if (!limit_.allowed) {
      refuse_limited();
      return false;
    }
  }
  return true;
}

double proxy_call::estimated_cost(std::int64_t prompt, std::int64_t completion) const {
  auto prices = client_->worker().state.prices.load();
  auto p = prices ? prices->by_model.find(ctx_.model) : decltype(prices->by_model.end()){};
  if (!prices || p == prices->by_model.end()) return 0;
  auto in = std::max(p->second.input_per_1m, p->second.cached_input_per_1m), out = p->second.output_per_1m;
  for (const auto& t : p->second.tiers) {
    in = std::max({in, t.input_per_1m, t.cached_input_per_1m});
    out = std::max(out, t.output_per_1m);
  }
  return (static_cast<double>(prompt) * in + static_cast<double>(completion) * out) / 1e6 + p->second.per_request;
}

bool proxy_call::ask_fleet(const std::vector<rate_limiter::subject_ref>& subjects, std::int64_t estimate) {
  auto& state = client_->worker().state;
  auto worker = client_->worker().index;
  fleet_subjects_ = fleet_subjects(subjects);
  fleet_estimate_ = estimate;
  if (!state.fleet->up(worker)) return fleet_down();
  // max_parallel stays with this replica: taken here, before Redis is asked.
  limit_ = state.limiter.reserve(subjects, estimate, clock::unix_ms(), ticket_, true);
  if (!limit_.allowed) {
    refuse_limited();
    return false;
  }
  fleet_wait_ = true;
  // Held in Redis past the request's deadline only should this replica die before settling.
  lowart::fleet::estimate e{estimate, estimate_cost_, total_ms() + reservation_margin_ms};
  fleet_reservation_ = state.fleet->reserve(
      worker, fleet_subjects_, e, clock::unix_ms(),
      [self = shared_from_this()](bool reached, const limit_decision& d) { self->fleet_answer(reached, d); });
  return true;
}

void proxy_call::fleet_answer(bool reached, const limit_decision& d) {
  fleet_wait_ = false;
  if (!reached) {
    // The script may have run: its reservation goes when Redis answers again.
    client_->worker().state.fleet->release(client_->worker().index, fleet_subjects_, fleet_reservation_);
    client_->worker().state.limiter.settle(ticket_, 0, 0, clock::unix_ms());
    if (fleet_down()) admitted();
    return;
  }
  if (!d.allowed) {
    client_->worker().state.limiter.settle(ticket_, 0, 0, clock::unix_ms());
    limit_ = d;
    refuse_limited();
    return;
  }
  limit_ = d;
  fleet_ticket_ = true;
  admitted();
}

bool proxy_call::fleet_down() {
  auto& state = client_->worker().state;
  if (!state.fleet->fail_open()) {
    metrics::ratelimited("unavailable").inc();
    client_->respond_error(ctx_, error_kind::unavailable,
                           "rate limits cannot be checked now (the shared limit store does not answer); retry shortly",
                           "limits_unavailable", "retry-after: 1\r\n");
    return false;
  }
  // Fail open: this replica's own limits, from the same subjects.
  limit_ = state.limiter.reserve(subject_refs(fleet_subjects_), fleet_estimate_, clock::unix_ms(), ticket_, false,
                                 estimate_cost_);
  if (!limit_.allowed) {
    refuse_limited();
    return false;
  }
  return true;
}

void proxy_call::refuse_limited() {
  metrics::ratelimited(limit_.reason).inc();
  auto headers = ratelimit_headers() + "retry-after: " + std::to_string(limit_.retry_after_s) + "\r\n";
  if (limit_.requested_tokens) { // waiting will not help: say what to change
    client_->respond_error(ctx_, error_kind::rate_limited,
                           "request too large for this " + limit_.subject + "'s tokens per minute (tpm): it asks for " +
                               std::to_string(limit_.requested_tokens) +
                               " tokens (the prompt, about 4 bytes a token, plus max_tokens), more than the limit; "
                               "lower max_tokens",
                           "rate_limit_exceeded", headers);
    return;
  }
  client_->respond_error(ctx_, error_kind::rate_limited,
                         "rate limit reached for this " + limit_.subject + " (" + limit_.reason + "); retry in " +
                             std::to_string(limit_.retry_after_s) + " s",
                         "rate_limit_exceeded", headers);
}

void proxy_call::describe_call(json::object_writer& w) const {
  w.str("model", ctx_.model)
      .str("route", kind_ == proxy_kind::responses    ? "responses"
                    : kind_ == proxy_kind::embeddings ? "embeddings"
                    : kind_ == proxy_kind::messages   ? "messages"
                                                      : "chat")
      .str("request_id", ctx_.request_id);
  if (dep_) w.str("provider", dep_->provider).str("deployment", dep_->id).str("upstream_model", dep_->upstream_model);
  json::object_writer key;
  key.str("id", ctx_.who->key_id());
  if (!ctx_.who->master) key.str("team_id", ctx_.who->key->team_id).str("user_id", ctx_.who->key->user_id);
  w.raw("key", key.done());
}

bool proxy_call::run_hook(const std::string& script, std::string_view hook, const std::string& argument,
                          hook_answer& out) {
  auto r = scripting::run_hook(*scripts_, script, hook, argument, ctx_.request_id);
  using outcome = scripting::hook_result::outcome;
  if (r.kind == outcome::rejected) {
    script_failed(std::move(r.message), r.status);
    return false;
  }
  if (r.kind == outcome::failed) {
    script_failed(std::move(r.message));
    return false;
  }
  if (!read_hook_answer(r.json, out)) {
    script_failed("script " + script + ": " + std::string(hook) + " must return a table (or nil, status, message)");
    return false;
  }
  return true;
}

void proxy_call::script_failed(std::string message, int status) {
  // Refused (the script's status) or broken (500): the client gets the API's own error.
  conn_.reset();
  if (attempt_open_) settle_attempt("script", false, false);
  auto kind = kind_of_status(status);
  finish_request(status);
  if (head_sent_) {
    append_stream_error(pending_, client_proto_, kind, message, "script_error");
    if (responses_) responses_->convert(pending_, true, passthrough_);
    std::string out;
    append_chunk_size(out, pending_.size());
    out += pending_;
    out += "\r\n0\r\n\r\n";
    pending_.clear();
    client_->write_raw(std::move(out), [self = shared_from_this(), status](bool ok) {
      self->client_->end_streamed(self->ctx_, status, ok);
    });
    return;
  }
  auto format = client_proto_ == protocol::anthropic ? api_format::anthropic : api_format::openai;
  client_->respond(ctx_, status, "application/json",
                   error_body(format, kind, message, status == 500 ? "script_error" : "rejected_by_script"));
}

bool proxy_call::model_request_hook(simdjson::dom::object& obj) {
  auto route = routes_->models.find(ctx_.model);
  if (route == routes_->models.end() || route->second.script.empty()) return true;
  scripts_ = client_->worker().state.scripts.load();
  const auto& script = route->second.script;
  chunk_hooks_ = scripts_->with_hook(script, "on_chunk") != nullptr;
  if (!scripts_->with_hook(script, "on_request")) return true;
  json::object_writer w;
  w.raw("body", body_).raw("headers", ctx_.headers_json.empty() ? std::string_view("{}") : ctx_.headers_json);
  describe_call(w);
  hook_answer answer;
  if (!run_hook(script, "on_request", w.done(), answer)) return false;
  if (!answer.body.empty()) body_ = std::move(answer.body);
  hook_headers_ = changed_headers(answer.headers, ctx_.headers_json);
  // The body may now name another model or ask for a stream: read it again.
  return read_body(obj);
}

bool proxy_call::response_hooks(int& status, std::string& body, std::string& type, bool provider_stage) {
  const auto& script = provider_stage ? dep_->settings->script : route_->script;
  if (script.empty()) return true;
  if (!scripts_) scripts_ = client_->worker().state.scripts.load();
  if (!scripts_->with_hook(script, "on_response")) return true;
  json::object_writer w;
  w.num("status", status);
  simdjson::dom::element doc;
  if (type.rfind("application/json", 0) == 0 && parse_reused(body, doc) == simdjson::SUCCESS)
    w.raw("body", body);
  else
    w.str("text", body);
  json::object_writer headers;
  headers.str("content-type", type);
  w.raw("headers", headers.done()).str("stage", provider_stage ? "provider" : "model");
  describe_call(w);
  hook_answer answer;
  if (!run_hook(script, "on_response", w.done(), answer)) return false;
  if (answer.status) status = answer.status;
  if (!answer.body.empty()) {
    body = std::move(answer.body);
    type = "application/json";
  } else if (!answer.text.empty()) {
    body = std::move(answer.text);
  }
  return true;
}

bool proxy_call::chunk_hooks(sse_event& ev) {
  if (!ev.has_data || ev.data == "[DONE]") return true;
  for (const std::string* script : {&dep_->settings->script, &route_->script}) {
    if (script->empty() || !scripts_->with_hook(*script, "on_chunk")) continue;
    simdjson::dom::element doc;
    if (parse_reused(ev.data, doc) != simdjson::SUCCESS) return true; // not JSON: passed on as is
    json::object_writer w;
    if (ev.event.empty())
      w.raw("event", "null");
    else
      w.str("event", ev.event);
    w.raw("data", ev.data);
    describe_call(w);
    auto r = scripting::run_hook(*scripts_, *script, "on_chunk", w.done(), ctx_.request_id);
    hook_answer answer;
    if (r.kind != scripting::hook_result::outcome::ok || !read_hook_answer(r.json, answer)) {
      script_error_ = r.kind == scripting::hook_result::outcome::ok
                          ? "script " + *script + ": on_chunk must return a table or nil"
                          : r.message;
      return false;
    }
    if (answer.dropped) return false;
    if (!answer.body.empty()) ev.data = std::move(answer.body);
    if (!answer.event.empty()) ev.event = std::move(answer.event);
  }
  return true;
}

void proxy_call::add_candidates(const model_route& route) {
  const auto& all = route.deployments;
  for (std::size_t i = 0; i < all.size();) {
    std::size_t j = i;
    std::vector<deployment_ptr> group;
    while (j < all.size() && all[j]->priority == all[i]->priority) {
      bool seen =
          std::any_of(candidates_.begin(), candidates_.end(), [&](const auto& c) { return c->id == all[j]->id; });
      // Embeddings need an OpenAI-compatible upstream; chat works with both protocols.
      const auto& kind = all[j]->settings->kind;
      bool serves = kind == "openai" || (kind == "anthropic" && kind_ != proxy_kind::embeddings);
      if (!seen && serves) group.push_back(all[j]);
      ++j;
    }
    order_group(group, route.balancing);
    candidates_.insert(candidates_.end(), group.begin(), group.end());
    i = j;
  }
}

void proxy_call::next_candidate() {
  while (next_ < candidates_.size() && !deadline_reached()) {
    auto candidate = candidates_[next_++];
    if (next_ > 1) {
      ++fallbacks_;
      route_->fallbacks_used.inc();
    }
    if (!candidate->breaker->admit(probe_)) {
      log::debug("breaker open; skipping deployment", {{"request_id", ctx_.request_id}, {"deployment", candidate->id}});
      continue;
    }
    dep_ = std::move(candidate);
    attempts_on_dep_ = 0;
    begin_attempt();
    return;
  }
  give_up();
}

void proxy_call::begin_attempt() {
  ctx_.deployment = dep_->id;
  retried_stale_ = false;
  upstream_status_ = 0;
  // Nothing of an earlier attempt reached the client: its usage and text do not count.
  usage_ = {};
  usage_final_ = false;
  counted_ = estimated_ = false;
  choose_tokenizer();
  completion_.reset(protocol_of(*dep_));
  parser_.reset();
  full_.reset();
  if (!build_upstream_request()) return; // a provider script refused or failed: answered
  dep_->stats->inflight.fetch_add(1, std::memory_order_relaxed);
  attempt_open_ = true;
  upstream_start_ = std::chrono::steady_clock::now();
  acquire(false);
}

bool proxy_call::build_upstream_request() {
  up_proto_ = protocol_of(*dep_);
  bool anthropic = up_proto_ == protocol::anthropic;
  std::string body;
  passthrough_ = responses_ && !anthropic && dep_->settings->responses;
  if (passthrough_) {
    body = responses_->upstream_request();
  } else if (up_proto_ == client_proto_) {
    body = body_;
  } else {
    // Translated once per request (retries and fallbacks reuse it); only the stream
    // usage option depends on the deployment.
    bool usage = stream_ && dep_->settings->include_usage;
    if (!translated_ || translated_usage_ != usage) {
      translated_ = anthropic ? openai_request_to_anthropic(body_) : anthropic_request_to_openai(body_, usage);
      translated_usage_ = usage;
    }
    body = *translated_;
  }
  xlate_.reset();
  if (stream_ && up_proto_ != client_proto_) {
    stream_translator::options opt;
    opt.client_wants_usage = client_usage_;
    opt.fallback_id = (client_proto_ == protocol::anthropic ? "msg_" : "chatcmpl-") + ctx_.request_id;
    if (client_proto_ == protocol::anthropic) opt.prompt_tokens = prompt_count();
    xlate_ = make_stream_translator(up_proto_, client_proto_, std::move(opt));
  }
  if (dep_->upstream_model != ctx_.model) json::set_member(body, "model", json::quoted(dep_->upstream_model));
  if (!anthropic && !passthrough_ && client_proto_ == protocol::openai && strip_usage_chunk_ &&
      dep_->settings->include_usage) {
    if (auto where = json::find_member(body, "stream_options"); where && body[where->begin] == '{') {
      std::string options = body.substr(where->begin, where->end - where->begin);
      json::set_member(options, "include_usage", "true");
      body.replace(where->begin, where->end - where->begin, options);
    } else {
      json::set_member(body, "stream_options", R"({"include_usage":true})");
    }
  }
  const auto& target = dep_->target;
  const auto& settings = *dep_->settings;
  std::string_view path = passthrough_                      ? "/responses"
                          : anthropic                       ? "/messages"
                          : kind_ == proxy_kind::embeddings ? "/embeddings"
                                                            : "/chat/completions";
  hook_answer provider_hook;
  if (!settings.script.empty()) {
    if (!scripts_) scripts_ = client_->worker().state.scripts.load();
    chunk_hooks_ = chunk_hooks_ || scripts_->with_hook(settings.script, "on_chunk");
    if (scripts_->with_hook(settings.script, "on_request")) {
      // The provider's hook sees the body as this upstream will get it, and may change
      // it, its headers and the path (adapting an upstream that speaks its own protocol).
      json::object_writer w;
      w.raw("body", body).raw("headers", "{}").str("path", path).str("stage", "provider");
      describe_call(w);
      if (!run_hook(settings.script, "on_request", w.done(), provider_hook)) return false;
      if (!provider_hook.body.empty()) body = std::move(provider_hook.body);
      if (!provider_hook.path.empty()) path = provider_hook.path;
    }
  }
  auto& r = upstream_request_;
  r.clear();
  r.reserve(320 + body.size());
  r += "POST ";
  r += target.base_path;
  r += path;
  r += " HTTP/1.1\r\nHost: ";
  r += target.host_header;
  r += "\r\nContent-Type: application/json\r\nAccept: ";
  r += stream_ ? "text/event-stream" : "application/json";
  r += "\r\nUser-Agent: lowart/0.1\r\nX-Request-Id: ";
  r += ctx_.request_id;
  if (anthropic) {
    if (!settings.api_key.empty()) {
      r += "\r\nx-api-key: ";
      r += settings.api_key;
    }
    r += "\r\nanthropic-version: ";
    r += ctx_.anthropic_version.empty() ? std::string_view("2023-06-01") : std::string_view(ctx_.anthropic_version);
    if (!ctx_.anthropic_beta.empty()) {
      r += "\r\nanthropic-beta: ";
      r += ctx_.anthropic_beta;
    }
  } else if (!settings.api_key.empty()) {
    r += "\r\nAuthorization: Bearer ";
    r += settings.api_key;
  }
  r += "\r\n";
  r += hook_headers_;
  r += changed_headers(provider_hook.headers, {});
  r += "Content-Length: ";
  r += std::to_string(body.size());
  r += "\r\n\r\n";
  r += body;
  return true;
}

void proxy_call::acquire(bool fresh) {
  auto handler = [self = shared_from_this()](connect_failure failure, std::string detail, upstream_ptr conn) {
    self->on_connection(failure, std::move(detail), std::move(conn));
  };
  auto& pool = client_->worker().pool;
  auto timeout = capped(connect_ms());
  if (fresh)
    pool.connect(*dep_, timeout, std::move(handler));
  else
    pool.acquire(*dep_, timeout, std::move(handler));
}

void proxy_call::on_connection(connect_failure failure, std::string detail, upstream_ptr conn) {
  switch (failure) {
  case connect_failure::none:
    break;
  case connect_failure::timeout:
    attempt_failed(failure_class::timeout, error_kind::gateway_timeout, "upstream connect timed out", "timeout",
                   "upstream_timeout");
    return;
  case connect_failure::resolve:
    attempt_failed(failure_class::connect_error, error_kind::bad_gateway, "upstream unreachable: " + detail,
                   "dns_error", "upstream_unreachable");
    return;
  case connect_failure::tls:
    attempt_failed(failure_class::connect_error, error_kind::bad_gateway, "upstream unreachable: " + detail,
                   "tls_error", "upstream_unreachable");
    return;
  case connect_failure::refused:
    attempt_failed(failure_class::connect_error, error_kind::bad_gateway, "upstream unreachable: " + detail,
                   "connect_error", "upstream_unreachable");
    return;
  }
  conn_ = std::move(conn);
  send_request();
}

void proxy_call::send_request() {
  request_written_ = false;
  std::size_t sent = 0;
  if (!conn_->tls()) { // TLS records go through the stream; plain TCP is written at once
    beast::error_code ec;
    sent = write_now(conn_->tcp().socket(), asio::buffer(upstream_request_), ec);
    if (ec) return upstream_failed(ec, "sending the request");
    if (sent == upstream_request_.size()) return read_header();
  }
  conn_->tcp().expires_after(capped(first_byte_ms()));
  with_stream([&](auto& s) {
    asio::async_write(s, asio::buffer(upstream_request_) + sent, // the rest (kept whole for a retry)
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        if (ec) return self->upstream_failed(ec, "sending the request");
                        self->read_header();
                      });
  });
}

void proxy_call::read_header() {
  request_written_ = true;
  // The wait for the answer starts now. (Keeping the expiry set before the write made this
  // timer older than the others armed meanwhile: the reactor's earliest, which costs a
  // timerfd_settime syscall every time.)
  conn_->tcp().expires_after(capped(first_byte_ms()));
  if (!stream_) {
    // A plain JSON answer: read head and body in one operation.
    full_.emplace();
    full_->body_limit(64 * 1024 * 1024);
    with_stream([&](auto& s) {
      http::async_read(s, conn_->buffer, *full_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
        if (ec && !self->full_->is_header_done()) return self->upstream_failed(ec, "waiting for the response");
        self->upstream_status_ = self->full_->get().result_int();
        self->on_full_body(ec);
      });
    });
    return;
  }
  parser_.emplace();
  parser_->body_limit(boost::none);
  with_stream([&](auto& s) {
    http::async_read_header(s, conn_->buffer, *parser_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->upstream_failed(ec, "waiting for the response");
      self->upstream_status_ = self->parser_->get().result_int();
      auto type = self->parser_->get()[http::field::content_type];
      if (self->upstream_status_ == 200 && type.rfind("text/event-stream", 0) == 0)
        self->read_stream();
      else
        self->read_full_body();
    });
  });
}

void proxy_call::upstream_failed(beast::error_code ec, std::string_view during) {
  bool timeout = ec == beast::error::timeout;
  // The request goes out again (once, on a fresh connection) only when the upstream cannot
  // have read it: a pooled connection whose write failed (EPIPE, ECONNRESET: the upstream
  // had closed it before the request was taken, so at most a part of it got there). One
  // idle for a second or more was peeked just before (upstream_pool::acquire): a read of
  // 0 bytes or a reset there dropped it before anything was written. Once the write was
  // taken whole, a failure is the attempt's: the upstream may have read the request, run
  // it and then reset, and a second copy would run (and bill) it twice.
  if (!timeout && conn_ && conn_->reused && !request_written_ && !retried_stale_) {
    retried_stale_ = true;
    conn_.reset();
    acquire(true);
    return;
  }
  conn_.reset();
  if (timeout)
    attempt_failed(failure_class::timeout, error_kind::gateway_timeout,
                   "upstream did not answer within " + std::to_string(first_byte_ms()) + " ms", "timeout",
                   "upstream_timeout");
  else
    attempt_failed(failure_class::connect_error, error_kind::bad_gateway,
                   "upstream connection failed while " + std::string(during) + ": " + ec.message(), "reset",
                   "upstream_error");
}

void proxy_call::read_full_body() {
  full_.emplace(std::move(*parser_));
  parser_.reset();
  full_->body_limit(64 * 1024 * 1024);
  conn_->tcp().expires_after(capped(idle_ms()));
  with_stream([&](auto& s) {
    http::async_read(s, conn_->buffer, *full_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_full_body(ec); });
  });
}

void proxy_call::on_full_body(beast::error_code ec) {
  if (ec) {
    conn_.reset();
    if (ec == beast::error::timeout)
      attempt_failed(failure_class::timeout, error_kind::gateway_timeout, "upstream stopped sending its response",
                     "timeout", "upstream_timeout");
    else
      attempt_failed(failure_class::mid_stream, error_kind::bad_gateway, "upstream response broke off: " + ec.message(),
                     "reset", "upstream_error");
    return;
  }
  auto res = full_->release();
  full_.reset();
  if (res.keep_alive()) client_->worker().pool.release(std::move(conn_), dep_->settings->max_idle_connections);
  conn_.reset();
  auto status = upstream_status_;
  if (!dep_->settings->script.empty()) {
    // The provider's on_response sees the upstream's own answer (and may turn a
    // protocol of its own into OpenAI's or Anthropic's).
    std::string type(res[http::field::content_type]);
    if (!response_hooks(status, res.body(), type, true)) return;
    res.set(http::field::content_type, type);
    res.result(static_cast<unsigned>(status));
    upstream_status_ = status;
  }
  if (status == 429 || status >= 500) {
    int retry_after_ms = 0;
    if (auto it = res.find(http::field::retry_after); it != res.end())
      retry_after_ms = std::atoi(std::string(it->value()).c_str()) * 1000;
    auto label = std::to_string(status);
    last_upstream_ = std::move(res);
    last_upstream_proto_ = up_proto_;
    attempt_failed(status == 429 ? failure_class::status_429 : failure_class::status_5xx, error_kind::bad_gateway,
                   "upstream answered " + label, label, "upstream_error", retry_after_ms);
    return;
  }
  auto& body = res.body();
  // The upstream's answer is kept for counting only when it reports no usage.
  std::string type(res[http::field::content_type]);
  if (type.empty()) type = "application/json";
  if (up_proto_ != client_proto_) {
    completion_.set_body(body);
    if (status >= 400)
      body = translate_error(body, status, client_proto_);
    else if (up_proto_ == protocol::anthropic)
      body = anthropic_response_to_openai(body, usage_);
    else
      body = openai_response_to_anthropic(body, usage_);
    type = "application/json";
  } else {
    simdjson::dom::element doc, usage;
    if (status == 200 && body.find("\"usage\"") != std::string::npos && parse_reused(body, doc) == simdjson::SUCCESS &&
        doc["usage"].get(usage) == simdjson::SUCCESS) {
      if (up_proto_ == protocol::anthropic)
        read_anthropic_usage(usage, usage_);
      else
        read_openai_usage(usage, usage_);
    }
    if (!usage_.present) completion_.set_body(body);
  }
  if (responses_ && status < 400) body = responses_->answer(body, passthrough_, usage_);
  usage_final_ = usage_.present;
  settle_attempt(std::to_string(status), false, false);
  if (!route_->script.empty() && !response_hooks(status, body, type, false)) return;
  finish_request(status);
  client_->respond(ctx_, status, type, body, gateway_headers());
}

void proxy_call::read_stream() {
  auto& b = parser_->get().body();
  if (!read_buf_) read_buf_ = std::make_unique_for_overwrite<char[]>(read_buf_size);
  b.data = read_buf_.get();
  b.size = read_buf_size;
  conn_->tcp().expires_after(capped(content_seen_ ? idle_ms() : first_byte_ms()));
  with_stream([&](auto& s) {
    http::async_read_some(s, conn_->buffer, *parser_,
                          [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_stream_read(ec); });
  });
}

void proxy_call::on_stream_read(beast::error_code ec) {
  if (ec == http::error::need_buffer) ec = {};
  if (ec) {
    conn_.reset();
    stream_broke(ec == beast::error::timeout ? "upstream stream stalled (idle timeout)"
                                             : "upstream stream broke: " + ec.message());
    return;
  }
  auto got = read_buf_size - parser_->get().body().size;
  if (got > 0 && !sse_.feed({read_buf_.get(), got}, [this](const sse_event& ev) { on_event(ev); })) {
    conn_.reset();
    stream_broke("upstream sent an SSE line over the size limit");
    return;
  }
  if (!script_error_.empty()) return script_failed(std::move(script_error_));
  bool done = parser_->is_done();
  if (done && xlate_) close_translation(); // an upstream that ended without its end marker
  // The preamble (role-only chunks) is held back until real content arrives, so that a
  // failure before content can still fall back to another deployment.
  if ((pending_.empty() || !content_seen_) && !done) {
    read_stream();
    return;
  }
  flush_to_client(done);
}

bool proxy_call::has_content(const sse_event& ev) {
  if (!ev.has_data || ev.data == "[DONE]") return true;
  simdjson::dom::element doc;
  if (parse_reused(ev.data, doc) != simdjson::SUCCESS) return true; // not ours to judge: pass it on
  simdjson::dom::array choices;
  if (doc["choices"].get_array().get(choices) != simdjson::SUCCESS || choices.size() == 0)
    return true; // usage or error events
  auto first = choices.at(0);
  std::string_view text;
  if (first["delta"]["content"].get_string().get(text) == simdjson::SUCCESS && !text.empty()) return true;
  if (first["delta"]["tool_calls"].error() == simdjson::SUCCESS ||
      first["delta"]["function_call"].error() == simdjson::SUCCESS)
    return true;
  if (first["finish_reason"].error() == simdjson::SUCCESS && !first["finish_reason"].is_null()) return true;
  return false;
}

void proxy_call::close_translation() {
  usage_ = xlate_->usage();
  if (!usage_final_) {
    // The upstream's usage did not arrive (or only message_start's): count what it sent.
    if (usage_.present)
      usage_.completion = count_completion();
    else
      count_usage();
    usage_final_ = true;
  }
  xlate_->close(usage_, pending_);
}

void proxy_call::on_anthropic_event(const sse_event& ev) {
  // Relayed as is; read for usage (message_start, then the cumulative message_delta)
  // and for the end of the held-back preamble.
  const auto& name = ev.event;
  if (!content_seen_)
    content_seen_ = name != "message_start" && name != "ping" &&
                    !(name == "content_block_start" && contains(ev.data, "\"type\":\"text\""));
  if (ev.has_data && (name == "message_start" || name == "message_delta")) {
    simdjson::dom::element doc, usage;
    if (parse_reused(ev.data, doc) == simdjson::SUCCESS &&
        (name == "message_start" ? doc["message"]["usage"] : doc["usage"]).get(usage) == simdjson::SUCCESS) {
      read_anthropic_usage(usage, usage_);
      if (name == "message_delta") usage_final_ = true;
    }
  }
  append_sse_event(pending_, ev);
}

void proxy_call::on_event(const sse_event& upstream_event) {
  if (!script_error_.empty()) return; // a hook failed earlier in this read: the rest is dropped
  std::optional<sse_event> changed;
  if (chunk_hooks_) {
    changed.emplace(upstream_event);
    if (!chunk_hooks(*changed)) return;
  }
  const sse_event& ev = changed ? *changed : upstream_event;
  if (ev.has_data && ev.data != "[DONE]") {
    // Kept for counting should the upstream report no usage (bounded, see completion_text).
    completion_.add_event(ev.data, tokenizer());
  }
  if (xlate_) {
    if (!ev.has_data) return;
    bool end = xlate_->feed(ev.event, ev.data, pending_);
    content_seen_ = content_seen_ || xlate_->content_seen();
    if (up_proto_ == protocol::anthropic ? ev.event == "message_delta" : xlate_->usage().present)
      usage_final_ = xlate_->usage().present;
    if (end) close_translation();
    return;
  }
  if (up_proto_ == protocol::anthropic) return on_anthropic_event(ev);
  if (passthrough_ && ev.has_data && responses_->event_usage(ev.data, usage_)) usage_final_ = true;
  if (!content_seen_) content_seen_ = has_content(ev);
  if (ev.has_data && ev.data == "[DONE]" && client_usage_ && !usage_.present) {
    // The client asked for usage and the upstream sent none: lowart's own count goes
    // in the usage chunk, just before [DONE].
    count_usage();
    json::object_writer u;
    u.num("prompt_tokens", usage_.prompt)
        .num("completion_tokens", usage_.completion)
        .num("total_tokens", usage_.prompt + usage_.completion);
    json::object_writer chunk;
    chunk.str("id", ctx_.request_id)
        .str("object", "chat.completion.chunk")
        .num("created", clock::unix_ms() / 1000)
        .str("model", dep_->upstream_model)
        .raw("choices", "[]")
        .raw("usage", u.done());
    sse_event usage_event;
    usage_event.data = chunk.done();
    usage_event.has_data = true;
    append_sse_event(pending_, usage_event);
  }
  if (ev.has_data && contains(ev.data, "\"usage\":{")) {
    simdjson::dom::element doc;
    if (parse_reused(ev.data, doc) == simdjson::SUCCESS) {
      simdjson::dom::element usage;
      if (doc["usage"].get(usage) == simdjson::SUCCESS) {
        read_openai_usage(usage, usage_);
        usage_final_ = true;
      }
      simdjson::dom::array choices;
      if (strip_usage_chunk_ && doc["choices"].get_array().get(choices) == simdjson::SUCCESS && choices.size() == 0)
        return; // the usage chunk we asked for on the client's behalf
    }
  }
  append_sse_event(pending_, ev);
}

void proxy_call::flush_to_client(bool done) {
  if (responses_) responses_->convert(pending_, done, passthrough_);
  std::string out;
  out.reserve(pending_.size() + 512);
  if (!head_sent_) {
    ctx_.keep_alive = ctx_.keep_alive && !client_->worker().state.draining.load(std::memory_order_relaxed);
    session::append_head(out, ctx_, 200, "text/event-stream; charset=utf-8",
                         gateway_headers() + "Cache-Control: no-cache\r\n", std::nullopt);
    head_sent_ = true;
  }
  if (!pending_.empty()) {
    append_chunk_size(out, pending_.size());
    out += pending_;
    out += "\r\n";
    pending_.clear();
  }
  if (done) out += "0\r\n\r\n";
  client_->write_raw(std::move(out), [self = shared_from_this(), done](bool ok) {
    if (!ok) return self->client_gone();
    if (done)
      self->finish_stream();
    else
      self->read_stream();
  });
}

void proxy_call::stream_broke(std::string_view message) {
  if (!head_sent_) {
    // Nothing reached the client yet: this is an ordinary failed attempt.
    pending_.clear();
    sse_ = sse_parser{};
    content_seen_ = false;
    attempt_failed(failure_class::mid_stream, error_kind::bad_gateway, std::string(message), "reset", "upstream_error");
    return;
  }
  // Bytes already reached the client: end the stream with an error event it can see.
  append_stream_error(pending_, client_proto_, error_kind::bad_gateway, message, "upstream_error");
  if (responses_) responses_->convert(pending_, true, passthrough_);
  std::string out;
  append_chunk_size(out, pending_.size());
  out += pending_;
  out += "\r\n0\r\n\r\n";
  pending_.clear();
  settle_attempt("reset", true, routes_->fail_on_mid_stream);
  finish_request(502);
  log::warn("upstream stream broke", {{"request_id", ctx_.request_id}, {"deployment", dep_->id}, {"error", message}});
  client_->write_raw(std::move(out),
                     [self = shared_from_this()](bool ok) { self->client_->end_streamed(self->ctx_, 502, ok); });
}

void proxy_call::finish_stream() {
  if (parser_->keep_alive()) client_->worker().pool.release(std::move(conn_), dep_->settings->max_idle_connections);
  conn_.reset();
  settle_attempt("200", false, false);
  finish_request(200);
  client_->end_streamed(ctx_, 200, true);
}

void proxy_call::client_gone() {
  // The client stopped reading or went away: drop the upstream (its answer is not
  // complete) and still account for what was delivered. Not a success either: a probe
  // whose client left decides nothing (settle_attempt).
  conn_.reset();
  settle_attempt(std::to_string(upstream_status_), true, false);
  finish_request(499);
  client_->end_streamed(ctx_, 499, false);
}

void proxy_call::attempt_failed(failure_class cls, error_kind kind, std::string message, std::string_view label,
                                std::string_view code, int retry_after_ms) {
  // A timeout that only the request's deadline imposed says nothing about the
  // deployment: it is not the breaker's business.
  bool deadline_timeout = cls == failure_class::timeout && deadline_bound_;
  bool counts = false;
  switch (cls) {
  case failure_class::connect_error:
    counts = routes_->fail_on_connect;
    break;
  case failure_class::timeout:
    counts = routes_->fail_on_timeout;
    break;
  case failure_class::status_5xx:
    counts = routes_->fail_on_5xx;
    break;
  case failure_class::status_429:
    counts = routes_->fail_on_429;
    break;
  case failure_class::mid_stream:
    counts = routes_->fail_on_mid_stream;
    break;
  }
  settle_attempt(label, true, counts && !deadline_timeout);
  if (cls != failure_class::status_5xx && cls != failure_class::status_429)
    last_upstream_.reset(); // a transport failure is the latest word
  last_kind_ = kind;
  last_message_ = std::move(message);
  last_code_ = std::string(code);
  if (deadline_timeout || deadline_reached()) {
    last_upstream_.reset();
    last_kind_ = error_kind::gateway_timeout;
    last_message_ =
        "the request deadline passed after " + std::to_string(fallbacks_ + attempts_on_dep_ + 1) + " attempt(s)";
    last_code_ = "deadline_exceeded";
    give_up();
    return;
  }
  // Retry the same deployment (with backoff and jitter, honouring retry-after) ...
  if (attempts_on_dep_ < route_->retries && !probe_ &&
      (retry_after_ms == 0 || retry_after_ms <= route_->max_retry_wait_ms)) {
    auto backoff = route_->retry_backoff_ms << attempts_on_dep_;
    auto jitter = static_cast<int>(next_random() % static_cast<std::uint64_t>(backoff / 2 + 1));
    auto wait = std::chrono::milliseconds(std::max(backoff / 2 + jitter, retry_after_ms));
    if (wait < remaining()) {
      ++attempts_on_dep_;
      retry_timer_.expires_after(wait);
      retry_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
        if (!ec) self->begin_attempt();
      });
      return;
    }
  }
  // ... or move on to the next candidate.
  next_candidate();
}

void proxy_call::give_up() {
  if (!dep_) {
    // Every candidate's breaker is open: nothing was attempted.
    finish_request(status_of(last_kind_));
    client_->respond_error(ctx_, last_kind_, last_message_, last_code_, ratelimit_headers());
    return;
  }
  if (last_upstream_) {
    // The last answer was an upstream 5xx/429: pass it on as the upstream sent it.
    auto& res = *last_upstream_;
    std::string headers = gateway_headers();
    if (auto it = res.find(http::field::retry_after); it != res.end()) {
      headers += "retry-after: ";
      headers += it->value();
      headers += "\r\n";
    }
    std::string type(res[http::field::content_type]);
    int status = res.result_int();
    if (last_upstream_proto_ != client_proto_) {
      res.body() = translate_error(res.body(), status, client_proto_);
      type = "application/json";
    }
    finish_request(status);
    client_->respond(ctx_, status, type.empty() ? "application/json" : type, res.body(), headers);
    return;
  }
  finish_request(status_of(last_kind_));
  client_->respond_error(ctx_, last_kind_, last_message_, last_code_, dep_ ? gateway_headers() : std::string{});
}

std::string proxy_call::gateway_headers() const {
  std::string h = "x-lowart-deployment: ";
  h += dep_->id;
  h += "\r\nx-lowart-fallbacks: ";
  h += std::to_string(fallbacks_);
  h += "\r\n";
  h += ratelimit_headers();
  return h;
}

std::string proxy_call::ratelimit_headers() const {
  // OpenAI's names; resets as durations like "1.5s".
  std::string h;
  auto seconds = [](std::int64_t ms) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3gs", static_cast<double>(std::max<std::int64_t>(0, ms)) / 1000.0);
    return std::string(buf);
  };
  if (limit_.limit_requests) {
    h += "x-ratelimit-limit-requests: " + std::to_string(limit_.limit_requests) + "\r\n";
    h += "x-ratelimit-remaining-requests: " + std::to_string(limit_.remaining_requests) + "\r\n";
    h += "x-ratelimit-reset-requests: " + seconds(limit_.reset_requests_ms) + "\r\n";
  }
  if (limit_.limit_tokens) {
    h += "x-ratelimit-limit-tokens: " + std::to_string(limit_.limit_tokens) + "\r\n";
    h += "x-ratelimit-remaining-tokens: " + std::to_string(limit_.remaining_tokens) + "\r\n";
    h += "x-ratelimit-reset-tokens: " + seconds(limit_.reset_tokens_ms) + "\r\n";
  }
  return h;
}

void proxy_call::settle_attempt(std::string_view label, bool failed, bool breaker_counts) {
  if (!attempt_open_) return;
  attempt_open_ = false;
  auto now = std::chrono::steady_clock::now();
  auto upstream_us = std::chrono::duration_cast<std::chrono::microseconds>(now - upstream_start_).count();
  auto& stats = *dep_->stats;
  stats.inflight.fetch_sub(1, std::memory_order_relaxed);
  stats.requests.fetch_add(1, std::memory_order_relaxed);
  stats.latency_us_total.fetch_add(upstream_us, std::memory_order_relaxed);
  metrics::upstream_requests(dep_->id, label).inc();
  dep_->upstream_duration.observe(static_cast<double>(upstream_us) / 1e6);
  // Breaker bookkeeping: every outcome lands in the window; only failures and probe
  // results are reported to the breaker actor. A probe decides only with an answer: a
  // counted failure re-opens the breaker, an answer that is no failure closes it. One
  // that got neither (the request's deadline, the client gone, a failure the breaker does
  // not count) hands its probe back: the breaker stays half-open, the next request probes.
  auto& breaker = *dep_->breaker;
  bool bad = failed && breaker_counts;
  breaker.record(clock::steady_seconds(), bad);
  if (probe_ && failed && !bad)
    breaker.return_probe();
  else if (probe_ || bad) {
    if (breaker.report) breaker.report(probe_, !bad);
  }
  probe_ = false;
}

void proxy_call::count_usage() {
  if (!tokenizer() || usage_.present) return;
  usage_.prompt = prompt_count();
  usage_.completion = count_completion();
  usage_.cached = 0;
  usage_.present = true;
  estimated_ = estimated_ || prompt_count_.estimated;
}

std::int64_t proxy_call::count_completion() {
  // Every choice's (block's) text across all relayed events, counted once.
  auto tok = tokenizer();
  if (!tok) return 0;
  auto n = completion_.count(*tok);
  counted_ = true;
  estimated_ = estimated_ || n.estimated || encoding().empty();
  return n.tokens;
}

void proxy_call::finish_request(int status) {
  if (finished_) return;
  finished_ = true;
  if (xlate_ && !usage_.present) usage_ = xlate_->usage();
  if (stream_ && usage_.present && !usage_final_)
    usage_.completion = count_completion(); // interrupted: bill what was delivered
  if (!usage_.present && dep_ && (status < 400 || head_sent_))
    count_usage(); // the upstream reported nothing: bill what lowart counts
  // Price by the model the client asked for; bill the prompt estimate when the upstream
  // reported nothing and lowart has no tokenizer to count with.
  auto prices = client_->worker().state.prices.load();
  double cost = 0;
  std::int64_t price_version = 0;
  auto real_tokens = usage_.present ? usage_.prompt + usage_.completion : (status < 400 ? prompt_estimate_ : 0);
  // A failed request with usage (a stream cut off, a client gone) is priced for what was
  // relayed, as its tokens are.
  if (prices && (status < 400 || usage_.present)) {
    if (auto p = prices->by_model.find(ctx_.model); p != prices->by_model.end()) {
      // Volume tiers go by the team's tokens for this model this month, before this request.
      std::int64_t volume = 0;
      if (!ctx_.who->master && !ctx_.who->key->team_id.empty())
        volume =
            client_->worker().state.volumes.take(ctx_.who->key->team_id, ctx_.model, real_tokens, clock::unix_ms());
      cost = usage_.present ? p->second.cost(usage_.prompt, usage_.completion, usage_.cached, volume)
                            : p->second.cost(prompt_estimate_, 0, 0, volume);
      price_version = p->second.version;
      route_->cost.inc(cost);
    }
  }
  client_->worker().state.limiter.settle(ticket_, real_tokens, cost, clock::unix_ms());
  if (fleet_ticket_) {
    fleet_ticket_ = false;
    auto& state = client_->worker().state;
    state.fleet->settle(client_->worker().index, fleet_subjects_, fleet_reservation_, fleet_estimate_, real_tokens,
                        cost, clock::unix_ms());
    // This replica's own budget counters follow too: they decide while Redis is away
    // (on_redis_down = open), and must not start from zero then.
    state.limiter.charge(subject_refs(fleet_subjects_), real_tokens, cost, clock::unix_ms());
  }
  if (usage_.present) {
    route_->prompt_tokens.inc(static_cast<double>(usage_.prompt));
    route_->completion_tokens.inc(static_cast<double>(usage_.completion));
    if (usage_.cached) route_->cached_tokens.inc(static_cast<double>(usage_.cached));
  }
  usage_record rec;
  rec.request_id = ctx_.request_id;
  rec.ts_ms = clock::unix_ms();
  rec.key_id = std::string(ctx_.who->key_id());
  rec.route = std::string(ctx_.route);
  rec.model = ctx_.model;
  rec.deployment = dep_ ? dep_->id : std::string{};
  rec.status = status;
  rec.stream = stream_;
  rec.prompt_tokens = usage_.prompt;
  rec.completion_tokens = usage_.completion;
  rec.cached_tokens = usage_.cached;
  rec.latency_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - ctx_.start).count();
  rec.cost = cost;
  rec.price_version = price_version;
  rec.usage_source = !usage_.present ? "" : !counted_ ? "upstream" : estimated_ ? "estimated" : "counted";
  client_->worker().state.usage.push(std::move(rec));
  ctx_.usage_recorded = true; // the session writes no refusal record besides
}

} // namespace

std::string count_tokens_body(const bpe_tokenizer* tok, std::string_view body) {
  simdjson::dom::element doc;
  if (body.empty() || parse_reused(body, doc) != simdjson::SUCCESS || !doc.is_object()) return {};
  json::object_writer w;
  w.num("input_tokens", tok ? count_prompt(*tok, prompt_shape::anthropic_messages, doc, {}).tokens
                            : static_cast<long long>(body.size() / 4));
  return w.done();
}

void start_proxy(session_ptr client, request_context&& ctx, proxy_kind kind, std::string&& body,
                 std::shared_ptr<responses::exchange> responses) {
  std::make_shared<proxy_call>(std::move(client), std::move(ctx), kind, std::move(body), std::move(responses))->start();
}

} // namespace lowart::net
