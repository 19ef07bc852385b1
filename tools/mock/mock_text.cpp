// lowart-mock's text helpers: word counts, hashes, the invalid-request error body, the echo that
// answers quote and the cutting of streamed text into pieces. Declared in mock_internal.hpp, used by
// the endpoints (mock_openai.cpp, mock_anthropic.cpp, mock_responses.cpp) and mock_connection.hpp.

#include "core/json_text.hpp"
#include "tools/mock/mock_internal.hpp"

#include <boost/json/serialize.hpp>

#include <bit>
#include <cstring>

namespace lowart::mock::detail {

namespace {

// ASCII whitespace: space and \t \n \v \f \r.
bool is_space(char c) {
  auto u = static_cast<unsigned char>(c);
  return u == ' ' || static_cast<unsigned>(u - '\t') < 5u;
}

constexpr std::uint64_t byte_ones = 0x0101010101010101ull;
constexpr std::uint64_t byte_high = byte_ones * 0x80;
constexpr std::uint64_t byte_low7 = byte_ones * 0x7f;

// For eight bytes at once: 0x80 in each byte of `v` that is_space, 0 elsewhere.
std::uint64_t space_bytes(std::uint64_t v) {
  const std::uint64_t is_blank = v ^ (byte_ones * ' ');
  const std::uint64_t blank = ~(((is_blank & byte_low7) + byte_low7) | is_blank | byte_low7);
  const std::uint64_t low7 = v & byte_low7; // adding below cannot carry into the next byte
  const std::uint64_t from_tab = (low7 + byte_ones * (0x80 - '\t')) & byte_high;
  const std::uint64_t past_cr = (low7 + byte_ones * (0x80 - '\r' - 1)) & byte_high;
  return blank | (from_tab & ~past_cr & ~v & byte_high);
}

} // namespace

// --- text and JSON output helpers -------------------------------------------------------------------

std::uint64_t count_words(std::string_view text) {
  static_assert(std::endian::native == std::endian::little, "count_words loads bytes little-endian");
  std::uint64_t words = 0;
  std::uint64_t carry = 0x80; // whether the byte before the current block is whitespace, as byte 0's 0x80
  std::size_t i = 0;
  for (; i + 8 <= text.size(); i += 8) {
    std::uint64_t block;
    std::memcpy(&block, text.data() + i, sizeof block);
    const std::uint64_t spaces = space_bytes(block);
    const std::uint64_t starts = ((spaces << 8) | carry) & ~spaces & byte_high;
    words += ((starts >> 7) * byte_ones) >> 56; // sums the eight 0/1 bytes (no popcnt instruction needed)
    carry = spaces >> 56;
  }
  for (bool after_space = carry != 0; i < text.size(); ++i) {
    const bool space = is_space(text[i]);
    words += after_space && !space;
    after_space = space;
  }
  return words;
}

std::uint64_t fnv1a(std::string_view text, std::uint64_t hash) {
  for (char c : text) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

void append_error_body(std::string& out, std::string_view message, protocol wire) {
  if (wire == protocol::anthropic) {
    out += R"({"type":"error","error":{"type":"invalid_request_error","message":)";
    lowart::json::append_quoted(out, message);
    out += "}}";
    return;
  }
  out += R"({"error":{"message":)";
  lowart::json::append_quoted(out, message);
  out += R"(,"type":"invalid_request_error","param":null,"code":null}})";
}

// --- request parsing ----------------------------------------------------------------------------------

void assign_echo(std::string& out, std::string_view prefix, const json::value* content) {
  // Keep one byte past the limit so the cut below can see whether it splits a UTF-8 sequence.
  const std::size_t keep = prefix.size() + max_echo_bytes + 1;
  out.assign(prefix);
  if (content) {
    for_each_text(*content, [&](std::string_view text) {
      if (out.size() < keep) out.append(text.substr(0, keep - out.size()));
    });
  }
  if (out.size() == keep) {
    std::size_t cut = keep - 1;
    while (cut > prefix.size() && (static_cast<unsigned char>(out[cut]) & 0xc0) == 0x80)
      --cut;
    out.resize(cut);
  }
}

namespace {
// A value of the JSON schema `schema` (as a model fills one in): strings are the echoed
// text, numbers the count of its words, booleans true, an object each of its properties
// (nested to `depth`), an array one item; an enum its first value.
void append_schema_value(std::string& out, const json::value* schema, std::string_view text, int depth) {
  const json::object* s = schema ? schema->if_object() : nullptr;
  if (s) {
    if (const auto* e = s->if_contains("enum"); e && e->is_array() && !e->get_array().empty()) {
      out += json::serialize(e->get_array().front());
      return;
    }
  }
  const json::string* type = s ? string_member(s, "type") : nullptr;
  std::string_view t = type ? to_view(*type) : std::string_view(s && s->contains("properties") ? "object" : "string");
  if (t == "object" && depth < 8) {
    out += '{';
    bool first = true;
    if (const auto* props = s ? s->if_contains("properties") : nullptr; props && props->is_object()) {
      for (const auto& [name, sub] : props->get_object()) {
        if (!first) out += ',';
        first = false;
        lowart::json::append_quoted(out, to_view(name));
        out += ':';
        append_schema_value(out, &sub, text, depth + 1);
      }
    }
    out += '}';
  } else if (t == "array" && depth < 8) {
    out += '[';
    append_schema_value(out, s ? s->if_contains("items") : nullptr, text, depth + 1);
    out += ']';
  } else if (t == "integer" || t == "number") {
    append_uint(out, count_words(text));
  } else if (t == "boolean") {
    out += "true";
  } else if (t == "null") {
    out += "null";
  } else {
    lowart::json::append_quoted(out, text);
  }
}
} // namespace

void assign_tool_arguments(std::string& out, const json::value* content, const json::object* input_schema) {
  std::string text;
  assign_echo(text, {}, content);
  // A tool with declared properties gets them filled in; otherwise {"text": <echo>}.
  if (const auto* props = input_schema ? input_schema->if_contains("properties") : nullptr;
      props && props->is_object() && !props->get_object().empty()) {
    out.clear();
    json::value schema(*input_schema);
    append_schema_value(out, &schema, text, 0);
    return;
  }
  out.assign(R"({"text":)");
  lowart::json::append_quoted(out, text);
  out += '}';
}

// --- stream pieces ----------------------------------------------------------------------------------

std::size_t piece_end(std::string_view text, std::size_t begin, bool last_piece) {
  if (last_piece) return text.size();
  std::size_t i = begin;
  while (i < text.size() && is_space(text[i]))
    ++i;
  while (i < text.size() && !is_space(text[i]))
    ++i;
  std::size_t rest = i;
  while (rest < text.size() && is_space(text[rest]))
    ++rest;
  return rest == text.size() ? rest : i;
}

std::size_t argument_piece_end(std::string_view text, std::size_t begin) {
  std::size_t end = begin + max_argument_piece_bytes;
  if (end >= text.size()) return text.size();
  while (end > begin + 1 && (static_cast<unsigned char>(text[end]) & 0xc0) == 0x80)
    --end;
  return end;
}

} // namespace lowart::mock::detail
