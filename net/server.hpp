#pragma once
// The HTTP front: TCP and/or Unix-socket listeners and the I/O threads. Light header
// (no Asio or Beast) for main.

#include <memory>
#include <string>

namespace lowart {
struct gateway_state;
}
namespace lowart::actors {
class runtime;
}

namespace lowart::net {

class server {
public:
  server(gateway_state& state, actors::runtime& runtime);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Binds the listeners (throws with a clear message on failure) and starts
  /// server.io_threads threads, each running its own io_context.
  void start();

  /// Stops accepting, closes idle connections, lets in-flight requests finish (their
  /// responses carry Connection: close). Returns when none is left or after `timeout_ms`.
  /// Returns the number of connections still open at the end.
  int drain(int timeout_ms);

  /// Stops the threads (after drain).
  void stop();

  /// "127.0.0.1:3000" as actually bound (port 0 resolved).
  std::string tcp_endpoint() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace lowart::net
