#pragma once
// A small asynchronous HTTP/1.1 client for lowart's own background calls (ComfyUI
// backends, completion webhooks): one exchange per connection, plain or TLS (system
// trust store, SNI, host-name check), bounded by a timeout. Runs on the io_context it is
// given (the runtime's background io thread); the callback runs there too. No Beast or
// Asio in this header.

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace lowart::net {

struct http_target {
  bool tls = false;
  std::string host;
  std::uint16_t port = 80;
  std::string path = "/"; ///< path and query
};

/// Splits "http(s)://host[:port]/path?query"; false when it is not such a URL.
bool parse_url(std::string_view url, http_target& out);

struct http_exchange {
  std::string method = "GET";
  http_target target;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::chrono::milliseconds timeout{10'000}; ///< the whole exchange
  std::size_t max_body = 256 * 1024 * 1024;
};

struct http_reply {
  bool ok = false;   ///< an HTTP answer arrived (of any status)
  std::string error; ///< why not: "connection refused", "timed out", ...
  int status = 0;
  std::string content_type;
  std::string body;
};

void http_fetch(boost::asio::io_context& ioc, http_exchange exchange, std::function<void(http_reply)> done);

} // namespace lowart::net
