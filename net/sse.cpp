#include "net/sse.hpp"

namespace lowart::net {

void sse_parser::take_line(std::string_view line) {
  if (line.front() == ':') return; // comment
  std::string_view field = line;
  std::string_view value;
  if (auto colon = line.find(':'); colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    if (current_.has_data) current_.data += '\n';
    current_.data.append(value);
    current_.has_data = true;
    pending_ = true;
  } else if (field == "event") {
    current_.event.assign(value);
    pending_ = true;
  } else if (field == "id") {
    current_.id.assign(value);
    pending_ = true;
  }
  // "retry" and unknown fields are ignored, as the specification says.
}

void append_sse_event(std::string& out, const sse_event& ev) {
  if (!ev.event.empty()) {
    out += "event: ";
    out += ev.event;
    out += '\n';
  }
  if (!ev.id.empty()) {
    out += "id: ";
    out += ev.id;
    out += '\n';
  }
  std::string_view data = ev.data;
  for (;;) {
    auto nl = data.find('\n');
    out += "data: ";
    out.append(data.substr(0, nl));
    out += '\n';
    if (nl == std::string_view::npos) break;
    data.remove_prefix(nl + 1);
  }
  out += '\n';
}

} // namespace lowart::net
