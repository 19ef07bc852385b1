// lowart-mock: an OpenAI- and Anthropic-compatible mock upstream for lowart's tests, demo route and
// benchmarks.
//
// One binary, one io_context, Boost.Beast for request parsing and hand-framed HTTP/1.1 responses
// written from per-connection buffers that are reused across keep-alive requests, so the hot path
// (a small chat completion) does no allocation beyond Beast's request parser and Boost.JSON's
// parse (which mostly lands in a per-connection arena). Boost.JSON is compiled into this file
// (boost/json/src.hpp), so the binary needs no JSON library.
//
// Command line (`--opt value` or `--opt=value`):
//   --listen HOST:PORT      address to listen on (default 127.0.0.1:18090; port 0 picks one)
//   --threads N             threads running the io_context (default 1)
//   --tls-cert FILE --tls-key FILE
//                           serve HTTPS with this PEM certificate chain and private key
//   --mode MODE             fault mode for requests that do not choose one (default ok)
//   --stream-chunks N       at most N text pieces per streamed answer (default 18)
//   --chunk-delay-ms N      pause between SSE events (default 0)
// Prints "lowart-mock listening on HOST:PORT" once ready; SIGINT/SIGTERM exit cleanly.
//
// Endpoints (matched on the path suffix, so any prefix works; the query string is ignored):
//   POST .../chat/completions  OpenAI chat, below.
//   POST .../messages          Anthropic Messages, below.
//   POST .../messages/count_tokens
//                              {"input_tokens":N}, N = the input words of a Messages request (below),
//                              cacheable or not; validated like .../messages but max_tokens is not
//                              required; the prompt cache is neither read nor written.
//   POST .../embeddings        one embedding of 8 deterministic floats per input (a string, an array
//                              of strings, a token array or an array of token arrays).
//   POST .../responses         OpenAI Responses, below.
//   GET  .../models            one model, "mock-model".
//   GET  .../healthz           200 "ok".
//   GET  .../mock/stats        {"requests","by_model","last_authorization","last_body","last_path",
//                              "last_x_api_key","last_anthropic_version","last_anthropic_beta"}
//                              over the chat, messages, responses,
//                              count_tokens and embeddings requests seen so far; the last_* fields
//                              describe the latest of them (a header field is null when that request
//                              had no such header).
//   POST .../mock/reset        clears those statistics and the prompt cache (below).
//   anything else              404 with an OpenAI error envelope.
// Bad JSON or a malformed request gets a 400 invalid_request_error in the endpoint's envelope
// (before any fault mode applies). HTTP/1.0 clients get close-delimited streams, as they cannot take
// chunked encoding. Words are whitespace-separated (ASCII whitespace); every token count is a word
// count. "The echo of X" is the text of X (a string, or its text parts/blocks concatenated) cut to 200
// bytes at a UTF-8 boundary. n is one counter shared by all chat and messages answers (from 1, not
// reset by /mock/reset); an answer's call or tool_use id carries the same n as the answer's id.
//
// OpenAI chat. Answers JSON, or SSE when "stream" is true (chunked; every event "data: <json>\n\n",
// each chunk {"id":"chatcmpl-mock-<n>","object":"chat.completion.chunk","created","model","choices":
// [...]} plus "usage":null when stream_options.include_usage is true).
//   Text answer: "mock reply: " + the echo of the last message's content; when the last message has
//     role "tool": "mock reply: tool said " + the echo of its content. Stream: role chunk (delta
//     {"role":"assistant","content":""}), one chunk per word with its leading whitespace (the
//     --stream-chunks-th takes the rest), finish chunk (finish_reason "stop"), usage chunk when
//     include_usage (choices []), then "data: [DONE]". Usage: prompt = words of all message contents
//     (string or text parts) and of assistant tool_calls[].function.arguments; completion = reply.
//   Tool call, when "tools" is a non-empty array, the last message's role is not "tool" and
//     tool_choice is not "none": it calls tool_choice.function.name when tool_choice names one, else
//     tools[0].function.name (every tool needs a string function.name, else 400). Arguments A =
//     {"text":<echo of the last role "user" message's content>} as compact JSON. JSON: message
//     {"role":"assistant","content":null,"tool_calls":[{"id":"call_mock_<n>","type":"function",
//     "function":{"name","arguments":A}}],"refusal":null}, finish_reason "tool_calls". Stream: role
//     chunk with "content":null; {"tool_calls":[{"index":0,"id":"call_mock_<n>","type":"function",
//     "function":{"name","arguments":""}}]}; A in pieces of at most 8 bytes (never splitting a UTF-8
//     character, not limited by --stream-chunks), each {"tool_calls":[{"index":0,"function":
//     {"arguments":piece}}]}; finish chunk with "tool_calls"; usage chunk; [DONE]. Completion = words
//     of A.
//
// Anthropic Messages. Requires max_tokens (an integer) and messages (a non-empty array of
// {"role":"user"|"assistant","content":string|blocks}); blocks are text {"text"}, image, tool_use
// {"id","name","input":object} or tool_result {"tool_use_id","content":absent|string|text and
// image blocks}; system is a string or text blocks; tools[i] need a string "name"; model is optional
// (answers say "mock-model" without one). Errors: {"type":"error","error":{"type","message"}},
// e.g. 400 invalid_request_error "max_tokens: Field required". Answers JSON
// {"id":"msg_mock_<n>","type":"message","role":"assistant","model","content":[...],"stop_reason",
// "stop_sequence":null,"usage":{"input_tokens":I,"output_tokens":O,"cache_creation_input_tokens":CC,
// "cache_read_input_tokens":CR}}, or SSE when "stream" is true (chunked; every event
// "event: <type>\ndata: <json with that type>\n\n").
//   Input words: system text, message text blocks and string contents, tool_result text, and tool_use
//     input serialized compactly (tools are not counted). Prompt cache: a system or message text
//     block (not one inside a tool_result) with a non-null cache_control is cacheable; the first time
//     an answered request carries a given text (process-wide, until /mock/reset) its words count in
//     CC, every later time in CR. I = input words outside cacheable blocks. Requests that a fault
//     fails before answering do not touch the cache.
//   Text answer: "mock reply: " + the echo of the last role "user" message's content; when that
//     message holds a tool_result block: "mock reply: tool said " + the echo of the first one's
//     content. content [{"type":"text","text":reply}], stop_reason "end_turn", O = words of reply.
//     Stream: message_start {"message":{...,"content":[],"stop_reason":null,"stop_sequence":null,
//     "usage":{"input_tokens":I,"cache_creation_input_tokens":CC,"cache_read_input_tokens":CR,
//     "output_tokens":1}}}; ping; content_block_start {"index":0,"content_block":{"type":"text",
//     "text":""}}; content_block_delta {"index":0,"delta":{"type":"text_delta","text":piece}} per
//     word as in the chat stream; content_block_stop {"index":0}; message_delta {"delta":
//     {"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":O}}; message_stop.
//   Tool call, when "tools" is non-empty, the last user message holds no tool_result and tool_choice
//     is not {"type":"none"}: it calls tool_choice.name when tool_choice is {"type":"tool","name"},
//     else tools[0].name. A as for OpenAI. content [{"type":"text","text":"calling <name>"},
//     {"type":"tool_use","id":"toolu_mock_<n>","name","input":A}], stop_reason "tool_use", O = words
//     of "calling <name>" + words of A. Stream: message_start; ping; content_block_start 0 (text "");
//     content_block_delta 0 text_delta "calling <name>"; content_block_stop 0; content_block_start
//     {"index":1,"content_block":{"type":"tool_use","id":"toolu_mock_<n>","name","input":{}}};
//     content_block_delta {"index":1,"delta":{"type":"input_json_delta","partial_json":piece}} with
//     A cut as for OpenAI; content_block_stop 1; message_delta with "tool_use"; message_stop.
//
// OpenAI Responses. input is a string or a list of items (message {"role","content":string|parts},
// function_call {"arguments"}, function_call_output {"output"}; other types are ignored);
// previous_response_id and item_reference are a 400 (the mock stores nothing: lowart sends the whole
// conversation). Prompt words: instructions, message texts, function_call arguments and
// function_call_output texts. Text answer: "mock reply: " + the echo of the last message's content
// (of the string input), or "mock reply: tool said " + the echo of the output when the last item is a
// function_call_output. Tool call, when "tools" (each needs a string "name") is non-empty, the last
// item is no function_call_output and tool_choice is not "none": of tool_choice.name, else tools[0].name,
// arguments A as for OpenAI chat. JSON: {"id":"resp_mock_<n>","object":"response","created_at",
// "status":"completed",...,"output":[item],"usage":{"input_tokens","input_tokens_details":
// {"cached_tokens":0},"output_tokens","output_tokens_details":{"reasoning_tokens":0},"total_tokens"}}
// with item {"id":"msg_mock_<n>","type":"message","status":"completed","content":[{"type":
// "output_text","annotations":[],"text":reply}],"role":"assistant"} or {"id":"fc_mock_<n>","type":
// "function_call","status":"completed","arguments":A,"call_id":"call_mock_<n>","name"}. Stream: named
// events, each data {"type":<the event name>,"sequence_number":0,1,...}: response.created and
// response.in_progress (status in_progress, no output, usage null), response.output_item.added (the
// item in_progress, empty), for text response.content_part.added, response.output_text.delta per word
// (as in the chat stream), response.output_text.done, response.content_part.done; for a tool call
// response.function_call_arguments.delta per piece of A (cut as for chat) and .done; then
// response.output_item.done and response.completed (the whole response). mid-error sends
// "event: error" {"type":"error","code":"server_error","message":"mock mid-stream failure","param":
// null} after the second piece and ends the stream; no-usage leaves usage null.
//
// Fault modes apply to every request the statistics count. A request's mode comes from its
// x-mock-mode header (an unknown value is a 400), else from its model when that is "mock-<mode>",
// else --mode. Error bodies use the endpoint's envelope (OpenAI type / Anthropic error.type):
//   ok          answer normally
//   fail-500    500, server_error / api_error
//   fail-429    429 with retry-after: 1, rate_limit_error / rate_limit_error
//   fail-529    529, server_error / overloaded_error (529 is Anthropic's "overloaded")
//   delay-<ms>  wait <ms> before sending anything, then answer normally
//   hang        never answer; keep the socket until the client closes it
//   reset       abort the connection with a TCP RST: right after reading a non-streaming request,
//               else once a stream has sent its second content piece (see below)
//   mid-error   non-streaming: as fail-500. Streaming: once the stream has sent its second content
//               piece, one error event, then the stream ends cleanly (terminating chunk; keep-alive
//               kept) with no [DONE] / message_stop. OpenAI: "data: {"error":{"message":"mock
//               mid-stream failure","type":"server_error","param":null,"code":null}}\n\n";
//               Anthropic: "event: error\ndata: {"type":"error","error":{"type":"overloaded_error",
//               "message":"mock mid-stream failure"}}\n\n".
//   slow-<ms>   stream with <ms> between events (overrides --chunk-delay-ms)
//   flood-<n>   (chat streams) n content chunks of 1,000 bytes each as fast as the client reads, then
//               [DONE]: for tests of a client that stops reading a stream
//   no-usage    answer normally but report no usage: OpenAI leaves out the usage object and the usage
//               chunk (even when include_usage asks for it), Anthropic every "usage" object
// Content pieces are text deltas and tool-call arguments pieces, counted together; "second" means
// the last one when the answer has fewer. So the break comes: OpenAI text after the role chunk and
// two content chunks; OpenAI tool call after the role chunk, the call chunk and two arguments chunks;
// Anthropic text after message_start, ping, content_block_start and two text_deltas; Anthropic tool
// call after the "calling <name>" text_delta, content_block_stop 0, content_block_start 1 and one
// input_json_delta. Every chat, messages, count_tokens and embeddings request counts in the statistics
// as soon as it has been read.

