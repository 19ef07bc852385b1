#include "net/proxy.hpp"

#include "core/json_text.hpp"
#include "core/log.hpp"
#include "net/sse.hpp"
#include "net/worker.hpp"

#include <boost/asio/write.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/read.hpp>
#include <simdjson.h>

#include <array>
#include <random>

namespace lowart::net {

namespace {

/// One JSON parser per I/O thread (simdjson parsers are not thread-safe).
simdjson::dom::parser& thread_parser() {
  thread_local simdjson::dom::parser parser;
  return parser;
}

/// Cheap per-thread randomness for weighted choice; not for secrets.
std::uint64_t next_random() {
  thread_local std::uint64_t s = std::random_device{}() | 1ull;
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

struct token_usage {
  std::int64_t prompt = 0;
  std::int64_t completion = 0;
  std::int64_t cached = 0;
  bool present = false;
};

/// Reads an OpenAI `usage` object.
void read_usage(simdjson::dom::element usage, token_usage& out) {
  if (!usage.is_object())
    return;
  std::int64_t v = 0;
  if (usage["prompt_tokens"].get_int64().get(v) == simdjson::SUCCESS) out.prompt = v;
  if (usage["completion_tokens"].get_int64().get(v) == simdjson::SUCCESS) out.completion = v;
  if (usage.at_pointer("/prompt_tokens_details/cached_tokens").get_int64().get(v) == simdjson::SUCCESS)
    out.cached = v;
  out.present = true;
}

/// Picks among the best-priority deployments, weighted. The list is sorted by priority.
std::shared_ptr<const deployment> choose(const model_route& route) {
  const auto& all = route.deployments;
  auto best = all.front()->priority;
  std::uint64_t total = 0;
  std::size_t n = 0;
  while (n < all.size() && all[n]->priority == best)
    total += static_cast<std::uint64_t>(all[n++]->weight);
  if (n == 1)
    return all.front();
  auto pick = next_random() % total;
  for (std::size_t i = 0; i < n; ++i) {
    auto w = static_cast<std::uint64_t>(all[i]->weight);
    if (pick < w)
      return all[i];
    pick -= w;
  }
  return all.front();
}

class proxy_call : public std::enable_shared_from_this<proxy_call> {
public:
  proxy_call(session_ptr client, request_context&& ctx, proxy_kind kind, std::string&& body)
      : client_(std::move(client)), ctx_(std::move(ctx)), kind_(kind), body_(std::move(body)) {}

  void start();

private:
  bool parse_request();
  void build_upstream_request();
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
  void flush_to_client(bool done);
  void stream_broke(std::string_view message);
  void finish_stream();
  void client_gone();
  void fail(error_kind kind, std::string_view message, std::string_view label, std::string_view code = {});
  void settle(int status, std::string_view label);
  std::string deployment_headers() const;

  template <class F>
  void with_stream(F&& f) { conn_->visit(std::forward<F>(f)); }

  session_ptr client_;
  request_context ctx_;
  proxy_kind kind_;
  std::string body_;
  std::shared_ptr<const route_table> routes_; ///< keeps route_ and dep_ alive
  const model_route* route_ = nullptr;
  std::shared_ptr<const deployment> dep_;
  bool stream_ = false;
  bool strip_usage_chunk_ = false; ///< we asked for include_usage, the client did not
  std::string upstream_request_;
  upstream_ptr conn_;
  bool retried_ = false;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  std::optional<http::response_parser<http::string_body>> full_;
  std::array<char, 16 * 1024> read_buf_;
  sse_parser sse_;
  std::string pending_; ///< complete SSE events not yet written to the client
  bool head_sent_ = false;
  bool settled_ = false;
  int upstream_status_ = 0;
  token_usage usage_;
  std::chrono::steady_clock::time_point upstream_start_;
};

void proxy_call::start() {
  if (!parse_request())
    return;
  build_upstream_request();
  dep_->stats->inflight.fetch_add(1, std::memory_order_relaxed);
  upstream_start_ = std::chrono::steady_clock::now();
  acquire(false);
}

bool proxy_call::parse_request() {
  // simdjson reads up to SIMDJSON_PADDING bytes past the end: make room instead of copying.
  body_.reserve(body_.size() + simdjson::SIMDJSON_PADDING);
  simdjson::dom::element doc;
  if (body_.empty() ||
      thread_parser().parse(body_.data(), body_.size(), false).get(doc) != simdjson::SUCCESS) {
    client_->respond_error(ctx_, error_kind::bad_request,
                           "the request body is not valid JSON", "invalid_json");
    return false;
  }
  simdjson::dom::object obj;
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
  bool client_usage = false;
  if (kind_ == proxy_kind::chat) {
    bool flag = false;
    if (obj["stream"].get_bool().get(flag) == simdjson::SUCCESS)
      stream_ = flag;
    if (obj.at_pointer("/stream_options/include_usage").get_bool().get(flag) == simdjson::SUCCESS)
      client_usage = flag;
  }

  routes_ = client_->worker().state.routes.load();
  auto it = routes_ ? routes_->models.find(ctx_.model) : decltype(routes_->models.end()){};
  if (!routes_ || it == routes_->models.end() || it->second.deployments.empty()) {
    client_->respond_error(ctx_, error_kind::not_found,
                           "The model `" + ctx_.model + "` does not exist or you do not have access to it.",
                           "model_not_found", {}, "model");
    return false;
  }
  if (!ctx_.who->master && !ctx_.who->key->allows_model(ctx_.model)) {
    client_->respond_error(ctx_, error_kind::forbidden,
                           "this key is not allowed to use model `" + ctx_.model + "`", "model_not_allowed", {},
                           "model");
    return false;
  }
  route_ = &it->second;
  dep_ = choose(*route_);
  ctx_.deployment = dep_->id;

  if (dep_->upstream_model != ctx_.model)
    json::set_member(body_, "model", json::quoted(dep_->upstream_model));
  if (stream_ && dep_->settings->include_usage && !client_usage) {
    // Ask the upstream for its usage chunk so streams are metered exactly, and keep
    // that chunk from a client that did not ask for it.
    strip_usage_chunk_ = true;
    if (auto where = json::find_member(body_, "stream_options"); where && body_[where->begin] == '{') {
      std::string options = body_.substr(where->begin, where->end - where->begin);
      json::set_member(options, "include_usage", "true");
      body_.replace(where->begin, where->end - where->begin, options);
    } else {
      json::set_member(body_, "stream_options", R"({"include_usage":true})");
    }
  }
  return true;
}

void proxy_call::build_upstream_request() {
  const auto& target = dep_->target;
  const auto& settings = *dep_->settings;
  auto& r = upstream_request_;
  r.reserve(320 + body_.size());
  r += "POST ";
  r += target.base_path;
  r += kind_ == proxy_kind::chat ? "/chat/completions" : "/embeddings";
  r += " HTTP/1.1\r\nHost: ";
  r += target.host_header;
  r += "\r\nContent-Type: application/json\r\nAccept: ";
  r += stream_ ? "text/event-stream" : "application/json";
  r += "\r\nUser-Agent: lowart/0.1\r\nX-Request-Id: ";
  r += ctx_.request_id;
  if (!settings.api_key.empty()) {
    r += "\r\nAuthorization: Bearer ";
    r += settings.api_key;
  }
  r += "\r\nContent-Length: ";
  r += std::to_string(body_.size());
  r += "\r\n\r\n";
  r += body_;
}

void proxy_call::acquire(bool fresh) {
  auto handler = [self = shared_from_this()](connect_failure failure, std::string detail, upstream_ptr conn) {
    self->on_connection(failure, std::move(detail), std::move(conn));
  };
  auto& pool = client_->worker().pool;
  if (fresh)
    pool.connect(*dep_, std::move(handler));
  else
    pool.acquire(*dep_, std::move(handler));
}

void proxy_call::on_connection(connect_failure failure, std::string detail, upstream_ptr conn) {
  switch (failure) {
    case connect_failure::none: break;
    case connect_failure::timeout:
      fail(error_kind::gateway_timeout, "upstream connect timed out", "timeout", "upstream_timeout");
      return;
    case connect_failure::resolve:
      fail(error_kind::bad_gateway, "upstream unreachable: " + detail, "dns_error", "upstream_unreachable");
      return;
    case connect_failure::tls:
      fail(error_kind::bad_gateway, "upstream unreachable: " + detail, "tls_error", "upstream_unreachable");
      return;
    case connect_failure::refused:
      fail(error_kind::bad_gateway, "upstream unreachable: " + detail, "connect_error", "upstream_unreachable");
      return;
  }
  conn_ = std::move(conn);
  send_request();
}

void proxy_call::send_request() {
  conn_->tcp().expires_after(std::chrono::milliseconds(dep_->settings->first_byte_timeout_ms));
  with_stream([&](auto& s) {
    asio::async_write(s, asio::buffer(upstream_request_),
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        if (ec)
                          return self->upstream_failed(ec, "sending the request");
                        self->read_header();
                      });
  });
}

void proxy_call::read_header() {
  if (!stream_) {
    // A plain JSON answer: read head and body in one operation.
    full_.emplace();
    full_->body_limit(64 * 1024 * 1024);
    with_stream([&](auto& s) {
      http::async_read(s, conn_->buffer, *full_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
        if (ec && !self->full_->is_header_done())
          return self->upstream_failed(ec, "waiting for the response");
        self->upstream_status_ = self->full_->get().result_int();
        self->on_full_body(ec);
      });
    });
    return;
  }
  parser_.emplace();
  parser_->body_limit(boost::none);
  with_stream([&](auto& s) {
    http::async_read_header(s, conn_->buffer, *parser_,
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (ec)
                                return self->upstream_failed(ec, "waiting for the response");
                              self->upstream_status_ = self->parser_->get().result_int();
                              auto type = self->parser_->get()[http::field::content_type];
                              if (self->upstream_status_ == 200 && type.rfind("text/event-stream", 0) == 0) {
                                self->read_stream();
                              } else {
                                self->read_full_body();
                              }
                            });
  });
}

