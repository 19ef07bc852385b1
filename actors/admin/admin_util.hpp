#pragma once
// Helpers the admin API's handlers share (admin_*.cpp, mcp_store.cpp): error
// answers, a typed reader of JSON request bodies, query strings and path segments, and
// the audit log row. Internal to lowart_actors.

#include "actors/admin/admin_service.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "storage/database.hpp"

#include <simdjson.h>

#include <charconv>
#include <cstdlib>
#include <ctime>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lowart::actors::admin_util {

inline admin_result error(int status, std::string_view type, std::string_view message, std::string_view param = {}) {
  json::object_writer inner;
  inner.str("message", message).str("type", type);
  if (!param.empty()) inner.str("param", param);
  json::object_writer outer;
  outer.raw("error", inner.done());
  return {status, outer.done()};
}

inline admin_result bad_field(std::string_view field, std::string_view message) {
  return error(400, "invalid_request_error", message, field);
}

inline admin_result not_found(std::string_view what) {
  return error(404, "not_found_error", what);
}

inline std::string list_json(const std::vector<std::string>& items) {
  return "{\"object\":\"list\",\"data\":" + json::array(items) + "}";
}

/// Appends one row to the audit log.
inline void write_audit(storage::database& db, std::string_view actor, std::string_view action, std::string_view target,
                        std::string_view detail) {
  db.prepare("INSERT INTO audit_log(ts_ms, actor, action, target, detail) VALUES (?,?,?,?,?)")
      .bind(1, clock::unix_ms())
      .bind(2, actor)
      .bind(3, action)
      .bind(4, target)
      .bind(5, detail)
      .step();
}

/// One optional member of a request body: absent, null, or a value.
template <class T> struct field {
  bool present = false;
  bool null = false;
  T value{};
  bool has() const { return present && !null; }
};

/// Reads typed members of a JSON object body; the first problem names its field.
class body_reader {
public:
  /// Parses with its own parser: elements stay valid while other documents are read.
  bool parse(const std::string& text) {
    padded_ = simdjson::padded_string(text);
    simdjson::dom::element doc;
    if (parser_.parse(padded_).get(doc) != simdjson::SUCCESS) {
      fail("body", "the request body is not valid JSON");
      return false;
    }
    if (doc.get_object().get(obj_) != simdjson::SUCCESS) {
      fail("body", "the request body must be a JSON object");
      return false;
    }
    return true;
  }

  /// The audit detail of an update: {"fields":[the body's member names]} (names only:
  /// values may be secrets).
  std::string fields_detail() const {
    std::vector<std::string> names;
    for (auto member : obj_)
      names.emplace_back(member.key);
    return "{\"fields\":" + json::string_array(names) + "}";
  }

  /// The first member whose key is not in `allowed` ("" when there is none).
  std::string unknown_member(std::initializer_list<std::string_view> allowed) const {
    for (auto member : obj_) {
      bool known = false;
      for (auto a : allowed)
        known = known || member.key == a;
      if (!known) return std::string(member.key);
    }
    return {};
  }

  field<std::string> text(const char* key, std::size_t max = 200, bool allow_empty = false) {
    field<std::string> f;
    auto v = lookup(key, f);
    if (!v) return f;
    std::string_view s;
    if (v->get_string().get(s) != simdjson::SUCCESS || (!allow_empty && s.empty()) || s.size() > max)
      fail(key, std::string(key) + " must be a string of " + (allow_empty ? "0" : "1") + " to " + std::to_string(max) +
                    " characters");
    else
      f.value = std::string(s);
    return f;
  }

  field<std::int64_t> integer(const char* key, std::int64_t min = 0) {
    field<std::int64_t> f;
    auto v = lookup(key, f);
    if (!v) return f;
    if (v->get_int64().get(f.value) != simdjson::SUCCESS || f.value < min)
      fail(key, std::string(key) + " must be an integer of at least " + std::to_string(min));
    return f;
  }

  field<double> number(const char* key) {
    field<double> f;
    auto v = lookup(key, f);
    if (!v) return f;
    if (v->get_double().get(f.value) != simdjson::SUCCESS || f.value < 0)
      fail(key, std::string(key) + " must be a non-negative number");
    return f;
  }

  field<bool> flag(const char* key) {
    field<bool> f;
    auto v = lookup(key, f);
    if (!v) return f;
    if (v->get_bool().get(f.value) != simdjson::SUCCESS) fail(key, std::string(key) + " must be true or false");
    return f;
  }

