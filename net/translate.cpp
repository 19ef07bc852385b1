// OpenAI <-> Anthropic translation: usage, stop reasons, JSON answers and error envelopes.
// Request bodies are in translate_request.cpp, SSE streams in translate_stream.cpp, the
// helpers they share in translate_internal.hpp.
#include "net/translate.hpp"

#include "core/clock.hpp"
#include "net/translate_internal.hpp"

#include <simdjson.h>

namespace lowart::net {

using namespace translate_detail;

void read_openai_usage(const element& usage, token_usage& out) {
  read_openai_usage_element(usage, out);
}

void read_anthropic_usage(const element& usage, token_usage& out) {
  read_anthropic_usage_element(usage, out);
}

std::string_view anthropic_stop_reason(std::string_view finish_reason) {
  if (finish_reason == "length") return "max_tokens";
  if (finish_reason == "tool_calls" || finish_reason == "function_call") return "tool_use";
  if (finish_reason == "content_filter") return "refusal";
  return "end_turn";
}

std::string_view openai_finish_reason(std::string_view stop_reason) {
  if (stop_reason == "max_tokens") return "length";
  if (stop_reason == "tool_use") return "tool_calls";
  if (stop_reason == "refusal") return "content_filter";
  return "stop"; // end_turn, stop_sequence, pause_turn
}

// --- JSON answers ----------------------------------------------------------------------

std::string openai_response_to_anthropic(std::string_view body, token_usage& usage) {
  element doc;
  if (!parse(outer_slot(), body, doc) || !doc.is_object()) return std::string(body);
  element u;
  if (doc["usage"].get(u) == simdjson::SUCCESS) read_openai_usage_element(u, usage);
  array_writer content;
  std::string_view finish = "stop";
  simdjson::dom::array choices;
  if (doc["choices"].get_array().get(choices) == simdjson::SUCCESS && choices.size() > 0) {
    auto choice = choices.at(0);
    auto message = choice["message"];
    finish = string_of(choice, "finish_reason");
    element text;
    if (message["content"].get(text) == simdjson::SUCCESS) {
      auto s = text_of(text, "");
      if (!s.empty()) content.add(text_block(s, nullptr));
    }
    if (auto refusal = string_of(message, "refusal"); !refusal.empty()) content.add(text_block(refusal, nullptr));
    simdjson::dom::array calls;
    if (message["tool_calls"].get_array().get(calls) == simdjson::SUCCESS) {
      for (auto call : calls) {
        content.add(tool_use_block(call));
      }
    }
  }
  json::object_writer w;
  w.str("id", string_of(doc, "id"))
      .str("type", "message")
      .str("role", "assistant")
      .str("model", string_of(doc, "model"))
      .raw("content", content.done())
      .str("stop_reason", anthropic_stop_reason(finish))
      .raw("stop_sequence", "null")
      .raw("usage", anthropic_usage_json(usage));
  return w.done();
}

std::string anthropic_response_to_openai(std::string_view body, token_usage& usage, bool structured) {
  element doc;
  if (!parse(outer_slot(), body, doc) || !doc.is_object()) return std::string(body);
  element u;
  if (doc["usage"].get(u) == simdjson::SUCCESS) read_anthropic_usage_element(u, usage);
  std::string text;
  array_writer calls;
  simdjson::dom::array blocks;
  if (doc["content"].get_array().get(blocks) == simdjson::SUCCESS)
    read_assistant_blocks(blocks, text, calls, structured);
  auto stop = string_of(doc, "stop_reason");
  // The forced json_output call ends with stop_reason tool_use; for the client the
  // message is complete text.
  if (structured && stop == "tool_use" && calls.empty()) stop = "end_turn";
  json::object_writer message;
  message.str("role", "assistant");
  if (text.empty() && !calls.empty())
    message.raw("content", "null");
  else
    message.str("content", text);
  if (!calls.empty()) message.raw("tool_calls", calls.done());
  message.raw("refusal", "null");
  json::object_writer choice;
  choice.num("index", 0)
      .raw("message", message.done())
      .raw("logprobs", "null")
      .str("finish_reason", openai_finish_reason(stop));
  json::object_writer w;
  w.str("id", string_of(doc, "id"))
      .str("object", "chat.completion")
      .num("created", clock::unix_ms() / 1000)
      .str("model", string_of(doc, "model"))
      .raw("choices", "[" + choice.done() + "]")
      .raw("usage", openai_usage_json(usage));
  return w.done();
}

std::string translate_error(std::string_view body, int status, protocol to) {
  std::string message;
  std::string type;
  element doc;
  if (parse(outer_slot(), body, doc) && doc.is_object()) {
    message = std::string(string_of(doc["error"], "message"));
    type = std::string(string_of(doc["error"], "type"));
    if (message.empty()) message = std::string(string_of(doc, "message"));
  }
  if (message.empty()) message = std::string(body.substr(0, 512));
  if (message.empty()) message = "upstream answered " + std::to_string(status);
  auto kind = kind_of_status(status);
  return error_body(to == protocol::openai ? api_format::openai : api_format::anthropic, kind, message,
                    to == protocol::openai ? std::string_view(type) : std::string_view{});
}
} // namespace lowart::net
