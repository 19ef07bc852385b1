#pragma once
// The OpenAI Responses API (POST /v1/responses) in terms of the protocols lowart's
// upstreams speak: passed through to upstreams that speak Responses, translated to Chat
// Completions for the others (and from there to Anthropic Messages by net/translate).
//
// Pure functions and one stream state machine over JSON text: no I/O, no Beast, no
// actors, so they are unit-tested on recorded streams and fuzzed directly (like
// net/translate). README "OpenAI Responses API" lists what maps to what.

#include "net/sse.hpp"
#include "net/translate.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lowart::net::responses {

/// What the edge reads of a request before anything is looked up.
struct request_summary {
  std::string problem; ///< "" when the request can be served; else the 400 message
  std::string param;   ///< the parameter `problem` is about
  std::string model;
  std::string previous_response_id;
  std::vector<std::string> references; ///< ids named by item_reference input items
  bool store = true;
  bool stream = false;
};
request_summary summarize(std::string_view body);

/// The stored conversation a request continues, as the store answers it.
struct prior {
  std::string context = "[]";                             ///< the items before this request, oldest first (JSON array)
  std::vector<std::pair<std::string, std::string>> items; ///< item_reference id -> the item (JSON)
};

/// The Response object's parts that come from the request (echoed as OpenAI does).
struct response_frame {
  std::string id;
  std::int64_t created_at = 0;
  std::string model;
  std::string instructions = "null", max_output_tokens = "null", parallel_tool_calls = "true",
              previous_response_id = "null", reasoning = R"({"effort":null,"summary":null})", store = "true",
              temperature = "1", text = R"({"format":{"type":"text"}})", tool_choice = R"("auto")", tools = "[]",
              top_p = "1", truncation = R"("disabled")", user = "null", metadata = "{}";

  /// A Response object. `output`, `usage`, `error` and `incomplete` are JSON ("null" for none).
  std::string render(std::string_view status, std::string_view output, std::string_view usage = "null",
                     std::string_view error = "null", std::string_view incomplete = "null",
                     std::string_view model_override = {}) const;
};

/// Everything a request becomes once its conversation is known.
struct prepared {
  std::string input;    ///< this request's input items, normalized (JSON array; see prepare)
  std::string chat;     ///< the Chat Completions request
  std::string upstream; ///< the Responses request for upstreams that speak Responses
  response_frame frame;
};

/// `body` must be a JSON object that summarize() accepted. Input items are normalized: a
/// string input becomes one user message, every item gets its "type" and an id
/// ("msg_<base>_<n>", "fc_…", "fco_…"), item_reference items become the items they name.
/// `context` items come first in both upstream requests; instructions become the chat's
/// first system message. The Responses request loses previous_response_id (lowart holds
/// the conversation) and keeps everything else.
prepared prepare(std::string_view body, const prior& p, std::string_view id_base, std::string id,
                 std::int64_t created_at);

/// Responses usage -> token_usage (prompt = input_tokens, cached = its cached_tokens).
void read_usage(std::string_view usage_json, token_usage& out);
/// token_usage (+ reasoning tokens) -> Responses usage JSON.
std::string usage_json(const token_usage& u, std::int64_t reasoning_tokens = 0);

/// A Chat Completions JSON answer -> the Response object (items "msg_<base>",
/// "fc_<base>_<i>"). finish_reason length / content_filter make it incomplete.
std::string chat_answer_to_response(std::string_view chat, const response_frame& frame, std::string_view id_base);

/// The output items of a Response object (JSON array; "[]" when there are none).
std::string output_of(std::string_view response);

/// One streamed answer as Responses events. Fed complete upstream SSE events: Chat
/// Completions chunks (translated), or Responses events (passed through unchanged and
/// watched for the final response). An OpenAI-style error event
/// (`data: {"error":{...}}`, what lowart ends a broken stream with) becomes `error` and
/// `response.failed` in both modes. Events go out as they arrive; every event carries
/// the next sequence_number.
class stream_converter {
public:
  stream_converter(response_frame frame, std::string id_base);