void proxy_call::upstream_failed(beast::error_code ec, std::string_view during) {
  bool timeout = ec == beast::error::timeout;
  // A pooled connection the upstream closed while idle fails before any response byte:
  // that is not the upstream's fault, so try once more on a fresh connection.
  if (!timeout && conn_ && conn_->reused && !retried_) {
    retried_ = true;
    conn_.reset();
    acquire(true);
    return;
  }
  conn_.reset();
  if (timeout)
    fail(error_kind::gateway_timeout,
         "upstream did not answer within " + std::to_string(dep_->settings->first_byte_timeout_ms) + " ms",
         "timeout", "upstream_timeout");
  else
    fail(error_kind::bad_gateway, "upstream connection failed while " + std::string(during) + ": " + ec.message(),
         "reset", "upstream_error");
}

void proxy_call::read_full_body() {
  full_.emplace(std::move(*parser_));
  parser_.reset();
  full_->body_limit(64 * 1024 * 1024);
  conn_->tcp().expires_after(std::chrono::milliseconds(dep_->settings->idle_timeout_ms));
  with_stream([&](auto& s) {
    http::async_read(s, conn_->buffer, *full_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_full_body(ec); });
  });
}

void proxy_call::on_full_body(beast::error_code ec) {
  if (ec) {
    conn_.reset();
    if (ec == beast::error::timeout)
      fail(error_kind::gateway_timeout, "upstream stopped sending its response", "timeout", "upstream_timeout");
    else
      fail(error_kind::bad_gateway, "upstream response broke off: " + ec.message(), "reset", "upstream_error");
    return;
  }
  auto& res = full_->get();
  auto& body = res.body();
  if (upstream_status_ == 200 && body.find("\"usage\"") != std::string::npos) {
    auto capacity_needed = body.size() + simdjson::SIMDJSON_PADDING;
    if (body.capacity() < capacity_needed)
      body.reserve(capacity_needed);
    simdjson::dom::element doc;
    if (thread_parser().parse(body.data(), body.size(), false).get(doc) == simdjson::SUCCESS) {
      simdjson::dom::element usage;
      if (doc["usage"].get(usage) == simdjson::SUCCESS)
        read_usage(usage, usage_);
    }
  }
  bool upstream_keep_alive = full_->keep_alive();
  std::string headers = deployment_headers();
  if (auto it = res.find(http::field::retry_after); it != res.end()) {
    headers += "retry-after: ";
    headers += it->value();
    headers += "\r\n";
  }
  std::string type(res[http::field::content_type]);
  if (type.empty())
    type = "application/json";
  if (upstream_keep_alive)
    client_->worker().pool.release(std::move(conn_), dep_->settings->max_idle_connections);
  conn_.reset();
  auto status = upstream_status_;
  settle(status, std::to_string(status));
  client_->respond(ctx_, status, type, body, headers);
}

