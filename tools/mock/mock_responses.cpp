// lowart-mock's OpenAI Responses endpoint: reading the request, the Response object and its output
// item, the JSON answer and the SSE stream of named events. Chat completions are in mock_openai.cpp,
// Anthropic's endpoints in mock_anthropic.cpp; the connection and stream helpers in mock_connection.hpp.

#include "core/json_text.hpp"
#include "tools/mock/mock_connection.hpp"

#include <boost/json/serialize.hpp>

#include <ctime>

namespace lowart::mock::detail {

namespace {

struct responses_request {
  std::string_view model;
  bool stream = false;
  bool tool_call = false;
  std::string_view tool_name;
  std::uint64_t prompt_words = 0;
  const json::value* instructions = nullptr;
  const json::value* tools = nullptr;
};

// Reads a Responses request into `r` and the reply text (or a tool call's arguments) into `reply`.
std::string_view read_responses(const json::value& document, responses_request& r, std::string& reply) {
  const auto* root = document.if_object();
  if (!root) return "request body must be a JSON object";
  if (const auto* model = string_member(root, "model")) r.model = to_view(*model);
  if (const auto* stream = root->if_contains("stream"); stream && stream->is_bool()) r.stream = stream->get_bool();
  if (const auto* previous = root->if_contains("previous_response_id"); previous && !previous->is_null())
    return "previous_response_id is not supported by lowart-mock (it stores nothing)";
  r.instructions = root->if_contains("instructions");
  if (r.instructions && r.instructions->is_string())
    r.prompt_words += count_words(to_view(r.instructions->get_string()));
  const auto* input = root->if_contains("input");
  if (!input) return "Missing required parameter: 'input'.";
  const json::value* last_content = nullptr;
  const json::value* last_user_content = nullptr;
  bool last_is_output = false;
  if (input->is_string()) {
    last_content = last_user_content = input;
    r.prompt_words += count_words(to_view(input->get_string()));
  } else if (input->is_array()) {
    for (const auto& item : input->get_array()) {
      const auto* object = item.if_object();
      if (!object) return "each input item must be an object";
      const auto* type = string_member(object, "type");
      const std::string_view kind = type ? to_view(*type) : std::string_view("message");
      if (kind == "item_reference") return "item_reference is not supported by lowart-mock (it stores nothing)";
      last_is_output = kind == "function_call_output";
      if (kind == "message") {
        last_content = object->if_contains("content");
        if (!last_content) return "each message needs content";
        if (has_string_member(*object, "role", "user")) last_user_content = last_content;
        for_each_text(*last_content, [&](std::string_view text) { r.prompt_words += count_words(text); });
      } else if (kind == "function_call") {
        if (const auto* arguments = string_member(object, "arguments"))
          r.prompt_words += count_words(to_view(*arguments));
      } else if (kind == "function_call_output") {
        last_content = object->if_contains("output");
        if (last_content)
          for_each_text(*last_content, [&](std::string_view text) { r.prompt_words += count_words(text); });
      }
    }
  } else {
    return "'input' must be a string or an array";
  }
  r.tools = root->if_contains("tools");
  if (r.tools && r.tools->is_array()) {
    for (const auto& tool : r.tools->get_array())
      if (!tool.is_object() || !string_member(&tool.get_object(), "name")) return "each tool must have a string name";
    if (!r.tools->get_array().empty() && !last_is_output) {
      r.tool_call = true;
      r.tool_name = to_view(*string_member(&r.tools->get_array().front().get_object(), "name"));
      if (const auto* choice = root->if_contains("tool_choice")) {
        if (const auto* text = choice->if_string(); text && *text == "none") r.tool_call = false;
        if (const auto* named = choice->is_object() ? string_member(&choice->get_object(), "name") : nullptr)
          r.tool_name = to_view(*named);
      }
    }
  }
  const json::value* text = root->if_contains("text");
  if (r.tool_call)
    assign_tool_arguments(reply, last_user_content);
  else if (const auto* format =
               text && text->is_object() ? structured_format(text->get_object(), "format", nullptr) : nullptr)
    assign_tool_arguments(reply, last_user_content, format); // structured output: JSON of the schema
  else
    assign_echo(reply, last_is_output ? tool_reply_prefix : reply_prefix, last_content);
  return {};
}

// The Response object around `output` (a JSON array), `status` and the usage (omitted for no-usage).
void append_response(std::string& out, const responses_request& r, std::string_view model, std::uint64_t id,
                     std::time_t created, std::string_view status, std::string_view output, bool usage,
                     std::uint64_t completion_words) {
  out += R"({"id":"resp_mock_)";
  append_uint(out, id);
  out += R"(","object":"response","created_at":)";
  append_uint(out, static_cast<std::uint64_t>(created));
  out += R"(,"status":)";
  lowart::json::append_quoted(out, status);
  out += R"(,"error":null,"incomplete_details":null,"instructions":)";
  out += r.instructions && r.instructions->is_string() ? json::serialize(*r.instructions) : "null";
  out += R"(,"model":)";
  lowart::json::append_quoted(out, model);
  out += R"(,"output":)";
  out += output;
  out += R"(,"parallel_tool_calls":true,"previous_response_id":null,"temperature":1,"text":{"format":{"type":"text"}},)"
         R"("tool_choice":"auto","tools":)";
  out += r.tools && r.tools->is_array() ? json::serialize(*r.tools) : "[]";
  out += R"(,"top_p":1,"truncation":"disabled","usage":)";
  if (!usage) {
    out += "null";
  } else {
    out += R"({"input_tokens":)";
    append_uint(out, r.prompt_words);
    out += R"(,"input_tokens_details":{"cached_tokens":0},"output_tokens":)";
    append_uint(out, completion_words);
    out += R"(,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":)";
    append_uint(out, r.prompt_words + completion_words);
    out += '}';
  }
  out += R"(,"metadata":{}})";
}

