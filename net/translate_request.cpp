// OpenAI <-> Anthropic translation of request bodies, both directions. Answers, usage and
// errors are in translate.cpp, SSE streams in translate_stream.cpp, the shared helpers in
// translate_internal.hpp.
#include "core/json_text.hpp"
#include "net/translate.hpp"
#include "net/translate_internal.hpp"

#include <simdjson.h>

#include <vector>

namespace lowart::net {

using namespace translate_detail;

namespace {

bool has(element e, std::string_view key) {
  element v;
  return e[key].get(v) == simdjson::SUCCESS && !v.is_null();
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
} // namespace

// --- requests ------------------------------------------------------------------------

std::string openai_request_to_anthropic(std::string_view body, int default_max_tokens, bool* structured) {
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
  array_writer out_tools;
  if (doc["tools"].get_array().get(tools) == simdjson::SUCCESS) {
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
  }
  // Structured output: Anthropic has no response_format. A json_schema (or json_object)
  // becomes one more tool whose input schema is the requested schema; with no tools of the
  // client's the model must call it (tool_choice), and its input comes back as the text.
  element format;
  bool json_tool = false;
  if (doc["response_format"].get(format) == simdjson::SUCCESS && format.is_object()) {
    auto type = string_of(format, "type");
    element schema;
    std::string input_schema = R"({"type":"object"})";
    std::string description = "Answer with this tool: its input is the JSON object the reply must be.";
    if (type == "json_schema") {
      auto spec = format["json_schema"];
      if (spec["schema"].get(schema) == simdjson::SUCCESS && schema.is_object()) input_schema = minified(schema);
      if (auto d = string_of(spec, "description"); !d.empty()) description += std::string(" The object: ") += d;
    }
    if (type == "json_schema" || type == "json_object") {
      json::object_writer t;
      t.str("name", json_output_tool).str("description", description).raw("input_schema", input_schema);
      out_tools.add(t.done());
      json_tool = true;
    }
  }
  if (any_tool || json_tool) w.raw("tools", out_tools.done());
  if (structured) *structured = json_tool;
  bool parallel = true;
  bool no_parallel = doc["parallel_tool_calls"].get_bool().get(parallel) == simdjson::SUCCESS && !parallel;
  if (json_tool && !any_tool) {
    json::object_writer choice;
    choice.str("type", "tool").str("name", json_output_tool).boolean("disable_parallel_tool_use", true);
    w.raw("tool_choice", choice.done());
  } else if (any_tool) {
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

} // namespace lowart::net
