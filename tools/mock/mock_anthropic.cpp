// lowart-mock's Anthropic endpoints: Messages (reading and validating the request, the prompt cache,
// the JSON answer and the SSE stream) and count_tokens. The OpenAI endpoints are in mock_openai.cpp and
// mock_responses.cpp; the connection and stream helpers are in mock_connection.hpp.

#include "core/json_text.hpp"
#include "tools/mock/mock_connection.hpp"

#include <boost/json/serialize.hpp>

#include <vector>

namespace lowart::mock::detail {

namespace {

// --- request parsing ----------------------------------------------------------------------------------

// An Anthropic Messages request, as far as the mock answers it. Views point into the parsed document.
struct messages_request {
  std::string_view model;
  bool stream = false;
  bool tool_call = false; // answer with a call of tool_name instead of text
  bool forced = false;    // tool_choice any or tool: the call comes alone, no text before it
  std::string_view tool_name;
  const json::object* tool_schema = nullptr; // the called tool's input_schema
  std::uint64_t input_words = 0;             // system and message text, cacheable or not
  std::vector<std::string_view> cacheable;   // texts of blocks that carry cache_control, in request order
};

// The text of a {"type":"text","text":...} block, or null when `block` is not one.
const json::string* text_block(const json::value& block) {
  const auto* object = block.if_object();
  if (!object || !has_string_member(*object, "type", "text")) return nullptr;
  return string_member(object, "text");
}

// Counts a text block of the system prompt or of a message into the input.
void count_text_block(const json::value& block, messages_request& m) {
  const std::string_view text = to_view(*text_block(block));
  m.input_words += count_words(text);
  const auto* cache_control = block.get_object().if_contains("cache_control");
  if (cache_control && !cache_control->is_null()) m.cacheable.push_back(text);
}

std::string_view read_system(const json::value& system, messages_request& m) {
  if (const auto* text = system.if_string()) {
    m.input_words += count_words(to_view(*text));
    return {};
  }
  if (!system.is_array()) return "system: Input should be a valid string or list of text blocks";
  for (const auto& block : system.get_array()) {
    if (!text_block(block)) return "system: Input should be a valid string or list of text blocks";
    count_text_block(block, m);
  }
  return {};
}

// A tool_result's content: absent, a string, or an array of text and image blocks.
std::string_view read_tool_result_content(const json::value* content, messages_request& m) {
  if (!content || content->is_string()) {
    if (content) m.input_words += count_words(to_view(content->get_string()));
    return {};
  }
  if (!content->is_array()) return "messages: tool_result content must be a string or a list of blocks";
  for (const auto& block : content->get_array()) {
    if (const auto* text = text_block(block)) {
      m.input_words += count_words(to_view(*text));
    } else if (!block.is_object() || !has_string_member(block.get_object(), "type", "image")) {
      return "messages: tool_result content blocks must be text or image blocks";
    }
  }
  return {};
}

// Validates one content block of a message and counts its text into the input.
std::string_view read_content_block(const json::value& block, messages_request& m) {
  const auto* object = block.if_object();
  const auto* type = string_member(object, "type");
  if (!type) return "messages: each content block must be an object with a string 'type'";
  if (*type == "text") {
    if (!text_block(block)) return "messages: a text block needs a string 'text'";
    count_text_block(block, m);
  } else if (*type == "tool_use") {
    const auto* input = object->if_contains("input");
    if (!string_member(object, "id") || !string_member(object, "name") || !input || !input->is_object()) {
      return "messages: a tool_use block needs a string 'id' and 'name' and an object 'input'";
    }
    m.input_words += count_words(json::serialize(*input));
  } else if (*type == "tool_result") {
    if (!string_member(object, "tool_use_id")) return "messages: a tool_result block needs a string 'tool_use_id'";
    return read_tool_result_content(object->if_contains("content"), m);
  } else if (*type != "image") {
    return "messages: content block type must be text, image, tool_use or tool_result";
  }
  return {};
}

// Validates one message and counts its text; remembers it in `last_user` when it is the user's.
std::string_view read_message(const json::value& message, messages_request& m, const json::object*& last_user) {
  const auto* object = message.if_object();
  const auto* role = string_member(object, "role");
  if (!role || (*role != "user" && *role != "assistant")) {
    return "messages: each message must be an object with role 'user' or 'assistant'";
  }
  const auto* content = object->if_contains("content");
  if (content && content->is_string()) {
    m.input_words += count_words(to_view(content->get_string()));
  } else if (content && content->is_array()) {
    for (const auto& block : content->get_array()) {
      if (auto invalid = read_content_block(block, m); !invalid.empty()) return invalid;
    }
  } else {
    return "messages: content must be a string or a list of content blocks";
  }
  if (*role == "user") last_user = object;
  return {};
}

// The first tool_result block of a message's content, or null.
const json::object* first_tool_result(const json::value* content) {
  if (!content || !content->is_array()) return nullptr;
  for (const auto& block : content->get_array()) {
    if (block.is_object() && has_string_member(block.get_object(), "type", "tool_result")) return &block.get_object();
  }
  return nullptr;
}

// Decides whether an Anthropic request gets a tool call, and of which tool: the one tool_choice
// names, else the first. Returns an error message for malformed tools, else an empty view.
std::string_view read_anthropic_tools(const json::object& root, bool after_tool_result, messages_request& m) {
  const auto* tools = root.if_contains("tools");
  if (!tools || tools->is_null()) return {};
  if (!tools->is_array()) return "tools: Input should be a valid list";
  for (const auto& tool : tools->get_array()) {
    if (!string_member(tool.if_object(), "name")) return "tools: each tool must be an object with a string 'name'";
  }
  if (tools->get_array().empty() || after_tool_result) return {};
  m.tool_call = true;
  m.tool_name = to_view(*string_member(tools->get_array().front().if_object(), "name"));
  if (const auto* choice = root.if_contains("tool_choice"); choice && choice->is_object()) {
    const auto& object = choice->get_object();
    if (has_string_member(object, "type", "none")) m.tool_call = false;
    // Like Claude: a forced tool (any, or one by name) is called without text before it.
    m.forced = has_string_member(object, "type", "any") || has_string_member(object, "type", "tool");
    if (const auto* named = string_member(&object, "name"); named && has_string_member(object, "type", "tool")) {
      m.tool_name = to_view(*named);
    }
  }
  for (const auto& tool : tools->get_array()) {
    const auto* object = tool.if_object();
    if (to_view(*string_member(object, "name")) != m.tool_name) continue;
    if (const auto* schema = object->if_contains("input_schema"); schema && schema->is_object())
      m.tool_schema = &schema->get_object();
    break;
  }
  return {};
}

// Reads a parsed Messages request (or a count_tokens one, which needs no max_tokens) into `m` and
// writes the reply text into `reply` (for a tool call, the call's arguments as JSON). Returns an
// error message for a request that cannot be answered, else an empty view.
std::string_view read_messages_request(const json::value& document, bool needs_max_tokens, messages_request& m,
                                       std::string& reply) {
  const auto* root = document.if_object();
  if (!root) return "request body must be a JSON object";
  if (const auto* model = string_member(root, "model")) m.model = to_view(*model);
  if (const auto* stream = root->if_contains("stream"); stream && stream->is_bool()) m.stream = stream->get_bool();
  if (needs_max_tokens) {
    const auto* max_tokens = root->if_contains("max_tokens");
    if (!max_tokens) return "max_tokens: Field required";
    if (!max_tokens->is_int64() && !max_tokens->is_uint64()) return "max_tokens: Input should be a valid integer";
  }
  const auto* messages = root->if_contains("messages");
  if (!messages) return "messages: Field required";
  if (!messages->is_array()) return "messages: Input should be a valid list";
  if (messages->get_array().empty()) return "messages: at least one message is required";
  if (const auto* system = root->if_contains("system")) {
    if (auto invalid = read_system(*system, m); !invalid.empty()) return invalid;
  }
  const json::object* last_user = nullptr;
  for (const auto& message : messages->get_array()) {
    if (auto invalid = read_message(message, m, last_user); !invalid.empty()) return invalid;
  }

  const json::value* content = last_user ? last_user->if_contains("content") : nullptr;
  const json::object* tool_result = first_tool_result(content);
  if (auto invalid = read_anthropic_tools(*root, tool_result != nullptr, m); !invalid.empty()) return invalid;
  if (tool_result) {
    assign_echo(reply, tool_reply_prefix, tool_result->if_contains("content"));
  } else if (m.tool_call) {
    assign_tool_arguments(reply, content, m.tool_schema);
  } else {
    assign_echo(reply, reply_prefix, content);
  }
  return {};
}

// --- Anthropic messages -----------------------------------------------------------------------------

// Input token counts of a Messages request once the prompt cache has been consulted.
struct message_usage {
  std::uint64_t input = 0; // words outside cacheable blocks
  std::uint64_t cache_creation = 0;
  std::uint64_t cache_read = 0;
};

// Splits the request's input between the cache and the rest, writing new cacheable texts to the cache.
message_usage settle_cache(prompt_cache& cache, const messages_request& m) {
  message_usage usage{m.input_words};
  for (std::string_view text : m.cacheable) {
    const std::uint64_t words = count_words(text);
    (cache.seen_before(text) ? usage.cache_read : usage.cache_creation) += words;
    usage.input -= words;
  }
  return usage;
}

// "calling <name>": the text block that precedes a tool_use block.
std::string tool_lead_in(std::string_view name) {
  std::string text = "calling ";
  text += name;
  return text;
}

// Output words: the reply, or the lead-in text plus the tool call's arguments.
std::uint64_t output_words(const messages_request& m, std::string_view reply) {
  return m.tool_call && !m.forced ? count_words(tool_lead_in(m.tool_name)) + count_words(reply) : count_words(reply);
}

// The start of a message object, up to the value of "content".
void append_message_head(std::string& out, std::uint64_t id, std::string_view model) {
  out += R"({"id":"msg_mock_)";
  append_uint(out, id);
  out += R"(","type":"message","role":"assistant","model":)";
  lowart::json::append_quoted(out, model);
  out += R"(,"content":)";
}

