// lowart-mock's OpenAI endpoints other than Responses: chat completions (reading the request, the JSON
// answer, the SSE stream, flood-N) and embeddings. The Responses API is in mock_responses.cpp,
// Anthropic's in mock_anthropic.cpp; the connection and stream helpers are in mock_connection.hpp.

#include "core/json_text.hpp"
#include "tools/mock/mock_connection.hpp"

#include <ctime>

namespace lowart::mock::detail {

namespace {

constexpr int embedding_dimensions = 8;

// --- request parsing ----------------------------------------------------------------------------------

struct chat_request {
  std::string_view model; // empty when the request has none; points into the parsed document
  bool stream = false;
  bool include_usage = false;
  bool tool_call = false;     // answer with a call of tool_name instead of text
  std::string_view tool_name; // points into the parsed document
  std::uint64_t prompt_words = 0;
};

// tools[i].function.name or tool_choice.function.name, when it is a string.
const json::string* openai_function_name(const json::value& value) {
  const auto* function = value.is_object() ? value.get_object().if_contains("function") : nullptr;
  return string_member(function ? function->if_object() : nullptr, "name");
}

// Decides whether an OpenAI request gets a tool call, and of which tool: the one tool_choice names,
// else the first. Returns an error message for malformed tools, else an empty view.
std::string_view read_openai_tools(const json::object& root, bool after_tool_result, chat_request& chat) {
  const auto* tools = root.if_contains("tools");
  if (!tools || tools->is_null()) return {};
  if (!tools->is_array()) return "'tools' must be an array";
  for (const auto& tool : tools->get_array()) {
    if (!openai_function_name(tool)) return "each tool must have a string function.name";
  }
  if (tools->get_array().empty() || after_tool_result) return {};
  chat.tool_call = true;
  chat.tool_name = to_view(*openai_function_name(tools->get_array().front()));
  if (const auto* choice = root.if_contains("tool_choice")) {
    if (const auto* text = choice->if_string(); text && *text == "none") chat.tool_call = false;
    if (const auto* named = openai_function_name(*choice)) chat.tool_name = to_view(*named);
  }
  return {};
}

// Prompt words of an assistant message's tool calls: their arguments strings.
std::uint64_t tool_call_words(const json::object& message) {
  const auto* calls = message.if_contains("tool_calls");
  if (!calls || !calls->is_array()) return 0;
  std::uint64_t words = 0;
  for (const auto& call : calls->get_array()) {
    const auto* function = call.is_object() ? call.get_object().if_contains("function") : nullptr;
    if (const auto* arguments = string_member(function ? function->if_object() : nullptr, "arguments")) {
      words += count_words(to_view(*arguments));
    }
  }
  return words;
}

// Reads a parsed chat request into `chat` and writes the reply text into `reply` (for a tool call,
// the call's arguments). Returns an error message for a request that cannot be answered, else an
// empty view.
std::string_view read_chat(const json::value& document, chat_request& chat, std::string& reply) {
  const auto* root = document.if_object();
  if (!root) return "request body must be a JSON object";
  if (const auto* model = root->if_contains("model"); model && model->is_string()) {
    chat.model = to_view(model->get_string());
  }
  if (const auto* stream = root->if_contains("stream"); stream && stream->is_bool()) {
    chat.stream = stream->get_bool();
  }
  if (const auto* stream_options = root->if_contains("stream_options"); stream_options && stream_options->is_object()) {
    const auto* include_usage = stream_options->get_object().if_contains("include_usage");
    chat.include_usage = include_usage && include_usage->is_bool() && include_usage->get_bool();
  }
  const auto* messages = root->if_contains("messages");
  if (!messages || !messages->is_array()) return "'messages' must be an array";

  const json::value* last_content = nullptr;
  const json::value* last_user_content = nullptr;
  bool last_is_tool = false;
  for (const auto& message : messages->get_array()) {
    const auto* object = message.if_object();
    if (!object) return "each message must be an object";
    last_content = object->if_contains("content");
    last_is_tool = has_string_member(*object, "role", "tool");
    if (has_string_member(*object, "role", "user")) last_user_content = last_content;
    if (last_content) {
      for_each_text(*last_content, [&](std::string_view text) { chat.prompt_words += count_words(text); });
    }
    chat.prompt_words += tool_call_words(*object);
  }

  if (auto invalid = read_openai_tools(*root, last_is_tool, chat); !invalid.empty()) return invalid;
  if (chat.tool_call) {
    assign_tool_arguments(reply, last_user_content);
  } else if (const auto* format = structured_format(*root, "response_format", "json_schema")) {
    // Structured output, as OpenAI answers it: the content is JSON of the schema.
    assign_tool_arguments(reply, last_user_content, format);
  } else {
    assign_echo(reply, last_is_tool ? tool_reply_prefix : reply_prefix, last_content);
  }
  return {};
}

// --- embeddings ----------------------------------------------------------------------------------------

// One embedding input: a seed for its vector and its prompt-token count.
struct embedding_input {
  std::uint64_t seed;
  std::uint64_t tokens;
};

std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::optional<embedding_input> read_token_array(const json::array& tokens) {
  embedding_input input{0x746f6b656e73ull, tokens.size()};
  for (const auto& token : tokens) {
    if (token.is_int64()) {
      input.seed = mix64(input.seed ^ static_cast<std::uint64_t>(token.get_int64()));
    } else if (token.is_uint64()) {
      input.seed = mix64(input.seed ^ token.get_uint64());
    } else {
      return std::nullopt;
    }
  }
  return input;
}

std::optional<embedding_input> read_embedding_input(const json::value& value) {
  if (const auto* text = value.if_string()) return embedding_input{fnv1a(to_view(*text)), count_words(to_view(*text))};
  if (const auto* tokens = value.if_array()) return read_token_array(*tokens);
  return std::nullopt;
}

void append_embedding(std::string& out, std::size_t index, std::uint64_t seed) {
  out += R"({"object":"embedding","index":)";
  append_uint(out, index);
  out += R"(,"embedding":[)";
  for (int i = 0; i < embedding_dimensions; ++i) {
    if (i != 0) out += ',';
    double value = static_cast<double>(mix64(seed + static_cast<std::uint64_t>(i)) >> 11) * 0x1.0p-52 - 1.0;
    std::array<char, 32> digits;
    auto result = std::to_chars(digits.data(), digits.data() + digits.size(), value, std::chars_format::fixed, 6);
    out.append(digits.data(), result.ptr);
  }
  out += "]}";
}

// Writes the embeddings response for a parsed request into `out`, or returns an error message.
std::string_view write_embeddings(const json::value& document, std::string_view& model, std::string& out) {
  const auto* root = document.if_object();
  if (!root) return "request body must be a JSON object";
  if (const auto* name = root->if_contains("model"); name && name->is_string()) model = to_view(name->get_string());
  const auto* input = root->if_contains("input");
  if (!input) return "'input' is required";

  out.assign(R"({"object":"list","data":[)");
  std::uint64_t tokens = 0;
  const auto* list = input->if_array();
  // A string or a flat token array is one input; any other array holds one input per element.
  bool single = !list || (!list->empty() && list->front().is_number());
  if (single) {
    auto one = read_embedding_input(*input);
    if (!one) return "'input' must be a string, an array of strings or token arrays";
    append_embedding(out, 0, one->seed);
    tokens = one->tokens;
  } else {
    if (list->empty()) return "'input' must not be empty";
    for (std::size_t i = 0; i < list->size(); ++i) {
      auto one = read_embedding_input((*list)[i]);
      if (!one) return "'input' must be a string, an array of strings or token arrays";
      if (i != 0) out += ',';
      append_embedding(out, i, one->seed);
      tokens += one->tokens;
    }
  }
  out += R"(],"model":)";
  lowart::json::append_quoted(out, model.empty() ? default_model : model);
  out += R"(,"usage":{"prompt_tokens":)";
  append_uint(out, tokens);
  out += R"(,"total_tokens":)";
  append_uint(out, tokens);
  out += "}}";
  return {};
}

// --- OpenAI chat completions ------------------------------------------------------------------------

// Closes a chat chunk: the choices array after `choice_end`, then the object.
void end_chunk(std::string& out, std::string_view choice_end, std::string_view usage_null) {
  out += choice_end;
  out += usage_null;
  out += "}\n\n";
}

// The usage member of a chat answer, or of the usage chunk that ends its stream.
void append_chat_usage(std::string& out, const chat_request& chat, std::uint64_t completion_words) {
  out += R"(,"usage":{"prompt_tokens":)";
  append_uint(out, chat.prompt_words);
  out += R"(,"completion_tokens":)";
  append_uint(out, completion_words);
  out += R"(,"total_tokens":)";
  append_uint(out, chat.prompt_words + completion_words);
  out += '}';
}

// The tool-call part of a chat stream: the chunk naming the call, then the arguments in pieces.
template <class Stream>
asio::awaitable<std::optional<bool>> stream_chat_tool_call(connection<Stream>& c, const chat_request& chat,
                                                           std::uint64_t id, std::string_view usage_null,
                                                           stream_pacing& pacing) {
  c.body.assign(c.chunk_prefix);
  c.body += R"({"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_mock_)";
  append_uint(c.body, id);
  c.body += R"(","type":"function","function":{"name":)";
  lowart::json::append_quoted(c.body, chat.tool_name);
  end_chunk(c.body, R"(,"arguments":""}}]},"finish_reason":null}])", usage_null);
  if (!co_await send_paced(c, pacing)) co_return false;
  co_return co_await stream_pieces(c, c.reply, split::argument_bytes, pacing, [&](std::string_view piece) {
    c.body.assign(c.chunk_prefix);
    c.body += R"({"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":)";
    lowart::json::append_quoted(c.body, piece);
    end_chunk(c.body, R"(}}]},"finish_reason":null}])", usage_null);
  });
}

// flood-N: N content chunks of 1,000 bytes each, written as fast as the peer reads them
// (for tests of a client that stops reading), then [DONE].
template <class Stream>
asio::awaitable<bool> stream_flood(connection<Stream>& c, std::string_view model, unsigned count) {
  start_event_stream(c);
  std::string filler; // words, as text has them (one 1,000-letter word would test the tokenizer instead)
  while (filler.size() < 1000)
    filler += "flood ";
  for (unsigned i = 0; i < count; ++i) {
    c.body.assign(R"(data: {"id":"chatcmpl-flood","object":"chat.completion.chunk","created":0,"model":)");
    lowart::json::append_quoted(c.body, model);
    c.body += R"(,"choices":[{"index":0,"delta":{"content":")";
    c.body += filler;
    c.body += "\"},\"finish_reason\":null}]}\n\n";
    if (!co_await send_event(c, false)) co_return false;
  }
  c.body.assign("data: [DONE]\n\n");
  co_return co_await send_event(c, true) && c.keep_alive;
}

