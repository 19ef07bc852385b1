#include "net/session.hpp"

#include "actors/admin/rbac.hpp"
#include "actors/runtime.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"
#include "core/request_id.hpp"
#include "core/secrets.hpp"
#include "net/proxy.hpp"
#include "net/request_head.hpp"
#include "net/responses_route.hpp"
#include "net/routing.hpp"
#include "net/ui_files.hpp"
#include "net/worker.hpp"
#include "net/write_now.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/read.hpp>
#include <simdjson.h>

#include <cctype>
#include <charconv>
#include <ctime>

namespace lowart::net {

namespace {

std::string_view reason_phrase(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 308:
    return "Permanent Redirect";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 413:
    return "Payload Too Large";
  case 422:
    return "Unprocessable Entity";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  default:
    return status < 400 ? "OK" : "Error";
  }
}

/// The active virtual key whose secret is `presented` (hash, map probe, constant-time
/// compare), or null.
std::shared_ptr<const key_entry> active_key(const gateway_state& state, std::string_view presented) {
  auto keys = state.keys.load();
  if (!keys) return nullptr;
  auto hash = secrets::sha256_hex(presented);
  auto it = keys->by_hash.find(hash);
  if (it == keys->by_hash.end() || !secrets::constant_time_equal(it->second->hash, hash)) return nullptr;
  return it->second;
}

/// The routes whose refusals leave a usage record: the APIs keys are metered on (not
/// probes, metrics, the console, the admin API or unknown paths).
bool refusals_recorded(std::string_view route) {
  return route == "chat" || route == "embeddings" || route == "messages" || route == "count_tokens" ||
         route == "models" || route == "responses" || route == "mcp" || route == "a2a" || route == "jobs";
}

/// The reason code in an error answer an actor built: error.code, else error.type, else
/// the status's kind.
std::string error_code_of(std::string_view body, int status) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view code;
  if (!body.empty() && parser.parse(body.data(), body.size(), true).get(doc) == simdjson::SUCCESS &&
      (doc.at_pointer("/error/code").get_string().get(code) == simdjson::SUCCESS ||
       doc.at_pointer("/error/type").get_string().get(code) == simdjson::SUCCESS) &&
      !code.empty())
    return std::string(code);
  return std::string(kind_name(kind_of_status(status)));
}

/// An SSE response that an actor writes through gateway_state::streams (A2A
/// message/stream). Lives on the session's thread; one write in flight.
struct actor_stream : std::enable_shared_from_this<actor_stream> {
  session_ptr client;
  std::shared_ptr<request_context> ctx;
  std::string pending;
  bool writing = false;
  bool head_sent = false;
  bool last_seen = false;
  bool ended = false;
  std::atomic<bool> gone{false};

  ~actor_stream() {
    // The sink or the done callback may be the last holder, on a CAF thread.
    if (!client) return;
    auto exec = client->executor(); // before the move below: argument order is unspecified
    asio::post(exec, [c = std::move(client)]() mutable { c.reset(); });
  }

  void push(std::string chunk, bool last) {
    if (ended) return;
    std::string out;
    if (!head_sent) {
      session::append_head(out, *ctx, 200, "text/event-stream; charset=utf-8", "Cache-Control: no-cache\r\n",
                           std::nullopt);
      head_sent = true;
    }
    if (!chunk.empty()) {
      char size[20];
      std::snprintf(size, sizeof size, "%zx\r\n", chunk.size());
      out += size;
      out += chunk;
      out += "\r\n";
    }
    if (last) {
      out += "0\r\n\r\n";
      last_seen = true;
    }
    pending += out;
    flush();
  }

  void flush() {
    if (writing) return;
    if (pending.empty()) {
      if (last_seen && !ended) {
        ended = true;
        client->end_streamed(*ctx, 200, true);
      }
      return;
    }
    writing = true;
    auto data = std::move(pending);
    pending.clear();
    client->write_raw(std::move(data), [self = shared_from_this()](bool ok) {
      self->writing = false;
      if (!ok) {
        self->gone = true;
        self->ended = true;
        self->client->end_streamed(*self->ctx, 499, false);
        return;
      }
      self->flush();
    });
  }
};

void append_number(std::string& out, std::size_t n) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n);
  out.append(buf, end);
}

/// A host[:port] that can stand in a URL as is (no scheme, path, query, credentials or space).
bool plain_host(std::string_view host) {
  if (host.empty() || host.size() > 255) return false;
  for (char c : host)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != ':' && c != '[' && c != ']' &&
        c != '_')
      return false;
  return true;
}

