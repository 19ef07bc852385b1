#include "net/translate.hpp"

#include "core/clock.hpp"
#include "core/json_text.hpp"

#include <simdjson.h>

#include <algorithm>
#include <map>
#include <vector>

namespace lowart::net {

namespace {

using simdjson::dom::element;

/// Two parsers per thread: a document stays valid only until its parser parses again,
/// and translation sometimes parses a string found inside a document (tool arguments).
struct parser_slot {
  simdjson::dom::parser parser;
  std::string buffer;
};

parser_slot& outer_slot() {
  thread_local parser_slot slot;
  return slot;
}
parser_slot& inner_slot() {
  thread_local parser_slot slot;
  return slot;
}

bool parse(parser_slot& slot, std::string_view text, element& doc) {
  slot.buffer.assign(text);
  slot.buffer.reserve(text.size() + simdjson::SIMDJSON_PADDING);
  return slot.parser.parse(slot.buffer.data(), slot.buffer.size(), false).get(doc) == simdjson::SUCCESS;
}

using result = simdjson::simdjson_result<element>;

/// A string member, or "" when absent or not a string (errors propagate through `e`).
std::string_view string_of(result e, std::string_view key) {
  std::string_view v;
  if (e[key].get_string().get(v) != simdjson::SUCCESS) return {};
  return v;
}
std::string_view string_of(element e, std::string_view key) {
  return string_of(result(std::move(e)), key);
}

bool has(element e, std::string_view key) {
  element v;
  return e[key].get(v) == simdjson::SUCCESS && !v.is_null();
}

std::string minified(element e) {
  return simdjson::minify(e);
}

using json::array_writer;

/// Text of a content value: a string, or the text parts of an array joined by `sep`.
std::string text_of(element content, std::string_view sep = "\n") {
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
std::string text_block(std::string_view text, const element* source) {
  json::object_writer b;
  b.str("type", "text").str("text", text);
  element cache;
  if (source && (*source)["cache_control"].get(cache) == simdjson::SUCCESS && cache.is_object())
    b.raw("cache_control", minified(cache));
  return b.done();
}

/// An OpenAI image_url part -> an Anthropic image block (data URLs become base64 sources).
std::string image_block(element part) {
  std::string_view url;
  if (part["image_url"].get_string().get(url) != simdjson::SUCCESS) url = string_of(part["image_url"], "url");
  json::object_writer source;
  constexpr std::string_view data_prefix = "data:";
  auto comma = url.find(',');
  auto meta = comma == std::string_view::npos ? std::string_view{} : url.substr(0, comma);
  if (url.rfind(data_prefix, 0) == 0 && meta.size() > 7 && meta.substr(meta.size() - 7) == ";base64") {
    source.str("type", "base64")
        .str("media_type", meta.substr(data_prefix.size(), meta.size() - 7 - data_prefix.size()))
        .str("data", url.substr(comma + 1));
  } else {
    source.str("type", "url").str("url", url);
  }
  json::object_writer b;
  b.str("type", "image").raw("source", source.done());
  return b.done();
}

/// An Anthropic image block -> an OpenAI image_url part.
std::string image_part(element block) {
  element source;
  std::string url;
  if (block["source"].get(source) == simdjson::SUCCESS) {
    auto type = string_of(source, "type");
    if (type == "base64") {
      url = "data:";
      url += string_of(source, "media_type");
      url += ";base64,";
      url += string_of(source, "data");
    } else {
      url = std::string(string_of(source, "url"));
    }
  }
  json::object_writer image;
  image.str("url", url);
  json::object_writer p;
  p.str("type", "image_url").raw("image_url", image.done());
  return p.done();
}

/// Tool arguments (a JSON string in OpenAI) as the object Anthropic wants.
std::string arguments_object(std::string_view arguments) {
  element args;
  if (!arguments.empty() && parse(inner_slot(), arguments, args) && args.is_object()) return minified(args);
  return "{}";
}

/// An assistant turn's Anthropic blocks -> OpenAI's text and tool_calls. Thinking blocks
/// have no OpenAI counterpart and are dropped.
void read_assistant_blocks(simdjson::dom::array blocks, std::string& text, array_writer& calls) {
  for (auto b : blocks) {
    auto type = string_of(b, "type");
    if (type == "text") {
      text += string_of(b, "text");
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
std::string tool_use_block(element call) {
  json::object_writer b;
  b.str("type", "tool_use")
      .str("id", string_of(call, "id"))
      .str("name", string_of(call["function"], "name"))
      .raw("input", arguments_object(string_of(call["function"], "arguments")));
  return b.done();
}

std::string openai_usage_json(const token_usage& u) {
  json::object_writer details;
  details.num("cached_tokens", u.cached);
  json::object_writer w;
  w.num("prompt_tokens", u.prompt)
      .num("completion_tokens", u.completion)
      .num("total_tokens", u.prompt + u.completion)
      .raw("prompt_tokens_details", details.done());
  return w.done();
}

std::string anthropic_usage_json(const token_usage& u) {
  json::object_writer w;
  w.num("input_tokens", u.uncached_input())
      .num("cache_creation_input_tokens", u.cache_creation)
      .num("cache_read_input_tokens", u.cached)
      .num("output_tokens", u.completion);
  return w.done();
}

void read_openai_usage_element(element usage, token_usage& out) {
  if (!usage.is_object()) return;
  std::int64_t v = 0;
  if (usage["prompt_tokens"].get_int64().get(v) == simdjson::SUCCESS) out.prompt = v;
  if (usage["completion_tokens"].get_int64().get(v) == simdjson::SUCCESS) out.completion = v;
  if (usage.at_pointer("/prompt_tokens_details/cached_tokens").get_int64().get(v) == simdjson::SUCCESS) out.cached = v;
  out.present = true;
}

void read_anthropic_usage_element(element usage, token_usage& out) {
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

/// An error's type as either protocol names it -> the neutral kind.
error_kind kind_of_type(std::string_view type) {
  if (type == "rate_limit_error" || type == "rate_limit_exceeded") return error_kind::rate_limited;
  if (type == "overloaded_error" || type == "service_unavailable") return error_kind::unavailable;
  if (type == "invalid_request_error") return error_kind::bad_request;
  if (type == "authentication_error") return error_kind::unauthorized;
  if (type == "permission_error") return error_kind::forbidden;
  if (type == "not_found_error") return error_kind::not_found;
  if (type == "request_too_large") return error_kind::payload_too_large;
  if (type == "timeout_error") return error_kind::gateway_timeout;
  return error_kind::internal;
}

} // namespace

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

// --- requests ------------------------------------------------------------------------

std::string openai_request_to_anthropic(std::string_view body, int default_max_tokens) {
  element doc;
  if (!parse(outer_slot(), body, doc) || !doc.is_object()) return std::string(body);
  json::object_writer w;
  if (auto model = string_of(doc, "model"); !model.empty()) w.str("model", model);

  // System and developer messages become the system prompt; consecutive messages of one
  // role merge, as Anthropic wants user and assistant to alternate.
  array_writer system;
  struct message {
    std::string_view role;
    std::vector<std::string> blocks;
  };
  std::vector<message> messages;
  auto push = [&](std::string_view role, std::string block) {
    if (messages.empty() || messages.back().role != role) messages.push_back({role, {}});
    messages.back().blocks.push_back(std::move(block));
  };
  auto add_content = [&](std::string_view role, element content, bool images) {
    std::string_view s;
    if (content.get_string().get(s) == simdjson::SUCCESS) {
      if (!s.empty()) push(role, text_block(s, nullptr));
      return;
    }
    simdjson::dom::array parts;
    if (content.get_array().get(parts) != simdjson::SUCCESS) return;
    for (auto part : parts) {
      auto type = string_of(part, "type");
      if ((type == "text" || type == "refusal") && (part["text"].get_string().get(s) == simdjson::SUCCESS ||
                                                    part["refusal"].get_string().get(s) == simdjson::SUCCESS)) {
        if (!s.empty()) push(role, text_block(s, &part));
      } else if (type == "image_url" && images) {
        push(role, image_block(part));
      }
      // input_audio and file parts have no Anthropic counterpart here: dropped.
    }
  };
  simdjson::dom::array in_messages;
  if (doc["messages"].get_array().get(in_messages) == simdjson::SUCCESS) {
    for (auto m : in_messages) {
      auto role = string_of(m, "role");
      element content;
      bool has_content = m["content"].get(content) == simdjson::SUCCESS;
      if (role == "system" || role == "developer") {
        std::string_view s;
        simdjson::dom::array parts;
        if (has_content && content.get_string().get(s) == simdjson::SUCCESS) {
          if (!s.empty()) system.add(text_block(s, nullptr));
        } else if (has_content && content.get_array().get(parts) == simdjson::SUCCESS) {
          for (auto part : parts)
            if (part["text"].get_string().get(s) == simdjson::SUCCESS && !s.empty()) system.add(text_block(s, &part));
        }
      } else if (role == "user") {
        if (has_content) add_content("user", content, true);
      } else if (role == "assistant") {
        if (has_content) add_content("assistant", content, false);
        simdjson::dom::array calls;
        if (m["tool_calls"].get_array().get(calls) == simdjson::SUCCESS) {
          for (auto call : calls) {
            push("assistant", tool_use_block(call));
          }
        }
      } else if (role == "tool") {
        json::object_writer b;
        b.str("type", "tool_result").str("tool_use_id", string_of(m, "tool_call_id"));
        std::string_view s;
        if (has_content && content.get_string().get(s) == simdjson::SUCCESS) {
          b.str("content", s);
        } else {
          array_writer blocks;
          if (has_content) {
            simdjson::dom::array parts;
            if (content.get_array().get(parts) == simdjson::SUCCESS)
              for (auto part : parts)
                if (part["text"].get_string().get(s) == simdjson::SUCCESS) blocks.add(text_block(s, &part));
          }
          b.raw("content", blocks.done());
        }
        push("user", b.done());
      }
      // "function" (the deprecated single-call form) has no counterpart: dropped.
    }
  }
  if (!system.empty()) w.raw("system", system.done());
  array_writer out_messages;
  for (auto& m : messages) {
    array_writer blocks;
    for (auto& b : m.blocks)
      blocks.add(b);
    json::object_writer mw;
    mw.str("role", m.role).raw("content", blocks.done());
    out_messages.add(mw.done());
  }
  w.raw("messages", out_messages.done());

  std::int64_t max_tokens = 0;
  if (doc["max_completion_tokens"].get_int64().get(max_tokens) != simdjson::SUCCESS &&
      doc["max_tokens"].get_int64().get(max_tokens) != simdjson::SUCCESS)
    max_tokens = default_max_tokens; // Anthropic requires it
  w.num("max_tokens", max_tokens);

  element v;
  for (std::string_view key : {"temperature", "top_p", "top_k", "thinking"})
    if (doc[key].get(v) == simdjson::SUCCESS && !v.is_null()) w.raw(key, minified(v));
  bool stream = false;
  if (doc["stream"].get_bool().get(stream) == simdjson::SUCCESS) w.boolean("stream", stream);
  if (doc["stop"].get(v) == simdjson::SUCCESS) {
    std::string_view s;
    if (v.get_string().get(s) == simdjson::SUCCESS)
      w.raw("stop_sequences", json::string_array({std::string(s)}));
    else if (v.is_array())
      w.raw("stop_sequences", minified(v));
  }

  simdjson::dom::array tools;
  bool any_tool = false;
  if (doc["tools"].get_array().get(tools) == simdjson::SUCCESS) {
    array_writer out_tools;
    for (auto tool : tools) {
      element fn;
      if (string_of(tool, "type") != "function" || tool["function"].get(fn) != simdjson::SUCCESS) continue;
      json::object_writer t;
      t.str("name", string_of(fn, "name"));
      if (auto d = string_of(fn, "description"); !d.empty()) t.str("description", d);
      element params;
      t.raw("input_schema", fn["parameters"].get(params) == simdjson::SUCCESS && params.is_object()
                                ? minified(params)
                                : std::string(R"({"type":"object","properties":{}})"));
      element cache;
      if (tool["cache_control"].get(cache) == simdjson::SUCCESS && cache.is_object())
        t.raw("cache_control", minified(cache));
      out_tools.add(t.done());
    }
    any_tool = !out_tools.empty();
    if (any_tool) w.raw("tools", out_tools.done());
  }
  bool parallel = true;
  bool no_parallel = doc["parallel_tool_calls"].get_bool().get(parallel) == simdjson::SUCCESS && !parallel;
  if (any_tool) {
    json::object_writer choice;
    std::string_view s;
    if (doc["tool_choice"].get_string().get(s) == simdjson::SUCCESS) {
      choice.str("type", s == "required" ? "any" : s == "none" ? "none" : "auto");
    } else if (auto name = string_of(doc["tool_choice"]["function"], "name"); !name.empty()) {
      choice.str("type", "tool").str("name", name);
    } else {
      choice.str("type", "auto");
    }
    if (no_parallel) choice.boolean("disable_parallel_tool_use", true);
    if (has(doc, "tool_choice") || no_parallel) w.raw("tool_choice", choice.done());
  }
  if (auto user = string_of(doc, "user"); !user.empty()) {
    json::object_writer meta;
    meta.str("user_id", user);
    w.raw("metadata", meta.done());
  }
  return w.done();
}

std::string anthropic_request_to_openai(std::string_view body, bool include_usage) {
  element doc;
  if (!parse(outer_slot(), body, doc) || !doc.is_object()) return std::string(body);
  json::object_writer w;
  if (auto model = string_of(doc, "model"); !model.empty()) w.str("model", model);

  array_writer messages;
  element system;
  if (doc["system"].get(system) == simdjson::SUCCESS) {
    auto text = text_of(system, "\n");
    if (!text.empty()) {
      json::object_writer m;
      m.str("role", "system").str("content", text);
      messages.add(m.done());
    }
  }
  simdjson::dom::array in_messages;
  if (doc["messages"].get_array().get(in_messages) == simdjson::SUCCESS) {
    for (auto m : in_messages) {
      auto role = string_of(m, "role");
      element content;
      if (m["content"].get(content) != simdjson::SUCCESS) continue;
      std::string_view s;
      if (content.get_string().get(s) == simdjson::SUCCESS) {
        json::object_writer out;
        out.str("role", role == "assistant" ? "assistant" : "user").str("content", s);
        messages.add(out.done());
        continue;
      }
      simdjson::dom::array blocks;
      if (content.get_array().get(blocks) != simdjson::SUCCESS) continue;
      if (role == "assistant") {
        std::string text;
        array_writer calls;
        read_assistant_blocks(blocks, text, calls);
        json::object_writer out;
        out.str("role", "assistant");
        if (text.empty())
          out.raw("content", "null");
        else
          out.str("content", text);
        if (!calls.empty()) out.raw("tool_calls", calls.done());
        messages.add(out.done());
        continue;
      }
      // A user turn: tool results become tool messages (first, as they answer the
      // previous assistant turn), the rest one user message.
      std::vector<std::string> parts;
      bool only_text = true;
      for (auto b : blocks) {
        auto type = string_of(b, "type");
        if (type == "tool_result") {
          element result;
          json::object_writer tool;
          tool.str("role", "tool")
              .str("tool_call_id", string_of(b, "tool_use_id"))
              .str("content", b["content"].get(result) == simdjson::SUCCESS ? text_of(result, "\n") : std::string());
          messages.add(tool.done());
        } else if (type == "text") {
          json::object_writer p;
          p.str("type", "text").str("text", string_of(b, "text"));
          parts.push_back(p.done());
        } else if (type == "image") {
          parts.push_back(image_part(b));
          only_text = false;
        }
        // document and other block types: dropped.
      }
      if (parts.empty()) continue;
      json::object_writer out;
      out.str("role", "user");
      if (only_text && parts.size() == 1) {
        // One text part: plain string content, which every OpenAI-compatible server takes.
        element part;
        std::string_view text;
        if (parse(inner_slot(), parts[0], part) && part["text"].get_string().get(text) == simdjson::SUCCESS)
          out.str("content", text);
      } else {
        out.raw("content", json::array(parts));
      }
      messages.add(out.done());
    }
  }
  w.raw("messages", messages.done());

  element v;
  for (std::string_view key : {"max_tokens", "temperature", "top_p"})
    if (doc[key].get(v) == simdjson::SUCCESS && !v.is_null()) w.raw(key, minified(v));
  if (doc["stop_sequences"].get(v) == simdjson::SUCCESS && v.is_array()) w.raw("stop", minified(v));
  bool stream = false;
  if (doc["stream"].get_bool().get(stream) == simdjson::SUCCESS) {
    w.boolean("stream", stream);
    if (stream && include_usage) w.raw("stream_options", R"({"include_usage":true})");
  }

  simdjson::dom::array tools;
  bool any_tool = false;
  if (doc["tools"].get_array().get(tools) == simdjson::SUCCESS) {
    array_writer out_tools;
    for (auto tool : tools) {
      auto type = string_of(tool, "type");
      if (!type.empty() && type != "custom") continue; // server tools (web search, ...) run at Anthropic only
      json::object_writer fn;
      fn.str("name", string_of(tool, "name"));
      if (auto d = string_of(tool, "description"); !d.empty()) fn.str("description", d);
      element schema;
      if (tool["input_schema"].get(schema) == simdjson::SUCCESS) fn.raw("parameters", minified(schema));
      json::object_writer t;
      t.str("type", "function").raw("function", fn.done());
      out_tools.add(t.done());
    }
    any_tool = !out_tools.empty();
    if (any_tool) w.raw("tools", out_tools.done());
  }
  element choice;
  if (any_tool && doc["tool_choice"].get(choice) == simdjson::SUCCESS) {
    auto type = string_of(choice, "type");
    if (type == "any")
      w.str("tool_choice", "required");
    else if (type == "none")
      w.str("tool_choice", "none");
    else if (type == "tool") {
      json::object_writer fn;
      fn.str("name", string_of(choice, "name"));
      json::object_writer c;
      c.str("type", "function").raw("function", fn.done());
      w.raw("tool_choice", c.done());
    } else
      w.str("tool_choice", "auto");
    bool no_parallel = false;
    if (choice["disable_parallel_tool_use"].get_bool().get(no_parallel) == simdjson::SUCCESS && no_parallel)
      w.boolean("parallel_tool_calls", false);
  }
  if (auto user = string_of(doc["metadata"], "user_id"); !user.empty()) w.str("user", user);
  return w.done();
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

std::string anthropic_response_to_openai(std::string_view body, token_usage& usage) {
  element doc;
  if (!parse(outer_slot(), body, doc) || !doc.is_object()) return std::string(body);
  element u;
  if (doc["usage"].get(u) == simdjson::SUCCESS) read_anthropic_usage_element(u, usage);
  std::string text;
  array_writer calls;
  simdjson::dom::array blocks;
  if (doc["content"].get_array().get(blocks) == simdjson::SUCCESS) read_assistant_blocks(blocks, text, calls);
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
      .str("finish_reason", openai_finish_reason(string_of(doc, "stop_reason")));
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

// --- streams ---------------------------------------------------------------------------

void append_named_event(std::string& out, std::string_view name, std::string_view data) {
  out += "event: ";
  out += name;
  out += "\ndata: ";
  out += data;
  out += "\n\n";
}

void append_data_event(std::string& out, std::string_view data) {
  out += "data: ";
  out += data;
  out += "\n\n";
}

void append_stream_error(std::string& out, protocol client, error_kind kind, std::string_view message,
                         std::string_view code) {
  if (client == protocol::anthropic)
    append_named_event(out, "error", error_body(api_format::anthropic, kind, message));
  else
    append_data_event(out, error_body(api_format::openai, kind, message, code));
}

namespace {

/// Anthropic events -> OpenAI chat.completion.chunk events.
class anthropic_to_openai final : public stream_translator {
public:
  explicit anthropic_to_openai(options o) : opt_(std::move(o)), created_(clock::unix_ms() / 1000) {
    id_ = opt_.fallback_id;
  }

  bool feed(std::string_view event, std::string_view data, std::string& out) override {
    if (closed_ || ended_) return true;
    element doc;
    if (!parse(outer_slot(), data, doc) || !doc.is_object()) return false; // not JSON: nothing to translate
    auto type = string_of(doc, "type");
    if (type.empty()) type = event;
    if (type == "message_start") {
      auto message = doc["message"];
      if (auto id = string_of(message, "id"); !id.empty()) id_ = id;
      model_ = string_of(message, "model");
      element u;
      if (message["usage"].get(u) == simdjson::SUCCESS) read_anthropic_usage_element(u, usage_);
      chunk(out, R"({"role":"assistant","content":""})");
    } else if (type == "content_block_start") {
      auto index = block_index(doc);
      auto block = doc["content_block"];
      auto block_type = string_of(block, "type");
      if (block_type == "tool_use" || block_type == "server_tool_use") {
        if (tool_of_block_.size() <= index) tool_of_block_.resize(index + 1, -1);
        tool_of_block_[index] = tools_++;
        json::object_writer fn;
        fn.str("name", string_of(block, "name")).str("arguments", "");
        json::object_writer call;
        call.num("index", tool_of_block_[index])
            .str("id", string_of(block, "id"))
            .str("type", "function")
            .raw("function", fn.done());
        tool_delta(out, call.done());
      } else if (block_type == "text") {
        if (auto text = string_of(block, "text"); !text.empty()) text_delta(out, text);
      }
    } else if (type == "content_block_delta") {
      auto delta = doc["delta"];
      auto delta_type = string_of(delta, "type");
      if (delta_type == "text_delta") {
        if (auto text = string_of(delta, "text"); !text.empty()) text_delta(out, text);
      } else if (delta_type == "input_json_delta") {
        auto index = block_index(doc);
        auto piece = string_of(delta, "partial_json");
        if (!piece.empty() && index < tool_of_block_.size() && tool_of_block_[index] >= 0) {
          json::object_writer fn;
          fn.str("arguments", piece);
          json::object_writer call;
          call.num("index", tool_of_block_[index]).raw("function", fn.done());
          tool_delta(out, call.done());
        }
      }
      // thinking_delta and signature_delta: no OpenAI counterpart, dropped.
    } else if (type == "message_delta") {
      element u;
      if (doc["usage"].get(u) == simdjson::SUCCESS) read_anthropic_usage_element(u, usage_);
      auto stop = string_of(doc["delta"], "stop_reason");
      if (!stop.empty()) {
        content_seen_ = true;
        std::string finish = "\"";
        finish += openai_finish_reason(stop);
        finish += '"';
        chunk(out, "{}", finish);
      }
    } else if (type == "message_stop") {
      ended_ = true;
      return true;
    } else if (type == "error") {
      errored_ = true;
      content_seen_ = true;
      ended_ = true;
      auto error = doc["error"];
      auto error_type = string_of(error, "type");
      append_data_event(
          out, error_body(api_format::openai, kind_of_type(error_type), string_of(error, "message"), error_type));
      return true;
    }
    // ping and unknown events: nothing to say.
    return false;
  }

  void close(const token_usage& usage, std::string& out) override {
    if (closed_) return;
    closed_ = true;
    if (errored_) return; // an OpenAI stream ends right after its error event
    if (opt_.client_wants_usage) {
      json::object_writer w;
      w.str("id", id_)
          .str("object", "chat.completion.chunk")
          .num("created", created_)
          .str("model", model_)
          .raw("choices", "[]")
          .raw("usage", openai_usage_json(usage));
      append_data_event(out, w.done());
    }
    out += "data: [DONE]\n\n";
  }

private:
  static std::size_t block_index(element doc) {
    std::int64_t index = 0;
    if (doc["index"].get_int64().get(index) != simdjson::SUCCESS || index < 0 || index > 4096) index = 0;
    return static_cast<std::size_t>(index);
  }
  void chunk(std::string& out, std::string_view delta, std::string_view finish = "null") {
    std::string choice = R"([{"index":0,"delta":)";
    choice += delta;
    choice += R"(,"logprobs":null,"finish_reason":)";
    choice += finish;
    choice += "}]";
    json::object_writer w;
    w.str("id", id_)
        .str("object", "chat.completion.chunk")
        .num("created", created_)
        .str("model", model_)
        .raw("choices", choice);
    append_data_event(out, w.done());
  }
  void text_delta(std::string& out, std::string_view text) {
    content_seen_ = true;
    json::object_writer d;
    d.str("content", text);
    chunk(out, d.done());
  }
  void tool_delta(std::string& out, const std::string& call) {
    content_seen_ = true;
    chunk(out, R"({"tool_calls":[)" + call + "]}");
  }

  options opt_;
  std::int64_t created_;
  std::string id_;
  std::string model_;
  std::vector<int> tool_of_block_; ///< Anthropic block index -> OpenAI tool call index
  int tools_ = 0;
  bool ended_ = false;
};

/// OpenAI chat.completion.chunk events -> Anthropic events.
class openai_to_anthropic final : public stream_translator {
public:
  explicit openai_to_anthropic(options o) : opt_(std::move(o)) {}

  bool feed(std::string_view, std::string_view data, std::string& out) override {
    if (closed_ || ended_) return true;
    if (data == "[DONE]") {
      ended_ = true;
      return true;
    }
    element doc;
    if (!parse(outer_slot(), data, doc) || !doc.is_object()) return false;
    element error;
    if (doc["error"].get(error) == simdjson::SUCCESS && error.is_object()) {
      errored_ = true;
      content_seen_ = true;
      ended_ = true;
      if (!started_) start(out);
      append_named_event(
          out, "error",
          error_body(api_format::anthropic, kind_of_type(string_of(error, "type")), string_of(error, "message")));
      return true;
    }
    if (!started_) {
      id_ = string_of(doc, "id");
      model_ = string_of(doc, "model");
      start(out);
    }
    element u;
    if (doc["usage"].get(u) == simdjson::SUCCESS && u.is_object()) read_openai_usage_element(u, usage_);
    simdjson::dom::array choices;
    if (doc["choices"].get_array().get(choices) != simdjson::SUCCESS || choices.size() == 0) return false;
    element choice = choices.at(0).value_unsafe();
    auto delta = choice["delta"];
    std::string_view text;
    if ((delta["content"].get_string().get(text) == simdjson::SUCCESS ||
         delta["refusal"].get_string().get(text) == simdjson::SUCCESS) &&
        !text.empty()) {
      if (open_ != block::text) {
        close_block(out);
        open_block(out, R"({"type":"text","text":""})", block::text);
      }
      json::object_writer d;
      d.str("type", "text_delta").str("text", text);
      delta_event(out, d.done());
    }
    simdjson::dom::array calls;
    if (delta["tool_calls"].get_array().get(calls) == simdjson::SUCCESS) {
      for (auto call : calls)
        tool_piece(out, call);
    }
    if (auto finish = string_of(choice, "finish_reason"); !finish.empty()) {
      content_seen_ = true;
      stop_ = anthropic_stop_reason(finish);
      finish_blocks(out);
    }
    return false;
  }

  void close(const token_usage& usage, std::string& out) override {
    if (closed_) return;
    closed_ = true;
    if (errored_) return;
    if (!started_) start(out);
    finish_blocks(out);
    json::object_writer delta;
    delta.str("stop_reason", stop_).raw("stop_sequence", "null");
    json::object_writer w;
    w.str("type", "message_delta").raw("delta", delta.done()).raw("usage", anthropic_usage_json(usage));
    append_named_event(out, "message_delta", w.done());
    append_named_event(out, "message_stop", R"({"type":"message_stop"})");
  }

private:
  enum class block { none, text, tool };

  void start(std::string& out) {
    started_ = true;
    json::object_writer usage;
    usage.num("input_tokens", opt_.prompt_tokens).num("output_tokens", 0);
    json::object_writer message;
    message.str("id", id_.empty() ? opt_.fallback_id : id_)
        .str("type", "message")
        .str("role", "assistant")
        .str("model", model_)
        .raw("content", "[]")
        .raw("stop_reason", "null")
        .raw("stop_sequence", "null")
        .raw("usage", usage.done());
    json::object_writer w;
    w.str("type", "message_start").raw("message", message.done());
    append_named_event(out, "message_start", w.done());
  }
  void open_block(std::string& out, std::string_view block_json, block kind) {
    content_seen_ = true;
    json::object_writer w;
    w.str("type", "content_block_start").num("index", next_block_).raw("content_block", block_json);
    append_named_event(out, "content_block_start", w.done());
    open_ = kind;
  }
  void close_block(std::string& out) {
    if (open_ == block::none) return;
    if (open_ == block::tool) calls_[open_tool_].closed = true;
    json::object_writer w;
    w.str("type", "content_block_stop").num("index", next_block_);
    append_named_event(out, "content_block_stop", w.done());
    open_ = block::none;
    open_tool_ = -1;
    ++next_block_;
  }
  void delta_event(std::string& out, const std::string& delta) {
    json::object_writer w;
    w.str("type", "content_block_delta").num("index", next_block_).raw("delta", delta);
    append_named_event(out, "content_block_delta", w.done());
  }

  // --- tool calls -------------------------------------------------------------------------
  // OpenAI numbers tool calls and may interleave their pieces (index 0, 1, 0, 2, ...);
  // Anthropic's blocks do not interleave. Tool call i is the i-th tool_use block: the
  // open call's pieces go out at once, a piece of another call waits until that call's
  // block may open — when the open call's arguments are complete JSON (or at the end).
  struct tool_call {
    std::string id;
    std::string name;
    std::vector<std::string> held; ///< pieces that arrived before its block could open
    int depth = 0;                 ///< JSON nesting of the arguments so far
    bool in_string = false, escaped = false, started = false, complete = false;
    bool opened = false, closed = false;

    void scan(std::string_view piece) {
      for (char c : piece) {
        if (in_string) {
          if (escaped)
            escaped = false;
          else if (c == '\\')
            escaped = true;
          else if (c == '"')
            in_string = false;
        } else if (c == '"') {
          in_string = true;
        } else if (c == '{' || c == '[') {
          started = true;
          ++depth;
        } else if ((c == '}' || c == ']') && depth > 0 && --depth == 0) {
          complete = started;
        }
      }
    }
  };

  void tool_piece(std::string& out, element call) {
    std::int64_t index = 0;
    if (call["index"].get_int64().get(index) != simdjson::SUCCESS) index = 0;
    if (index < 0 || index > 4096) return;
    auto& c = calls_[index];
    if (c.id.empty()) c.id = string_of(call, "id");
    if (c.name.empty()) c.name = string_of(call["function"], "name");
    // A piece after its block closed (its arguments were complete) has no block to go to.
    if (auto args = string_of(call["function"], "arguments"); !args.empty() && !c.closed) {
      c.scan(args);
      if (open_ == block::tool && open_tool_ == index) {
        input_delta(out, args);
      } else {
        c.held.emplace_back(args);
        held_bytes_ += args.size();
      }
    }
    // Open the next call's block whenever the open one is done with (or holding the
    // others grew too large: then the open one ends early and loses what comes later).
    for (;;) {
      if (open_ == block::tool && !calls_[open_tool_].complete && held_bytes_ < (1u << 20)) return;
      auto next = std::find_if(calls_.begin(), calls_.end(), [](const auto& kv) { return !kv.second.opened; });
      if (next == calls_.end()) return;
      close_block(out);
      open_call(out, next->first, next->second);
    }
  }
  void open_call(std::string& out, std::int64_t index, tool_call& c) {
    json::object_writer b;
    b.str("type", "tool_use")
        .str("id", c.id.empty() ? "toolu_" + std::to_string(next_block_) : c.id)
        .str("name", c.name)
        .raw("input", "{}");
    open_block(out, b.done(), block::tool);
    open_tool_ = index;
    c.opened = true;
    for (const auto& piece : c.held) {
      input_delta(out, piece);
      held_bytes_ -= piece.size();
    }
    c.held.clear();
  }
  /// The end: the open block closes, calls still waiting get their blocks in order.
  void finish_blocks(std::string& out) {
    close_block(out);
    for (auto& [index, c] : calls_) {
      if (c.opened) continue;
      open_call(out, index, c);
      close_block(out);
    }
  }
  void input_delta(std::string& out, std::string_view piece) {
    json::object_writer d;
    d.str("type", "input_json_delta").str("partial_json", piece);
    delta_event(out, d.done());
  }
  std::map<std::int64_t, tool_call> calls_; ///< by OpenAI index
  std::size_t held_bytes_ = 0;
  // --- end of tool calls ------------------------------------------------------------------

  options opt_;
  std::string id_;
  std::string model_;
  bool started_ = false;
  bool ended_ = false;
  block open_ = block::none;
  std::int64_t open_tool_ = -1;
  int next_block_ = 0;
  std::string stop_ = "end_turn";
};

} // namespace

std::unique_ptr<stream_translator> make_stream_translator(protocol from, protocol to,
                                                          stream_translator::options options) {
  if (from == protocol::anthropic && to == protocol::openai)
    return std::make_unique<anthropic_to_openai>(std::move(options));
  if (from == protocol::openai && to == protocol::anthropic)
    return std::make_unique<openai_to_anthropic>(std::move(options));
  return nullptr; // same protocol: relayed as is
}

} // namespace lowart::net
