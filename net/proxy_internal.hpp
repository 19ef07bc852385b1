// The proxy path's shared parts: the proxy_call class (one model request, served
// across net/proxy.cpp, proxy_hooks.cpp, proxy_request.cpp, proxy_upstream.cpp,
// proxy_stream.cpp and proxy_metering.cpp) and the small helpers they all use, inline
// for the hot path.
#pragma once
#include "core/json_text.hpp"
#include "net/proxy.hpp"
#include "net/sse.hpp"
#include "net/translate.hpp"
#include "net/usage_count.hpp"
#include "net/worker.hpp"
#include "scripting/script_table.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lowart::net::proxy_detail {

/// One JSON parser per I/O thread (simdjson parsers are not thread-safe).
inline simdjson::dom::parser& thread_parser() {
  thread_local simdjson::dom::parser parser;
  return parser;
}

/// Cheap per-thread randomness for balancing and jitter; not for secrets.
inline std::uint64_t next_random() {
  thread_local std::uint64_t s = std::random_device{}() | 1ull;
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

/// Parses `text` with the thread's parser through a reused padded buffer (no allocation
/// once warm; simdjson reads past the end of what it is given).
inline simdjson::error_code parse_reused(std::string_view text, simdjson::dom::element& doc) {
  thread_local std::string buf;
  if (buf.capacity() > 1024 * 1024 && text.size() < 64 * 1024) std::string().swap(buf); // after a huge body
  buf.reserve(text.size() + simdjson::SIMDJSON_PADDING);
  buf.assign(text);
  return thread_parser().parse(buf.data(), buf.size(), false).get(doc);
}

inline bool contains(std::string_view hay, std::string_view needle) {
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

/// The headers a hook set as "name: value\r\n" lines: those it added or changed, not the
/// client's own that it handed back untouched (`original`: the JSON object it was given).
std::string changed_headers(const std::vector<std::pair<std::string, std::string>>& headers, std::string_view original);

/// "1a2f\r\n": the chunk-size line of chunked transfer encoding.
inline void append_chunk_size(std::string& out, std::size_t n) {
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
inline own_count count_prompt(const bpe_tokenizer& tok, protocol proto, proxy_kind kind, std::string_view body,
                              std::string_view encoding) {
  simdjson::dom::element doc;
  if (parse_reused(body, doc) != simdjson::SUCCESS) return {};
  auto shape = kind == proxy_kind::embeddings ? prompt_shape::embeddings
               : proto == protocol::anthropic ? prompt_shape::anthropic_messages
                                              : prompt_shape::openai_chat;
  return count_prompt(tok, shape, doc, encoding);
}

inline protocol protocol_of(const deployment& dep) {
  return dep.settings->kind == "anthropic" ? protocol::anthropic : protocol::openai;
}

using deployment_ptr = std::shared_ptr<const deployment>;

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
  void append_ratelimit_headers(std::string& out) const;
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
  bool structured_ = false;               ///< ... with response_format as the json_output tool
  bool capture_ = false;                  ///< the request log keeps this request's bodies (log_bodies)
  std::string captured_;                  ///< ... the answer as the client got it, cut at the cap
  void capture(std::string_view piece);
  std::string body_; ///< the client's body (usage option already injected); model set per attempt
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
  /// not carry one it never uses. Events are small and come a few at a time; a larger
  /// burst is taken in several parses (need_buffer), so a held stream keeps 4 KiB here.
  static constexpr std::size_t read_buf_size = 4 * 1024;
  std::unique_ptr<char[]> read_buf_;
  std::string wire_;        ///< what flush_to_client writes next (swapped with the session's)
  bool flush_done_ = false; ///< the write in flight ends the stream
  sse_parser sse_;
  std::string pending_;       ///< complete SSE events not yet written to the client
  bool content_seen_ = false; ///< held-back preamble released
  bool head_sent_ = false;
  bool attempt_open_ = false;
  bool finished_ = false;
  int upstream_status_ = 0;
  token_usage usage_;
  std::chrono::steady_clock::time_point upstream_start_;
  std::chrono::steady_clock::time_point first_byte_{}; ///< when a stream's head went to the client
  /// The request log's trace: each deployment tried (or skipped: breaker open), in order.
  /// Bounded (a request tries few); the ids live as long as routes_.
  struct attempt_entry {
    const std::string* deployment = nullptr;
    std::string outcome; ///< the upstream-request label: "200", "500", "timeout", "reset", ...
    int status = 0;      ///< the upstream's status, 0 without an answer
    double ms = 0;
  };
  static constexpr std::size_t max_attempts_logged = 8;
  std::array<attempt_entry, max_attempts_logged> attempts_{};
  std::size_t attempt_count_ = 0;
  void log_attempt(const std::string& deployment, std::string_view outcome, int status, double ms);
  std::string attempts_json(int final_status) const;
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

inline std::chrono::milliseconds proxy_call::remaining() const {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds(1));
}

} // namespace lowart::net::proxy_detail