#include "core/json_text.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/json.hpp>
#include <boost/json/src.hpp>

#include <array>
#include <atomic>
#include <bit>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <unordered_set>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using request = http::request<http::string_body>;

// Completion token: co_await yields (error_code, results...) instead of throwing.
constexpr asio::as_tuple_t<asio::use_awaitable_t<>> use_tuple{};

constexpr std::size_t max_header_bytes = 64 * 1024;
constexpr std::size_t max_body_bytes = 64 * 1024 * 1024;
constexpr std::size_t max_echo_bytes = 200;
constexpr unsigned max_delay_ms = 3'600'000;
constexpr int embedding_dimensions = 8;
constexpr std::size_t max_argument_piece_bytes = 8;
constexpr std::string_view reply_prefix = "mock reply: ";
constexpr std::string_view tool_reply_prefix = "mock reply: tool said ";
constexpr std::string_view default_model = "mock-model";

constexpr std::string_view json_type = "application/json";
constexpr std::string_view models_body =
    R"({"object":"list","data":[{"id":"mock-model","object":"model","created":0,"owned_by":"lowart-mock"}]})";
constexpr std::string_view not_found_body = R"({"error":{"message":"not found","type":"invalid_request_error"}})";
constexpr std::string_view fail_500_body =
    R"({"error":{"message":"mock failure","type":"server_error","param":null,"code":null}})";
constexpr std::string_view fail_429_body =
    R"({"error":{"message":"mock rate limit","type":"rate_limit_error","param":null,"code":null}})";
constexpr std::string_view fail_529_body =
    R"({"error":{"message":"mock overloaded","type":"server_error","param":null,"code":null}})";
constexpr std::string_view anthropic_fail_500_body =
    R"({"type":"error","error":{"type":"api_error","message":"mock failure"}})";
constexpr std::string_view anthropic_fail_429_body =
    R"({"type":"error","error":{"type":"rate_limit_error","message":"mock rate limit"}})";
constexpr std::string_view anthropic_fail_529_body =
    R"({"type":"error","error":{"type":"overloaded_error","message":"mock overloaded"}})";
