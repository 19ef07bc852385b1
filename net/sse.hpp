#pragma once
// Incremental parser for text/event-stream (WHATWG "server-sent events").
//
// Bytes arrive in arbitrary pieces: an event, a line, a CRLF pair or a UTF-8 sequence
// may be split anywhere. The parser keeps the unfinished line between calls and hands
// out each event when its terminating blank line arrives. Pure C++, no I/O.

#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>

namespace lowart::net {

struct sse_event {
  std::string event; ///< "event:" field; empty means "message"
  std::string data;  ///< "data:" lines joined with '\n'
  std::string id;    ///< "id:" field, if any
  bool has_data = false;

  void clear() {
    event.clear();
    data.clear();
    id.clear();
    has_data = false;
  }
};

class sse_parser {
public:
  /// Limits what one unfinished line may grow to; beyond it `feed` reports an error
  /// instead of buffering without bound.
  explicit sse_parser(std::size_t max_line = 4 * 1024 * 1024) : max_line_(max_line) {}

  /// Consumes `bytes`, calling `on_event(const sse_event&)` for each completed event.
  /// Returns false when a line exceeds the limit (the stream should be abandoned).
  template <class OnEvent> bool feed(std::string_view bytes, OnEvent&& on_event) {
    std::size_t i = 0;
    while (i < bytes.size()) {
      if (skip_lf_) {
        skip_lf_ = false;
        if (bytes[i] == '\n') {
          ++i;
          continue;
        }
      }
      auto end = find_line_end(bytes, i);
      if (end == std::string_view::npos) {
        line_.append(bytes.substr(i));
        return line_.size() <= max_line_;
      }
      std::string_view line;
      if (line_.empty()) {
        line = bytes.substr(i, end - i);
      } else {
        line_.append(bytes.substr(i, end - i));
        line = line_;
      }
      if (bytes[end] == '\r') skip_lf_ = true; // a following '\n' belongs to this line ending
      bool dispatch = line.empty();
      if (!dispatch) take_line(line);
      line_.clear();
      i = end + 1;
      if (dispatch && pending_) {
        on_event(const_cast<const sse_event&>(current_));
        current_.clear();
        pending_ = false;
      }
    }
    return true;
  }

  /// Bytes held back in an unfinished line.
  std::size_t buffered() const { return line_.size(); }

private:
  void take_line(std::string_view line);

  /// First '\r' or '\n' at or after `from`. Two memchr scans: string_view's
  /// find_first_of calls memchr once per input byte, which dominated stream relays.
  static std::size_t find_line_end(std::string_view bytes, std::size_t from) {
    const char* begin = bytes.data() + from;
    std::size_t n = bytes.size() - from;
    const void* lf = std::memchr(begin, '\n', n);
    std::size_t limit = lf ? static_cast<std::size_t>(static_cast<const char*>(lf) - begin) : n;
    if (const void* cr = std::memchr(begin, '\r', limit))
      return from + static_cast<std::size_t>(static_cast<const char*>(cr) - begin);
    return lf ? from + limit : std::string_view::npos;
  }

  std::size_t max_line_;
  std::string line_;
  sse_event current_;
  bool pending_ = false; ///< a field was seen since the last dispatch
  bool skip_lf_ = false;
};

/// Appends one event in wire form ("event: x\ndata: ...\n\n"), multi-line data split
/// into several data lines.
void append_sse_event(std::string& out, const sse_event& ev);

} // namespace lowart::net