/// The first value of a comma-separated forwarding header, without spaces around it.
std::string_view first_value(std::string_view list) {
  list = list.substr(0, list.find(','));
  while (!list.empty() && list.front() == ' ')
    list.remove_prefix(1);
  while (!list.empty() && list.back() == ' ')
    list.remove_suffix(1);
  return list;
}

} // namespace

session::session(server_worker& worker, tcp_stream&& stream)
    : worker_(worker), stream_(std::in_place_index<0>, std::move(stream)) {
  worker_.sessions.push_front(this);
  worker_.open_sessions.fetch_add(1, std::memory_order_relaxed);
  metrics::connections_open().add(1);
}

session::session(server_worker& worker, uds_stream&& stream)
    : worker_(worker), stream_(std::in_place_index<1>, std::move(stream)) {
  worker_.sessions.push_front(this);
  worker_.open_sessions.fetch_add(1, std::memory_order_relaxed);
  metrics::connections_open().add(1);
}

session::~session() {
  worker_.sessions.remove(this);
  worker_.open_sessions.fetch_sub(1, std::memory_order_relaxed);
  metrics::connections_open().add(-1);
}

session_ref::~session_ref() {
  if (!ptr) return;
  auto exec = ptr->executor();
  asio::post(exec, [p = std::move(ptr)]() mutable { p.reset(); });
}

session::executor_type session::executor() {
  return worker_.ioc.get_executor();
}

void session::start() {
  // Beast reads at most the buffer's free capacity (512 bytes when new): a typical
  // chat request must arrive in one read.
  buffer_.reserve(16 * 1024);
  if (auto* tcp = std::get_if<0>(&stream_)) {
    beast::error_code ec;
    tcp->socket().set_option(asio::ip::tcp::no_delay(true), ec);
  }
  do_read();
}

void session::do_read() {
  const auto& cfg = worker_.state.config.server;
  if (worker_.state.draining.load(std::memory_order_relaxed)) {
    graceful_close();
    return;
  }
  idle_ = true;
  // request_head.hpp: the parser, its feeding and the refusals are the fuzzer's too.
  prepare_parser(parser_, cfg.max_header_bytes, cfg.max_body_bytes);
  if (buffer_.size() > 0) { // a pipelined request is already here
    read_request();
    return;
  }
  // Waiting for a request is bounded by the keep-alive idle timeout; once its first
  // bytes arrive, head and body must follow within header_timeout_ms (a client that
  // trickles its head a byte at a time is cut off then).
  visit([&](auto& s) {
    s.expires_after(std::chrono::milliseconds(cfg.idle_timeout_ms));
    s.async_read_some(buffer_.prepare(16 * 1024), [self = shared_from_this()](beast::error_code ec, std::size_t n) {
      if (ec) {
        self->on_read(ec);
        return;
      }
      self->buffer_.commit(n);
      self->idle_ = false; // a request is arriving: draining lets it finish
      self->read_request();
    });
  });
}