// Starts an Anthropic SSE event in `out`, up to and including the data object's "type" member; the
// caller appends the other members and then "}\n\n".
void begin_anthropic_event(std::string& out, std::string_view type) {
  out.assign("event: ");
  out += type;
  out += "\ndata: {\"type\":\"";
  out += type;
  out += '"';
}

void append_block_start(std::string& out, unsigned index) {
  begin_anthropic_event(out, "content_block_start");
  out += R"(,"index":)";
  append_uint(out, index);
  out += R"(,"content_block":)";
}

void append_block_delta(std::string& out, unsigned index, std::string_view delta_type, std::string_view field,
                        std::string_view piece) {
  begin_anthropic_event(out, "content_block_delta");
  out += R"(,"index":)";
  append_uint(out, index);
  out += R"(,"delta":{"type":")";
  out += delta_type;
  out += R"(",")";
  out += field;
  out += R"(":)";
  lowart::json::append_quoted(out, piece);
  out += "}}\n\n";
}

void append_block_stop(std::string& out, unsigned index) {
  begin_anthropic_event(out, "content_block_stop");
  out += R"(,"index":)";
  append_uint(out, index);
  out += "}\n\n";
}

// The tool-call part of a Messages stream: after the text block has started, the lead-in text, then
// the tool_use block with its input in pieces.
template <class Stream>
asio::awaitable<std::optional<bool>> stream_tool_use(connection<Stream>& c, const messages_request& m, std::uint64_t id,
                                                     stream_pacing& pacing) {
  const unsigned index = m.forced ? 0 : 1; // a forced call comes alone
  if (!m.forced) {
    append_block_delta(c.body, 0, "text_delta", "text", tool_lead_in(m.tool_name));
    if (!co_await send_paced(c, pacing)) co_return false;
    if (pacing.strikes_after_piece(false)) co_return co_await strike(c, pacing);
    append_block_stop(c.body, 0);
    if (!co_await send_paced(c, pacing)) co_return false;
  }

  append_block_start(c.body, index);
  c.body += R"({"type":"tool_use","id":"toolu_mock_)";
  append_uint(c.body, id);
  c.body += R"(","name":)";
  lowart::json::append_quoted(c.body, m.tool_name);
  c.body += R"(,"input":{}}})";
  c.body += "\n\n";
  if (!co_await send_paced(c, pacing)) co_return false;
  if (auto ended = co_await stream_pieces(c, c.reply, split::argument_bytes, pacing, [&](std::string_view piece) {
        append_block_delta(c.body, index, "input_json_delta", "partial_json", piece);
      })) {
    co_return ended;
  }
  append_block_stop(c.body, index);
  if (!co_await send_paced(c, pacing)) co_return false;
  co_return std::nullopt;
}