constexpr std::string_view mid_error_event =
    "data: "
    "{\"error\":{\"message\":\"mock mid-stream failure\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";
constexpr std::string_view anthropic_mid_error_event =
    "event: error\ndata: "
    "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"mock mid-stream failure\"}}\n\n";
constexpr std::string_view usage_text = R"(usage: lowart-mock [options]
  --listen HOST:PORT        listen address (default 127.0.0.1:18090)
  --threads N               io threads (default 1)
  --tls-cert FILE           PEM certificate chain: serve HTTPS (needs --tls-key)
  --tls-key FILE            PEM private key
  --mode MODE               default fault mode: ok, fail-500, fail-429, fail-529, delay-<ms>, hang,
                            reset, slow-<ms>, no-usage, mid-error (default ok)
  --stream-chunks N         most content chunks per streamed answer (default 18)
  --chunk-delay-ms N        delay between streamed events (default 0)
)";

// --- fault modes ----------------------------------------------------------------------------------

enum class fault_kind { ok, fail_500, fail_429, fail_529, delay, hang, reset, slow, no_usage, mid_error, flood };

struct fault {
  fault_kind kind = fault_kind::ok;
  unsigned ms = 0;
};

std::optional<unsigned> parse_unsigned(std::string_view text, unsigned min, unsigned max) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value < min || value > max) {
    return std::nullopt;
  }
  return value;
}

std::optional<fault> parse_fault(std::string_view text) {
  if (text == "ok") return fault{};
  if (text == "fail-500") return fault{fault_kind::fail_500};
  if (text == "fail-429") return fault{fault_kind::fail_429};
  if (text == "fail-529") return fault{fault_kind::fail_529};
  if (text == "hang") return fault{fault_kind::hang};
  if (text == "reset") return fault{fault_kind::reset};
  if (text == "no-usage") return fault{fault_kind::no_usage};
  if (text == "mid-error") return fault{fault_kind::mid_error};
  for (auto [prefix, kind] : {std::pair{std::string_view{"delay-"}, fault_kind::delay},
                              std::pair{std::string_view{"slow-"}, fault_kind::slow},
                              std::pair{std::string_view{"flood-"}, fault_kind::flood}}) {
    if (text.starts_with(prefix)) {
      if (auto ms = parse_unsigned(text.substr(prefix.size()), 0, max_delay_ms)) return fault{kind, *ms};
      return std::nullopt;
    }
  }
  return std::nullopt;
}

// --- command line ---------------------------------------------------------------------------------

struct options {
  std::string host = "127.0.0.1";
  std::string port = "18090";
  unsigned threads = 1;
  std::string tls_cert;
  std::string tls_key;
  fault default_fault;
  unsigned stream_chunks = 18;
  unsigned chunk_delay_ms = 0;
};

std::optional<options> parse_options(int argc, char** argv) {
  options opts;
  auto fail = [](std::string_view message, std::string_view arg) {
    std::fprintf(stderr, "lowart-mock: %.*s: %.*s\n%.*s", static_cast<int>(message.size()), message.data(),
                 static_cast<int>(arg.size()), arg.data(), static_cast<int>(usage_text.size()), usage_text.data());
    return std::nullopt;
  };
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fwrite(usage_text.data(), 1, usage_text.size(), stdout);
      std::exit(0);
    }
    std::string_view name = arg;
    std::string_view value;
    if (auto eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return fail("missing value for", arg);
    }

    if (name == "--listen") {
      auto colon = value.rfind(':');
      if (colon == std::string_view::npos || !parse_unsigned(value.substr(colon + 1), 0, 65535)) {
        return fail("expected HOST:PORT", value);
      }
      std::string_view host = value.substr(0, colon);
      if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
      opts.host = host;
      opts.port = value.substr(colon + 1);
    } else if (name == "--threads") {
      auto threads = parse_unsigned(value, 1, 256);
      if (!threads) return fail("bad thread count", value);
      opts.threads = *threads;
    } else if (name == "--tls-cert") {
      opts.tls_cert = value;
    } else if (name == "--tls-key") {
      opts.tls_key = value;
    } else if (name == "--mode") {
      auto mode = parse_fault(value);
      if (!mode) return fail("unknown mode", value);
      opts.default_fault = *mode;
    } else if (name == "--stream-chunks") {
      auto chunks = parse_unsigned(value, 1, 1'000'000);
      if (!chunks) return fail("bad chunk count", value);
      opts.stream_chunks = *chunks;
    } else if (name == "--chunk-delay-ms") {
      auto delay = parse_unsigned(value, 0, max_delay_ms);
      if (!delay) return fail("bad delay", value);
      opts.chunk_delay_ms = *delay;
    } else {
      return fail("unknown option", name);
    }
  }
  if (opts.tls_cert.empty() != opts.tls_key.empty()) return fail("TLS needs both", "--tls-cert and --tls-key");
  return opts;
}

// --- text and JSON output helpers -------------------------------------------------------------------

std::string_view to_view(beast::string_view text) {
  return {text.data(), text.size()};
}
std::string_view to_view(const json::string& text) {
  return {text.data(), text.size()};
}

// ASCII whitespace: space and \t \n \v \f \r.
bool is_space(char c) {
  auto u = static_cast<unsigned char>(c);
  return u == ' ' || static_cast<unsigned>(u - '\t') < 5u;
}

constexpr std::uint64_t byte_ones = 0x0101010101010101ull;
constexpr std::uint64_t byte_high = byte_ones * 0x80;
constexpr std::uint64_t byte_low7 = byte_ones * 0x7f;

// For eight bytes at once: 0x80 in each byte of `v` that is_space, 0 elsewhere.
std::uint64_t space_bytes(std::uint64_t v) {
  const std::uint64_t is_blank = v ^ (byte_ones * ' ');
  const std::uint64_t blank = ~(((is_blank & byte_low7) + byte_low7) | is_blank | byte_low7);
  const std::uint64_t low7 = v & byte_low7; // adding below cannot carry into the next byte
  const std::uint64_t from_tab = (low7 + byte_ones * (0x80 - '\t')) & byte_high;
  const std::uint64_t past_cr = (low7 + byte_ones * (0x80 - '\r' - 1)) & byte_high;
  return blank | (from_tab & ~past_cr & ~v & byte_high);
}

// Whitespace-separated words; eight bytes per step, since prompts in benchmarks can be large.
std::uint64_t count_words(std::string_view text) {
  static_assert(std::endian::native == std::endian::little, "count_words loads bytes little-endian");
  std::uint64_t words = 0;
  std::uint64_t carry = 0x80; // whether the byte before the current block is whitespace, as byte 0's 0x80
  std::size_t i = 0;
  for (; i + 8 <= text.size(); i += 8) {
    std::uint64_t block;
    std::memcpy(&block, text.data() + i, sizeof block);
    const std::uint64_t spaces = space_bytes(block);
    const std::uint64_t starts = ((spaces << 8) | carry) & ~spaces & byte_high;
    words += ((starts >> 7) * byte_ones) >> 56; // sums the eight 0/1 bytes (no popcnt instruction needed)
    carry = spaces >> 56;
  }
  for (bool after_space = carry != 0; i < text.size(); ++i) {
    const bool space = is_space(text[i]);
    words += after_space && !space;
    after_space = space;
  }
  return words;
}