// The one output item: the message with the reply, or the function call. `done` false: as it
// starts in a stream (no text, no arguments, in_progress).
void append_output_item(std::string& out, const responses_request& r, std::uint64_t id, std::string_view reply,
                        bool done) {
  if (r.tool_call) {
    out += R"({"id":"fc_mock_)";
    append_uint(out, id);
    out += R"(","type":"function_call","status":)";
    out += done ? R"("completed")" : R"("in_progress")";
    out += R"(,"arguments":)";
    lowart::json::append_quoted(out, done ? reply : "");
    out += R"(,"call_id":"call_mock_)";
    append_uint(out, id);
    out += R"(","name":)";
    lowart::json::append_quoted(out, r.tool_name);
    out += '}';
    return;
  }
  out += R"({"id":"msg_mock_)";
  append_uint(out, id);
  out += R"(","type":"message","status":)";
  out += done ? R"("completed")" : R"("in_progress")";
  out += R"(,"content":)";
  if (done) {
    out += R"([{"type":"output_text","annotations":[],"text":)";
    lowart::json::append_quoted(out, reply);
    out += "}]";
  } else {
    out += "[]";
  }
  out += R"(,"role":"assistant"})";
}

// Starts one Responses event in c.body: "event: <type>\ndata: {"type":..,"sequence_number":n".
void begin_responses_event(std::string& out, std::string_view type, std::uint64_t& seq) {
  out.assign("event: ");
  out += type;
  out += "\ndata: {\"type\":";
  lowart::json::append_quoted(out, type);
  out += ",\"sequence_number\":";
  append_uint(out, seq++);
}