void proxy_call::read_stream() {
  auto& b = parser_->get().body();
  b.data = read_buf_.data();
  b.size = read_buf_.size();
  conn_->tcp().expires_after(std::chrono::milliseconds(dep_->settings->idle_timeout_ms));
  with_stream([&](auto& s) {
    http::async_read_some(s, conn_->buffer, *parser_,
                          [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_stream_read(ec); });
  });
}

void proxy_call::on_stream_read(beast::error_code ec) {
  if (ec == http::error::need_buffer)
    ec = {};
  if (ec) {
    conn_.reset();
    stream_broke(ec == beast::error::timeout ? "upstream stream stalled (idle timeout)"
                                             : "upstream stream broke: " + ec.message());
    return;
  }
  auto got = read_buf_.size() - parser_->get().body().size;
  if (got > 0 && !sse_.feed({read_buf_.data(), got}, [this](const sse_event& ev) { on_event(ev); })) {
    conn_.reset();
    stream_broke("upstream sent an SSE line over the size limit");
    return;
  }
  bool done = parser_->is_done();
  if (pending_.empty() && !done) {
    read_stream();
    return;
  }
  flush_to_client(done);
}

void proxy_call::on_event(const sse_event& ev) {
  if (ev.has_data && ev.data != "[DONE]" && ev.data.find("\"usage\":{") != std::string::npos) {
    std::string data = ev.data;
    data.reserve(data.size() + simdjson::SIMDJSON_PADDING);
    simdjson::dom::element doc;
    if (thread_parser().parse(data.data(), data.size(), false).get(doc) == simdjson::SUCCESS) {
      simdjson::dom::element usage;
      if (doc["usage"].get(usage) == simdjson::SUCCESS)
        read_usage(usage, usage_);
      simdjson::dom::array choices;
      if (strip_usage_chunk_ && doc["choices"].get_array().get(choices) == simdjson::SUCCESS &&
          choices.size() == 0)
        return; // the usage chunk we asked for on the client's behalf
    }
  }
  append_sse_event(pending_, ev);
}