std::uint64_t fnv1a(std::string_view text, std::uint64_t hash = 0xcbf29ce484222325ull) {
  for (char c : text) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

void append_uint(std::string& out, std::uint64_t value) {
  std::array<char, 24> digits;
  auto result = std::to_chars(digits.data(), digits.data() + digits.size(), value);
  out.append(digits.data(), result.ptr);
}

// The wire protocol of an endpoint: it decides the error envelope and the stream events.
enum class protocol { openai, anthropic };

void append_error_body(std::string& out, std::string_view message, protocol wire) {
  if (wire == protocol::anthropic) {
    out += R"({"type":"error","error":{"type":"invalid_request_error","message":)";
    lowart::json::append_quoted(out, message);
    out += "}}";
    return;
  }
  out += R"({"error":{"message":)";
  lowart::json::append_quoted(out, message);
  out += R"(,"type":"invalid_request_error","param":null,"code":null}})";
}

// A request header's value, or nullopt when the request has no such header.
std::optional<std::string_view> header_value(const request& req, std::string_view name) {
  if (auto header = req.find(beast::string_view(name.data(), name.size())); header != req.end()) {
    return to_view(header->value());
  }
  return std::nullopt;
}

// --- statistics -------------------------------------------------------------------------------------

class request_stats {
public:
  void record(std::string_view path, const request& req, std::string_view model) {
    std::lock_guard lock(mutex_);
    ++requests_;
    if (!model.empty()) {
      if (auto it = by_model_.find(model); it != by_model_.end()) {
        ++it->second;
      } else {
        by_model_.emplace(model, 1);
      }
    }
    assign_optional(last_authorization_, header_value(req, "authorization"));
    assign_optional(last_x_api_key_, header_value(req, "x-api-key"));
    assign_optional(last_anthropic_version_, header_value(req, "anthropic-version"));
    assign_optional(last_anthropic_beta_, header_value(req, "anthropic-beta"));
    assign(last_body_, req.body());
    assign(last_path_, path);
  }

  void reset() {
    std::lock_guard lock(mutex_);
    requests_ = 0;
    by_model_.clear();
    last_authorization_.reset();
    last_body_.reset();
    last_path_.reset();
    last_x_api_key_.reset();
    last_anthropic_version_.reset();
    last_anthropic_beta_.reset();
  }

  void append_json(std::string& out) const {
    std::lock_guard lock(mutex_);
    out += R"({"requests":)";
    append_uint(out, requests_);
    out += R"(,"by_model":{)";
    bool first = true;
    for (const auto& [model, count] : by_model_) {
      if (!first) out += ',';
      first = false;
      lowart::json::append_quoted(out, model);
      out += ':';
      append_uint(out, count);
    }
    out += R"(},"last_authorization":)";
    append_optional(out, last_authorization_);
    out += R"(,"last_body":)";
    append_optional(out, last_body_);
    out += R"(,"last_path":)";
    append_optional(out, last_path_);
    out += R"(,"last_x_api_key":)";
    append_optional(out, last_x_api_key_);
    out += R"(,"last_anthropic_version":)";
    append_optional(out, last_anthropic_version_);
    out += R"(,"last_anthropic_beta":)";
    append_optional(out, last_anthropic_beta_);
    out += '}';
  }

private:
  // Reuses the slot's capacity so recording a request does not allocate in steady state.
  static void assign(std::optional<std::string>& slot, std::string_view value) {
    if (slot) {
      slot->assign(value);
    } else {
      slot.emplace(value);
    }
  }

  static void assign_optional(std::optional<std::string>& slot, std::optional<std::string_view> value) {
    if (value) {
      assign(slot, *value);
    } else {
      slot.reset();
    }
  }

  static void append_optional(std::string& out, const std::optional<std::string>& value) {
    if (value) {
      lowart::json::append_quoted(out, *value);
    } else {
      out += "null";
    }
  }

  mutable std::mutex mutex_;
  std::uint64_t requests_ = 0;
  std::map<std::string, std::uint64_t, std::less<>> by_model_;
  std::optional<std::string> last_authorization_;
  std::optional<std::string> last_body_;
  std::optional<std::string> last_path_;
  std::optional<std::string> last_x_api_key_;
  std::optional<std::string> last_anthropic_version_;
  std::optional<std::string> last_anthropic_beta_;
};

// Anthropic prompt caching, simplified so tests can predict it: a cacheable text is written to the
// cache the first time it is seen and read from it every later time, whatever the request around it.
class prompt_cache {
public:
  // Whether `text` was seen before; remembers it either way.
  bool seen_before(std::string_view text) {
    std::lock_guard lock(mutex_);
    return !hashes_.insert(fnv1a(text)).second;
  }

  void clear() {
    std::lock_guard lock(mutex_);
    hashes_.clear();
  }

private:
  std::mutex mutex_;
  std::unordered_set<std::uint64_t> hashes_;
};

struct server_state {
  explicit server_state(const options& opts) : opts(opts) {}

  const options& opts;
  request_stats stats;
  prompt_cache cache;
  std::atomic<std::uint64_t> next_id{1};
};

// --- request parsing ----------------------------------------------------------------------------------

// Calls f(text) for a message content: the string itself, or each text part of a content array.
template <class F> void for_each_text(const json::value& content, F&& f) {
  if (const auto* text = content.if_string()) {
    f(to_view(*text));
  } else if (const auto* parts = content.if_array()) {
    for (const auto& part : *parts) {
      const auto* object = part.if_object();
      const auto* text = object ? object->if_contains("text") : nullptr;
      if (text && text->is_string()) f(to_view(text->get_string()));
    }
  }
}

// Sets `out` to `prefix` followed by the text of `content` (see for_each_text), that text cut to
// max_echo_bytes without splitting a UTF-8 sequence. A null `content` adds nothing.
void assign_echo(std::string& out, std::string_view prefix, const json::value* content) {
  // Keep one byte past the limit so the cut below can see whether it splits a UTF-8 sequence.
  const std::size_t keep = prefix.size() + max_echo_bytes + 1;
  out.assign(prefix);
  if (content) {
    for_each_text(*content, [&](std::string_view text) {
      if (out.size() < keep) out.append(text.substr(0, keep - out.size()));
    });
  }
  if (out.size() == keep) {
    std::size_t cut = keep - 1;
    while (cut > prefix.size() && (static_cast<unsigned char>(out[cut]) & 0xc0) == 0x80)
      --cut;
    out.resize(cut);
  }
}

// The arguments of a mock tool call, as compact JSON: {"text": <the echo of `content`>}.
void assign_tool_arguments(std::string& out, const json::value* content) {
  std::string text;
  assign_echo(text, {}, content);
  out.assign(R"({"text":)");
  lowart::json::append_quoted(out, text);
  out += '}';
}

const json::string* string_member(const json::object* object, std::string_view key) {
  const auto* value = object ? object->if_contains(key) : nullptr;
  return value ? value->if_string() : nullptr;
}

bool has_string_member(const json::object& object, std::string_view key, std::string_view expected) {
  const auto* value = string_member(&object, key);
  return value && to_view(*value) == expected;
}

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
  } else {
    assign_echo(reply, last_is_tool ? tool_reply_prefix : reply_prefix, last_content);
  }
  return {};
}

