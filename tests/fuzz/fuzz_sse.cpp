// libFuzzer target: the SSE parser, fed the input in pieces whose sizes come from the
// input itself, must never crash, never report more data than it was given, and must
// yield the same events however the bytes are split.
#include "net/sse.hpp"

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view all(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto run = [&](std::size_t piece) {
    lowart::net::sse_parser parser(4096);
    std::vector<std::string> events;
    for (std::size_t at = 0; at < all.size(); at += piece) {
      bool ok = parser.feed(all.substr(at, piece), [&](const lowart::net::sse_event& ev) {
        events.push_back(ev.event + '\n' + ev.data + '\n' + ev.id);
      });
      if (!ok) {
        events.push_back("<over limit>");
        break;
      }
    }
    return events;
  };
  auto whole = run(all.size() ? all.size() : 1);
  auto split = run(1 + data[0] % 17);
  // A line over the limit may be noticed at a different event depending on the split;
  // without it, the events must be identical.
  bool limited = !whole.empty() && whole.back() == "<over limit>";
  bool limited_split = !split.empty() && split.back() == "<over limit>";
  if (!limited && !limited_split && whole != split) std::abort();
  return 0;
}
