#pragma once
// MCP's stdio framing, kept free of I/O so it can be tested and fuzzed: a byte stream
// split into lines (one JSON-RPC 2.0 message each), and what one line is.

#include <simdjson.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace lowart::actors {

/// Splits bytes into lines ('\n', an optional '\r' before it dropped). A line longer
/// than `max_line` is cut there, not buffered without bound.
class line_splitter {
public:
  explicit line_splitter(std::size_t max_line = 16 * 1024 * 1024) : max_line_(max_line) {}

  template <class OnLine> void feed(std::string_view data, OnLine&& on_line) {
    while (!data.empty()) {
      auto nl = data.find('\n');
      if (nl == std::string_view::npos) {
        partial_.append(data.substr(0, max_line_ - std::min(max_line_, partial_.size())));
        return;
      }
      partial_.append(data.substr(0, std::min(nl, max_line_ - std::min(max_line_, partial_.size()))));
      if (!partial_.empty() && partial_.back() == '\r') partial_.pop_back();
      on_line(std::move(partial_));
      partial_.clear();
      data.remove_prefix(nl + 1);
    }
  }
  /// The unfinished last line (at end of stream).
  std::string take_rest() { return std::exchange(partial_, {}); }

private:
  std::size_t max_line_;
  std::string partial_;
};

/// One JSON-RPC message as the client side of MCP sees it.
struct jsonrpc_message {
  enum class kind { invalid, response, request, notification } what = kind::invalid;
  bool numeric_id = false;
  std::int64_t id = 0; ///< when numeric_id (lowart's own requests use integers)
  std::string raw_id;  ///< the id as JSON text, to echo in an answer
  std::string_view method;
  simdjson::dom::element doc; ///< valid until `parser` parses again
};

/// Reads one line. `parser` owns the document the result refers to.
inline jsonrpc_message read_jsonrpc(simdjson::dom::parser& parser, std::string_view line) {
  jsonrpc_message m;
  if (line.empty() || parser.parse(line.data(), line.size(), true).get(m.doc) != simdjson::SUCCESS ||
      !m.doc.is_object())
    return m;
  bool has_method = m.doc["method"].get_string().get(m.method) == simdjson::SUCCESS;
  simdjson::dom::element id;
  bool has_id = m.doc["id"].get(id) == simdjson::SUCCESS && !id.is_null();
  if (has_id) {
    m.raw_id = simdjson::minify(id);
    m.numeric_id = id.get_int64().get(m.id) == simdjson::SUCCESS;
  }
  if (has_method)
    m.what = has_id ? jsonrpc_message::kind::request : jsonrpc_message::kind::notification;
  else if (has_id && (m.doc["result"].error() == simdjson::SUCCESS || m.doc["error"].error() == simdjson::SUCCESS))
    m.what = jsonrpc_message::kind::response;
  return m;
}

} // namespace lowart::actors
