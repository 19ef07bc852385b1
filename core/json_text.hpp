#pragma once
// Small, allocation-light helpers for JSON text that lowart writes or edits in place.
// Validation and reading use simdjson; these helpers only escape strings and locate
// top-level members of an object that is already known to be valid JSON.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

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