template <class Stream>
asio::awaitable<bool> stream_chat(connection<Stream>& c, const chat_request& chat, std::string_view model,
                                  std::uint64_t id, std::time_t created, fault f) {
  stream_pacing pacing = pacing_for(c, f, protocol::openai);
  const std::string_view usage_null = chat.include_usage ? R"(,"usage":null)" : "";

  c.chunk_prefix.assign(R"(data: {"id":"chatcmpl-mock-)");
  append_uint(c.chunk_prefix, id);
  c.chunk_prefix += R"(","object":"chat.completion.chunk","created":)";
  append_uint(c.chunk_prefix, static_cast<std::uint64_t>(created));
  c.chunk_prefix += R"(,"model":)";
  lowart::json::append_quoted(c.chunk_prefix, model);
  c.chunk_prefix += R"(,"choices":[)";

  start_event_stream(c);
  c.body.assign(c.chunk_prefix);
  // OpenAI sends a null content with the role when the answer is a tool call.
  end_chunk(c.body,
            chat.tool_call ? R"({"index":0,"delta":{"role":"assistant","content":null},"finish_reason":null}])"
                           : R"({"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}])",
            usage_null);
  if (!co_await send_event(c, false)) co_return false;

  std::optional<bool> ended;
  if (chat.tool_call) {
    ended = co_await stream_chat_tool_call(c, chat, id, usage_null, pacing);
  } else {
    ended = co_await stream_pieces(c, c.reply, split::words, pacing, [&](std::string_view piece) {
      c.body.assign(c.chunk_prefix);
      c.body += R"({"index":0,"delta":{"content":)";
      lowart::json::append_quoted(c.body, piece);
      end_chunk(c.body, R"(},"finish_reason":null}])", usage_null);
    });
  }
  if (ended) co_return *ended;

  c.body.assign(c.chunk_prefix);
  end_chunk(c.body,
            chat.tool_call ? R"({"index":0,"delta":{},"finish_reason":"tool_calls"}])"
                           : R"({"index":0,"delta":{},"finish_reason":"stop"}])",
            usage_null);
  if (!co_await send_paced(c, pacing)) co_return false;

  if (chat.include_usage && f.kind != fault_kind::no_usage) {
    c.body.assign(c.chunk_prefix);
    c.body += ']';
    append_chat_usage(c.body, chat, count_words(c.reply));
    c.body += "}\n\n";
    if (!co_await send_paced(c, pacing)) co_return false;
  }

  c.body.assign("data: [DONE]\n\n");
  co_return co_await send_paced(c, pacing, true) && c.keep_alive;
}

