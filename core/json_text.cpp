#include "core/json_text.hpp"

#include <cstdio>

namespace lowart::json {

void append_quoted(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  std::size_t run = 0; // start of the current run of bytes that need no escape
  for (std::size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(text.data() + run, i - run);
    run = i + 1;
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    default:
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 0xF];
    }
  }
  out.append(text.data() + run, text.size() - run);
  out += '"';
}

std::string quoted(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  append_quoted(out, text);
  return out;
}

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

std::size_t skip_space(std::string_view d, std::size_t i) {
  while (i < d.size() && is_space(d[i]))
    ++i;
  return i;
}

/// `i` at an opening quote; returns the index just past the closing quote.
std::size_t skip_string(std::string_view d, std::size_t i) {
  for (++i; i < d.size(); ++i) {
    if (d[i] == '\\')
      ++i;
    else if (d[i] == '"')
      return i + 1;
  }
  return d.size();
}

/// `i` at the first byte of a value; returns the index just past it.
std::size_t skip_value(std::string_view d, std::size_t i) {
  if (i >= d.size()) return i;
  if (d[i] == '"') return skip_string(d, i);
  if (d[i] == '{' || d[i] == '[') {
    int depth = 0;
    while (i < d.size()) {
      char c = d[i];
      if (c == '"') {
        i = skip_string(d, i);
        continue;
      }
      if (c == '{' || c == '[')
        ++depth;
      else if (c == '}' || c == ']') {
        if (--depth == 0) return i + 1;
      }
      ++i;
    }
    return i;
  }
  // number, true, false, null
  while (i < d.size() && d[i] != ',' && d[i] != '}' && d[i] != ']' && !is_space(d[i]))
    ++i;
  return i;
}

} // namespace

std::optional<span> find_member(std::string_view doc, std::string_view key) {
  auto i = skip_space(doc, 0);
  if (i >= doc.size() || doc[i] != '{') return std::nullopt;
  ++i;
  for (;;) {
    i = skip_space(doc, i);
    if (i >= doc.size() || doc[i] != '"') return std::nullopt;
    auto key_end = skip_string(doc, i);
    auto name = doc.substr(i + 1, key_end - i - 2);
    i = skip_space(doc, key_end);
    if (i >= doc.size() || doc[i] != ':') return std::nullopt;
    i = skip_space(doc, i + 1);
    auto value_end = skip_value(doc, i);
    if (name == key) return span{i, value_end};
    i = skip_space(doc, value_end);
    if (i >= doc.size() || doc[i] != ',') return std::nullopt;
    ++i;
  }
}

void set_member(std::string& doc, std::string_view key, std::string_view raw_value) {
  if (auto where = find_member(doc, key)) {
    doc.replace(where->begin, where->end - where->begin, raw_value);
    return;
  }
  auto open = doc.find('{');
  if (open == std::string::npos) return;
  auto after = skip_space(doc, open + 1);
  bool empty = after < doc.size() && doc[after] == '}';
  std::string member;
  member.reserve(key.size() + raw_value.size() + 4);
  append_quoted(member, key);
  member += ':';
  member += raw_value;
  if (!empty) member += ',';
  doc.insert(open + 1, member);
}

} // namespace lowart::json

namespace lowart::json {

object_writer& object_writer::real(std::string_view key, double value) {
  name(key);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", value);
  out_ += buf;
  return *this;
}

std::string array(const std::vector<std::string>& encoded) {
  std::string out = "[";
  for (std::size_t i = 0; i < encoded.size(); ++i) {
    if (i) out += ',';
    out += encoded[i];
  }
  out += ']';
  return out;
}

std::string string_array(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ',';
    append_quoted(out, items[i]);
  }
  out += ']';
  return out;
}

} // namespace lowart::json