void session::read_request() {
  // Most requests are in the buffer whole once their first bytes are: parse them here.
  // Only a request still arriving arms the header timeout (a timer per request, and a
  // timerfd syscall whenever it became the reactor's earliest).
  auto ec = parse_buffered(*parser_, buffer_);
  if (ec || parser_->is_done()) {
    on_read(ec);
    return;
  }
  visit([&](auto& s) {
    s.expires_after(std::chrono::milliseconds(worker_.state.config.server.header_timeout_ms));
    http::async_read(s, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  });
}

void session::on_read(beast::error_code ec) {
  idle_ = false;
  if (closed_) return;
  if (ec) {
    // Over a limit or malformed: answered once, then closed; the peer gone: closed.
    auto refusal = refusal_for(ec, worker_.state.config.server.max_body_bytes); // request_head.hpp
    if (!refusal) {
      graceful_close();
      return;
    }
    request_context ctx;
    ctx.request_id = new_request_id();
    ctx.start = std::chrono::steady_clock::now();
    ctx.keep_alive = false;
    if (refusal->names_request && parser_ && parser_->is_header_done()) {
      ctx.method = std::string(parser_->get().method_string());
      ctx.path = std::string(strip_query(parser_->get().target()));
      if (ctx.path.rfind("/admin", 0) == 0) ctx.format = api_format::admin;
    }
    respond_error(ctx, refusal->kind, refusal->message);
    return;
  }
  handle(parser_->release());
}

void session::handle(http::request<http::string_body>&& req) {
  request_context ctx;
  ctx.start = std::chrono::steady_clock::now();
  // The route table (routing.hpp) lists what lowart serves: a path it does not list is
  // 404 and a method it does not list for the path 405, before anything else is decided
  // (no key is looked at), so an endpoint missing from the table cannot be reached.
  // request_head.hpp decides it from the head alone (and the fuzzer runs the same code).
  auto head = read_head(req);
  ctx.request_id = std::move(head.request_id);
  ctx.keep_alive = head.keep_alive;
  ctx.method = std::move(head.method);
  ctx.path = std::move(head.path);
  std::string_view path = strip_query(req.target());
  auto method = req.method();
  auto& state = worker_.state;

  const route_entry* entry = head.entry;
  auto info = head.info;
  if (head.verdict != head_verdict::serve) {
    ctx.route = info.route;
    ctx.format = info.format;
    ctx.rpc_id = std::move(head.rpc_id);
    if (head.verdict == head_verdict::not_found)
      respond_error(ctx, error_kind::not_found, "unknown endpoint " + ctx.method + " " + ctx.path,
                    ctx.format == api_format::admin ? "" : "unknown_url");
    else
      respond_error(ctx, error_kind::method_not_allowed,
                    "use " + method_names(entry->methods, " or ") + " for " + ctx.path, {},
                    "Allow: " + method_names(entry->methods, ", ") + "\r\n");
    return;
  }

  // Public probes and metrics.
  if (path == "/healthz") {
    ctx.route = "healthz";
    respond(ctx, 200, "application/json", R"({"status":"ok"})");
    return;
  }
  if (path == "/readyz") {
    ctx.route = "readyz";
    respond_readiness(ctx);
    return;
  }
  if (path == "/metrics") {
    ctx.route = "metrics";
    respond(ctx, 200, "text/plain; version=0.0.4; charset=utf-8", metrics::render());
    return;
  }

  // The metrics label is known from the path alone, so refusals count under their route.
  bool admin = info.route == "admin";
  ctx.route = info.route;
  ctx.format = info.format;
  // Refusals on a JSON-RPC endpoint (/mcp, /a2a...) are JSON-RPC errors with the request's id.
  if (ctx.format == api_format::jsonrpc) ctx.rpc_id = jsonrpc_id(req.body());
  if (state.draining.load(std::memory_order_relaxed)) {
    ctx.keep_alive = false;
    respond_error(ctx, error_kind::unavailable, "the gateway is shutting down");
    return;
  }

  // The web console: public static files (it asks for a key itself and keeps it in the
  // browser's session storage).
  if (path == "/ui" || path.rfind("/ui/", 0) == 0) {
    ctx.route = "ui";
    if (method != http::verb::get && method != http::verb::head) {
      respond_error(ctx, error_kind::method_not_allowed, "use GET for the web console");
      return;
    }
    if (path == "/ui") {
      respond(ctx, 308, "text/plain; charset=utf-8", "", "Location: /ui/\r\n");
      return;
    }
    const auto* file = state.ui ? state.ui->find(path.substr(4)) : nullptr;
    if (!file) {
      respond_error(ctx, error_kind::not_found,
                    state.ui ? "no such file in the web console" : "the web console is not built (run the set-up)");
      return;
    }
    respond(ctx, 200, file->content_type, file->body,
            file->immutable ? "Cache-Control: public, max-age=31536000, immutable\r\n"
                            : "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n"
                              "Content-Security-Policy: default-src 'self'; style-src 'self' 'unsafe-inline'; "
                              "img-src 'self' data:; connect-src 'self'\r\n");
    return;
  }

  // Agent cards are public (A2A clients read them before they authenticate).
  if (ctx.route == "a2a" && method == http::verb::get && path.ends_with("/.well-known/agent-card.json")) {
    actors::admin_call call;
    call.method = ctx.method;
    call.path = ctx.path;
    call.role = "public";
    call.query = "base=" + public_base(req);
    // A key, when one is presented and valid, also shows the cards of its team's agents;
    // without one (or with a bad one) only shared agents' cards are public.
    if (auto presented = presented_key(req); !presented.empty()) {
      const auto& master = state.config.server.master_key;
      if (!master.empty() && secrets::constant_time_equal(presented, master)) {
        call.key_id = "master";
        call.role = "admin";
      } else if (auto k = active_key(state, presented);
                 k && !(k->expires_at && k->expires_at <= clock::unix_seconds())) {
        call.key_id = k->id;
        call.role = k->role;
      }
    }
    auto shared = std::make_shared<request_context>(std::move(ctx));
    worker_.runtime.a2a(std::move(call), [held = std::make_shared<session_ref>(shared_from_this()),
                                          shared](int status, std::string body, std::string type) {
      auto self = held->ptr;
      asio::post(self->executor(), [self, shared, status, body = std::move(body), type = std::move(type)] {
        self->respond(*shared, status, type, body);
      });
    });
    return;
  }

  // Authentication: the master key, or a virtual key from the snapshot (hash + lookup).
  // Every 401 carries a Bearer challenge (RFC 6750), naming an invalid token as such.
  auto unauthorized = [&](std::string_view message, std::string_view code, bool presented) {
    respond_error(ctx, error_kind::unauthorized, message, admin ? "" : code,
                  presented ? "WWW-Authenticate: Bearer realm=\"lowart\", error=\"invalid_token\"\r\n"
                            : "WWW-Authenticate: Bearer realm=\"lowart\"\r\n");
  };
  auto key = presented_key(req);
  if (key.empty()) {
    unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'", "invalid_api_key", false);
    return;
  }
  const auto& master = state.config.server.master_key;
  if (!master.empty() && secrets::constant_time_equal(key, master)) {
    ctx.who = principal{nullptr, true};
  } else {
    auto k = active_key(state, key);
    const key_entry* found = k.get();
    if (k) ctx.who = principal{std::move(k), false};
    if (!found) {
      unauthorized("invalid API key", "invalid_api_key", true);
      return;
    }
    if (found->expires_at && found->expires_at <= clock::unix_seconds()) {
      unauthorized("API key has expired", "expired_api_key", true);
      return;
    }
  }

  bool me = path == "/v1/me" || path.rfind("/v1/me/", 0) == 0;
  if (admin || me) {
    std::string_view role = ctx.who->master ? std::string_view{"admin"} : std::string_view{ctx.who->key->role};
    if (admin) {
      // The role table is checked here, before any actor is asked (rbac.hpp).
      auto resource = entry->resource;
      if (!rbac::may(role, ctx.method, resource)) {
        respond_error(ctx, error_kind::forbidden,
                      role == "user" ? "this key may not use the admin API"
                                     : "role " + std::string(role) + " may not " + ctx.method + " " + ctx.path,
                      "permission_error");
        return;
      }
      if (path == "/admin/breakers") {
        if (method != http::verb::get) {
          respond_error(ctx, error_kind::method_not_allowed, "use GET for /admin/breakers");
          return;
        }
        // Breaker state lives in the route snapshot: answered here, no actor asked.
        respond(ctx, 200, "application/json", render_breakers());
        return;
      }
    } else {
      ctx.route = "me";
    }
    forward_to_actors(ctx, req, false);
    return;
  }

  if (ctx.route == "a2a") {
    // The agent bus: JSON-RPC at /a2a..., the agents' own API at /v1/agents...
    forward_to_actors(ctx, req, false, false, true);
    return;
  }
  if (ctx.route == "jobs") {
    // Background jobs: the jobs manager actor answers (an image request without
    // async waits there for its job).
    forward_to_actors(ctx, req, false, true);
    return;
  }
  if (ctx.route == "mcp") {
    // Tools: the MCP manager actor decides (policy, approvals) and runs the call.
    forward_to_actors(ctx, req, true);
    return;
  }

  // OpenAI-compatible API.
  if (ctx.route == "models") {
    if (method != http::verb::get) {
      respond_error(ctx, error_kind::method_not_allowed, "use GET for /v1/models");
      return;
    }
    // One list both SDKs read: OpenAI's fields (object, created, owned_by) and
    // Anthropic's (type, display_name, created_at, has_more, first_id, last_id).
    auto routes = state.routes.load();
    std::string body = R"({"object":"list","data":[)";
    std::string first_id, last_id;
    if (routes) {
      for (const auto& name : routes->names) {
        if (!ctx.who->master && !ctx.who->key->allows_model(name)) continue;
        if (first_id.empty())
          first_id = name;
        else
          body += ',';
        last_id = name;
        body += R"({"id":)";
        json::append_quoted(body, name);
        body += R"(,"object":"model","created":0,"owned_by":"lowart","type":"model","display_name":)";
        json::append_quoted(body, name);
        body += R"(,"created_at":"1970-01-01T00:00:00Z"})";
      }
    }
    body += R"(],"has_more":false,"first_id":)";
    body += first_id.empty() ? std::string("null") : json::quoted(first_id);
    body += R"(,"last_id":)";
    body += last_id.empty() ? std::string("null") : json::quoted(last_id);
    body += "}";
    respond(ctx, 200, "application/json", body);
    return;
  }
  if (ctx.route == "count_tokens") {
    if (method != http::verb::post) {
      respond_error(ctx, error_kind::method_not_allowed, "use POST for " + std::string(path));
      return;
    }
    auto body = count_tokens_body(state.tokenizer.get(), req.body());
    if (body.empty())
      respond_error(ctx, error_kind::bad_request, "the request body must be a JSON object");
    else
      respond(ctx, 200, "application/json", body);
    return;
  }
  if (ctx.route == "responses") {
    // The Responses API: its conversation from the store, then the proxy (net/responses_route.hpp).
    serve_responses(shared_from_this(), std::move(ctx), req);
    return;
  }
  std::optional<proxy_kind> kind;
  if (ctx.route == "chat")
    kind = proxy_kind::chat;
  else if (ctx.route == "embeddings")
    kind = proxy_kind::embeddings;
  else if (ctx.route == "messages")
    kind = proxy_kind::messages;
  if (kind) {
    if (auto it = req.find("anthropic-version"); it != req.end()) ctx.anthropic_version = std::string(it->value());
    if (auto it = req.find("anthropic-beta"); it != req.end()) ctx.anthropic_beta = std::string(it->value());
    if (method != http::verb::post) {
      respond_error(ctx, error_kind::method_not_allowed, "use POST for " + std::string(path));
      return;
    }
    if (auto routes = state.routes.load(); routes && routes->any_script) {
      json::object_writer headers;
      for (const auto& field : req) {
        std::string name(field.name_string());
        for (auto& c : name)
          c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (name == "authorization" || name == "x-api-key" || name == "cookie" || name == "proxy-authorization")
          continue;
        headers.str(name, field.value());
      }
      ctx.headers_json = headers.done();
    }
    start_proxy(shared_from_this(), std::move(ctx), *kind, std::move(req.body()));
    return;
  }
  respond_error(ctx, error_kind::not_found, "unknown endpoint " + ctx.method + " " + std::string(path), "unknown_url");
}

void session::forward_to_actors(request_context& ctx, http::request<http::string_body>& req, bool mcp, bool jobs,
                                bool a2a) {
  actors::admin_call call;
  call.method = ctx.method;
  call.path = ctx.path;
  if (auto q = req.target().find('?'); q != std::string_view::npos)
    call.query = std::string(req.target().substr(q + 1));
  call.body = std::move(req.body());
  call.key_id = std::string(ctx.who->key_id());
  call.role = ctx.who->master ? std::string("admin") : ctx.who->key->role;
  if (!ctx.who->master) {
    call.team_id = ctx.who->key->team_id;
    call.user_id = ctx.who->key->user_id;
  }
  auto shared = std::make_shared<request_context>(std::move(ctx));
  auto done = [held = std::make_shared<session_ref>(shared_from_this()), shared](int status, std::string body,
                                                                                 std::string type) {
    // Runs on a CAF thread: hop back onto this session's thread.
    auto self = held->ptr;
    asio::post(self->executor(), [self, shared, status, body = std::move(body), type = std::move(type)] {
      self->respond(*shared, status, type, body);
    });
  };
  if (jobs) {
    call.request_id = shared->request_id;
    worker_.runtime.jobs(std::move(call), std::move(done));
    return;
  }
  if (a2a) {
    shared->usage_recorded = true; // the bus meters its calls and refusals itself
    call.request_id = shared->request_id;
    call.query = "base=" + public_base(req) + (call.query.empty() ? "" : "&" + call.query);
    // message/stream and tasks/resubscribe answer with events: the bus writes them to a
    // stream registered under the request id.
    // Read from the parsed body (escapes decoded), not searched for in its text.
    auto rpc_method = shared->method == "POST" ? jsonrpc_method(call.body) : std::string();
    bool stream = rpc_method == "message/stream" || rpc_method == "tasks/resubscribe" ||
                  rpc_method == "SendStreamingMessage" || rpc_method == "SubscribeToTask";
    if (!stream) {
      worker_.runtime.a2a(std::move(call), [done](int status, std::string body, std::string type) {
        if (status != 0) done(status, std::move(body), std::move(type));
      });
      return;
    }
    auto out = std::make_shared<actor_stream>();
    out->client = shared_from_this();
    out->ctx = shared;
    auto id = shared->request_id;
    auto& streams = worker_.state.streams;
    streams.add(id, [out, exec = executor()](std::string chunk, bool last) {
      if (out->gone) return false;
      asio::post(exec, [out, chunk = std::move(chunk), last]() mutable { out->push(std::move(chunk), last); });
      return true;
    });
    worker_.runtime.a2a(std::move(call),
                        [out, id, &streams, exec = executor()](int status, std::string body, std::string type) {
                          if (status == 0) return; // the events carry the answer
                          streams.remove(id);
                          asio::post(exec, [out, status, body = std::move(body), type = std::move(type)] {
                            if (!out->head_sent && !out->ended) {
                              out->ended = true;
                              out->client->respond(*out->ctx, status, type, body);
                            }
                          });
                        });
    return;
  }
  if (!mcp) {
    worker_.runtime.admin(std::move(call), std::move(done));
    return;
  }
  call.request_id = shared->request_id;
  worker_.runtime.mcp(std::move(call), std::move(done));
  // A tool call can take long: if the client hangs up meanwhile, the call is cancelled.
  watch_client([rt = &worker_.runtime, id = shared->request_id] { rt->mcp_cancel(id); });
}

void session::watch_client(std::function<void()> on_gone) {
  watching_ = true;
  visit([&](auto& s) {
    s.expires_never(); // the answer's own deadline bounds the wait
    s.async_read_some(asio::buffer(&watch_byte_, 1),
                      [self = shared_from_this(), on_gone = std::move(on_gone)](beast::error_code ec, std::size_t n) {
                        self->watching_ = false;
                        if (!ec && n == 1) {
                          auto room = self->buffer_.prepare(1);
                          *static_cast<char*>(room.data()) = self->watch_byte_;
                          self->buffer_.commit(1);
                        }
                        bool gone = ec && ec != asio::error::operation_aborted;
                        if (self->resume_after_watch_) {
                          self->resume_after_watch_ = false;
                          self->after_response(self->resume_keep_alive_ && !gone);
                          return;
                        }
                        if (gone && !self->closed_) on_gone();
                      });
  });
}

std::string session::public_base(const http::request<http::string_body>& req) {
  const auto& cfg = worker_.state.config.server;
  if (!cfg.public_url.empty()) return cfg.public_url;
  std::string_view scheme = "http";
  std::string_view host;
  if (auto it = req.find(http::field::host); it != req.end()) host = it->value();
  // Forwarding headers are believed only from a configured proxy: anyone else could
  // point the cards at a host of their choosing.
  bool trusted = false;
  if (auto* tcp = std::get_if<0>(&stream_); tcp && !cfg.trusted_proxies.empty()) {
    beast::error_code ec;
    auto peer = tcp->socket().remote_endpoint(ec).address();
    if (!ec && peer.is_v6() && peer.to_v6().is_v4_mapped())
      peer = asio::ip::make_address_v4(asio::ip::v4_mapped, peer.to_v6());
    for (const auto& entry : cfg.trusted_proxies) {
      boost::system::error_code bad;
      auto addr = asio::ip::make_address(entry, bad);
      if (!ec && !bad && addr == peer) trusted = true;
    }
  }
  if (trusted) {
    if (auto it = req.find("x-forwarded-proto"); it != req.end()) {
      auto proto = first_value(it->value());
      if (beast::iequals(proto, "https"))
        scheme = "https";
      else if (beast::iequals(proto, "http"))
        scheme = "http";
    }
    if (auto it = req.find("x-forwarded-host"); it != req.end() && plain_host(first_value(it->value())))
      host = first_value(it->value());
  }
  if (!plain_host(host)) host = cfg.listen;
  return std::string(scheme) + "://" + std::string(host);
}

void session::respond_readiness(request_context& ctx) {
  // Not ready (503): starting, draining, or limited requests would all be refused
  // (Redis down with on_redis_down = closed). Degraded (200, with the reasons): the
  // database or Redis is down but this replica still serves (usage spooled, own limits).
  auto& state = worker_.state;
  if (!state.ready.load()) return respond(ctx, 503, "application/json", R"({"status":"starting"})");
  if (state.draining.load()) return respond(ctx, 503, "application/json", R"({"status":"draining"})");
  std::string db_problem = state.storage_ok.load() ? std::string{} : state.storage_problem();
  std::string redis_problem = state.fleet ? state.fleet->problem() : std::string{};
  if (db_problem.empty() && redis_problem.empty())
    return respond(ctx, 200, "application/json", R"({"status":"ready"})");
  bool refuse = !redis_problem.empty() && !state.fleet->fail_open();
  json::object_writer checks;
  if (!db_problem.empty())
    checks.raw("database", json::object_writer{}
                               .str("status", "down")
                               .str("error", db_problem)
                               .str("effect", "usage is spooled locally and written when the database is back")
                               .done());
  if (!redis_problem.empty())
    checks.raw("redis", json::object_writer{}
                            .str("status", "down")
                            .str("error", redis_problem)
                            .str("effect", refuse ? "limited requests are refused (on_redis_down = closed)"
                                                  : "limits are enforced per replica (on_redis_down = open)")
                            .done());
  json::object_writer out;
  out.str("status", refuse ? "not_ready" : "degraded").raw("checks", checks.done());
  respond(ctx, refuse ? 503 : 200, "application/json", out.done());
}

std::string session::render_breakers() {
  static constexpr const char* names[] = {"closed", "open", "half_open"};
  auto routes = worker_.state.routes.load();
  auto cfg = worker_.state.routing.load();
  auto now_s = clock::steady_seconds();
  std::vector<std::string> items;
  if (routes) {
    for (const auto& dep : routes->all_deployments) {
      std::int64_t ok = 0, failed = 0;
      dep->breaker->totals(now_s, cfg->breaker.window_s, ok, failed);
      json::object_writer w;
      w.str("deployment", dep->id)
          .str("provider", dep->provider)
          .str("model", dep->upstream_model)
          .str("state", names[static_cast<int>(dep->breaker->mode())])
          .num("window_requests", ok + failed)
          .num("window_failures", failed)
          .num("inflight", dep->stats->inflight.load(std::memory_order_relaxed))
          .real("latency_ewma_seconds",
                static_cast<double>(dep->stats->latency_ewma_us.load(std::memory_order_relaxed)) / 1e6);
      items.push_back(w.done());
    }
  }
  json::object_writer settings;
  settings.num("window_s", cfg->breaker.window_s)
      .real("failure_rate", cfg->breaker.failure_rate)
      .num("min_requests", cfg->breaker.min_requests)
      .num("open_ms", cfg->breaker.open_ms)
      .num("half_open_probes", cfg->breaker.half_open_probes)
      .raw("failure_on", json::string_array(cfg->breaker.failure_on));
  json::object_writer out;
  out.str("object", "list").raw("settings", settings.done()).raw("data", json::array(items));
  return out.done();
}

void session::append_head(std::string& out, const request_context& ctx, int status, std::string_view content_type,
                          std::string_view extra_headers, std::optional<std::size_t> content_length) {
  out += "HTTP/1.1 ";
  append_number(out, static_cast<std::size_t>(status));
  out += ' ';
  out += reason_phrase(status);
  out += "\r\nServer: lowart\r\nx-request-id: ";
  out += ctx.request_id;
  out += "\r\n";
  if (!content_type.empty()) {
    out += "Content-Type: ";
    out += content_type;
    out += "\r\n";
  }
  if (content_length) {
    out += "Content-Length: ";
    append_number(out, *content_length);
    out += "\r\n";
  } else {
    out += "Transfer-Encoding: chunked\r\n";
  }
  if (!ctx.keep_alive) out += "Connection: close\r\n";
  out += extra_headers;
  out += "\r\n";
}

void session::respond(request_context& ctx, int status, std::string_view content_type, std::string_view body,
                      std::string_view extra_headers) {
  if (worker_.state.draining.load(std::memory_order_relaxed)) ctx.keep_alive = false;
  out_.clear();
  out_.reserve(256 + body.size());
  append_head(out_, ctx, status, content_type, extra_headers, body.size());
  if (ctx.method != "HEAD") out_ += body; // HEAD: the head GET would have, no body (RFC 9110 9.3.2)
  if (status >= 400 && ctx.error_code.empty()) ctx.error_code = error_code_of(body, status); // an actor's answer
  record(ctx, status);
  bool keep_alive = ctx.keep_alive;
  send_out([self = shared_from_this(), keep_alive](bool ok) {
    if (ok)
      self->after_response(keep_alive);
    else
      self->graceful_close();
  });
}

template <class Then> void session::send_out(Then&& then) {
  // What the socket does not take at once goes out asynchronously under the idle timeout.
  // `then` is posted, never run inside the caller.
  std::size_t sent = 0;
  beast::error_code ec;
  visit([&](auto& s) { sent = write_now(s.socket(), asio::buffer(out_), ec); });
  if (ec || sent == out_.size()) {
    asio::post(worker_.ioc, [then = std::forward<Then>(then), ok = !ec]() mutable { then(ok); });
    return;
  }
  visit([&](auto& s) {
    s.expires_after(std::chrono::milliseconds(worker_.state.config.server.idle_timeout_ms));
    asio::async_write(s, asio::buffer(out_) + sent,
                      [then = std::forward<Then>(then)](beast::error_code ec, std::size_t) mutable { then(!ec); });
  });
}

void session::respond_error(request_context& ctx, error_kind kind, std::string_view message, std::string_view code,
                            std::string_view extra_headers, std::string_view param) {
  ctx.error_code = code.empty() ? std::string(kind_name(kind)) : std::string(code);
  respond(ctx, status_of(kind), "application/json",
          ctx.format == api_format::jsonrpc ? jsonrpc_error_body(ctx.rpc_id, kind, message, code)
                                            : error_body(ctx.format, kind, message, code, param),
          extra_headers);
}

void session::write_raw(std::string data, std::function<void(bool ok)> done) {
  out_ = std::move(data);
  send_out([self = shared_from_this(), done = std::move(done)](bool ok) { done(ok); });
}

void session::end_streamed(request_context& ctx, int status, bool keep_alive) {
  record(ctx, status);
  after_response(keep_alive && ctx.keep_alive);
}

void session::after_response(bool keep_alive) {
  if (watching_) {
    // One read at a time: end the watch first; its handler comes back here.
    resume_after_watch_ = true;
    resume_keep_alive_ = keep_alive;
    visit([](auto& s) {
      beast::error_code ec;
      s.socket().cancel(ec);
    });
    return;
  }
  if (!keep_alive || worker_.state.draining.load(std::memory_order_relaxed)) {
    graceful_close();
    return;
  }
  do_read();
}

void session::record(const request_context& ctx, int status) {
  auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - ctx.start).count();
  if (status >= 400 && !ctx.usage_recorded && refusals_recorded(ctx.route)) {
    // Every refusal is on the record: who was refused, when, and why (no tokens).
    usage_record rec;
    rec.request_id = ctx.request_id;
    rec.ts_ms = clock::unix_ms();
    if (ctx.who) rec.key_id = std::string(ctx.who->key_id());
    rec.route = std::string(ctx.route);
    rec.model = ctx.model;
    rec.status = status;
    rec.latency_ms = elapsed * 1000.0;
    rec.error_code = ctx.error_code;
    worker_.state.usage.push(std::move(rec));
  }
  metrics::http_requests(ctx.route, status).inc();
  metrics::http_request_duration(ctx.route).observe(elapsed);
  auto lvl = status >= 500 ? log::level::warn : log::level::info;
  if (log::enabled(lvl)) {
    log::write(lvl, "request",
               {{"request_id", ctx.request_id},
                {"method", ctx.method},
                {"path", ctx.path},
                {"status", status},
                {"duration_us", static_cast<long long>(elapsed * 1e6)},
                {"key_id", ctx.who ? ctx.who->key_id() : std::string_view{}},
                {"model", ctx.model},
                {"deployment", ctx.deployment}});
  }
}