  field<std::vector<std::string>> strings(const char* key) {
    field<std::vector<std::string>> f;
    auto v = lookup(key, f);
    if (!v) return f;
    simdjson::dom::array arr;
    if (v->get_array().get(arr) != simdjson::SUCCESS) {
      fail(key, std::string(key) + " must be an array of strings");
      return f;
    }
    for (auto item : arr) {
      std::string_view s;
      if (item.get_string().get(s) != simdjson::SUCCESS || s.empty()) {
        fail(key, std::string(key) + " must be an array of non-empty strings");
        return f;
      }
      f.value.emplace_back(s);
    }
    return f;
  }

  /// The raw element (for nested arrays of objects).
  std::optional<simdjson::dom::element> element(const char* key) {
    simdjson::dom::element e;
    if (obj_[key].get(e) != simdjson::SUCCESS) return std::nullopt;
    return e;
  }

  void fail(std::string_view field_name, std::string message) {
    if (error_field.empty()) {
      error_field = std::string(field_name);
      error_message = std::move(message);
    }
  }
  bool ok() const { return error_field.empty(); }
  admin_result result() const { return bad_field(error_field, error_message); }

  std::string error_field;
  std::string error_message;

private:
  template <class T> std::optional<simdjson::dom::element> lookup(const char* key, field<T>& f) {
    simdjson::dom::element e;
    if (obj_[key].get(e) != simdjson::SUCCESS) return std::nullopt;
    f.present = true;
    if (e.is_null()) {
      f.null = true;
      return std::nullopt;
    }
    return e;
  }

  simdjson::dom::parser parser_;
  simdjson::padded_string padded_;
  simdjson::dom::object obj_;
};

/// A report's time bound: unix seconds or YYYY-MM-DD (UTC midnight).
inline bool parse_time_bound(const std::string& v, std::int64_t& out) {
  if (v.size() == 10 && v[4] == '-' && v[7] == '-') {
    std::tm tm{};
    char* end = nullptr;
    tm.tm_year = static_cast<int>(std::strtol(v.c_str(), &end, 10)) - 1900;
    tm.tm_mon = static_cast<int>(std::strtol(v.c_str() + 5, &end, 10)) - 1;
    tm.tm_mday = static_cast<int>(std::strtol(v.c_str() + 8, &end, 10));
    if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_year < 0) return false;
    out = static_cast<std::int64_t>(timegm(&tm));
    return true;
  }
  char* end = nullptr;
  out = std::strtoll(v.c_str(), &end, 10);
  return end && *end == 0 && !v.empty();
}

/// A status filter: a code (429) or a class (4xx) -> the inclusive range.
inline bool parse_status_filter(const std::string& v, std::int64_t& lo, std::int64_t& hi) {
  char* end = nullptr;
  if (v.size() == 3 && v[0] >= '1' && v[0] <= '5' && (v.substr(1) == "xx" || v.substr(1) == "XX")) {
    lo = (v[0] - '0') * 100;
    hi = lo + 99;
    return true;
  }
  if (auto n = std::strtoll(v.c_str(), &end, 10); end && *end == 0 && n >= 100 && n <= 599) {
    lo = hi = n;
    return true;
  }
  return false;
}

/// A number for CSV: the shortest text that reads back as the same double (std::to_string
/// keeps six decimals, so a cost under a millionth printed as 0).
inline std::string real_text(double v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc{} ? std::string(buf, end) : std::to_string(v);
}

/// One CSV cell (RFC 4180: quoted when it holds a comma, quote or line break).
inline std::string csv_cell(std::string_view cell) {
  if (cell.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(cell);
  std::string q = "\"";
  for (char c : cell) {
    if (c == '"') q += '"';
    q += c;
  }
  return q + "\"";
}

inline std::map<std::string, std::string> parse_query(std::string_view q) {
  std::map<std::string, std::string> out;
  auto decode = [](std::string_view s) {
    std::string r;
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '+')
        r += ' ';
      else if (s[i] == '%' && i + 2 < s.size()) {
        auto hex = std::string(s.substr(i + 1, 2));
        char* end = nullptr;
        long v = std::strtol(hex.c_str(), &end, 16);
        if (end && *end == 0 && hex.size() == 2) {
          r += static_cast<char>(v);
          i += 2;
        } else {
          r += s[i];
        }
      } else
        r += s[i];
    }
    return r;
  };
  while (!q.empty()) {
    auto amp = q.find('&');
    auto part = q.substr(0, amp);
    auto eq = part.find('=');
    if (eq != std::string_view::npos)
      out[decode(part.substr(0, eq))] = decode(part.substr(eq + 1));
    else if (!part.empty())
      out[decode(part)] = "";
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return out;
}

inline std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> parts;
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    auto slash = path.find('/');
    parts.emplace_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash);
  }
  return parts;
}

} // namespace lowart::actors::admin_util
