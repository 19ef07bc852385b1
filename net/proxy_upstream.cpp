// The upstream exchange: the next candidate deployment, a pooled connection, the request
// sent and the answer read under timeouts, a JSON answer relayed, and failures turned
// into retries, fallbacks or the final error, with breaker and deployment bookkeeping.
// Streamed answers are relayed in proxy_stream.cpp; usage is metered in proxy_metering.cpp.
#include "core/clock.hpp"
#include "core/log.hpp"
#include "net/proxy_internal.hpp"
#include "net/responses.hpp"
#include "net/write_now.hpp"

#include <boost/asio/write.hpp>
#include <boost/beast/http/read.hpp>

#include <algorithm>
#include <cstdlib>

namespace lowart::net::proxy_detail {

void proxy_call::next_candidate() {
  while (next_ < candidates_.size() && !deadline_reached()) {
    auto candidate = candidates_[next_++];
    if (next_ > 1) {
      ++fallbacks_;
      route_->fallbacks_used.inc();
    }
    if (!candidate->breaker->admit(probe_)) {
      log::debug("breaker open; skipping deployment", {{"request_id", ctx_.request_id}, {"deployment", candidate->id}});
      log_attempt(candidate->id, "breaker_open", 0, 0);
      continue;
    }
    dep_ = std::move(candidate);
    attempts_on_dep_ = 0;
    begin_attempt();
    return;
  }
  give_up();
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
      body = anthropic_response_to_openai(body, usage_, structured_);
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
  bool response_object = responses_ && status < 400;
  if (response_object) body = responses_->answer(body, passthrough_, usage_);
  usage_final_ = usage_.present;
  settle_attempt(std::to_string(status), false, false);
  if (!route_->script.empty() && !response_hooks(status, body, type, false)) return;
  // Stored as the client gets it: after the model's on_response.
  if (response_object && status < 400 && type.rfind("application/json", 0) == 0) responses_->store(body);
  if (capture_) capture(body);
  finish_request(status);
  client_->respond(ctx_, status, type, body, gateway_headers());
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
    if (capture_) capture(res.body());
    finish_request(status);
    client_->respond(ctx_, status, type.empty() ? "application/json" : type, res.body(), headers);
    return;
  }
  finish_request(status_of(last_kind_));
  client_->respond_error(ctx_, last_kind_, last_message_, last_code_, dep_ ? gateway_headers() : std::string{});
}

void proxy_call::log_attempt(const std::string& deployment, std::string_view outcome, int status, double ms) {
  if (attempt_count_ < max_attempts_logged) attempts_[attempt_count_] = {&deployment, std::string(outcome), status, ms};
  ++attempt_count_;
}

std::string proxy_call::attempts_json(int final_status) const {
  // One attempt that answered with the final status: the record itself says it all.
  if (attempt_count_ == 1 && attempts_[0].status == final_status &&
      attempts_[0].outcome == std::to_string(final_status))
    return {};
  if (attempt_count_ == 0) return {};
  json::array_writer out;
  for (std::size_t i = 0; i < std::min(attempt_count_, max_attempts_logged); ++i) {
    const auto& a = attempts_[i];
    json::object_writer w;
    w.str("deployment", *a.deployment).str("outcome", a.outcome);
    if (a.outcome != "breaker_open") w.num("status", a.status).real("ms", a.ms);
    out.add(w.done());
  }
  if (attempt_count_ > max_attempts_logged) {
    json::object_writer more;
    more.str("outcome", "more").num("count", static_cast<std::int64_t>(attempt_count_ - max_attempts_logged));
    out.add(more.done());
  }
  return out.done();
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
  log_attempt(dep_->id, label, upstream_status_, static_cast<double>(upstream_us) / 1000.0);
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

} // namespace lowart::net::proxy_detail