// An Anthropic Messages request, as far as the mock answers it. Views point into the parsed document.
struct messages_request {
  std::string_view model;
  bool stream = false;
  bool tool_call = false; // answer with a call of tool_name instead of text
  std::string_view tool_name;
  std::uint64_t input_words = 0;           // system and message text, cacheable or not
  std::vector<std::string_view> cacheable; // texts of blocks that carry cache_control, in request order
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
    if (const auto* named = string_member(&object, "name"); named && has_string_member(object, "type", "tool")) {
      m.tool_name = to_view(*named);
    }
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
    assign_tool_arguments(reply, content);
  } else {
    assign_echo(reply, reply_prefix, content);
  }
  return {};
}

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

// --- connections ------------------------------------------------------------------------------------

std::string_view reason_phrase(unsigned status) {
  switch (status) {
  case 200:
    return "OK";
  case 400:
    return "Bad Request";
  case 404:
    return "Not Found";
  case 413:
    return "Payload Too Large";
  case 429:
    return "Too Many Requests";
  case 529:
    return "Overloaded";
  default:
    return "Internal Server Error";
  }
}

// Per-connection state, reused by every request on the connection.
template <class Stream> struct connection {
  template <class... Args>
  connection(server_state& state, Args&&... args)
      : stream(std::forward<Args>(args)...), state(state), timer(stream.get_executor()) {}

  Stream stream;
  server_state& state;
  asio::steady_timer timer;
  beast::flat_buffer input;
  bool keep_alive = false;                         // of the request being answered
  bool http10 = false;                             // the request was HTTP/1.0: no chunked encoding, explicit keep-alive
  std::string head;                                // status line and headers, or a chunk-size line
  std::string body;                                // response body or one SSE event
  std::string reply;                               // reply text, or a tool call's arguments (JSON)
  std::string chunk_prefix;                        // common start of every streamed chunk object
  std::array<unsigned char, 16 * 1024> json_arena; // backs the parsed request document
};

template <class Stream>
void append_head(connection<Stream>& c, unsigned status, std::string_view content_type,
                 std::optional<std::size_t> content_length, std::string_view extra_headers = {}) {
  c.head += "HTTP/1.1 ";
  append_uint(c.head, status);
  c.head += ' ';
  c.head += reason_phrase(status);
  c.head += "\r\nserver: lowart-mock\r\ncontent-type: ";
  c.head += content_type;
  if (content_length) {
    c.head += "\r\ncontent-length: ";
    append_uint(c.head, *content_length);
  }
  if (!c.keep_alive) {
    c.head += "\r\nconnection: close";
  } else if (c.http10) {
    c.head += "\r\nconnection: keep-alive";
  }
  c.head += "\r\n";
  c.head += extra_headers;
  c.head += "\r\n";
}

// Writes c.head followed by `data`; returns whether the write succeeded.
template <class Stream>
asio::awaitable<bool> write_out(connection<Stream>& c, std::string_view data, std::string_view tail = {}) {
  std::array<asio::const_buffer, 3> buffers{asio::buffer(c.head), asio::buffer(data.data(), data.size()),
                                            asio::buffer(tail.data(), tail.size())};
  auto [ec, written] = co_await asio::async_write(c.stream, buffers, use_tuple);
  c.head.clear();
  co_return !ec;
}

// Sends a complete response; returns whether the connection can take another request.
template <class Stream>
asio::awaitable<bool> send(connection<Stream>& c, unsigned status, std::string_view content_type, std::string_view body,
                           std::string_view extra_headers = {}) {
  c.head.clear();
  append_head(c, status, content_type, body.size(), extra_headers);
  co_return co_await write_out(c, body) && c.keep_alive;
}

template <class Stream>
asio::awaitable<bool> send_error(connection<Stream>& c, unsigned status, std::string_view message,
                                 protocol wire = protocol::openai) {
  c.body.clear();
  append_error_body(c.body, message, wire);
  co_return co_await send(c, status, json_type, c.body);
}

template <class Stream> asio::awaitable<void> pause(connection<Stream>& c, unsigned ms) {
  c.timer.expires_after(std::chrono::milliseconds(ms));
  co_await c.timer.async_wait(use_tuple);
}

// Aborts the connection with a TCP RST instead of an orderly FIN.
template <class Stream> void reset_connection(connection<Stream>& c) {
  beast::error_code ignored;
  auto& socket = c.stream.lowest_layer();
  socket.set_option(asio::socket_base::linger(true, 0), ignored);
  socket.close(ignored);
}

// Reads and discards until the peer closes the connection.
template <class Stream> asio::awaitable<void> wait_for_close(connection<Stream>& c) {
  std::array<char, 512> scratch;
  for (;;) {
    auto [ec, n] = co_await c.stream.async_read_some(asio::buffer(scratch), use_tuple);
    if (ec) co_return;
  }
}

std::optional<fault> resolve_fault(const request& req, std::string_view model, fault fallback) {
  if (auto header = req.find("x-mock-mode"); header != req.end()) return parse_fault(to_view(header->value()));
  if (model.starts_with("mock-")) {
    if (auto from_model = parse_fault(model.substr(5))) return from_model;
  }
  return fallback;
}

// Runs the part of a fault that comes before any answer. Returns the connection verdict when the
// fault settles the request, or nullopt when the normal answer should follow.
template <class Stream>
asio::awaitable<std::optional<bool>> run_fault(connection<Stream>& c, fault f, bool streaming,
                                               protocol wire = protocol::openai) {
  const bool anthropic = wire == protocol::anthropic;
  switch (f.kind) {
  case fault_kind::mid_error:
    if (streaming) break;
    [[fallthrough]]; // without a stream to break, it is a plain failure
  case fault_kind::fail_500:
    co_return co_await send(c, 500, json_type, anthropic ? anthropic_fail_500_body : fail_500_body);
  case fault_kind::fail_429:
    co_return co_await send(c, 429, json_type, anthropic ? anthropic_fail_429_body : fail_429_body,
                            "retry-after: 1\r\n");
  case fault_kind::fail_529:
    co_return co_await send(c, 529, json_type, anthropic ? anthropic_fail_529_body : fail_529_body);
  case fault_kind::hang:
    co_await wait_for_close(c);
    co_return false;
  case fault_kind::reset:
    if (streaming) break;
    reset_connection(c);
    co_return false;
  case fault_kind::delay:
    co_await pause(c, f.ms);
    break;
  case fault_kind::ok:
  case fault_kind::slow:
  case fault_kind::no_usage:
  case fault_kind::flood:
    break;
  }
  co_return std::nullopt;
}

