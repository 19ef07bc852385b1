// The OpenAI Responses API, requests: what the edge reads of one (summarize) and what it
// becomes once its conversation is known (prepare: the Chat Completions and the Responses
// upstream requests). Answers and the exchange are in responses.cpp, streams in
// responses_stream.cpp, the shared helpers in responses_internal.hpp.
#include "core/json_text.hpp"
#include "net/responses.hpp"
#include "net/responses_internal.hpp"

#include <simdjson.h>

#include <algorithm>
#include <cmath>

namespace lowart::net::responses {

using namespace detail;

namespace {

std::string with_index(std::string_view param, std::size_t i) {
  return std::string(param) + "[" + std::to_string(i) + "]";
}

/// A message item's content as chat content: a string stays one; text parts join into a
/// string for every role but user (whose parts, images included, stay a list).
std::string chat_content(element content, std::string_view role) {
  std::string_view s;
  if (content.get_string().get(s) == simdjson::SUCCESS) return json::quoted(s);
  simdjson::dom::array parts;
  if (content.get_array().get(parts) != simdjson::SUCCESS) return "\"\"";
  bool only_text = true;
  std::string joined;
  array_writer list;
  std::size_t n = 0;
  for (auto part : parts) {
    auto type = str(part, "type");
    if (type == "input_text" || type == "output_text" || type == "text") {
      if (n++) joined += '\n';
      joined += str(part, "text");
      json::object_writer p;
      p.str("type", "text").str("text", str(part, "text"));
      list.add(p.done());
    } else if (type == "refusal") {
      if (n++) joined += '\n';
      joined += str(part, "refusal");
    } else if (type == "input_image") {
      auto url = str(part, "image_url");
      if (url.empty()) continue; // file_id images: lowart has no file store
      only_text = false;
      json::object_writer image;
      image.str("url", url);
      if (auto detail = str(part, "detail"); !detail.empty()) image.str("detail", detail);
      json::object_writer p;
      p.str("type", "image_url").raw("image_url", image.done());
      list.add(p.done());
    } else if (type == "input_file") {
      only_text = false;
      json::object_writer file;
      for (auto key : {"file_data", "file_id", "filename"})
        if (auto v = str(part, key); !v.empty()) file.str(key, v);
      json::object_writer p;
      p.str("type", "file").raw("file", file.done());
      list.add(p.done());
    }
  }
  if (role != "user" || (only_text && n <= 1)) return json::quoted(joined);
  return list.done();
}

/// Text of a function_call_output's output: a string, or its text parts joined.
std::string output_text_of(element output) {
  std::string_view s;
  if (output.get_string().get(s) == simdjson::SUCCESS) return std::string(s);
  std::string out;
  simdjson::dom::array parts;
  if (output.get_array().get(parts) == simdjson::SUCCESS)
    for (auto part : parts)
      if (auto t = str(part, "text"); !t.empty()) out += t;
  return out;
}

/// Builds chat messages from Responses items, merging an assistant message and the
/// function calls after it into one assistant turn.
class chat_builder {
public:
  void system(std::string_view text) {
    json::object_writer m;
    m.str("role", "system").str("content", text);
    messages_.add(m.done());
  }

  void item(element it) {
    auto type = str(it, "type");
    if (type.empty() || type == "message") {
      auto role = str(it, "role");
      element content;
      if (it["content"].get(content) != simdjson::SUCCESS) return;
      if (role == "assistant") {
        flush();
        pending_ = true;
        text_ = chat_content(content, role);
        return;
      }
      flush();
      json::object_writer m;
      m.str("role", role == "developer" ? std::string_view("system") : role)
          .raw("content", chat_content(content, role));
      messages_.add(m.done());
    } else if (type == "function_call") {
      if (!pending_) {
        pending_ = true;
        text_ = "null";
      }
      json::object_writer fn;
      fn.str("name", str(it, "name")).str("arguments", str(it, "arguments"));
      json::object_writer call;
      call.str("id", str(it, "call_id")).str("type", "function").raw("function", fn.done());
      calls_.add(call.done());
    } else if (type == "function_call_output") {
      flush();
      element output;
      json::object_writer m;
      m.str("role", "tool")
          .str("tool_call_id", str(it, "call_id"))
          .str("content", it["output"].get(output) == simdjson::SUCCESS ? output_text_of(output) : std::string());
      messages_.add(m.done());
    }
    // reasoning items and the items of built-in tools have no Chat Completions counterpart
  }

