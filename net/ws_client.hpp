#pragma once
// Listens to a WebSocket (ComfyUI's /ws progress events): connect, then hand every text
// message to a callback until closed. Plain ws:// and wss:// targets. Runs on the
// io_context it is given; the callbacks run there. No Beast in this header.

#include "net/http_client.hpp"

#include <functional>
#include <memory>
#include <string>

namespace lowart::net {

class ws_listener {
public:
  virtual ~ws_listener() = default;
  /// Closes the connection; no callback runs after this returns (on the io thread) or
  /// after the close is processed (from other threads).
  virtual void close() = 0;
};

/// `target.path` is the path and query to open (e.g. "/ws?clientId=..."); `timeout`
/// bounds connecting and the handshake. `on_message` gets each text frame; `on_end`
/// runs once when the connection ends for any reason but close().
std::shared_ptr<ws_listener> ws_listen(boost::asio::io_context& ioc, http_target target,
                                       std::chrono::milliseconds timeout, std::function<void(std::string)> on_message,
                                       std::function<void(std::string)> on_end);

} // namespace lowart::net
