// libFuzzer target: the session's request path up to authentication, run through the
// session's own code (net/request_head.hpp, which net/session.cpp calls for every
// request). Arbitrary bytes arrive in reads of 1-32 bytes as a socket would deliver them
// and are parsed with lowart's default limits (16 KiB head; the body limit lowered to
// 64 KiB here); a read that fails gets the session's refusal; each complete request gets
// the session's id, route and verdict, and its credential read; a JSON body for a model
// route goes through the request translators. Checked: what the session relies on, and
// that the same bytes read whole give the same requests and refusal.
#include "net/request_head.hpp"
#include "net/translate.hpp"

#include <simdjson.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace net = lowart::net;
namespace http = boost::beast::http;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void check_request(const net::downstream_request& req) {
  auto head = net::read_head(req);
  // The path is the target up to its query; the verdict is the route table's.
  check(head.path.find('?') == std::string::npos && std::string_view(req.target()).starts_with(head.path));
  check(!head.info.route.empty());
  check((head.entry == nullptr) == (head.verdict == net::head_verdict::not_found));
  if (head.entry) {
    check(head.info.route == head.entry->label && head.info.format == head.entry->format);
    bool allowed = (head.entry->methods & net::method_bit_of(head.method)) != 0;
    check(allowed == (head.verdict == net::head_verdict::serve));
  }
  // Echoed in every answer's x-request-id and logged: the client's only when acceptable.
  check(lowart::acceptable_request_id(head.request_id));
  if (auto it = req.find("x-request-id"); it != req.end() && lowart::acceptable_request_id(it->value()))
    check(head.request_id == it->value());
  check(head.keep_alive == req.keep_alive());
  // JSON-RPC refusals echo the id: it must be JSON text.
  if (head.info.format == net::api_format::jsonrpc) {
    thread_local simdjson::dom::parser parser;
    simdjson::dom::element id;
    check(parser.parse(head.rpc_id).get(id) == simdjson::SUCCESS);
  } else {
    check(head.rpc_id == "null");
  }
  // The key is the bearer token or the x-api-key value, never anything else.
  auto key = net::presented_key(req);
  if (!key.empty()) {
    auto auth = req.find(http::field::authorization);
    bool from_auth = auth != req.end() && std::string_view(auth->value()).ends_with(key);
    bool from_x = req["x-api-key"] == key;
    check(from_auth || from_x);
  }
  if (head.verdict != net::head_verdict::serve) return;
  if (head.info.route == "chat") (void)net::openai_request_to_anthropic(req.body());
  if (head.info.route == "messages") (void)net::anthropic_request_to_openai(req.body(), true);
}

/// What the session does with a connection's bytes: the requests it handles, then the
/// refusal it ends with, or it waits for more bytes (or closes after Connection: close).
struct transcript {
  std::vector<std::string> requests;
  std::optional<net::error_kind> refused;
};

/// Runs the session's read loop over `in`, delivered `piece` bytes per read.
transcript serve(std::string_view in, std::size_t piece) {
  constexpr std::size_t max_header = 16 * 1024, max_body = 64 * 1024;
  transcript out;
  net::head_arena arena; // as the session's: the head's fields live in it
  std::optional<net::request_parser> parser;
  net::prepare_parser(parser, max_header, max_body, &arena);
  boost::beast::flat_buffer buffer;
  bool waiting = true; // between requests: the session reads into its worker's scratch
  for (std::size_t at = 0; at < in.size(); at += piece) {
    auto chunk = in.substr(at, piece);
    boost::beast::error_code ec;
    if (waiting && buffer.size() == 0) {
      // As session::on_readable: parsed where it was read, only the rest kept.
      std::string_view bytes = chunk;
      ec = net::parse_bytes(*parser, bytes);
      buffer.commit(boost::asio::buffer_copy(buffer.prepare(bytes.size()), boost::asio::buffer(bytes)));
    } else {
      auto room = buffer.prepare(chunk.size());
      std::memcpy(room.data(), chunk.data(), chunk.size());
      buffer.commit(chunk.size());
      ec = net::parse_buffered(*parser, buffer);
    }
    waiting = false;
    for (;;) {
      if (ec) {
        // A failed read is answered (400/413/431) and the connection closed; only a
        // peer that went away is closed silently, which parsing bytes cannot cause.
        auto refusal = net::refusal_for(ec, max_body);
        check(refusal.has_value() && !refusal->message.empty());
        check(refusal->kind == net::error_kind::bad_request || refusal->kind == net::error_kind::headers_too_large ||
              refusal->kind == net::error_kind::payload_too_large);
        out.refused = refusal->kind;
        return out;
      }
      if (!parser->is_done()) break; // the session waits for more bytes
      bool keep_alive = false;
      {
        auto req = parser->release(); // gone before the arena is reused, as in the session
        check_request(req);
        out.requests.push_back(std::string(req.method_string()) + " " + std::string(req.target()) + " " +
                               std::to_string(req.body().size()));
        keep_alive = req.keep_alive();
      }
      if (!keep_alive) return out;
      net::prepare_parser(parser, max_header, max_body, &arena); // the next (pipelined) request
      if (buffer.size() == 0) {
        waiting = true;
        break;
      }
      ec = net::parse_buffered(*parser, buffer);
    }
  }
  return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  // How the bytes are split into reads must not change what the session does. (Only
  // where the bytes end may differ: a partial line that is already wrong is refused when
  // it arrives at once, and waits for its end when it trickles in.)
  auto pieces = serve(in, 1 + data[0] % 32);
  auto whole = serve(in, in.size() + 1);
  check(pieces.requests == whole.requests);
  if (pieces.refused && whole.refused) check(*pieces.refused == *whole.refused);
  return 0;
}
