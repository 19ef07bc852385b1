#pragma once
// What the Responses files share (net/responses.cpp: the Response object, usage, JSON
// answers, the exchange; net/responses_request.cpp: summary and preparation;
// net/responses_stream.cpp: both stream modes): the thread's parsers, member access and
// the output items, inline for the hot path.

#include "core/json_text.hpp"
#include "net/translate.hpp"

#include <simdjson.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace lowart::net::responses::detail {

using simdjson::dom::element;

/// Parsers of this thread: a document stays valid only until its parser parses again,
/// and preparing a request reads three documents at once (the request, the stored
/// context, a referenced item).
struct parser_slot {
  simdjson::dom::parser parser;
  std::string buffer;
};
inline parser_slot& slot(int which) {
  thread_local parser_slot slots[4];
  return slots[which];
}
constexpr int body_slot = 0, context_slot = 1, item_slot = 2, event_slot = 3;

inline bool parse(int which, std::string_view text, element& doc) {
  auto& s = slot(which);
  s.buffer.assign(text);
  s.buffer.reserve(text.size() + simdjson::SIMDJSON_PADDING);
  return s.parser.parse(s.buffer.data(), s.buffer.size(), false).get(doc) == simdjson::SUCCESS;
}

inline std::string_view str(element e, std::string_view key) {
  std::string_view v;
  if (e[key].get_string().get(v) != simdjson::SUCCESS) return {};
  return v;
}

inline bool present(element e, std::string_view key, element& out) {
  return e[key].get(out) == simdjson::SUCCESS && !out.is_null();
}

inline std::string minified(element e) {
  return simdjson::minify(e);
}

using json::array_writer;

inline std::string message_item(std::string_view id, std::string_view text, std::string_view status) {
  json::object_writer part;
  part.str("type", "output_text").raw("annotations", "[]").raw("logprobs", "[]").str("text", text);
  json::object_writer w;
  w.str("id", id)
      .str("type", "message")
      .str("status", status)
      .raw("content", "[" + part.done() + "]")
      .str("role", "assistant");
  return w.done();
}

inline std::string call_item(std::string_view id, std::string_view status, std::string_view arguments,
                             std::string_view call_id, std::string_view name) {
  json::object_writer w;
  w.str("id", id)
      .str("type", "function_call")
      .str("status", status)
      .str("arguments", arguments)
      .str("call_id", call_id)
      .str("name", name);
  return w.done();
}

inline std::string incomplete_for(std::string_view finish_reason) {
  if (finish_reason == "length") return R"({"reason":"max_output_tokens"})";
  if (finish_reason == "content_filter") return R"({"reason":"content_filter"})";
  return "null";
}

inline void read_chat_usage(element usage, token_usage& u, std::int64_t& reasoning) {
  if (!usage.is_object()) return;
  read_openai_usage(usage, u);
  std::int64_t v = 0;
  if (usage.at_pointer("/completion_tokens_details/reasoning_tokens").get_int64().get(v) == simdjson::SUCCESS)
    reasoning = v;
}

} // namespace lowart::net::responses::detail