void proxy_call::flush_to_client(bool done) {
  std::string out;
  out.reserve(pending_.size() + 512);
  if (!head_sent_) {
    ctx_.keep_alive = ctx_.keep_alive && !client_->worker().state.draining.load(std::memory_order_relaxed);
    session::append_head(out, ctx_, 200, "text/event-stream; charset=utf-8",
                         deployment_headers() + "Cache-Control: no-cache\r\n", std::nullopt);
    head_sent_ = true;
  }
  if (!pending_.empty()) {
    char size[20];
    int n = std::snprintf(size, sizeof size, "%zx\r\n", pending_.size());
    out.append(size, static_cast<std::size_t>(n));
    out += pending_;
    out += "\r\n";
    pending_.clear();
  }
  if (done)
    out += "0\r\n\r\n";
  client_->write_raw(std::move(out), [self = shared_from_this(), done](bool ok) {
    if (!ok)
      return self->client_gone();
    if (done)
      self->finish_stream();
    else
      self->read_stream();
  });
}

void proxy_call::stream_broke(std::string_view message) {
  if (!head_sent_) {
    fail(error_kind::bad_gateway, message, "reset", "upstream_error");
    return;
  }
  // Bytes already reached the client: end the stream with an error event it can see.
  pending_ += "data: ";
  pending_ += error_body(api_format::openai, error_kind::bad_gateway, message, "upstream_error");
  pending_ += "\n\n";
  std::string out;
  char size[20];
  int n = std::snprintf(size, sizeof size, "%zx\r\n", pending_.size());
  out.append(size, static_cast<std::size_t>(n));
  out += pending_;
  out += "\r\n0\r\n\r\n";
  pending_.clear();
  settle(502, "reset");
  log::warn("upstream stream broke", {{"request_id", ctx_.request_id}, {"deployment", dep_->id},
                                      {"error", message}});
  client_->write_raw(std::move(out), [self = shared_from_this()](bool ok) {
    self->client_->end_streamed(self->ctx_, 502, ok);
  });
}