  std::string done() {
    flush();
    return messages_.done();
  }

private:
  void flush() {
    if (!pending_) return;
    json::object_writer m;
    m.str("role", "assistant").raw("content", text_);
    if (!calls_.empty()) m.raw("tool_calls", calls_.done());
    messages_.add(m.done());
    calls_ = array_writer{};
    pending_ = false;
  }

  array_writer messages_;
  array_writer calls_;
  bool pending_ = false;
  std::string text_;
};

/// One input item as stored and listed (input_items): "type" and an id always present;
/// a string content becomes one text part.
std::string normalized_item(element it, std::string_view id_base, std::size_t n) {
  auto type = str(it, "type");
  auto suffix = std::string(id_base) + "_" + std::to_string(n);
  if (type.empty() || type == "message") {
    auto role = str(it, "role");
    std::string content;
    std::string_view s;
    if (it["content"].get_string().get(s) == simdjson::SUCCESS) {
      json::object_writer part;
      part.str("type", role == "assistant" ? "output_text" : "input_text").str("text", s);
      if (role == "assistant") part.raw("annotations", "[]");
      content = "[" + part.done() + "]";
    } else {
      element c;
      content = it["content"].get(c) == simdjson::SUCCESS ? minified(c) : "[]";
    }
    auto id = str(it, "id");
    json::object_writer w;
    w.str("id", id.empty() ? "msg_" + suffix : std::string(id))
        .str("type", "message")
        .str("role", role)
        .raw("content", content)
        .str("status", "completed");
    return w.done();
  }
  if (!str(it, "id").empty()) return minified(it);
  auto text = minified(it);
  auto prefix = type == "function_call" ? "fc_" : type == "function_call_output" ? "fco_" : "item_";
  json::set_member(text, "id", json::quoted(prefix + suffix));
  return text;
}

/// An item as an upstream that speaks Responses gets it: input messages without the id
/// and status lowart gave them (the upstream never saw those ids), other items as stored.
std::string upstream_item(element it) {
  auto type = str(it, "type");
  auto role = str(it, "role");
  if ((type.empty() || type == "message") && role != "assistant") {
    element content;
    json::object_writer w;
    w.str("type", "message")
        .str("role", role)
        .raw("content", it["content"].get(content) == simdjson::SUCCESS ? minified(content) : std::string("[]"));
    return w.done();
  }
  return minified(it);
}

/// The members of the request as a Responses request, without previous_response_id and
/// with `input` replaced.
std::string upstream_request(simdjson::dom::object obj, std::string_view input) {
  json::object_writer w;
  bool has_input = false;
  for (auto field : obj) {
    if (field.key == "previous_response_id") continue;
    if (field.key == "input") {
      w.raw("input", input);
      has_input = true;
      continue;
    }
    w.raw(field.key, minified(field.value));
  }
  if (!has_input) w.raw("input", input);
  return w.done();
}

/// A function tool or a json_schema text format as Chat Completions names it: its name,
/// description, schema (under `schema_key`) and strict flag.
std::string chat_schema(element from, std::string_view schema_key) {
  element v;
  json::object_writer w;
  w.str("name", str(from, "name"));
  if (auto d = str(from, "description"); !d.empty()) w.str("description", d);
  if (present(from, schema_key, v)) w.raw(schema_key, minified(v));
  if (present(from, "strict", v)) w.raw("strict", minified(v));
  return w.done();
}

std::string problem_type(element v) {
  if (v.is_string()) return "a string";
  if (v.is_object()) return "an object";
  if (v.is_array()) return "an array";
  if (v.is_bool()) return "a boolean";
  if (v.is_null()) return "null";
  return "a number";
}

/// Sets `param` to `where.key` and says that it is missing.
std::string missing(std::string& param, const std::string& where, std::string_view key) {
  param = where + "." + std::string(key);
  return "Missing required parameter: '" + param + "'.";
}

/// A member that is a string or an array (a message's content, a call output's output).
bool string_or_array(element it, std::string_view key) {
  element v;
  return it[key].get(v) == simdjson::SUCCESS && (v.is_string() || v.is_array());
}

/// Checks one input item; "" when it is usable.
std::string check_item(element it, const std::string& where, std::string& param, request_summary& s) {
  if (!it.is_object()) {
    param = where;
    return "Invalid type for '" + where + "': expected an object, but got " + problem_type(it) + " instead.";
  }
  auto type = str(it, "type");
  if (type.empty() || type == "message") {
    auto role = str(it, "role");
    if (role != "user" && role != "assistant" && role != "system" && role != "developer") {
      param = where + ".role";
      return "Invalid value for '" + param + "': expected one of 'user', 'assistant', 'system', 'developer'.";
    }
    if (!string_or_array(it, "content")) {
      param = where + ".content";
      return "Invalid '" + param + "': expected a string or an array of content parts.";
    }
    return {};
  }
  if (type == "function_call") {
    for (auto key : {"call_id", "name", "arguments"})
      if (!it[key].is_string()) return missing(param, where, key);
    return {};
  }
  if (type == "function_call_output") {
    if (!it["call_id"].is_string()) return missing(param, where, "call_id");
    if (!string_or_array(it, "output")) return missing(param, where, "output");
    return {};
  }
  if (type == "item_reference") {
    auto id = str(it, "id");
    if (id.empty()) return missing(param, where, "id");
    s.references.emplace_back(id);
  }
  return {};
}

} // namespace

request_summary summarize(std::string_view body) {
  request_summary s;
  element doc;
  auto fail = [&](std::string message, std::string param) {
    s.problem = std::move(message);
    s.param = std::move(param);
    return s;
  };
  if (body.empty() || !parse(body_slot, body, doc)) return fail("the request body is not valid JSON", "");
  simdjson::dom::object obj;
  if (doc.get_object().get(obj) != simdjson::SUCCESS) return fail("the request body must be a JSON object", "");
  element v;
  if (doc["model"].get(v) != simdjson::SUCCESS) return fail("Missing required parameter: 'model'.", "model");
  std::string_view sv;
  if (v.get_string().get(sv) != simdjson::SUCCESS || sv.empty())
    return fail("Invalid 'model': expected a non-empty string.", "model");
  s.model = std::string(sv);
  if (present(doc, "previous_response_id", v)) {
    if (v.get_string().get(sv) != simdjson::SUCCESS || sv.empty())
      return fail("Invalid 'previous_response_id': expected a string.", "previous_response_id");
    s.previous_response_id = std::string(sv);
  }
  if (doc["input"].get(v) != simdjson::SUCCESS || v.is_null())
    return fail("Missing required parameter: 'input'.", "input");
  simdjson::dom::array items;
  if (v.get_array().get(items) == simdjson::SUCCESS) {
    std::size_t i = 0;
    for (auto it : items) {
      std::string param;
      if (auto p = check_item(it, with_index("input", i++), param, s); !p.empty()) return fail(p, param);
    }
  } else if (!v.is_string()) {
    return fail("Invalid type for 'input': expected a string or an array of input items.", "input");
  }
  for (auto key : {"store", "stream", "parallel_tool_calls", "background"})
    if (present(doc, key, v) && !v.is_bool())
      return fail(std::string("Invalid type for '") + key + "': expected a boolean, but got " + problem_type(v) +
                      " instead.",
                  key);
  bool flag = false;
  if (doc["store"].get_bool().get(flag) == simdjson::SUCCESS) s.store = flag;
  if (doc["stream"].get_bool().get(flag) == simdjson::SUCCESS) s.stream = flag;
  if (doc["background"].get_bool().get(flag) == simdjson::SUCCESS && flag)
    return fail("background responses are not supported by this gateway", "background");
  for (auto key : {"conversation", "prompt"})
    if (present(doc, key, v)) return fail(std::string("'") + key + "' is not supported by this gateway", key);
  if (present(doc, "instructions", v) && !v.is_string())
    return fail("Invalid type for 'instructions': expected a string, but got " + problem_type(v) + " instead.",
                "instructions");
  if (present(doc, "max_output_tokens", v)) {
    std::int64_t n = 0;
    if (v.get_int64().get(n) != simdjson::SUCCESS)
      return fail("Invalid type for 'max_output_tokens': expected an integer.", "max_output_tokens");
    if (n < 16)
      return fail("Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got " +
                      std::to_string(n) + " instead.",
                  "max_output_tokens");
  }
  for (auto [key, top] : {std::pair{"temperature", 2.0}, std::pair{"top_p", 1.0}})
    if (present(doc, key, v)) {
      double d = 0;
      if (v.get_double().get(d) != simdjson::SUCCESS || d < 0 || d > top)
        return fail(std::string("Invalid '") + key + "': expected a number between 0 and " + (top == 2.0 ? "2" : "1") +
                        ".",
                    key);
    }
  if (present(doc, "metadata", v) && !v.is_object())
    return fail("Invalid type for 'metadata': expected an object.", "metadata");
  simdjson::dom::array tools;
  if (present(doc, "tools", v)) {
    if (v.get_array().get(tools) != simdjson::SUCCESS)
      return fail("Invalid type for 'tools': expected an array.", "tools");
    std::size_t i = 0;
    for (auto t : tools) {
      auto where = with_index("tools", i++);
      if (!t.is_object() || str(t, "type").empty())
        return fail("Missing required parameter: '" + where + ".type'.", where + ".type");
      if (str(t, "type") == "function" && str(t, "name").empty())
        return fail("Missing required parameter: '" + where + ".name'.", where + ".name");
    }
  }
  if (present(doc, "tool_choice", v)) {
    if (v.get_string().get(sv) == simdjson::SUCCESS) {
      if (sv != "auto" && sv != "none" && sv != "required")
        return fail("Invalid value for 'tool_choice': expected 'auto', 'none', 'required' or an object.",
                    "tool_choice");
    } else if (!v.is_object()) {
      return fail("Invalid type for 'tool_choice': expected a string or an object.", "tool_choice");
    } else if (str(v, "type") == "function" && str(v, "name").empty()) {
      return fail("Missing required parameter: 'tool_choice.name'.", "tool_choice.name");
    }
  }
  element format;
  if (doc.at_pointer("/text/format").get(format) == simdjson::SUCCESS && !format.is_null()) {
    auto type = str(format, "type");
    if (type != "text" && type != "json_object" && type != "json_schema")
      return fail("Invalid value for 'text.format.type': expected 'text', 'json_object' or 'json_schema'.",
                  "text.format.type");
    if (type == "json_schema") {
      if (str(format, "name").empty())
        return fail("Missing required parameter: 'text.format.name'.", "text.format.name");
      if (!format["schema"].is_object())
        return fail("Missing required parameter: 'text.format.schema'.", "text.format.schema");
    }
  }
  return s;
}

prepared prepare(std::string_view body, const prior& p, std::string_view id_base, std::string id,
                 std::int64_t created_at) {
  prepared out;
  element doc;
  if (!parse(body_slot, body, doc) || !doc.is_object()) return out;
  simdjson::dom::object obj = doc.get_object().value_unsafe();

  // The frame: what the Response object echoes of the request.
  auto& f = out.frame;
  f.id = std::move(id);
  f.created_at = created_at;
  f.model = std::string(str(doc, "model"));
  element v;
  auto echo = [&](std::string_view key, std::string& into) {
    if (present(doc, key, v)) into = minified(v);
  };
  echo("instructions", f.instructions);
  echo("max_output_tokens", f.max_output_tokens);
  echo("parallel_tool_calls", f.parallel_tool_calls);
  echo("previous_response_id", f.previous_response_id);
  echo("store", f.store);
  echo("temperature", f.temperature);
  echo("text", f.text);
  echo("tool_choice", f.tool_choice);
  echo("tools", f.tools);
  echo("top_p", f.top_p);
  echo("truncation", f.truncation);
  echo("user", f.user);
  echo("metadata", f.metadata);
  if (present(doc, "reasoning", v)) {
    json::object_writer r;
    r.raw("effort", present(v, "effort", v) ? minified(v) : std::string("null")).raw("summary", "null");
    f.reasoning = r.done();
  }

  // The conversation: the stored context, then this request's input.
  chat_builder chat;
  if (auto instructions = str(doc, "instructions"); !instructions.empty()) chat.system(instructions);
  element context;
  simdjson::dom::array context_items;
  array_writer input, upstream_input;
  if (parse(context_slot, p.context, context) && context.get_array().get(context_items) == simdjson::SUCCESS)
    for (auto it : context_items) {
      chat.item(it);
      upstream_input.add(upstream_item(it));
    }
  element in;
  std::string_view text;
  if (doc["input"].get(in) == simdjson::SUCCESS && in.get_string().get(text) == simdjson::SUCCESS) {
    json::object_writer m;
    m.str("role", "user").str("content", text);
    element message;
    auto message_text = m.done();
    if (parse(item_slot, message_text, message)) {
      chat.item(message);
      input.add(normalized_item(message, id_base, 0));
      upstream_input.add(upstream_item(message));
    }
  } else if (simdjson::dom::array items; in.get_array().get(items) == simdjson::SUCCESS) {
    std::size_t n = 0;
    for (auto it : items) {
      if (str(it, "type") == "item_reference") {
        auto ref = str(it, "id");
        auto found = std::find_if(p.items.begin(), p.items.end(), [&](const auto& kv) { return kv.first == ref; });
        element named;
        if (found != p.items.end() && parse(item_slot, found->second, named)) {
          chat.item(named);
          input.add(found->second);
          upstream_input.add(upstream_item(named));
        }
        ++n;
        continue;
      }
      chat.item(it);
      input.add(normalized_item(it, id_base, n++));
      upstream_input.add(upstream_item(it));
    }
  }
  out.input = input.done();

  // The Chat Completions request.
  json::object_writer c;
  c.str("model", f.model).raw("messages", chat.done());
  simdjson::dom::array tools;
  bool any_tool = false;
  if (doc["tools"].get_array().get(tools) == simdjson::SUCCESS) {
    array_writer list;
    for (auto t : tools) {
      if (str(t, "type") != "function") continue; // built-in tools need an upstream that speaks Responses
      json::object_writer tool;
      tool.str("type", "function").raw("function", chat_schema(t, "parameters"));
      list.add(tool.done());
      any_tool = true;
    }
    if (any_tool) c.raw("tools", list.done());
  }
  if (any_tool && present(doc, "tool_choice", v)) {
    std::string_view choice;
    if (v.get_string().get(choice) == simdjson::SUCCESS) {
      c.str("tool_choice", choice);
    } else if (str(v, "type") == "function") {
      json::object_writer fn;
      fn.str("name", str(v, "name"));
      json::object_writer tc;
      tc.str("type", "function").raw("function", fn.done());
      c.raw("tool_choice", tc.done());
    } else if (str(v, "type") == "allowed_tools" && !str(v, "mode").empty()) {
      c.str("tool_choice", str(v, "mode"));
    }
  }
  if (any_tool && present(doc, "parallel_tool_calls", v)) c.raw("parallel_tool_calls", minified(v));
  if (present(doc, "max_output_tokens", v)) c.raw("max_tokens", minified(v));
  for (auto key : {"temperature", "top_p", "user"})
    if (present(doc, key, v)) c.raw(key, minified(v));
  if (doc.at_pointer("/reasoning/effort").get(v) == simdjson::SUCCESS && v.is_string())
    c.raw("reasoning_effort", minified(v));
  element format;
  if (doc.at_pointer("/text/format").get(format) == simdjson::SUCCESS && format.is_object()) {
    auto type = str(format, "type");
    if (type == "json_schema") {
      json::object_writer rf;
      rf.str("type", "json_schema").raw("json_schema", chat_schema(format, "schema"));
      c.raw("response_format", rf.done());
    } else if (type == "json_object") {
      c.raw("response_format", R"({"type":"json_object"})");
    }
  }
  bool stream = false;
  if (doc["stream"].get_bool().get(stream) == simdjson::SUCCESS && stream)
    c.raw("stream", "true").raw("stream_options", R"({"include_usage":true})");
  out.chat = c.done();

  // The Responses request: the whole conversation as input.
  out.upstream = upstream_request(obj, upstream_input.done());
  return out;
}

} // namespace lowart::net::responses