template <class Stream>
asio::awaitable<bool> stream_response(connection<Stream>& c, const responses_request& r, std::string_view model,
                                      std::uint64_t id, std::time_t created, fault f) {
  stream_pacing pacing = pacing_for(c, f, protocol::openai);
  std::uint64_t seq = 0;
  std::string item_id = (r.tool_call ? "fc_mock_" : "msg_mock_") + std::to_string(id);
  auto response = [&](std::string_view status, bool with_output) {
    std::string output = "[";
    if (with_output) append_output_item(output, r, id, c.reply, true);
    output += ']';
    std::string out;
    append_response(out, r, model, id, created, status, output, with_output && f.kind != fault_kind::no_usage,
                    count_words(c.reply));
    return out;
  };
  auto simple = [&](std::string_view type, std::string_view members) {
    begin_responses_event(c.body, type, seq);
    c.body += ',';
    c.body += members;
    c.body += "}\n\n";
  };
  start_event_stream(c);
  simple("response.created", "\"response\":" + response("in_progress", false));
  if (!co_await send_event(c, false)) co_return false;
  simple("response.in_progress", "\"response\":" + response("in_progress", false));
  if (!co_await send_paced(c, pacing)) co_return false;
  std::string added = "\"output_index\":0,\"item\":";
  append_output_item(added, r, id, c.reply, false);
  simple("response.output_item.added", added);
  if (!co_await send_paced(c, pacing)) co_return false;
  std::string ref = "\"item_id\":\"" + item_id + "\",\"output_index\":0";
  if (!r.tool_call) {
    simple("response.content_part.added",
           ref + R"(,"content_index":0,"part":{"type":"output_text","annotations":[],"text":""})");
    if (!co_await send_paced(c, pacing)) co_return false;
  }
  unsigned index = 0;
  for (std::size_t begin = 0; begin < c.reply.size(); ++index) {
    const std::size_t end = r.tool_call ? argument_piece_end(c.reply, begin)
                                        : piece_end(c.reply, begin, index + 1 == c.state.opts.stream_chunks);
    std::string piece = ref + (r.tool_call ? "" : ",\"content_index\":0") + ",\"delta\":";
    lowart::json::append_quoted(piece, std::string_view(c.reply).substr(begin, end - begin));
    simple(r.tool_call ? "response.function_call_arguments.delta" : "response.output_text.delta", piece);
    if (!co_await send_paced(c, pacing)) co_return false;
    begin = end;
    if (pacing.strikes_after_piece(begin == c.reply.size())) {
      if (f.kind == fault_kind::reset) co_return co_await strike(c, pacing);
      simple("error", R"("code":"server_error","message":"mock mid-stream failure","param":null)");
      co_return co_await send_paced(c, pacing, true) && c.keep_alive;
    }
  }
  std::string whole;
  lowart::json::append_quoted(whole, c.reply);
  if (r.tool_call) {
    simple("response.function_call_arguments.done", ref + ",\"arguments\":" + whole);
  } else {
    simple("response.output_text.done", ref + ",\"content_index\":0,\"text\":" + whole);
    if (!co_await send_paced(c, pacing)) co_return false;
    simple("response.content_part.done",
           ref + R"(,"content_index":0,"part":{"type":"output_text","annotations":[],"text":)" + whole + "}");
  }
  if (!co_await send_paced(c, pacing)) co_return false;
  std::string done = "\"output_index\":0,\"item\":";
  append_output_item(done, r, id, c.reply, true);
  simple("response.output_item.done", done);
  if (!co_await send_paced(c, pacing)) co_return false;
  simple("response.completed", "\"response\":" + response("completed", true));
  co_return co_await send_paced(c, pacing, true) && c.keep_alive;
}

} // namespace

template <class Stream>
asio::awaitable<bool> handle_responses(connection<Stream>& c, const request& req, std::string_view path) {
  parsed_body parsed(c, req);
  responses_request r;
  std::string_view invalid = parsed.error ? not_json : read_responses(parsed.document, r, c.reply);
  fault f;
  if (auto verdict = co_await admit(c, req, path, r.model, invalid, r.stream, f)) co_return *verdict;

  const std::string_view model = r.model.empty() ? default_model : r.model;
  const std::uint64_t id = c.state.next_id.fetch_add(1, std::memory_order_relaxed);
  const std::time_t created = std::time(nullptr);
  if (r.stream) co_return co_await stream_response(c, r, model, id, created, f);
  std::string output = "[";
  append_output_item(output, r, id, c.reply, true);
  output += ']';
  c.body.clear();
  append_response(c.body, r, model, id, created, "completed", output, f.kind != fault_kind::no_usage,
                  count_words(c.reply));
  co_return co_await send(c, 200, json_type, c.body);
}

template asio::awaitable<bool> handle_responses(connection<tcp::socket>&, const request&, std::string_view);
template asio::awaitable<bool> handle_responses(connection<ssl::stream<tcp::socket>>&, const request&,
                                                std::string_view);

} // namespace lowart::mock::detail
