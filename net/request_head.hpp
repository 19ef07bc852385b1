#pragma once
// What a downstream request is, decided from its bytes and head alone, before any key,
// actor or upstream is involved: the parser with the server's limits, feeding it what the
// socket delivered, what a read that failed is answered with, and the request's id, route
// and verdict from the route table (404 and 405 come before authentication).
//
// net/session.cpp runs these for every request; tests/fuzz/fuzz_http.cpp runs the same
// functions on arbitrary bytes, so the fuzzer exercises the session's own code.

#include "core/request_id.hpp"
#include "net/errors.hpp"
#include "net/head_arena.hpp"
#include "net/routing.hpp"

#include <boost/asio/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lowart::net {

namespace asio = boost::asio; // as in net/session.hpp
namespace beast = boost::beast;
namespace http = beast::http;

/// A fresh parser for the next request, with the server's limits; eager: the body is
/// parsed as it arrives, with the head.
/// `arena`: where the head is kept (head_arena.hpp); the heap without one.
inline void prepare_parser(std::optional<request_parser>& parser, std::size_t max_header_bytes,
                           std::uint64_t max_body_bytes, head_arena* arena = nullptr) {
  parser.reset(); // the last request's head is gone before its arena is reused
  if (arena) {
    arena->reset();
    parser.emplace(http::request_header<request_fields>(request_fields(head_allocator(arena))));
  } else {
    parser.emplace(
        http::request_header<request_fields>(request_fields(head_allocator(std::pmr::new_delete_resource()))));
  }
  parser->header_limit(static_cast<std::uint32_t>(max_header_bytes));
  parser->body_limit(max_body_bytes);
  parser->eager(true);
}

/// Feeds the parser what `buffer` holds, consuming what it used, until the request is
/// complete, more bytes are needed (both: no error) or the bytes are no valid request.
inline beast::error_code parse_buffered(request_parser& parser, beast::flat_buffer& buffer) {
  beast::error_code ec;
  while (!parser.is_done() && buffer.size() > 0) {
    auto used = parser.put(buffer.data(), ec);
    buffer.consume(used);
    if (ec == http::error::need_more) return {};
    if (ec || used == 0) break;
  }
  return ec;
}

/// The same for bytes read elsewhere (the worker's scratch): `bytes` is left holding what
/// the parser did not use (a request still arriving, or the next one pipelined).
inline beast::error_code parse_bytes(request_parser& parser, std::string_view& bytes) {
  beast::error_code ec;
  while (!parser.is_done() && !bytes.empty()) {
    auto used = parser.put(asio::const_buffer(bytes.data(), bytes.size()), ec);
    bytes.remove_prefix(used);
    if (ec == http::error::need_more) return {};
    if (ec || used == 0) break;
  }
  return ec;
}

/// The answer to a read that ended with an error: a refusal (then the connection
/// closes); `names_request` when the head was read and the refusal may name its method
/// and path (the limits). No refusal: the peer left or timed out, close silently.
struct read_refusal {
  error_kind kind = error_kind::bad_request;
  std::string message;
  bool names_request = false;
};

inline std::optional<read_refusal> refusal_for(beast::error_code ec, std::uint64_t max_body_bytes) {
  if (ec == http::error::header_limit)
    return read_refusal{error_kind::headers_too_large, "request headers are too large", true};
  if (ec == http::error::bad_content_length)
    return read_refusal{error_kind::bad_request, "Content-Length is not a valid length", true};
  if (ec == http::error::body_limit)
    return read_refusal{error_kind::payload_too_large,
                        "request body is larger than " + std::to_string(max_body_bytes) + " bytes", true};
  if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == beast::error::timeout ||
      ec == asio::error::connection_reset || ec == asio::error::operation_aborted)
    return std::nullopt;
  // A malformed request line or head: answered 400 once.
  return read_refusal{error_kind::bad_request, "malformed HTTP request: " + ec.message(), false};
}

/// The credential a client presents (routing.hpp): a bearer token or x-api-key.
inline std::string_view presented_key(const downstream_request& req) {
  auto auth = req.find(http::field::authorization);
  auto x_api_key = req.find("x-api-key");
  return presented_key(auth != req.end(), auth != req.end() ? std::string_view(auth->value()) : std::string_view{},
                       x_api_key != req.end() ? std::string_view(x_api_key->value()) : std::string_view{});
}

/// What the route table says of a request, before anything else is decided.
enum class head_verdict {
  serve,              ///< a route serves this method at this path
  not_found,          ///< no route serves the path: 404
  method_not_allowed, ///< a route serves the path, not with this method: 405
};

struct request_head {
  std::string request_id; ///< the client's x-request-id when acceptable, else a new one
  bool keep_alive = true;
  std::string method;
  std::string path;                   ///< the target without its query
  const route_entry* entry = nullptr; ///< the route serving the path, if any
  route_info info;                    ///< metrics label and error envelope
  std::string rpc_id = "null";        ///< JSON-RPC routes: the request's id as JSON text
  head_verdict verdict = head_verdict::serve;
};

inline request_head read_head(const downstream_request& req) {
  request_head head;
  if (auto it = req.find("x-request-id"); it != req.end() && acceptable_request_id(it->value()))
    head.request_id = std::string(it->value());
  else
    head.request_id = new_request_id();
  head.keep_alive = req.keep_alive();
  head.method = std::string(req.method_string());
  head.path = std::string(strip_query(req.target()));
  head.entry = find_route(head.path);
  head.info = head.entry ? route_info{head.entry->label, head.entry->format} : unlisted_route(head.path);
  if (head.info.format == api_format::jsonrpc) head.rpc_id = jsonrpc_id(req.body());
  if (!head.entry)
    head.verdict = head_verdict::not_found;
  else if (!(head.entry->methods & method_bit_of(head.method)))
    head.verdict = head_verdict::method_not_allowed;
  return head;
}

} // namespace lowart::net
