// Writing a session's answers: the response head, whole answers, errors in the route's
// envelope, raw stream data, and the usage record of a request refused before a model
// answered.
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
#include "net/session_send.hpp"
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

void append_number(std::string& out, std::size_t n) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n);
  out.append(buf, end);
}

} // namespace

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
  respond_with(ctx, status, content_type, body, extra_headers, false);
}

void session::respond_static(request_context& ctx, std::string_view content_type, std::string_view body,
                             std::string_view extra_headers) {
  respond_with(ctx, 200, content_type, body, extra_headers, true);
}

void session::respond_with(request_context& ctx, int status, std::string_view content_type, std::string_view body,
                           std::string_view extra_headers, bool by_reference) {
  if (worker_.state.draining.load(std::memory_order_relaxed)) ctx.keep_alive = false;
  out_.clear();
  bool with_body = ctx.method != "HEAD"; // HEAD: the head GET would have, no body (RFC 9110 9.3.2)
  out_.reserve(256 + (by_reference ? 0 : body.size()));
  append_head(out_, ctx, status, content_type, extra_headers, body.size());
  if (with_body) {
    if (by_reference)
      out_tail_ = body; // written from where it lives: no copy per client, however slow it reads
    else
      out_ += body;
  }
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
    if (ctx.who && ctx.who->key) rec.key = ctx.who->key;
    rec.ttfb_ms = rec.latency_ms;
    rec.client_ip = ctx.client_ip;
    rec.user_agent = ctx.user_agent;
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

} // namespace lowart::net