template <class Stream>
asio::awaitable<bool> stream_message(connection<Stream>& c, const messages_request& m, std::string_view model,
                                     std::uint64_t id, const message_usage& usage, fault f) {
  stream_pacing pacing = pacing_for(c, f, protocol::anthropic);
  const bool with_usage = f.kind != fault_kind::no_usage;

  start_event_stream(c);
  begin_anthropic_event(c.body, "message_start");
  c.body += R"(,"message":)";
  append_message_head(c.body, id, model);
  c.body += R"([],"stop_reason":null,"stop_sequence":null)";
  if (with_usage) {
    c.body += R"(,"usage":{"input_tokens":)";
    append_uint(c.body, usage.input);
    c.body += R"(,"cache_creation_input_tokens":)";
    append_uint(c.body, usage.cache_creation);
    c.body += R"(,"cache_read_input_tokens":)";
    append_uint(c.body, usage.cache_read);
    c.body += R"(,"output_tokens":1})";
  }
  c.body += "}}\n\n";
  if (!co_await send_event(c, false)) co_return false;

  c.body.assign("event: ping\ndata: {\"type\":\"ping\"}\n\n");
  if (!co_await send_paced(c, pacing)) co_return false;
  if (!(m.tool_call && m.forced)) {
    append_block_start(c.body, 0);
    c.body += "{\"type\":\"text\",\"text\":\"\"}}\n\n";
    if (!co_await send_paced(c, pacing)) co_return false;
  }

  std::optional<bool> ended;
  if (m.tool_call) {
    ended = co_await stream_tool_use(c, m, id, pacing);
  } else {
    ended = co_await stream_pieces(c, c.reply, split::words, pacing, [&](std::string_view piece) {
      append_block_delta(c.body, 0, "text_delta", "text", piece);
    });
    if (!ended) {
      append_block_stop(c.body, 0);
      if (!co_await send_paced(c, pacing)) co_return false;
    }
  }
  if (ended) co_return *ended;

  begin_anthropic_event(c.body, "message_delta");
  c.body += m.tool_call ? R"(,"delta":{"stop_reason":"tool_use","stop_sequence":null})"
                        : R"(,"delta":{"stop_reason":"end_turn","stop_sequence":null})";
  if (with_usage) {
    c.body += R"(,"usage":{"output_tokens":)";
    append_uint(c.body, output_words(m, c.reply));
    c.body += '}';
  }
  c.body += "}\n\n";
  if (!co_await send_paced(c, pacing)) co_return false;

  begin_anthropic_event(c.body, "message_stop");
  c.body += "}\n\n";
  co_return co_await send_paced(c, pacing, true) && c.keep_alive;
}

