#include "actors/state.hpp"

namespace lowart {

bool parse_upstream(const std::string& url, upstream_target& out) {
  std::string_view rest = url;
  if (rest.rfind("https://", 0) == 0) {
    out.tls = true;
    rest.remove_prefix(8);
  } else if (rest.rfind("http://", 0) == 0) {
    out.tls = false;
    rest.remove_prefix(7);
  } else {
    return false;
  }
  auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  out.base_path = slash == std::string_view::npos ? "" : std::string(rest.substr(slash));
  while (!out.base_path.empty() && out.base_path.back() == '/')
    out.base_path.pop_back();
  if (authority.empty()) return false;
  std::uint16_t default_port = out.tls ? 443 : 80;
  out.port = default_port;
  std::string_view host = authority;
  if (authority.front() == '[') { // [v6]:port
    auto close = authority.find(']');
    if (close == std::string_view::npos) return false;
    host = authority.substr(1, close - 1);
    auto tail = authority.substr(close + 1);
    if (!tail.empty()) {
      if (tail.front() != ':') return false;
      tail.remove_prefix(1);
      unsigned long p = 0;
      for (char c : tail) {
        if (c < '0' || c > '9') return false;
        p = p * 10 + static_cast<unsigned long>(c - '0');
        if (p > 65535) return false;
      }
      out.port = static_cast<std::uint16_t>(p);
    }
  } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    unsigned long p = 0;
    auto digits = authority.substr(colon + 1);
    if (digits.empty()) return false;
    for (char c : digits) {
      if (c < '0' || c > '9') return false;
      p = p * 10 + static_cast<unsigned long>(c - '0');
      if (p > 65535) return false;
    }
    out.port = static_cast<std::uint16_t>(p);
  }
  if (host.empty() || out.port == 0) return false;
  out.host = std::string(host);
  bool v6 = out.host.find(':') != std::string::npos;
  std::string shown = v6 ? "[" + out.host + "]" : out.host;
  out.host_header = out.port == default_port ? shown : shown + ":" + std::to_string(out.port);
  out.pool_key = (out.tls ? "https://" : "http://") + shown + ":" + std::to_string(out.port);
  return true;
}

} // namespace lowart
