#pragma once
// What the translation files share (net/translate.cpp: usage, stop reasons, JSON answers,
// errors; net/translate_request.cpp: request bodies; net/translate_stream.cpp: streams):
// the thread's parsers, member access, content blocks and usage, inline for the hot path.

#include "core/json_text.hpp"
#include "net/translate.hpp"

#include <simdjson.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace lowart::net::translate_detail {

using simdjson::dom::element;

/// Two parsers per thread: a document stays valid only until its parser parses again,
/// and translation sometimes parses a string found inside a document (tool arguments).
struct parser_slot {
  simdjson::dom::parser parser;
  std::string buffer;
};

inline parser_slot& outer_slot() {
  thread_local parser_slot slot;
  return slot;
}
inline parser_slot& inner_slot() {
  thread_local parser_slot slot;
  return slot;
}

inline bool parse(parser_slot& slot, std::string_view text, element& doc) {
  slot.buffer.assign(text);
  slot.buffer.reserve(text.size() + simdjson::SIMDJSON_PADDING);
  return slot.parser.parse(slot.buffer.data(), slot.buffer.size(), false).get(doc) == simdjson::SUCCESS;
}

using result = simdjson::simdjson_result<element>;

/// A string member, or "" when absent or not a string (errors propagate through `e`).
inline std::string_view string_of(result e, std::string_view key) {
  std::string_view v;
  if (e[key].get_string().get(v) != simdjson::SUCCESS) return {};
  return v;
}
inline std::string_view string_of(element e, std::string_view key) {
  return string_of(result(std::move(e)), key);
}

inline std::string minified(element e) {
  return simdjson::minify(e);
}

using json::array_writer;

/// Text of a content value: a string, or the text parts of an array joined by `sep`.
inline std::string text_of(element content, std::string_view sep = "\n") {
  std::string_view s;
  if (content.get_string().get(s) == simdjson::SUCCESS) return std::string(s);
  std::string out;
  simdjson::dom::array parts;
  if (content.get_array().get(parts) != simdjson::SUCCESS) return out;
  for (auto part : parts) {
    if (part.get_string().get(s) == simdjson::SUCCESS || part["text"].get_string().get(s) == simdjson::SUCCESS) {
      if (!out.empty()) out += sep;
      out += s;
    }
  }
  return out;
}

/// A text block; `source` (a part or block) may carry a cache_control to keep.
inline std::string text_block(std::string_view text, const element* source) {
  json::object_writer b;
  b.str("type", "text").str("text", text);
  element cache;
  if (source && (*source)["cache_control"].get(cache) == simdjson::SUCCESS && cache.is_object())
    b.raw("cache_control", minified(cache));
  return b.done();
}

/// Tool arguments (a JSON string in OpenAI) as the object Anthropic wants.
inline std::string arguments_object(std::string_view arguments) {
  element args;
  if (!arguments.empty() && parse(inner_slot(), arguments, args) && args.is_object()) return minified(args);
  return "{}";
}

/// An assistant turn's Anthropic blocks -> OpenAI's text and tool_calls. Thinking blocks
/// have no OpenAI counterpart and are dropped.
inline void read_assistant_blocks(simdjson::dom::array blocks, std::string& text, array_writer& calls,
                                  bool structured = false) {
  for (auto b : blocks) {
    auto type = string_of(b, "type");
    if (type == "text") {
      text += string_of(b, "text");
    } else if (type == "tool_use" && structured && string_of(b, "name") == json_output_tool) {
      element input; // the structured output: its JSON is the answer's text
      if (b["input"].get(input) == simdjson::SUCCESS) text += minified(input);
    } else if (type == "tool_use") {
      element input;
      json::object_writer fn;
      fn.str("name", string_of(b, "name"))
          .str("arguments", b["input"].get(input) == simdjson::SUCCESS ? minified(input) : std::string("{}"));
      json::object_writer call;
      call.str("id", string_of(b, "id")).str("type", "function").raw("function", fn.done());
      calls.add(call.done());
    }
  }
}

/// An OpenAI tool call -> an Anthropic tool_use block.
inline std::string tool_use_block(element call) {
  json::object_writer b;
  b.str("type", "tool_use")
      .str("id", string_of(call, "id"))
      .str("name", string_of(call["function"], "name"))
      .raw("input", arguments_object(string_of(call["function"], "arguments")));
  return b.done();
}

inline std::string openai_usage_json(const token_usage& u) {
  json::object_writer details;
  details.num("cached_tokens", u.cached);
  json::object_writer w;
  w.num("prompt_tokens", u.prompt)
      .num("completion_tokens", u.completion)
      .num("total_tokens", u.prompt + u.completion)
      .raw("prompt_tokens_details", details.done());
  return w.done();
}

inline std::string anthropic_usage_json(const token_usage& u) {
  json::object_writer w;
  w.num("input_tokens", u.uncached_input())
      .num("cache_creation_input_tokens", u.cache_creation)
      .num("cache_read_input_tokens", u.cached)
      .num("output_tokens", u.completion);
  return w.done();
}

inline void read_openai_usage_element(element usage, token_usage& out) {
  if (!usage.is_object()) return;
  std::int64_t v = 0;
  if (usage["prompt_tokens"].get_int64().get(v) == simdjson::SUCCESS) out.prompt = v;
  if (usage["completion_tokens"].get_int64().get(v) == simdjson::SUCCESS) out.completion = v;
  if (usage.at_pointer("/prompt_tokens_details/cached_tokens").get_int64().get(v) == simdjson::SUCCESS) out.cached = v;
  out.present = true;
}

inline void read_anthropic_usage_element(element usage, token_usage& out) {
  if (!usage.is_object()) return;
  // Kept as Anthropic's parts, so a later event updating one part keeps the others.
  std::int64_t input = out.uncached_input(), read = out.cached, write = out.cache_creation, v = 0;
  if (usage["input_tokens"].get_int64().get(v) == simdjson::SUCCESS) input = v;
  if (usage["cache_read_input_tokens"].get_int64().get(v) == simdjson::SUCCESS) read = v;
  if (usage["cache_creation_input_tokens"].get_int64().get(v) == simdjson::SUCCESS) write = v;
  if (usage["output_tokens"].get_int64().get(v) == simdjson::SUCCESS) out.completion = v;
  out.cached = read;
  out.cache_creation = write;
  out.prompt = input + read + write;
  out.present = true;
}

} // namespace lowart::net::translate_detail
