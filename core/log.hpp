#pragma once
// Structured logging: one JSON object per line on stderr.
//
// Lines are formatted by the caller's thread straight into that thread's own buffer (no
// allocation per line, no lock shared between threads) and written in batches by one
// background thread, so logging from an Asio thread or a CAF worker never blocks on
// the terminal or a pipe; lines come out in the order they were written, across threads.
// `log::flush()` writes everything out (shutdown, tests).

#include <initializer_list>
#include <string>
#include <string_view>

namespace lowart::log {

enum class level { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

/// Parses "debug", "info", "warn", "error", "off"; anything else gives `info`.
level parse_level(std::string_view text);
void set_level(level lvl);
level current_level();
inline bool enabled(level lvl) {
  return lvl >= current_level();
}

/// One extra field of a log line. Numbers are written unquoted.
struct field {
  std::string_view key;
  std::string_view text;
  long long number = 0;
  bool is_number = false;
  field(std::string_view k, std::string_view v) : key(k), text(v) {}
  field(std::string_view k, const char* v) : key(k), text(v) {}
  field(std::string_view k, const std::string& v) : key(k), text(v) {}
  template <class Int>
  requires std::is_integral_v<Int> field(std::string_view k, Int v)
      : key(k), number(static_cast<long long>(v)), is_number(true) {}
};

/// Writes {"ts":...,"level":...,"msg":...,<fields>} if `lvl` is enabled.
void write(level lvl, std::string_view msg, std::initializer_list<field> fields = {});

inline void debug(std::string_view m, std::initializer_list<field> f = {}) {
  write(level::debug, m, f);
}
inline void info(std::string_view m, std::initializer_list<field> f = {}) {
  write(level::info, m, f);
}
inline void warn(std::string_view m, std::initializer_list<field> f = {}) {
  write(level::warn, m, f);
}
inline void error(std::string_view m, std::initializer_list<field> f = {}) {
  write(level::error, m, f);
}

/// Writes out everything buffered so far; returns when it is on stderr.
void flush();

} // namespace lowart::log
