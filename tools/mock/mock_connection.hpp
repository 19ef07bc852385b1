#pragma once
// A lowart-mock connection and what every endpoint does with it: its state, writing responses, the
// faults before an answer, SSE streams and their mid-stream faults (templates, for plain and TLS alike).
// The server is in mock_upstream.cpp; the endpoints declared at the end are in mock_openai.cpp,
// mock_anthropic.cpp and mock_responses.cpp; what else they share is in mock_internal.hpp.

#include "tools/mock/mock_internal.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parse.hpp>

#include <chrono>
#include <utility>

namespace lowart::mock::detail {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

// Completion token: co_await yields (error_code, results...) instead of throwing.
constexpr asio::as_tuple_t<asio::use_awaitable_t<>> use_tuple{};

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

// --- connections ------------------------------------------------------------------------------------

inline std::string_view reason_phrase(unsigned status) {
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

// What every endpoint does with a request it has read: counts it in the statistics, answers 400 when
// it is invalid (`invalid` is the reader's message, empty for a valid request) or names an unknown
// x-mock-mode, then runs its fault's part before any answer (run_fault). Returns the connection
// verdict when that settles the request, or nullopt when the answer should follow under `f`.
template <class Stream>
asio::awaitable<std::optional<bool>> admit(connection<Stream>& c, const request& req, std::string_view path,
                                           std::string_view model, std::string_view invalid, bool streaming, fault& f,
                                           protocol wire = protocol::openai) {
  c.state.stats.record(path, req, model);
  if (!invalid.empty()) co_return co_await send_error(c, 400, invalid, wire);
  auto resolved = resolve_fault(req, model, c.state.opts.default_fault);
  if (!resolved) co_return co_await send_error(c, 400, "unknown x-mock-mode", wire);
  f = *resolved;
  co_return co_await run_fault(c, f, streaming, wire);
}

constexpr std::string_view not_json = "request body is not valid JSON";

// A request body parsed into the connection's json_arena (the parse goes on in the heap when that is
// full); `error` is set when the body is not JSON. Views into `document` stay valid while this lives.
struct parsed_body {
  template <class Stream>
  parsed_body(connection<Stream>& c, const request& req)
      : arena(c.json_arena.data(), c.json_arena.size()),
        document(json::parse(json::string_view(req.body().data(), req.body().size()), error, &arena)) {}

  json::monotonic_resource arena;
  boost::system::error_code error;
  json::value document;
};

// --- streams ----------------------------------------------------------------------------------------

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

// --- endpoints --------------------------------------------------------------------------------------

// Each answers one request and returns whether the connection can take another. Defined, for plain
// and TLS connections, in mock_openai.cpp (chat, embeddings), mock_anthropic.cpp (messages,
// count_tokens) and mock_responses.cpp.
template <class Stream>
asio::awaitable<bool> handle_chat(connection<Stream>& c, const request& req, std::string_view path);
template <class Stream>
asio::awaitable<bool> handle_embeddings(connection<Stream>& c, const request& req, std::string_view path);
template <class Stream>
asio::awaitable<bool> handle_messages(connection<Stream>& c, const request& req, std::string_view path);
template <class Stream>
asio::awaitable<bool> handle_count_tokens(connection<Stream>& c, const request& req, std::string_view path);
template <class Stream>
asio::awaitable<bool> handle_responses(connection<Stream>& c, const request& req, std::string_view path);

} // namespace lowart::mock::detail
