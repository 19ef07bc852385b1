#pragma once
// The clocks lowart reads, in the units its records and windows use.

#include <chrono>
#include <cstdint>

namespace lowart::clock {

/// Wall-clock unix seconds (keys' created_at / expires_at, admin records).
inline std::int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

/// Wall-clock unix milliseconds (usage and audit timestamps, budget periods).
inline std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// Monotonic seconds (breaker windows: immune to wall-clock steps).
inline std::int64_t steady_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

} // namespace lowart::clock
