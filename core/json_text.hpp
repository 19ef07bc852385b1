#pragma once
// Small, allocation-light helpers for JSON text that lowart writes or edits in place.
// Validation and reading use simdjson; these helpers only escape strings and locate
// top-level members of an object that is already known to be valid JSON.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lowart::json {

/// Appends `text` as a JSON string literal (quotes included, control characters and
/// quotes escaped). Invalid UTF-8 is passed through unchanged.
void append_quoted(std::string& out, std::string_view text);

/// Returns `text` as a JSON string literal.
std::string quoted(std::string_view text);

/// Where a member's value sits in the document: [begin, end) byte offsets.
struct span {
  std::size_t begin = 0;
  std::size_t end = 0;
};

/// Finds the value of the top-level member `key` of the JSON object `doc`. `doc` must
/// be valid JSON (validate first); keys containing escapes are compared literally.
std::optional<span> find_member(std::string_view doc, std::string_view key);

/// Replaces the value of top-level member `key` with `raw_value` (already JSON), or
/// inserts `"key":raw_value` as the first member when absent. `doc` must be a valid
/// JSON object.
void set_member(std::string& doc, std::string_view key, std::string_view raw_value);

} // namespace lowart::json

namespace lowart::json {

/// Builds one JSON object by appending members; values are escaped as needed.
class object_writer {
public:
  object_writer() { out_ = "{"; }
  object_writer& str(std::string_view key, std::string_view value) {
    name(key);
    append_quoted(out_, value);
    return *this;
  }
  /// A string, or null when empty.
  object_writer& str_or_null(std::string_view key, std::string_view value) {
    return value.empty() ? raw(key, "null") : str(key, value);
  }
  object_writer& num(std::string_view key, long long value) {
    name(key);
    out_ += std::to_string(value);
    return *this;
  }
  object_writer& real(std::string_view key, double value);
  object_writer& boolean(std::string_view key, bool value) { return raw(key, value ? "true" : "false"); }
  /// Already-encoded JSON (object, array, number, null).
  object_writer& raw(std::string_view key, std::string_view json_value) {
    name(key);
    out_ += json_value;
    return *this;
  }
  std::string done() {
    out_ += '}';
    return std::move(out_);
  }

private:
  void name(std::string_view key) {
    if (out_.size() > 1) out_ += ',';
    append_quoted(out_, key);
    out_ += ':';
  }
  std::string out_;
};

/// Builds one JSON array by appending already-encoded elements.
class array_writer {
public:
  array_writer() : out_("[") {}
  void add(std::string_view encoded) {
    if (out_.size() > 1) out_ += ',';
    out_ += encoded;
  }
  bool empty() const { return out_.size() == 1; }
  std::string done() {
    out_ += ']';
    return std::move(out_);
  }

private:
  std::string out_;
};

/// `[a,b,...]` from already-encoded elements.
std::string array(const std::vector<std::string>& encoded);
/// `["a","b"]` from plain strings.
std::string string_array(const std::vector<std::string>& items);

} // namespace lowart::json