// End of the next streamed piece of `text` starting at `begin`: leading whitespace plus one word, or
// everything left when this is the last allowed piece or only whitespace would remain.
std::size_t piece_end(std::string_view text, std::size_t begin, bool last_piece) {
  if (last_piece) return text.size();
  std::size_t i = begin;
  while (i < text.size() && is_space(text[i]))
    ++i;
  while (i < text.size() && !is_space(text[i]))
    ++i;
  std::size_t rest = i;
  while (rest < text.size() && is_space(text[rest]))
    ++rest;
  return rest == text.size() ? rest : i;
}

// Sends c.body as one SSE event (as one chunk unless HTTP/1.0), after c.head if it holds the response
// head; `last` also ends the chunked body.
template <class Stream> asio::awaitable<bool> send_event(connection<Stream>& c, bool last) {
  if (c.http10) co_return co_await write_out(c, c.body);
  std::array<char, 16> size_line;
  auto result = std::to_chars(size_line.data(), size_line.data() + size_line.size(), c.body.size(), 16);
  c.head.append(size_line.data(), result.ptr);
  c.head += "\r\n";
  co_return co_await write_out(c, c.body, last ? "\r\n0\r\n\r\n" : "\r\n");
}

// End of the next tool-call arguments piece of `text` starting at `begin`: at most
// max_argument_piece_bytes, cut back so that no UTF-8 sequence is split across two events.
std::size_t argument_piece_end(std::string_view text, std::size_t begin) {
  std::size_t end = begin + max_argument_piece_bytes;
  if (end >= text.size()) return text.size();
  while (end > begin + 1 && (static_cast<unsigned char>(text[end]) & 0xc0) == 0x80)
    --end;
  return end;
}

// Timing and mid-stream faults of one streamed answer.
struct stream_pacing {
  unsigned delay_ms; // before every event but the first
  fault f;
  protocol wire;
  unsigned pieces = 0; // content pieces sent so far: text pieces and tool-call arguments pieces

  // Counts a sent content piece; true when a mid-stream fault strikes now: after the second piece,
  // or after the last one when the answer has fewer.
  bool strikes_after_piece(bool last_piece) {
    ++pieces;
    return (f.kind == fault_kind::reset || f.kind == fault_kind::mid_error) && (pieces == 2 || last_piece);
  }
};

template <class Stream> stream_pacing pacing_for(const connection<Stream>& c, fault f, protocol wire) {
  return {f.kind == fault_kind::slow ? f.ms : c.state.opts.chunk_delay_ms, f, wire};
}

// Puts the head of a 200 event stream in c.head; it goes out with the first event.
template <class Stream> void start_event_stream(connection<Stream>& c) {
  if (c.http10) c.keep_alive = false; // HTTP/1.0 has no chunked encoding: the close ends the stream
  c.head.clear();
  append_head(c, 200, "text/event-stream", std::nullopt,
              c.http10 ? "cache-control: no-cache\r\n" : "cache-control: no-cache\r\ntransfer-encoding: chunked\r\n");
}

// Sends c.body as the next event of a stream, the pacing delay after the previous one.
template <class Stream>
asio::awaitable<bool> send_paced(connection<Stream>& c, const stream_pacing& pacing, bool last = false) {
  if (pacing.delay_ms > 0) co_await pause(c, pacing.delay_ms);
  co_return co_await send_event(c, last);
}

// Carries out the mid-stream fault that stream_pacing::strikes_after_piece announced; returns the
// connection verdict. mid-error ends the stream cleanly, so the connection may stay open.
template <class Stream> asio::awaitable<bool> strike(connection<Stream>& c, const stream_pacing& pacing) {
  if (pacing.f.kind == fault_kind::reset) {
    reset_connection(c);
    co_return false;
  }
  c.body.assign(pacing.wire == protocol::anthropic ? anthropic_mid_error_event : mid_error_event);
  co_return co_await send_paced(c, pacing, true) && c.keep_alive;
}

enum class split { words, argument_bytes };

// Streams `text` one piece per event, `format(piece)` filling c.body: words as piece_end cuts them
// (at most --stream-chunks pieces), or arguments pieces as argument_piece_end cuts them. Returns the
// connection verdict when the stream ended early, nullopt when it goes on.
template <class Stream, class Format>
asio::awaitable<std::optional<bool>> stream_pieces(connection<Stream>& c, std::string_view text, split how,
                                                   stream_pacing& pacing, Format format) {
  unsigned index = 0;
  for (std::size_t begin = 0; begin < text.size(); ++index) {
    const std::size_t end = how == split::words ? piece_end(text, begin, index + 1 == c.state.opts.stream_chunks)
                                                : argument_piece_end(text, begin);
    format(text.substr(begin, end - begin));
    if (!co_await send_paced(c, pacing)) co_return false;
    begin = end;
    if (pacing.strikes_after_piece(begin == text.size())) co_return co_await strike(c, pacing);
  }
  co_return std::nullopt;
}

// --- OpenAI chat completions ------------------------------------------------------------------------

