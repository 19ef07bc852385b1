#pragma once
// One downstream HTTP/1.1 connection (TCP or Unix socket). Owned by the I/O thread
// whose io_context it was accepted on; every member is touched on that thread only,
// except that actor answers arrive through asio::post onto it.

#include "actors/state.hpp"
#include "net/errors.hpp"
#include "net/head_arena.hpp"

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/basic_stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <array>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>

namespace lowart::actors {
class runtime;
}

namespace lowart::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

class upstream_pool;
class server_worker;

/// Who is calling: the master key, or a virtual key from the key snapshot.
struct principal {
  std::shared_ptr<const key_entry> key; ///< null for the master key
  bool master = false;
  std::string_view key_id() const { return master ? std::string_view{"master"} : std::string_view{key->id}; }
};

/// Everything one request carries from parse to the access-log line.
struct request_context {
  std::string request_id;
  std::chrono::steady_clock::time_point start;
  std::string_view route = "other"; ///< metrics label: chat, embeddings, models, admin, ...
  api_format format = api_format::openai;
  std::string rpc_id = "null"; ///< JSON-RPC endpoints: the request's id as JSON text, echoed in refusals
  bool keep_alive = true;
  std::string method;
  std::string path;
  std::optional<principal> who;
  std::string model;             ///< for the access log, when known
  std::string deployment;        ///< for the access log, when known
  std::string anthropic_version; ///< the client's anthropic-version header, forwarded upstream
  std::string anthropic_beta;    ///< the client's anthropic-beta header, forwarded upstream
  /// The client's headers as a JSON object for Lua hooks (credentials left out); filled
  /// only while some model or provider has a script.
  std::string headers_json;
  /// A refusal's reason code (the error's `code`, else its kind), for its usage record.
  std::string error_code;
  std::string client_ip;  ///< for the request log: the peer, or a trusted proxy's X-Forwarded-For
  std::string user_agent; ///< for the request log (at most 256 bytes)
  /// Set once a usage record for this request was written (the proxy meters what it
  /// admitted, agents meter their calls): the session then writes no refusal record.
  bool usage_recorded = false;
};

class session : public std::enable_shared_from_this<session> {
public:
  /// Streams bound to the concrete io_context executor: a polymorphic
  /// any_io_executor costs a copy and a destroy per operation on the hot path.
  using executor_type = asio::io_context::executor_type;
  using tcp_stream = beast::basic_stream<asio::ip::tcp, executor_type>;
  using uds_stream = beast::basic_stream<asio::local::stream_protocol, executor_type>;

  session(server_worker& worker, tcp_stream&& stream);
  session(server_worker& worker, uds_stream&& stream);
  ~session();

  void start();

  /// Writes a whole response and then reads the next request or closes.
  void respond(request_context& ctx, int status, std::string_view content_type, std::string_view body,
               std::string_view extra_headers = {});
  /// The same for a body that outlives the session (a web-console file): written from
  /// where it is, not copied into the session's buffer.
  void respond_static(request_context& ctx, std::string_view content_type, std::string_view body,
                      std::string_view extra_headers);
  void respond_error(request_context& ctx, error_kind kind, std::string_view message, std::string_view code = {},
                     std::string_view extra_headers = {}, std::string_view param = {});

  /// Raw write for streamed responses; one write in flight (the caller waits for `done`).
  void write_raw(std::string data, std::function<void(bool ok)> done);
  /// The same, swapping buffers: `data` comes back empty holding the session's last write
  /// buffer, so a stream that alternates the two makes no allocation per event.
  /// `done(ok)` is posted, never run inside the call (net/session_send.hpp).
  template <class Done> void write_raw_swapping(std::string& data, Done&& done);
  /// A streamed response ended: record it, then read the next request or close.
  void end_streamed(request_context& ctx, int status, bool keep_alive);

  /// Appends the response head (status line, x-request-id, connection) to `out`.
  static void append_head(std::string& out, const request_context& ctx, int status, std::string_view content_type,
                          std::string_view extra_headers, std::optional<std::size_t> content_length);

  /// Drain: close now if waiting for a request, else close after the current response.
  void close_if_idle();

