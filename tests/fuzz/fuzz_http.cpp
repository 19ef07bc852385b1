// libFuzzer target: the HTTP request path up to routing. Arbitrary bytes go through
// Beast's request parser with lowart's limits (16 KiB head, 64 KiB body here), split
// into reads of 1-32 bytes as a socket would deliver them; each complete request is
// routed and its credential read exactly as the session does (net/routing.hpp), and a
// JSON body for a model route goes through the request translators.
#include "net/routing.hpp"
#include "net/translate.hpp"

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <cstdint>
#include <cstdlib>
#include <optional>

namespace http = boost::beast::http;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::size_t piece = 1 + data[0] % 32;
  std::optional<http::request_parser<http::string_body>> parser;
  auto fresh = [&] {
    parser.emplace();
    parser->header_limit(16 * 1024);
    parser->body_limit(64 * 1024);
    parser->eager(true);
  };
  fresh();
  std::string pending;
  for (std::size_t at = 0; at < in.size(); at += piece) {
    pending.append(in.substr(at, piece));
    while (!pending.empty()) {
      boost::beast::error_code ec;
      auto used = parser->put(boost::asio::buffer(pending.data(), pending.size()), ec);
      pending.erase(0, used);
      if (ec == http::error::need_more) break;
      if (ec) return 0; // lowart answers 400/413/431 and closes
      if (!parser->is_done()) {
        if (used == 0) break;
        continue;
      }
      auto req = parser->release();
      auto path = lowart::net::strip_query(req.target());
      auto info = lowart::net::route_of(path);
      if (info.route.empty()) std::abort();
      auto auth = req.find(http::field::authorization);
      auto key = lowart::net::presented_key(auth != req.end(), auth != req.end() ? std::string_view(auth->value()) : "",
                                            req["x-api-key"]);
      // The key is the bearer token or the x-api-key value, never anything else.
      if (!key.empty()) {
        bool from_auth = auth != req.end() && std::string_view(auth->value()).ends_with(key);
        bool from_x = req["x-api-key"] == key;
        if (!from_auth && !from_x) std::abort();
      }
      if (info.route == "chat") (void)lowart::net::openai_request_to_anthropic(req.body());
      if (info.route == "messages") (void)lowart::net::anthropic_request_to_openai(req.body(), true);
      if (!req.keep_alive()) return 0;
      fresh();
    }
  }
  return 0;
}