// Closes a chat chunk: the choices array after `choice_end`, then the object.
void end_chunk(std::string& out, std::string_view choice_end, std::string_view usage_null) {
  out += choice_end;
  out += usage_null;
  out += "}\n\n";
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
    const std::uint64_t completion_words = count_words(c.reply);
    c.body.assign(c.chunk_prefix);
    c.body += R"(],"usage":{"prompt_tokens":)";
    append_uint(c.body, chat.prompt_words);
    c.body += R"(,"completion_tokens":)";
    append_uint(c.body, completion_words);
    c.body += R"(,"total_tokens":)";
    append_uint(c.body, chat.prompt_words + completion_words);
    c.body += "}}\n\n";
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

template <class Stream>
asio::awaitable<bool> handle_chat(connection<Stream>& c, const request& req, std::string_view path) {
  json::monotonic_resource arena(c.json_arena.data(), c.json_arena.size());
  boost::system::error_code parse_error;
  json::value document = json::parse(json::string_view(req.body().data(), req.body().size()), parse_error, &arena);
  chat_request chat;
  std::string_view invalid = parse_error ? "request body is not valid JSON" : read_chat(document, chat, c.reply);
  c.state.stats.record(path, req, chat.model);
  if (!invalid.empty()) co_return co_await send_error(c, 400, invalid);

  auto f = resolve_fault(req, chat.model, c.state.opts.default_fault);
  if (!f) co_return co_await send_error(c, 400, "unknown x-mock-mode");
  if (auto verdict = co_await run_fault(c, *f, chat.stream)) co_return *verdict;

  const std::string_view model = chat.model.empty() ? default_model : chat.model;
  const std::uint64_t id = c.state.next_id.fetch_add(1, std::memory_order_relaxed);
  const std::time_t created = std::time(nullptr);
  if (chat.stream && f->kind == fault_kind::flood) co_return co_await stream_flood(c, model, f->ms);
  if (chat.stream) co_return co_await stream_chat(c, chat, model, id, created, *f);

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
  if (f->kind != fault_kind::no_usage) {
    out += R"(,"usage":{"prompt_tokens":)";
    append_uint(out, chat.prompt_words);
    out += R"(,"completion_tokens":)";
    append_uint(out, completion_words);
    out += R"(,"total_tokens":)";
    append_uint(out, chat.prompt_words + completion_words);
    out += "}";
  }
  out += "}";
  co_return co_await send(c, 200, json_type, out);
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
  return m.tool_call ? count_words(tool_lead_in(m.tool_name)) + count_words(reply) : count_words(reply);
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

// The tool-call part of a Messages stream, after the text block has started: the lead-in text, then
// the tool_use block with its input in pieces.
template <class Stream>
asio::awaitable<std::optional<bool>> stream_tool_use(connection<Stream>& c, const messages_request& m, std::uint64_t id,
                                                     stream_pacing& pacing) {
  append_block_delta(c.body, 0, "text_delta", "text", tool_lead_in(m.tool_name));
  if (!co_await send_paced(c, pacing)) co_return false;
  if (pacing.strikes_after_piece(false)) co_return co_await strike(c, pacing);
  append_block_stop(c.body, 0);
  if (!co_await send_paced(c, pacing)) co_return false;

  append_block_start(c.body, 1);
  c.body += R"({"type":"tool_use","id":"toolu_mock_)";
  append_uint(c.body, id);
  c.body += R"(","name":)";
  lowart::json::append_quoted(c.body, m.tool_name);
  c.body += R"(,"input":{}}})";
  c.body += "\n\n";
  if (!co_await send_paced(c, pacing)) co_return false;
  if (auto ended = co_await stream_pieces(c, c.reply, split::argument_bytes, pacing, [&](std::string_view piece) {
        append_block_delta(c.body, 1, "input_json_delta", "partial_json", piece);
      })) {
    co_return ended;
  }
  append_block_stop(c.body, 1);
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
  append_block_start(c.body, 0);
  c.body += "{\"type\":\"text\",\"text\":\"\"}}\n\n";
  if (!co_await send_paced(c, pacing)) co_return false;

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
  out += R"([{"type":"text","text":)";
  if (!m.tool_call) {
    lowart::json::append_quoted(out, reply);
    out += "}]";
    return;
  }
  lowart::json::append_quoted(out, tool_lead_in(m.tool_name));
  out += R"(},{"type":"tool_use","id":"toolu_mock_)";
  append_uint(out, id);
  out += R"(","name":)";
  lowart::json::append_quoted(out, m.tool_name);
  out += R"(,"input":)";
  out += reply; // already JSON
  out += "}]";
}

template <class Stream>
asio::awaitable<bool> handle_messages(connection<Stream>& c, const request& req, std::string_view path) {
  json::monotonic_resource arena(c.json_arena.data(), c.json_arena.size());
  boost::system::error_code parse_error;
  json::value document = json::parse(json::string_view(req.body().data(), req.body().size()), parse_error, &arena);
  messages_request m;
  std::string_view invalid =
      parse_error ? "request body is not valid JSON" : read_messages_request(document, true, m, c.reply);
  c.state.stats.record(path, req, m.model);
  if (!invalid.empty()) co_return co_await send_error(c, 400, invalid, protocol::anthropic);

  auto f = resolve_fault(req, m.model, c.state.opts.default_fault);
  if (!f) co_return co_await send_error(c, 400, "unknown x-mock-mode", protocol::anthropic);
  if (auto verdict = co_await run_fault(c, *f, m.stream, protocol::anthropic)) co_return *verdict;

  // Only answered requests touch the cache, so a failed attempt does not turn its retry into a read.
  const message_usage usage = settle_cache(c.state.cache, m);
  const std::string_view model = m.model.empty() ? default_model : m.model;
  const std::uint64_t id = c.state.next_id.fetch_add(1, std::memory_order_relaxed);
  if (m.stream) co_return co_await stream_message(c, m, model, id, usage, *f);

  std::string& out = c.body;
  out.clear();
  append_message_head(out, id, model);
  append_message_content(out, m, id, c.reply);
  out += m.tool_call ? R"(,"stop_reason":"tool_use","stop_sequence":null)"
                     : R"(,"stop_reason":"end_turn","stop_sequence":null)";
  if (f->kind != fault_kind::no_usage) {
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
  json::monotonic_resource arena(c.json_arena.data(), c.json_arena.size());
  boost::system::error_code parse_error;
  json::value document = json::parse(json::string_view(req.body().data(), req.body().size()), parse_error, &arena);
  messages_request m;
  std::string_view invalid =
      parse_error ? "request body is not valid JSON" : read_messages_request(document, false, m, c.reply);
  c.state.stats.record(path, req, m.model);
  if (!invalid.empty()) co_return co_await send_error(c, 400, invalid, protocol::anthropic);

  auto f = resolve_fault(req, m.model, c.state.opts.default_fault);
  if (!f) co_return co_await send_error(c, 400, "unknown x-mock-mode", protocol::anthropic);
  if (auto verdict = co_await run_fault(c, *f, false, protocol::anthropic)) co_return *verdict;

  c.body.assign(R"({"input_tokens":)");
  append_uint(c.body, m.input_words);
  c.body += '}';
  co_return co_await send(c, 200, json_type, c.body);
}

// --- embeddings and dispatch -------------------------------------------------------------------------

template <class Stream>
asio::awaitable<bool> handle_embeddings(connection<Stream>& c, const request& req, std::string_view path) {
  json::monotonic_resource arena(c.json_arena.data(), c.json_arena.size());
  boost::system::error_code parse_error;
  json::value document = json::parse(json::string_view(req.body().data(), req.body().size()), parse_error, &arena);
  std::string_view model;
  std::string_view invalid = parse_error ? "request body is not valid JSON" : write_embeddings(document, model, c.body);
  c.state.stats.record(path, req, model);
  if (!invalid.empty()) co_return co_await send_error(c, 400, invalid);

  auto f = resolve_fault(req, model, c.state.opts.default_fault);
  if (!f) co_return co_await send_error(c, 400, "unknown x-mock-mode");
  if (auto verdict = co_await run_fault(c, *f, false)) co_return *verdict;
  co_return co_await send(c, 200, json_type, c.body);
}

// --- OpenAI Responses -------------------------------------------------------------------------------

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
  if (r.tool_call)
    assign_tool_arguments(reply, last_user_content);
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

template <class Stream>
asio::awaitable<bool> handle_responses(connection<Stream>& c, const request& req, std::string_view path) {
  json::monotonic_resource arena(c.json_arena.data(), c.json_arena.size());
  boost::system::error_code parse_error;
  json::value document = json::parse(json::string_view(req.body().data(), req.body().size()), parse_error, &arena);
  responses_request r;
  std::string_view invalid = parse_error ? "request body is not valid JSON" : read_responses(document, r, c.reply);
  c.state.stats.record(path, req, r.model);
  if (!invalid.empty()) co_return co_await send_error(c, 400, invalid);

  auto f = resolve_fault(req, r.model, c.state.opts.default_fault);
  if (!f) co_return co_await send_error(c, 400, "unknown x-mock-mode");
  if (auto verdict = co_await run_fault(c, *f, r.stream)) co_return *verdict;

  const std::string_view model = r.model.empty() ? default_model : r.model;
  const std::uint64_t id = c.state.next_id.fetch_add(1, std::memory_order_relaxed);
  const std::time_t created = std::time(nullptr);
  if (r.stream) co_return co_await stream_response(c, r, model, id, created, *f);
  std::string output = "[";
  append_output_item(output, r, id, c.reply, true);
  output += ']';
  c.body.clear();
  append_response(c.body, r, model, id, created, "completed", output, f->kind != fault_kind::no_usage,
                  count_words(c.reply));
  co_return co_await send(c, 200, json_type, c.body);
}

// Answers one request; returns whether the connection can take another.
template <class Stream> asio::awaitable<bool> handle_request(connection<Stream>& c, const request& req) {
  const std::string_view target = to_view(req.target());
  const std::string_view path = target.substr(0, target.find('?'));
  if (req.method() == http::verb::post) {
    if (path.ends_with("/chat/completions")) co_return co_await handle_chat(c, req, path);
    if (path.ends_with("/messages")) co_return co_await handle_messages(c, req, path);
    if (path.ends_with("/messages/count_tokens")) co_return co_await handle_count_tokens(c, req, path);
    if (path.ends_with("/embeddings")) co_return co_await handle_embeddings(c, req, path);
    if (path.ends_with("/responses")) co_return co_await handle_responses(c, req, path);
    if (path.ends_with("/mock/reset")) {
      c.state.stats.reset();
      c.state.cache.clear();
      co_return co_await send(c, 200, json_type, R"({"reset":true})");
    }
  } else if (req.method() == http::verb::get) {
    if (path.ends_with("/models")) co_return co_await send(c, 200, json_type, models_body);
    if (path.ends_with("/healthz")) co_return co_await send(c, 200, "text/plain", "ok");
    if (path.ends_with("/mock/stats")) {
      c.body.clear();
      c.state.stats.append_json(c.body);
      co_return co_await send(c, 200, json_type, c.body);
    }
  }
  co_return co_await send(c, 404, json_type, not_found_body);
}

bool is_protocol_error(const beast::error_code& ec) {
  return ec.category() == beast::error_code(http::error::bad_target).category() && ec != http::error::end_of_stream &&
         ec != http::error::partial_message;
}

template <class Stream> asio::awaitable<void> serve(connection<Stream>& c) {
  static constexpr std::string_view continue_line = "HTTP/1.1 100 Continue\r\n\r\n";
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(max_header_bytes);
    parser.body_limit(max_body_bytes);
    auto [ec, n] = co_await http::async_read_header(c.stream, c.input, parser, use_tuple);
    if (!ec && !parser.is_done()) {
      if (beast::iequals(parser.get()[http::field::expect], "100-continue")) {
        std::tie(ec, std::ignore) = co_await asio::async_write(c.stream, asio::buffer(continue_line), use_tuple);
      }
      if (!ec) std::tie(ec, std::ignore) = co_await http::async_read(c.stream, c.input, parser, use_tuple);
    }
    if (ec) {
      if (is_protocol_error(ec)) {
        c.keep_alive = false;
        c.http10 = false;
        co_await send_error(c, ec == http::error::body_limit ? 413 : 400, "malformed HTTP request: " + ec.message());
      }
      break;
    }
    const request& req = parser.get();
    c.keep_alive = req.keep_alive();
    c.http10 = req.version() == 10;
    if (!co_await handle_request(c, req)) break;
  }
  beast::error_code ignored;
  c.stream.lowest_layer().shutdown(tcp::socket::shutdown_send, ignored);
}

