// One client connection: reading requests, routing them (net/routing.cpp), the key check,
// keep-alive and closing. Writing answers and usage records of refusals: session_write.cpp;
// what goes to the actors, readiness and the breaker view: session_actors.cpp.
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
  if (auto* tcp = std::get_if<0>(&stream_)) {
    beast::error_code ec;
    tcp->socket().set_option(asio::ip::tcp::no_delay(true), ec);
    // Bounded kernel memory per client: a slow reader holds at most this much of an
    // answer in its socket (autotuning grew it to megabytes). 0 keeps the kernel's.
    if (auto cap = worker_.state.config.server.send_buffer_bytes; cap > 0)
      tcp->socket().set_option(asio::socket_base::send_buffer_size(cap), ec);
  }
  do_read();
}

void session::check_deadline(std::chrono::steady_clock::time_point now) {
  if (now < deadline_) return;
  clear_deadline();
  // What basic_stream's timer did: close the socket, so the pending operation ends.
  visit([](auto& s) {
    beast::error_code ignored;
    s.socket().close(ignored);
  });
}

void server_worker::start_sweep() {
  sweep.expires_after(sweep_tick);
  sweep.async_wait([this](beast::error_code ec) {
    if (ec) return;
    auto now = std::chrono::steady_clock::now();
    // Closing only cancels operations (their handlers run later): the list is unchanged here.
    for (auto* s : sessions)
      s->check_deadline(now);
    start_sweep();
  });
}

void session::do_read() {
  const auto& cfg = worker_.state.config.server;
  if (worker_.state.draining.load(std::memory_order_relaxed)) {
    graceful_close();
    return;
  }
  idle_ = true;
  // request_head.hpp: the parser, its feeding and the refusals are the fuzzer's too.
  prepare_parser(parser_, cfg.max_header_bytes, cfg.max_body_bytes, &head_arena_);
  if (buffer_.size() > 0) { // a pipelined request is already here
    read_request();
    return;
  }
  // Between requests a connection holds no read buffer, and no large answer's copy.
  if (buffer_.capacity() > 0) buffer_.shrink_to_fit();
  if (out_.capacity() > 64 * 1024) std::string().swap(out_);
  // Waiting for a request is bounded by the keep-alive idle timeout; once its first
  // bytes arrive, head and body must follow within header_timeout_ms (a client that
  // trickles its head a byte at a time is cut off then).
  wait_readable();
}

void session::wait_readable() {
  set_deadline(std::chrono::milliseconds(worker_.state.config.server.idle_timeout_ms));
  visit([&](auto& s) {
    s.socket().async_wait(asio::socket_base::wait_read, [self = shared_from_this()](beast::error_code ec) {
      self->clear_deadline();
      if (ec)
        self->on_read(ec);
      else
        self->on_readable();
    });
  });
}

void session::on_readable() {
  std::size_t n = 0;
  beast::error_code ec;
  visit([&](auto& s) {
    auto& socket = s.socket();
    if (!socket.non_blocking()) socket.non_blocking(true, ec);
    if (!ec) n = socket.read_some(asio::buffer(worker_.read_scratch), ec);
  });
  if (ec == asio::error::would_block || ec == asio::error::try_again) { // readiness was spurious
    wait_readable();
    return;
  }
  if (ec) {
    on_read(ec);
    return;
  }
  idle_ = false; // a request is arriving: draining lets it finish
  // Parsed where it was read; only what is left (the rest of a request still arriving,
  // or a pipelined one) is kept in the session's own buffer.
  std::string_view bytes(worker_.read_scratch.data(), n);
  ec = parse_bytes(*parser_, bytes);
  if (!bytes.empty()) buffer_.commit(asio::buffer_copy(buffer_.prepare(bytes.size()), asio::buffer(bytes)));
  if (ec || parser_->is_done()) {
    on_read(ec);
    return;
  }
  read_request();
}

void session::read_request() {
  // Most requests are in the buffer whole once their first bytes are: parse them here.
  // Only a request still arriving is read on, under the header timeout.
  auto ec = parse_buffered(*parser_, buffer_);
  if (ec || parser_->is_done()) {
    on_read(ec);
    return;
  }
  set_deadline(std::chrono::milliseconds(worker_.state.config.server.header_timeout_ms));
  visit([&](auto& s) {
    http::async_read(s, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      self->clear_deadline();
      self->on_read(ec);
    });
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

void session::handle(downstream_request&& req) {
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
  ctx.client_ip = client_ip_of(req);
  if (auto it = req.find(http::field::user_agent); it != req.end()) ctx.user_agent.assign(it->value().substr(0, 256));
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
    respond_static(ctx, file->content_type, file->body,
                   file->immutable
                       ? "Cache-Control: public, max-age=31536000, immutable\r\n"
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
    set_deadline(std::chrono::seconds(2)); // the sweep closes it then
    auto scratch = std::make_shared<std::array<char, 4096>>();
    struct drain {
      std::shared_ptr<session> self;
      std::shared_ptr<std::array<char, 4096>> scratch;
      void operator()(beast::error_code ec, std::size_t) {
        self->visit([&](auto& s) {
          if (ec) {
            self->clear_deadline();
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
