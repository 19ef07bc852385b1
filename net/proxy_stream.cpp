// The SSE relay: a streamed answer read from the upstream, its events hooked, translated
// or passed on (usage read, the held-back preamble released), written to the client in
// chunks, and the stream's end, break or abandonment. The exchange that leads here is in
// proxy_upstream.cpp.
#include "core/clock.hpp"
#include "core/log.hpp"
#include "net/proxy_internal.hpp"
#include "net/responses.hpp"
#include "net/session_send.hpp"

#include <boost/beast/http/read.hpp>

namespace lowart::net::proxy_detail {

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
  auto& out = wire_; // alternates with the session's buffer (write_raw_swapping)
  out.clear();
  out.reserve(pending_.size() + 512);
  if (!head_sent_) {
    first_byte_ = std::chrono::steady_clock::now();
    ctx_.keep_alive = ctx_.keep_alive && !client_->worker().state.draining.load(std::memory_order_relaxed);
    session::append_head(out, ctx_, 200, "text/event-stream; charset=utf-8",
                         gateway_headers() + "Cache-Control: no-cache\r\n", std::nullopt);
    head_sent_ = true;
  }
  if (!pending_.empty()) {
    if (capture_) capture(pending_);
    append_chunk_size(out, pending_.size());
    out += pending_;
    out += "\r\n";
    pending_.clear();
  }
  if (done) out += "0\r\n\r\n";
  flush_done_ = done;
  client_->write_raw_swapping(out, [self = shared_from_this()](bool ok) {
    if (!ok) return self->client_gone();
    if (self->flush_done_)
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

} // namespace lowart::net::proxy_detail