asio::awaitable<void> serve_plain(tcp::socket socket, server_state& state) {
  connection<tcp::socket> c(state, std::move(socket));
  co_await serve(c);
}

asio::awaitable<void> serve_tls(tcp::socket socket, server_state& state, ssl::context& tls) {
  connection<ssl::stream<tcp::socket>> c(state, std::move(socket), tls);
  auto [ec] = co_await c.stream.async_handshake(ssl::stream_base::server, use_tuple);
  if (!ec) co_await serve(c);
}

asio::awaitable<void> accept_loop(asio::io_context& ioc, tcp::acceptor& acceptor, server_state& state,
                                  ssl::context* tls) {
  asio::steady_timer backoff(ioc);
  for (;;) {
    // With several threads each connection gets a strand; with one, the io_context executor is enough.
    asio::any_io_executor executor = state.opts.threads > 1 ? asio::any_io_executor(asio::make_strand(ioc))
                                                            : asio::any_io_executor(ioc.get_executor());
    auto [ec, socket] = co_await acceptor.async_accept(executor, use_tuple);
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) { // e.g. out of file descriptors: back off instead of spinning
      backoff.expires_after(std::chrono::milliseconds(50));
      co_await backoff.async_wait(use_tuple);
      continue;
    }
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    if (tls) {
      asio::co_spawn(executor, serve_tls(std::move(socket), state, *tls), asio::detached);
    } else {
      asio::co_spawn(executor, serve_plain(std::move(socket), state), asio::detached);
    }
  }
}

} // namespace

int main(int argc, char** argv) {
  std::optional<options> parsed = parse_options(argc, argv);
  if (!parsed) return 2;
  const options& opts = *parsed;
  try {
    server_state state(opts);
    std::optional<ssl::context> tls;
    if (!opts.tls_cert.empty()) {
      tls.emplace(ssl::context::tls_server);
      tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                       ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      tls->use_certificate_chain_file(opts.tls_cert);
      tls->use_private_key_file(opts.tls_key, ssl::context::pem);
    }

    asio::io_context ioc(static_cast<int>(opts.threads));
    tcp::resolver resolver(ioc);
    const tcp::endpoint endpoint = resolver.resolve(opts.host, opts.port, tcp::resolver::passive).begin()->endpoint();
    tcp::acceptor acceptor(ioc);
    acceptor.open(endpoint.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(endpoint);
    acceptor.listen(asio::socket_base::max_listen_connections);

    const tcp::endpoint bound = acceptor.local_endpoint();
    const std::string address = bound.address().to_string();
    std::printf(bound.address().is_v6() ? "lowart-mock listening on [%s]:%u\n" : "lowart-mock listening on %s:%u\n",
                address.c_str(), static_cast<unsigned>(bound.port()));
    std::fflush(stdout);

    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&](const beast::error_code&, int) { ioc.stop(); });
    asio::co_spawn(ioc, accept_loop(ioc, acceptor, state, tls ? &*tls : nullptr), asio::detached);

    std::vector<std::thread> workers;
    for (unsigned i = 1; i < opts.threads; ++i)
      workers.emplace_back([&ioc] { ioc.run(); });
    ioc.run();
    for (auto& worker : workers)
      worker.join();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lowart-mock: %s\n", e.what());
    return 1;
  }
  return 0;
}
