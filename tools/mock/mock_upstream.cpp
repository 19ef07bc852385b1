// lowart-mock: an OpenAI- and Anthropic-compatible mock upstream for lowart's tests, demo route and
// benchmarks. This file holds the server (accept, read, dispatch) and main; the endpoints are in
// mock_openai.cpp, mock_anthropic.cpp and mock_responses.cpp, a connection's I/O and streams in
// mock_connection.hpp, state and text helpers in mock_state.cpp, mock_text.cpp and mock_internal.hpp.
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
//     With tool_choice {"type":"any"} or {"type":"tool"} (forced), as Claude does, no text comes
//     before the call: content [{"type":"tool_use",...}] alone, O = words of A, and the stream's
//     tool_use block is index 0. A tool whose input_schema declares properties gets those filled
//     in (strings the echo, integers and numbers its word count, booleans true, enums their first
//     value, arrays one item, objects recursively) instead of {"text":...}.
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

#include "tools/mock/mock_connection.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/json/src.hpp>

#include <csignal>
#include <cstdio>
#include <exception>
#include <thread>
#include <tuple>
#include <vector>

namespace lowart::mock::detail {

namespace {

constexpr std::size_t max_header_bytes = 64 * 1024;
constexpr std::size_t max_body_bytes = 64 * 1024 * 1024;
constexpr std::string_view models_body =
    R"({"object":"list","data":[{"id":"mock-model","object":"model","created":0,"owned_by":"lowart-mock"}]})";
constexpr std::string_view not_found_body = R"({"error":{"message":"not found","type":"invalid_request_error"}})";

// --- dispatch and the server ----------------------------------------------------------------------

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
} // namespace lowart::mock::detail

int main(int argc, char** argv) {
  using namespace lowart::mock::detail;
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