  server_worker& worker() { return worker_; }
  executor_type executor();

  /// The sweep (worker.hpp): past its deadline a connection is closed, which ends its
  /// pending read or write with operation_aborted.
  void check_deadline(std::chrono::steady_clock::time_point now);

private:
  void do_read();
  /// Waits (under the idle timeout) for the next request's first bytes.
  void wait_readable();
  /// The socket is readable: read into the worker's scratch and parse.
  void on_readable();
  /// Parses what buffer_ holds; a request still arriving is read on under header_timeout_ms.
  void read_request();
  void set_deadline(std::chrono::milliseconds after) { deadline_ = std::chrono::steady_clock::now() + after; }
  void clear_deadline() { deadline_ = std::chrono::steady_clock::time_point::max(); }
  void on_read(beast::error_code ec);
  void handle(downstream_request&& req);
  void after_response(bool keep_alive);
  void respond_with(request_context& ctx, int status, std::string_view content_type, std::string_view body,
                    std::string_view extra_headers, bool by_reference);
  /// Writes out_: at once as far as the socket takes it, the rest asynchronously; then
  /// `then(ok)` runs from the io_context (net/session_send.hpp).
  template <class Then> void send_out(Then&& then);
  void record(const request_context& ctx, int status);
  std::string render_breakers();
  /// The scheme and host agent cards name: [server] public_url, else the Host header
  /// (X-Forwarded-Proto/-Host instead when the peer is one of [server] trusted_proxies).
  std::string public_base(const downstream_request& req);
  /// GET /readyz: ready, degraded (with why) or not ready.
  void respond_readiness(request_context& ctx);
  /// Hands an admin, /v1/me or MCP request to the actors and answers when they do.
  void forward_to_actors(request_context& ctx, downstream_request& req, bool mcp, bool jobs = false, bool a2a = false);
  /// While an answer is out with the actors: a one-byte read that notices the client
  /// hanging up (then `on_gone` runs). A byte that does arrive (a pipelined request) is
  /// kept for the next parse. after_response() ends the watch before reading on.
  void watch_client(std::function<void()> on_gone);
  void graceful_close();
  /// The peer's address (once per connection: getpeername is a system call) and whether
  /// it is one of [server] trusted_proxies.
  void know_peer();
  /// The request's client for the log: the peer, or behind a trusted proxy the last
  /// address of X-Forwarded-For (the one that proxy saw).
  std::string client_ip_of(const downstream_request& req);

  template <class F> decltype(auto) visit(F&& f) { return std::visit(std::forward<F>(f), stream_); }

  server_worker& worker_;
  std::variant<tcp_stream, uds_stream> stream_;
  /// Bytes of a request not parsed yet (empty, and without memory, between requests).
  beast::flat_buffer buffer_;
  /// When the pending read or write (or the drain after a close) is given up; max while
  /// nothing downstream is awaited (an answer from an actor or an upstream has its own).
  std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
  head_arena head_arena_; ///< the request head's fields (declared before the parser that uses it)
  std::optional<request_parser> parser_;
  std::string out_;
  std::string_view out_tail_;                  ///< written after out_: a static body, by reference
  std::array<asio::const_buffer, 2> out_rest_; ///< what the asynchronous write still sends
  bool idle_ = false;                          ///< waiting for the next request
  bool watching_ = false;                      ///< watch_client's read is outstanding
  bool resume_after_watch_ = false;            ///< after_response waits for that read to end
  bool resume_keep_alive_ = false;
  char watch_byte_ = 0;
  bool closed_ = false;
  bool peer_known_ = false;
  bool peer_trusted_ = false;
  std::string peer_ip_;
};

using session_ptr = std::shared_ptr<session>;

/// A session held by an actor's callback: the last reference may go away on a CAF
/// thread, but a session must end on its own I/O thread (its destructor unlinks it from
/// the worker's session list), so the release is posted there (session.cpp).
struct session_ref {
  explicit session_ref(session_ptr s) : ptr(std::move(s)) {}
  session_ref(const session_ref&) = delete;
  session_ref& operator=(const session_ref&) = delete;
  ~session_ref();
  session_ptr ptr;
};

} // namespace lowart::net
