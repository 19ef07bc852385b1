// One attempt's set-up and the upstream request it sends: the body in the upstream's
// protocol (translated once), the model and usage option set, the stream translator,
// the provider's on_request hook, then the request line, headers and auth. Sending it
// and reading the answer is in proxy_upstream.cpp.
#include "net/proxy_internal.hpp"
#include "net/responses.hpp"

namespace lowart::net::proxy_detail {

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
      translated_ = anthropic ? openai_request_to_anthropic(body_, 4096, &structured_)
                              : anthropic_request_to_openai(body_, usage);
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
    opt.structured = structured_;
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

} // namespace lowart::net::proxy_detail
