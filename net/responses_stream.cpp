// The OpenAI Responses API, streams: stream_converter, which turns Chat Completions chunks
// into Responses events or relays a Responses upstream's events. Requests are in
// responses_request.cpp, answers and the exchange in responses.cpp, the shared helpers in
// responses_internal.hpp.
#include "core/json_text.hpp"
#include "net/responses.hpp"
#include "net/responses_internal.hpp"

#include <simdjson.h>

#include <algorithm>

namespace lowart::net::responses {

using namespace detail;

// --- streams -------------------------------------------------------------------------

stream_converter::stream_converter(response_frame frame, std::string id_base)
    : frame_(std::move(frame)), base_(std::move(id_base)) {}

void stream_converter::event(std::string_view type, std::string body_members, std::string& out) {
  out += "event: ";
  out += type;
  out += "\ndata: {\"type\":";
  json::append_quoted(out, type);
  out += ",\"sequence_number\":";
  out += std::to_string(seq_++);
  if (!body_members.empty()) {
    out += ',';
    out += body_members;
  }
  out += "}\n\n";
}

namespace {
/// `{...}` -> the members inside the braces (for splicing into an event).
std::string members(std::string object) {
  if (object.size() < 2) return {};
  return object.substr(1, object.size() - 2);
}
} // namespace

void stream_converter::start(std::string& out) {
  if (started_) return;
  started_ = true;
  auto initial = frame_.render("in_progress", "[]", "null", "null", "null", model_);
  event("response.created", "\"response\":" + initial, out);
  event("response.in_progress", "\"response\":" + initial, out);
}

std::string stream_converter::item_json(const item& it, bool done) const {
  auto status = !done ? "in_progress" : finish_reason_ == "length" ? "incomplete" : "completed";
  if (it.call) return call_item(it.id, status, done ? std::string_view(it.text) : "", it.call_id, it.name);
  if (!done) {
    json::object_writer w;
    w.str("id", it.id).str("type", "message").str("status", status).raw("content", "[]").str("role", "assistant");
    return w.done();
  }
  return message_item(it.id, it.text, status);
}

std::string stream_converter::output_json() const {
  array_writer a;
  for (const auto& it : items_)
    a.add(item_json(it, true));
  return a.done();
}

std::size_t stream_converter::open_message(std::string& out) {
  if (message_ != SIZE_MAX) return message_;
  item it;
  it.id = "msg_" + base_ + (items_.empty() ? "" : "_" + std::to_string(items_.size()));
  items_.push_back(it);
  message_ = items_.size() - 1;
  json::object_writer added;
  added.num("output_index", static_cast<long long>(message_)).raw("item", item_json(items_[message_], false));
  event("response.output_item.added", members(added.done()), out);
  json::object_writer part;
  part.str("item_id", it.id)
      .num("output_index", static_cast<long long>(message_))
      .num("content_index", 0)
      .raw("part", R"({"type":"output_text","annotations":[],"logprobs":[],"text":""})");
  event("response.content_part.added", members(part.done()), out);
  return message_;
}

void stream_converter::close_item(std::size_t i, std::string& out) {
  auto& it = items_[i];
  if (!it.open) return;
  it.open = false;
  auto index = static_cast<long long>(i);
  if (it.call) {
    json::object_writer d;
    d.str("item_id", it.id).num("output_index", index).str("name", it.name).str("arguments", it.text);
    event("response.function_call_arguments.done", members(d.done()), out);
  } else {
    json::object_writer d;
    d.str("item_id", it.id)
        .num("output_index", index)
        .num("content_index", 0)
        .str("text", it.text)
        .raw("logprobs", "[]");
    event("response.output_text.done", members(d.done()), out);
    json::object_writer part;
    part.str("type", "output_text").raw("annotations", "[]").raw("logprobs", "[]").str("text", it.text);
    json::object_writer p;
    p.str("item_id", it.id).num("output_index", index).num("content_index", 0).raw("part", part.done());
    event("response.content_part.done", members(p.done()), out);
    if (message_ == i) message_ = SIZE_MAX;
  }
  json::object_writer done;
  done.num("output_index", index).raw("item", item_json(it, true));
  event("response.output_item.done", members(done.done()), out);
}

void stream_converter::close_all(std::string& out) {
  for (std::size_t i = 0; i < items_.size(); ++i)
    close_item(i, out);
}

void stream_converter::finalize(std::string response) {
  finished_ = true;
  final_ = std::move(response);
  if (on_final) on_final(final_);
}

void stream_converter::finish(std::string& out) {
  if (finished_) return;
  start(out);
  close_all(out);
  auto incomplete = incomplete_for(finish_reason_);
  auto status = incomplete == "null" ? "completed" : "incomplete";
  finalize(frame_.render(status, output_json(), usage_.present ? usage_json(usage_, reasoning_tokens_) : "null", "null",
                         incomplete, model_));
  event(incomplete == "null" ? "response.completed" : "response.incomplete", "\"response\":" + final_, out);
}

void stream_converter::fail(std::string_view code, std::string_view message, std::string& out, bool announce) {
  if (finished_) return;
  start(out);
  if (announce) {
    json::object_writer e;
    e.str("code", code).str("message", message).raw("param", "null");
    event("error", members(e.done()), out);
  }
  json::object_writer err;
  err.str("code", code).str("message", message);
  for (auto& it : items_)
    it.open = false;
  finish_reason_ = "length"; // items cut short show as incomplete
  finalize(frame_.render("failed", output_json(), usage_.present ? usage_json(usage_, reasoning_tokens_) : "null",
                         err.done(), "null", model_));
  event("response.failed", "\"response\":" + final_, out);
}

void stream_converter::chat_chunk(std::string_view data, std::string& out) {
  if (data == "[DONE]") return finish(out);
  element doc;
  if (!parse(event_slot, data, doc) || !doc.is_object()) return;
  element error;
  if (present(doc, "error", error)) {
    auto code = str(error, "code");
    if (code.empty()) code = str(error, "type");
    return fail(code.empty() ? std::string_view("server_error") : code, str(error, "message"), out);
  }
  if (model_.empty()) model_ = std::string(str(doc, "model"));
  start(out);
  element usage;
  if (present(doc, "usage", usage)) read_chat_usage(usage, usage_, reasoning_tokens_);
  element choice;
  if (doc["choices"].at(0).get(choice) != simdjson::SUCCESS) return;
  element delta;
  if (choice["delta"].get(delta) == simdjson::SUCCESS) {
    std::string_view text;
    if ((delta["content"].get_string().get(text) == simdjson::SUCCESS ||
         delta["refusal"].get_string().get(text) == simdjson::SUCCESS) &&
        !text.empty()) {
      auto i = open_message(out);
      items_[i].text += text;
      json::object_writer d;
      d.str("item_id", items_[i].id)
          .num("output_index", static_cast<long long>(i))
          .num("content_index", 0)
          .str("delta", text)
          .raw("logprobs", "[]");
      event("response.output_text.delta", members(d.done()), out);
    }
    simdjson::dom::array calls;
    if (delta["tool_calls"].get_array().get(calls) == simdjson::SUCCESS) {
      for (auto call : calls) {
        std::int64_t index = 0;
        if (call["index"].get_int64().get(index) != simdjson::SUCCESS) index = 0;
        auto known = std::find_if(calls_.begin(), calls_.end(), [&](const auto& c) { return c.first == index; });
        std::size_t at;
        if (known == calls_.end() || !str(call, "id").empty()) {
          // A new call: what came before it is complete.
          for (std::size_t i = 0; i < items_.size(); ++i)
            close_item(i, out);
          item it;
          it.call = true;
          it.id = "fc_" + base_ + "_" + std::to_string(calls_.size());
          it.call_id = std::string(str(call, "id"));
          if (it.call_id.empty()) it.call_id = "call_" + base_ + "_" + std::to_string(calls_.size());
          element fn;
          if (call["function"].get(fn) == simdjson::SUCCESS) it.name = std::string(str(fn, "name"));
          items_.push_back(std::move(it));
          at = items_.size() - 1;
          if (known == calls_.end())
            calls_.emplace_back(index, at);
          else
            known->second = at;
          json::object_writer added;
          added.num("output_index", static_cast<long long>(at)).raw("item", item_json(items_[at], false));
          event("response.output_item.added", members(added.done()), out);
        } else {
          at = known->second;
        }
        std::string_view piece;
        if (call.at_pointer("/function/arguments").get_string().get(piece) == simdjson::SUCCESS && !piece.empty()) {
          items_[at].text += piece;
          json::object_writer d;
          d.str("item_id", items_[at].id).num("output_index", static_cast<long long>(at)).str("delta", piece);
          event("response.function_call_arguments.delta", members(d.done()), out);
        }
      }
    }
  }
  std::string_view finish;
  if (choice["finish_reason"].get_string().get(finish) == simdjson::SUCCESS && !finish.empty()) {
    finish_reason_ = std::string(finish);
    close_all(out); // the answer is complete; usage may still follow
  }
}

namespace {
/// An event's "response" with previous_response_id set (an upstream that speaks Responses
/// never saw it: lowart sent the whole conversation instead).
std::string with_previous(std::string_view data, std::string_view previous) {
  std::string out(data);
  auto where = json::find_member(out, "response");
  if (!where || out[where->begin] != '{') return out;
  auto response = out.substr(where->begin, where->end - where->begin);
  json::set_member(response, "previous_response_id", json::quoted(previous));
  out.replace(where->begin, where->end - where->begin, response);
  return out;
}
} // namespace

void stream_converter::passthrough_event(const sse_event& ev, std::string& out) {
  // Relayed unchanged; read for the sequence, the response's id and its end.
  element doc, error;
  bool parsed = ev.has_data && parse(event_slot, ev.data, doc) && doc.is_object();
  if (parsed && ev.event.empty() && present(doc, "error", error) && error.is_object()) {
    // lowart's own error event for a broken stream (OpenAI's shape)
    auto code = str(error, "code");
    if (code.empty()) code = str(error, "type");
    std::string c(code.empty() ? std::string_view("server_error") : code), m(str(error, "message"));
    return fail(c, m, out);
  }
  if (!parsed) return append_sse_event(out, ev);
  element response;
  bool has_response = doc["response"].get(response) == simdjson::SUCCESS && response.is_object();
  if (has_response && !previous_id.empty()) {
    sse_event changed = ev;
    changed.data = with_previous(ev.data, previous_id);
    append_sse_event(out, changed);
  } else {
    append_sse_event(out, ev);
  }
  std::int64_t n = 0;
  if (doc["sequence_number"].get_int64().get(n) == simdjson::SUCCESS) seq_ = n + 1;
  started_ = true;
  auto type = str(doc, "type");
  if (type == "error") { // the upstream's own: response.failed follows when its stream ends
    upstream_error_code_ = std::string(str(doc, "code"));
    upstream_error_ = std::string(str(doc, "message"));
    if (upstream_error_code_.empty()) upstream_error_code_ = "server_error";
  }
  if (type == "response.created" && has_response) {
    if (auto id = str(response, "id"); !id.empty()) frame_.id = std::string(id);
    model_ = std::string(str(response, "model"));
  }
  if ((type == "response.completed" || type == "response.incomplete" || type == "response.failed") && has_response) {
    auto final = minified(response);
    if (!previous_id.empty()) json::set_member(final, "previous_response_id", json::quoted(previous_id));
    finalize(std::move(final));
  }
}

void stream_converter::convert(std::string_view events, bool end, bool passthrough, std::string& out) {
  if (!finished_)
    sse_.feed(events, [&](const sse_event& ev) {
      if (finished_) return;
      if (passthrough)
        passthrough_event(ev, out);
      else if (ev.has_data)
        chat_chunk(ev.data, out);
    });
  if (end && !finished_) {
    if (!passthrough && !finish_reason_.empty())
      finish(out);
    else if (!upstream_error_.empty())
      fail(upstream_error_code_, upstream_error_, out, false);
    else
      fail("server_error", "the upstream stream ended before the response was complete", out);
  }
}

} // namespace lowart::net::responses
