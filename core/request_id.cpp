#include "core/request_id.hpp"

#include "core/secrets.hpp"

#include <atomic>
#include <cstdio>

namespace lowart {

std::string new_request_id() {
  static const std::string process_part = secrets::random_hex(4);
  static std::atomic<unsigned long long> counter{0};
  auto n = counter.fetch_add(1, std::memory_order_relaxed);
  char tail[16];
  std::snprintf(tail, sizeof tail, "%012llx", n & 0xFFFFFFFFFFFFull);
  std::string id;
  id.reserve(4 + 8 + 12);
  id += "req_";
  id += process_part;
  id += tail;
  return id;
}

bool acceptable_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

} // namespace lowart