// The content array of a non-streamed Messages answer.
void append_message_content(std::string& out, const messages_request& m, std::uint64_t id, std::string_view reply) {
  if (m.tool_call && m.forced) {
    out += R"([{"type":"tool_use","id":"toolu_mock_)";
  } else {
    out += R"([{"type":"text","text":)";
    if (!m.tool_call) {
      lowart::json::append_quoted(out, reply);
      out += "}]";
      return;
    }
    lowart::json::append_quoted(out, tool_lead_in(m.tool_name));
    out += R"(},{"type":"tool_use","id":"toolu_mock_)";
  }
  append_uint(out, id);
  out += R"(","name":)";
  lowart::json::append_quoted(out, m.tool_name);
  out += R"(,"input":)";
  out += reply; // already JSON
  out += "}]";
}

} // namespace

template <class Stream>
asio::awaitable<bool> handle_messages(connection<Stream>& c, const request& req, std::string_view path) {
  parsed_body parsed(c, req);
  messages_request m;
  std::string_view invalid = parsed.error ? not_json : read_messages_request(parsed.document, true, m, c.reply);
  fault f;
  if (auto verdict = co_await admit(c, req, path, m.model, invalid, m.stream, f, protocol::anthropic)) {
    co_return *verdict;
  }

  // Only answered requests touch the cache, so a failed attempt does not turn its retry into a read.
  const message_usage usage = settle_cache(c.state.cache, m);
  const std::string_view model = m.model.empty() ? default_model : m.model;
  const std::uint64_t id = c.state.next_id.fetch_add(1, std::memory_order_relaxed);
  if (m.stream) co_return co_await stream_message(c, m, model, id, usage, f);

  std::string& out = c.body;
  out.clear();
  append_message_head(out, id, model);
  append_message_content(out, m, id, c.reply);
  out += m.tool_call ? R"(,"stop_reason":"tool_use","stop_sequence":null)"
                     : R"(,"stop_reason":"end_turn","stop_sequence":null)";
  if (f.kind != fault_kind::no_usage) {
    out += R"(,"usage":{"input_tokens":)";
    append_uint(out, usage.input);
    out += R"(,"output_tokens":)";
    append_uint(out, output_words(m, c.reply));
    out += R"(,"cache_creation_input_tokens":)";
    append_uint(out, usage.cache_creation);
    out += R"(,"cache_read_input_tokens":)";
    append_uint(out, usage.cache_read);
    out += '}';
  }
  out += '}';
  co_return co_await send(c, 200, json_type, out);
}

template <class Stream>
asio::awaitable<bool> handle_count_tokens(connection<Stream>& c, const request& req, std::string_view path) {
  parsed_body parsed(c, req);
  messages_request m;
  std::string_view invalid = parsed.error ? not_json : read_messages_request(parsed.document, false, m, c.reply);
  fault f;
  if (auto verdict = co_await admit(c, req, path, m.model, invalid, false, f, protocol::anthropic)) {
    co_return *verdict;
  }

  c.body.assign(R"({"input_tokens":)");
  append_uint(c.body, m.input_words);
  c.body += '}';
  co_return co_await send(c, 200, json_type, c.body);
}

template asio::awaitable<bool> handle_messages(connection<tcp::socket>&, const request&, std::string_view);
template asio::awaitable<bool> handle_messages(connection<ssl::stream<tcp::socket>>&, const request&, std::string_view);
template asio::awaitable<bool> handle_count_tokens(connection<tcp::socket>&, const request&, std::string_view);
template asio::awaitable<bool> handle_count_tokens(connection<ssl::stream<tcp::socket>>&, const request&,
                                                   std::string_view);

} // namespace lowart::mock::detail
