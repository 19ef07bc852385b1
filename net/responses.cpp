#include "net/responses.hpp"

#include "core/clock.hpp"
#include "core/json_text.hpp"

#include <simdjson.h>

#include <algorithm>
#include <cmath>

namespace lowart::net::responses {

namespace {

using simdjson::dom::element;

/// Parsers of this thread: a document stays valid only until its parser parses again,
/// and preparing a request reads three documents at once (the request, the stored
/// context, a referenced item).
struct parser_slot {
  simdjson::dom::parser parser;
  std::string buffer;
};
parser_slot& slot(int which) {
  thread_local parser_slot slots[4];
  return slots[which];
}
constexpr int body_slot = 0, context_slot = 1, item_slot = 2, event_slot = 3;

bool parse(int which, std::string_view text, element& doc) {
  auto& s = slot(which);
  s.buffer.assign(text);
  s.buffer.reserve(text.size() + simdjson::SIMDJSON_PADDING);
  return s.parser.parse(s.buffer.data(), s.buffer.size(), false).get(doc) == simdjson::SUCCESS;
}

std::string_view str(element e, std::string_view key) {
  std::string_view v;
  if (e[key].get_string().get(v) != simdjson::SUCCESS) return {};
  return v;
}

bool present(element e, std::string_view key, element& out) {
  return e[key].get(out) == simdjson::SUCCESS && !out.is_null();
}

std::string minified(element e) {
  return simdjson::minify(e);
}

using json::array_writer;

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

std::string problem_type(element v) {
  if (v.is_string()) return "a string";
  if (v.is_object()) return "an object";
  if (v.is_array()) return "an array";
  if (v.is_bool()) return "a boolean";
  if (v.is_null()) return "null";
  return "a number";
}

/// Checks one input item; "" when it is usable.
std::string check_item(element it, const std::string& where, std::string& param, request_summary& s) {
  if (!it.is_object()) {
    param = where;
    return "Invalid type for '" + where + "': expected an object, but got " + problem_type(it) + " instead.";
  }
  auto type = str(it, "type");
  element v;
  if (type.empty() || type == "message") {
    auto role = str(it, "role");
    if (role != "user" && role != "assistant" && role != "system" && role != "developer") {
      param = where + ".role";
      return "Invalid value for '" + param + "': expected one of 'user', 'assistant', 'system', 'developer'.";
    }
    if (it["content"].get(v) != simdjson::SUCCESS || !(v.is_string() || v.is_array())) {
      param = where + ".content";
      return "Invalid '" + param + "': expected a string or an array of content parts.";
    }
    return {};
  }
  if (type == "function_call") {
    for (auto key : {"call_id", "name", "arguments"})
      if (!it[key].is_string()) {
        param = where + "." + key;
        return "Missing required parameter: '" + param + "'.";
      }
    return {};
  }
  if (type == "function_call_output") {
    if (!it["call_id"].is_string()) {
      param = where + ".call_id";
      return "Missing required parameter: '" + param + "'.";
    }
    if (it["output"].get(v) != simdjson::SUCCESS || !(v.is_string() || v.is_array())) {
      param = where + ".output";
      return "Missing required parameter: '" + param + "'.";
    }
    return {};
  }
  if (type == "item_reference") {
    auto id = str(it, "id");
    if (id.empty()) {
      param = where + ".id";
      return "Missing required parameter: '" + param + "'.";
    }
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

std::string response_frame::render(std::string_view status, std::string_view output, std::string_view usage,
                                   std::string_view error, std::string_view incomplete,
                                   std::string_view model_override) const {
  json::object_writer w;
  w.str("id", id)
      .str("object", "response")
      .num("created_at", created_at)
      .str("status", status)
      .boolean("background", false)
      .raw("error", error)
      .raw("incomplete_details", incomplete)
      .raw("instructions", instructions)
      .raw("max_output_tokens", max_output_tokens)
      .raw("max_tool_calls", "null")
      .str("model", model_override.empty() ? std::string_view(model) : model_override)
      .raw("output", output)
      .raw("parallel_tool_calls", parallel_tool_calls)
      .raw("previous_response_id", previous_response_id)
      .raw("reasoning", reasoning)
      .str("service_tier", "default")
      .raw("store", store)
      .raw("temperature", temperature)
      .raw("text", text)
      .raw("tool_choice", tool_choice)
      .raw("tools", tools)
      .raw("top_p", top_p)
      .raw("truncation", truncation)
      .raw("usage", usage)
      .raw("user", user)
      .raw("metadata", metadata);
  return w.done();
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
      json::object_writer fn;
      fn.str("name", str(t, "name"));
      if (auto d = str(t, "description"); !d.empty()) fn.str("description", d);
      if (present(t, "parameters", v)) fn.raw("parameters", minified(v));
      if (present(t, "strict", v)) fn.raw("strict", minified(v));
      json::object_writer tool;
      tool.str("type", "function").raw("function", fn.done());
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
      json::object_writer schema;
      schema.str("name", str(format, "name"));
      if (auto d = str(format, "description"); !d.empty()) schema.str("description", d);
      if (present(format, "schema", v)) schema.raw("schema", minified(v));
      if (present(format, "strict", v)) schema.raw("strict", minified(v));
      json::object_writer rf;
      rf.str("type", "json_schema").raw("json_schema", schema.done());
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

void read_usage(std::string_view usage_json, token_usage& out) {
  element u;
  if (!parse(event_slot, usage_json, u) || !u.is_object()) return;
  std::int64_t v = 0;
  if (u["input_tokens"].get_int64().get(v) == simdjson::SUCCESS) out.prompt = v;
  if (u["output_tokens"].get_int64().get(v) == simdjson::SUCCESS) out.completion = v;
  if (u.at_pointer("/input_tokens_details/cached_tokens").get_int64().get(v) == simdjson::SUCCESS) out.cached = v;
  out.present = true;
}

std::string usage_json(const token_usage& u, std::int64_t reasoning_tokens) {
  json::object_writer in, outd, w;
  in.num("cached_tokens", u.cached);
  outd.num("reasoning_tokens", reasoning_tokens);
  w.num("input_tokens", u.prompt)
      .raw("input_tokens_details", in.done())
      .num("output_tokens", u.completion)
      .raw("output_tokens_details", outd.done())
      .num("total_tokens", u.prompt + u.completion);
  return w.done();
}

namespace {

std::string message_item(std::string_view id, std::string_view text, std::string_view status) {
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

std::string call_item(std::string_view id, std::string_view status, std::string_view arguments,
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

std::string incomplete_for(std::string_view finish_reason) {
  if (finish_reason == "length") return R"({"reason":"max_output_tokens"})";
  if (finish_reason == "content_filter") return R"({"reason":"content_filter"})";
  return "null";
}

void read_chat_usage(element usage, token_usage& u, std::int64_t& reasoning) {
  if (!usage.is_object()) return;
  read_openai_usage(usage, u);
  std::int64_t v = 0;
  if (usage.at_pointer("/completion_tokens_details/reasoning_tokens").get_int64().get(v) == simdjson::SUCCESS)
    reasoning = v;
}

} // namespace

std::string chat_answer_to_response(std::string_view chat, const response_frame& frame, std::string_view id_base) {
  element doc;
  if (!parse(event_slot, chat, doc) || !doc.is_object())
    return frame.render("failed", "[]", "null",
                        R"({"code":"server_error","message":"the upstream answer is not JSON"})");
  element choice;
  std::string finish;
  array_writer output;
  if (doc["choices"].at(0).get(choice) == simdjson::SUCCESS) {
    finish = std::string(str(choice, "finish_reason"));
    auto status = finish == "length" || finish == "content_filter" ? "incomplete" : "completed";
    element message = choice["message"].value_unsafe();
    std::string_view text;
    bool has_message = choice["message"].error() == simdjson::SUCCESS;
    if (has_message && message["content"].get_string().get(text) == simdjson::SUCCESS && !text.empty())
      output.add(message_item("msg_" + std::string(id_base), text, status));
    else if (has_message && message["refusal"].get_string().get(text) == simdjson::SUCCESS && !text.empty()) {
      json::object_writer part;
      part.str("type", "refusal").str("refusal", text);
      json::object_writer w;
      w.str("id", "msg_" + std::string(id_base))
          .str("type", "message")
          .str("status", status)
          .raw("content", "[" + part.done() + "]")
          .str("role", "assistant");
      output.add(w.done());
    }
    simdjson::dom::array calls;
    if (has_message && message["tool_calls"].get_array().get(calls) == simdjson::SUCCESS) {
      std::size_t i = 0;
      for (auto call : calls)
        output.add(call_item("fc_" + std::string(id_base) + "_" + std::to_string(i++), "completed",
                             str(call["function"].value_unsafe(), "arguments"), str(call, "id"),
                             str(call["function"].value_unsafe(), "name")));
    }
  }
  token_usage u;
  std::int64_t reasoning = 0;
  element usage;
  if (doc["usage"].get(usage) == simdjson::SUCCESS) read_chat_usage(usage, u, reasoning);
  auto status = finish == "length" || finish == "content_filter" ? "incomplete" : "completed";
  return frame.render(status, output.done(), u.present ? usage_json(u, reasoning) : std::string("null"), "null",
                      incomplete_for(finish), str(doc, "model"));
}

std::string output_of(std::string_view response) {
  element doc, output;
  if (!parse(event_slot, response, doc) || doc["output"].get(output) != simdjson::SUCCESS || !output.is_array())
    return "[]";
  return minified(output);
}

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

// --- the exchange --------------------------------------------------------------------

exchange::exchange(prepared p, std::string id_base, bool store, std::string key_id, std::string previous_id)
    : prepared_(std::move(p)), base_(std::move(id_base)), store_(store), key_id_(std::move(key_id)),
      previous_id_(std::move(previous_id)) {}

void exchange::keep(std::string_view response) {
  if (!store_ || !save) return;
  element doc;
  if (!parse(event_slot, response, doc) || str(doc, "id").empty()) return;
  json::object_writer w;
  w.str("id", str(doc, "id"))
      .str("key_id", key_id_)
      .str_or_null("previous_response_id", previous_id_)
      .num("created_ms", clock::unix_ms())
      .raw("input", prepared_.input)
      .raw("response", response);
  save(w.done());
}

std::string exchange::answer(std::string_view body, bool passthrough, token_usage& usage) {
  if (passthrough) {
    element doc, u;
    if (parse(event_slot, body, doc) && doc["usage"].get(u) == simdjson::SUCCESS && u.is_object()) {
      usage = {};
      read_usage(minified(u), usage);
    }
    std::string answer(body);
    if (!previous_id_.empty() && parse(event_slot, answer, doc) && doc.is_object())
      json::set_member(answer, "previous_response_id", json::quoted(previous_id_));
    keep(answer);
    return answer;
  }
  auto response = chat_answer_to_response(body, prepared_.frame, base_);
  keep(response);
  return response;
}

void exchange::convert(std::string& pending, bool end, bool passthrough) {
  if (!stream_) {
    stream_ = std::make_unique<stream_converter>(prepared_.frame, base_);
    stream_->previous_id = previous_id_;
    stream_->on_final = [this](const std::string& response) { keep(response); };
  }
  std::string out;
  out.reserve(pending.size() * 2 + 256);
  stream_->convert(pending, end, passthrough, out);
  pending = std::move(out);
}

bool exchange::event_usage(std::string_view data, token_usage& usage) {
  if (data.find("\"usage\"") == std::string_view::npos) return false;
  element doc, u;
  if (!parse(event_slot, data, doc) || doc.at_pointer("/response/usage").get(u) != simdjson::SUCCESS || !u.is_object())
    return false;
  usage = {};
  read_usage(minified(u), usage);
  return usage.present;
}

} // namespace lowart::net::responses
