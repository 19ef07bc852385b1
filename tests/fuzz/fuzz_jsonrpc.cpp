// libFuzzer target: MCP's stdio framing — arbitrary child output split into lines and
// each line read as JSON-RPC — must never crash, and a line is never longer than the cap.
#include "actors/mcp/jsonrpc.hpp"

#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  constexpr std::size_t cap = 256;
  lowart::actors::line_splitter lines(cap);
  simdjson::dom::parser parser;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::size_t piece = 1 + data[0] % 13;
  auto on_line = [&](std::string line) {
    if (line.size() > cap) std::abort();
    auto m = lowart::actors::read_jsonrpc(parser, line);
    if (m.what == lowart::actors::jsonrpc_message::kind::response && m.raw_id.empty()) std::abort();
    if (m.what == lowart::actors::jsonrpc_message::kind::request && m.method.empty() && m.raw_id.empty()) std::abort();
  };
  for (std::size_t at = 0; at < in.size(); at += piece)
    lines.feed(in.substr(at, piece), on_line);
  on_line(lines.take_rest());
  return 0;
}