  /// Converts the SSE events in `events` (complete events) and appends the client's
  /// events to `out`. `end`: the upstream stream is over (an answer without its
  /// closing events fails, or completes when its finish reason arrived).
  void convert(std::string_view events, bool end, bool passthrough, std::string& out);

  bool finished() const { return finished_; }
  /// The final Response object (once finished).
  const std::string& final_response() const { return final_; }
  /// Called once with the final Response object, before its event is handed out.
  std::function<void(const std::string& response)> on_final;
  /// Passthrough: the previous_response_id the client named, set in relayed responses.
  std::string previous_id;

private:
  struct item {
    bool call = false;
    std::string id, text, call_id, name;
    bool open = true;
  };
  void event(std::string_view type, std::string body_members, std::string& out);
  void start(std::string& out);
  void chat_chunk(std::string_view data, std::string& out);
  void passthrough_event(const sse_event& ev, std::string& out);
  std::size_t open_message(std::string& out);
  void close_item(std::size_t i, std::string& out);
  void close_all(std::string& out);
  void finish(std::string& out);
  /// Ends the stream as failed: `error` (when `announce`), then response.failed.
  void fail(std::string_view code, std::string_view message, std::string& out, bool announce = true);
  std::string item_json(const item& it, bool done) const;
  std::string output_json() const;
  void finalize(std::string response);

  response_frame frame_;
  std::string base_;
  sse_parser sse_;
  std::int64_t seq_ = 0;
  bool started_ = false;
  bool finished_ = false;
  std::vector<item> items_;
  std::vector<std::pair<std::int64_t, std::size_t>> calls_; ///< chat tool_calls index -> items_ index
  std::size_t message_ = SIZE_MAX;                          ///< the open message item, if any
  std::string finish_reason_;
  std::string model_;
  token_usage usage_;
  std::int64_t reasoning_tokens_ = 0;
  std::string final_;
  std::string upstream_error_code_, upstream_error_; ///< a passthrough upstream's error event
};

/// One /v1/responses request as the proxy serves it: the two upstream requests, the
/// answer and stream conversions, and the record to store. Built by the edge
/// (net/responses_route.cpp) once the conversation is known.
class exchange {
public:
  /// `request`: the Responses request as the client sent it; `conversation`: what the
  /// store resolved for it (prepare made `p` of the two).
  exchange(prepared p, std::string id_base, bool store, std::string key_id, std::string previous_id,
           std::string request = {}, prior conversation = {});

  const std::string& chat_request() const { return prepared_.chat; }
  const std::string& upstream_request() const { return prepared_.upstream; }
  /// The Responses request as the client sent it (what a model's on_request hook sees).
  const std::string& client_request() const { return request_; }
  /// A model's on_request hook changed the Responses request: both upstream requests are
  /// made again from `request` (the conversation resolved before stays; previous_response_id
  /// and item_reference ids are not looked up again). Returns "" or why the request cannot
  /// be served (as summarize says).
  std::string rebuild(std::string request);

  /// An upstream's 2xx JSON answer (Chat Completions, or Responses when `passthrough`) ->
  /// the Response object; `usage` gets the answer's usage when it came as Responses usage.
  /// Not stored yet: the model's on_response may still change it (store()).
  std::string answer(std::string_view body, bool passthrough, token_usage& usage);
  /// Stores the Response object the client gets (when `store`).
  void store(std::string_view response) { keep(response); }
  /// Rewrites the complete SSE events in `pending` as the client's Responses events.
  void convert(std::string& pending, bool end, bool passthrough);
  /// A passthrough stream event's usage (in its final response); true when it had some.
  bool event_usage(std::string_view data, token_usage& usage);

  /// Receives the record of a response to store: {"id","key_id","previous_response_id",
  /// "created_ms","input":[...],"response":{...}}. Called before the answer's last byte
  /// is handed to the client, so a later request of the client finds it.
  std::function<void(std::string record)> save;

private:
  void keep(std::string_view response);

  prepared prepared_;
  std::string request_;
  prior conversation_;
  std::string base_;
  bool store_;
  std::string key_id_;
  std::string previous_id_;
  std::unique_ptr<stream_converter> stream_;
};

} // namespace lowart::net::responses
