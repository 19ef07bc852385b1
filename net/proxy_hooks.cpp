// The scripting hooks of the proxy path: the model's and the provider's on_request,
// on_response and on_chunk, run with the call described, their answers read back, and
// a refusal or failure answered. The rest of proxy_call is in net/proxy.cpp and the
// other net/proxy_*.cpp files.
#include "net/proxy_internal.hpp"
#include "net/responses.hpp"
#include "scripting/hooks.hpp"

#include <cctype>

namespace lowart::net::proxy_detail {

namespace {

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

} // namespace

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
  // In the client's protocol: on /v1/responses the Responses request, not the chat
  // request it becomes.
  json::object_writer w;
  bool responses = responses_ && !responses_->client_request().empty();
  w.raw("body", responses ? std::string_view(responses_->client_request()) : std::string_view(body_))
      .raw("headers", ctx_.headers_json.empty() ? std::string_view("{}") : ctx_.headers_json);
  describe_call(w);
  hook_answer answer;
  if (!run_hook(script, "on_request", w.done(), answer)) return false;
  if (!answer.body.empty() && responses) {
    // Both upstream requests (passthrough and chat) are made again from the changed one.
    if (auto problem = responses_->rebuild(std::move(answer.body)); !problem.empty()) {
      script_failed("script " + script + ": on_request returned a Responses request that cannot be served: " + problem);
      return false;
    }
    body_ = responses_->chat_request();
  } else if (!answer.body.empty()) {
    body_ = std::move(answer.body);
  }
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

} // namespace lowart::net::proxy_detail
