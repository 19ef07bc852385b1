// The parts of a session that answer from the actors or from shared state: requests
// forwarded to the actors (admin, MCP, jobs, agents; streamed answers included), the
// client watch, the public base URL of agent cards, readiness and the breaker view.
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
#include "net/session.hpp"
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

void session::forward_to_actors(request_context& ctx, downstream_request& req, bool mcp, bool jobs, bool a2a) {
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
    clear_deadline(); // the answer's own deadline bounds the wait
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

void session::know_peer() {
  if (peer_known_) return;
  peer_known_ = true;
  auto* tcp = std::get_if<0>(&stream_);
  if (!tcp) {
    peer_ip_ = "unix";
    return;
  }
  beast::error_code ec;
  auto peer = tcp->socket().remote_endpoint(ec).address();
  if (ec) return;
  if (peer.is_v6() && peer.to_v6().is_v4_mapped()) peer = asio::ip::make_address_v4(asio::ip::v4_mapped, peer.to_v6());
  peer_ip_ = peer.to_string();
  for (const auto& entry : worker_.state.config.server.trusted_proxies) {
    boost::system::error_code bad;
    auto addr = asio::ip::make_address(entry, bad);
    if (!bad && addr == peer) peer_trusted_ = true;
  }
}

std::string session::client_ip_of(const downstream_request& req) {
  know_peer();
  if (peer_trusted_)
    if (auto it = req.find("x-forwarded-for"); it != req.end()) {
      auto v = it->value();
      auto comma = v.rfind(',');
      auto last = comma == std::string_view::npos ? v : v.substr(comma + 1);
      while (!last.empty() && (last.front() == ' ' || last.front() == '\t'))
        last.remove_prefix(1);
      while (!last.empty() && (last.back() == ' ' || last.back() == '\t'))
        last.remove_suffix(1);
      boost::system::error_code bad;
      auto addr = asio::ip::make_address(std::string(last), bad);
      if (!bad) return addr.to_string();
    }
  return peer_ip_;
}

std::string session::public_base(const downstream_request& req) {
  const auto& cfg = worker_.state.config.server;
  if (!cfg.public_url.empty()) return cfg.public_url;
  std::string_view scheme = "http";
  std::string_view host;
  if (auto it = req.find(http::field::host); it != req.end()) host = it->value();
  // Forwarding headers are believed only from a configured proxy: anyone else could
  // point the cards at a host of their choosing.
  know_peer();
  if (peer_trusted_) {
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

} // namespace lowart::net