// The assistant message of a non-streamed chat answer: the reply text, or the tool call.
void append_chat_message(std::string& out, const chat_request& chat, std::uint64_t id, std::string_view reply) {
  if (!chat.tool_call) {
    out += R"({"role":"assistant","content":)";
    lowart::json::append_quoted(out, reply);
    out += R"(,"refusal":null})";
    return;
  }
  out += R"({"role":"assistant","content":null,"tool_calls":[{"id":"call_mock_)";
  append_uint(out, id);
  out += R"(","type":"function","function":{"name":)";
  lowart::json::append_quoted(out, chat.tool_name);
  out += R"(,"arguments":)";
  lowart::json::append_quoted(out, reply);
  out += R"(}}],"refusal":null})";
}

} // namespace

template <class Stream>
asio::awaitable<bool> handle_chat(connection<Stream>& c, const request& req, std::string_view path) {
  parsed_body parsed(c, req);
  chat_request chat;
  std::string_view invalid = parsed.error ? not_json : read_chat(parsed.document, chat, c.reply);
  fault f;
  if (auto verdict = co_await admit(c, req, path, chat.model, invalid, chat.stream, f)) co_return *verdict;

  const std::string_view model = chat.model.empty() ? default_model : chat.model;
  const std::uint64_t id = c.state.next_id.fetch_add(1, std::memory_order_relaxed);
  const std::time_t created = std::time(nullptr);
  if (chat.stream && f.kind == fault_kind::flood) co_return co_await stream_flood(c, model, f.ms);
  if (chat.stream) co_return co_await stream_chat(c, chat, model, id, created, f);

  const std::uint64_t completion_words = count_words(c.reply);
  std::string& out = c.body;
  out.assign(R"({"id":"chatcmpl-mock-)");
  append_uint(out, id);
  out += R"(","object":"chat.completion","created":)";
  append_uint(out, static_cast<std::uint64_t>(created));
  out += R"(,"model":)";
  lowart::json::append_quoted(out, model);
  out += R"(,"choices":[{"index":0,"message":)";
  append_chat_message(out, chat, id, c.reply);
  out += chat.tool_call ? R"(,"logprobs":null,"finish_reason":"tool_calls"}])"
                        : R"(,"logprobs":null,"finish_reason":"stop"}])";
  if (f.kind != fault_kind::no_usage) append_chat_usage(out, chat, completion_words);
  out += "}";
  co_return co_await send(c, 200, json_type, out);
}

template <class Stream>
asio::awaitable<bool> handle_embeddings(connection<Stream>& c, const request& req, std::string_view path) {
  parsed_body parsed(c, req);
  std::string_view model;
  std::string_view invalid = parsed.error ? not_json : write_embeddings(parsed.document, model, c.body);
  fault f;
  if (auto verdict = co_await admit(c, req, path, model, invalid, false, f)) co_return *verdict;
  co_return co_await send(c, 200, json_type, c.body);
}

template asio::awaitable<bool> handle_chat(connection<tcp::socket>&, const request&, std::string_view);
template asio::awaitable<bool> handle_chat(connection<ssl::stream<tcp::socket>>&, const request&, std::string_view);
template asio::awaitable<bool> handle_embeddings(connection<tcp::socket>&, const request&, std::string_view);
template asio::awaitable<bool> handle_embeddings(connection<ssl::stream<tcp::socket>>&, const request&,
                                                 std::string_view);

} // namespace lowart::mock::detail