void session::close_if_idle() {
  if (!idle_ || closed_) return;
  // Nothing is being answered: a hard close is safe. The pending read completes with
  // operation_aborted and finds the session closed.
  closed_ = true;
  visit([](auto& s) {
    beast::error_code ignored;
    s.socket().close(ignored);
  });
}

void session::graceful_close() {
  if (closed_) return;
  if (watching_) {
    // The watch read must end before the drain reads start; its handler closes.
    resume_after_watch_ = true;
    resume_keep_alive_ = false;
    visit([](auto& s) {
      beast::error_code ec;
      s.socket().cancel(ec);
    });
    return;
  }
  closed_ = true;
  // Half-close, then let the peer's remaining bytes drain briefly so that a response
  // we just wrote is not destroyed by a reset caused by unread input.
  visit([&](auto& s) {
    beast::error_code ec;
    s.socket().shutdown(asio::socket_base::shutdown_send, ec);
    s.expires_after(std::chrono::seconds(2));
    auto scratch = std::make_shared<std::array<char, 4096>>();
    struct drain {
      std::shared_ptr<session> self;
      std::shared_ptr<std::array<char, 4096>> scratch;
      void operator()(beast::error_code ec, std::size_t) {
        self->visit([&](auto& s) {
          if (ec) {
            beast::error_code ignored;
            s.socket().close(ignored);
            return;
          }
          s.async_read_some(asio::buffer(*scratch), drain{self, scratch});
        });
      }
    };
    s.async_read_some(asio::buffer(*scratch), drain{shared_from_this(), scratch});
  });
}

} // namespace lowart::net