void proxy_call::finish_stream() {
  if (parser_->keep_alive())
    client_->worker().pool.release(std::move(conn_), dep_->settings->max_idle_connections);
  conn_.reset();
  settle(200, "200");
  client_->end_streamed(ctx_, 200, true);
}

void proxy_call::client_gone() {
  // The client stopped reading or went away: drop the upstream (its answer is not
  // complete) and still account for what was delivered.
  conn_.reset();
  settle(499, std::to_string(upstream_status_));
  client_->end_streamed(ctx_, 499, false);
}

void proxy_call::fail(error_kind kind, std::string_view message, std::string_view label, std::string_view code) {
  settle(status_of(kind), label);
  client_->respond_error(ctx_, kind, message, code, deployment_headers());
}

std::string proxy_call::deployment_headers() const {
  std::string h = "x-lowart-deployment: ";
  h += dep_->id;
  h += "\r\n";
  return h;
}

void proxy_call::settle(int status, std::string_view label) {
  if (settled_)
    return;
  settled_ = true;
  auto now = std::chrono::steady_clock::now();
  auto upstream_us = std::chrono::duration_cast<std::chrono::microseconds>(now - upstream_start_).count();
  auto& stats = *dep_->stats;
  stats.inflight.fetch_sub(1, std::memory_order_relaxed);
  stats.requests.fetch_add(1, std::memory_order_relaxed);
  stats.latency_us_total.fetch_add(upstream_us, std::memory_order_relaxed);
  bool failed = label == "timeout" || label == "reset" || label == "connect_error" || label == "dns_error" ||
                label == "tls_error" || upstream_status_ >= 500 || upstream_status_ == 429;
  if (failed)
    stats.failures.fetch_add(1, std::memory_order_relaxed);
  metrics::upstream_requests(dep_->id, label).inc();
  dep_->upstream_duration.observe(static_cast<double>(upstream_us) / 1e6);
  if (usage_.present) {
    route_->prompt_tokens.inc(static_cast<double>(usage_.prompt));
    route_->completion_tokens.inc(static_cast<double>(usage_.completion));
    if (usage_.cached)
      route_->cached_tokens.inc(static_cast<double>(usage_.cached));
  }
  usage_record rec;
  rec.request_id = ctx_.request_id;
  rec.ts_ms = now_ms();
  rec.key_id = std::string(ctx_.who->key_id());
  rec.route = std::string(ctx_.route);
  rec.model = ctx_.model;
  rec.deployment = dep_->id;
  rec.status = status;
  rec.stream = stream_;
  rec.prompt_tokens = usage_.prompt;
  rec.completion_tokens = usage_.completion;
  rec.cached_tokens = usage_.cached;
  rec.latency_ms = std::chrono::duration<double, std::milli>(now - ctx_.start).count();
  client_->worker().state.usage.push(std::move(rec));
}

} // namespace

void start_proxy(session_ptr client, request_context&& ctx, proxy_kind kind, std::string&& body) {
  std::make_shared<proxy_call>(std::move(client), std::move(ctx), kind, std::move(body))->start();
}

} // namespace lowart::net
