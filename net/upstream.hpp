#pragma once
// Upstream connections and their per-thread pool. Owned by one I/O thread (its
// io_context runs on exactly one thread), so nothing here locks.

#include "actors/state.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <unordered_map>
#include <variant>
#include <vector>

namespace lowart::net {

namespace asio = boost::asio;
namespace beast = boost::beast;

/// One keep-alive connection to an upstream, plain or TLS.
class upstream_connection {
public:
  /// Bound to the concrete io_context executor (see session::tcp_stream).
  using plain_stream = beast::basic_stream<asio::ip::tcp, asio::io_context::executor_type>;
  using tls_stream = beast::ssl_stream<plain_stream>;

  explicit upstream_connection(asio::io_context& ioc) : stream_(std::in_place_index<0>, ioc.get_executor()) {
    buffer.reserve(read_buffer_bytes);
  }
  upstream_connection(asio::io_context& ioc, asio::ssl::context& tls)
      : stream_(std::in_place_index<1>, ioc.get_executor(), tls) {
    buffer.reserve(read_buffer_bytes);
  }

  /// Beast reads at most the free capacity of the buffer (512 bytes when it is new):
  /// reserve enough that one read takes a typical whole response or a burst of SSE
  /// events (a larger answer grows it). Every held stream and pooled connection keeps it.
  static constexpr std::size_t read_buffer_bytes = 8 * 1024;

  /// Calls `f(stream)` with the concrete stream type (plain_stream or tls_stream).
  template <class F> decltype(auto) visit(F&& f) { return std::visit(std::forward<F>(f), stream_); }

  plain_stream& tcp() {
    if (auto* plain = std::get_if<0>(&stream_)) return *plain;
    return beast::get_lowest_layer(std::get<1>(stream_));
  }
  bool tls() const { return stream_.index() == 1; }

  /// False when the peer already closed an idle connection (a zero-cost peek).
  bool looks_alive();

  std::string pool_key;
  /// Came out of the pool: a write that fails on it means the upstream had closed it while
  /// idle, and the request is sent again on a fresh one (see proxy_call::upstream_failed).
  bool reused = false;
  std::chrono::steady_clock::time_point idle_since;
  beast::flat_buffer buffer; ///< read buffer, kept with the connection

private:
  std::variant<plain_stream, tls_stream> stream_;
};

using upstream_ptr = std::unique_ptr<upstream_connection>;

/// How a connection attempt failed, for status mapping and metrics.
enum class connect_failure { none, resolve, refused, timeout, tls };

class upstream_pool {
public:
  using acquire_handler = std::function<void(connect_failure, std::string detail, upstream_ptr)>;

  explicit upstream_pool(asio::io_context& ioc);

  /// Hands out an idle connection to `dep`'s upstream or opens one (resolve, connect,
  /// TLS handshake with SNI and host-name verification), within the provider's
  /// connect timeout. `done` runs on this pool's thread.
  void acquire(const deployment& dep, std::chrono::milliseconds connect_timeout, acquire_handler done);

  /// Opens a fresh connection even when idle ones exist (retry after a stale one).
  void connect(const deployment& dep, std::chrono::milliseconds connect_timeout, acquire_handler done);

  /// Takes back a connection whose last exchange completed cleanly.
  void release(upstream_ptr conn, int max_idle);

  /// Every second, closes idle connections too old to be taken again. The tick also
  /// keeps the reactor's timer heap from emptying between requests: a request's timer
  /// is then never the earliest, which would cost a timerfd_settime syscall each time.
  void start_housekeeping();

private:
  void prune(std::chrono::steady_clock::time_point now);

  asio::ssl::context& tls_context(const config::provider_config& settings);

  asio::io_context& ioc_;
  asio::ip::tcp::resolver resolver_;
  asio::steady_timer housekeeping_;
  std::unordered_map<std::string, std::vector<upstream_ptr>> idle_;
  std::map<std::pair<bool, std::string>, std::unique_ptr<asio::ssl::context>> tls_contexts_;
};

} // namespace lowart::net
