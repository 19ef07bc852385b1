#include "core/redact.hpp"

#include <cctype>

namespace lowart {

namespace {

bool listed(std::string_view name, const std::vector<std::string>& fields) {
  for (const auto& f : fields) {
    if (f.size() != name.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < f.size() && same; ++i)
      same = std::tolower(static_cast<unsigned char>(f[i])) == std::tolower(static_cast<unsigned char>(name[i]));
    if (same) return true;
  }
  return false;
}

/// One pass with `quote` as the string delimiter: "\"" for the text's own JSON, "\\\"" for
/// JSON inside its strings. Returns the text with listed members' string values replaced.
std::string pass(std::string_view text, std::string_view quote, const std::vector<std::string>& fields) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  const bool nested = quote.size() > 1;
  // The end of a string that starts at `from` (after its opening quote): the index of its
  // closing quote, or text.size() when it is cut off.
  auto string_end = [&](std::size_t from) {
    std::size_t j = from;
    while (j < text.size()) {
      if (!nested) {
        if (text[j] == '\\') {
          j += 2;
          continue;
        }
        if (text[j] == '"') return j;
      } else if (text.compare(j, quote.size(), quote) == 0 && !(j > from && text[j - 1] == '\\')) {
        return j;
      }
      ++j;
    }
    return text.size();
  };
  auto skip_space = [&](std::size_t j) {
    while (j < text.size() && (text[j] == ' ' || text[j] == '\t' || text[j] == '\n' || text[j] == '\r'))
      ++j;
    return j;
  };
  while (i < text.size()) {
    if (text.compare(i, quote.size(), quote) != 0) {
      out += text[i++];
      continue;
    }
    auto start = i + quote.size();
    auto end = string_end(start);
    auto name = text.substr(start, end - start);
    out.append(text.substr(i, std::min(end + quote.size(), text.size()) - i));
    i = std::min(end + quote.size(), text.size());
    if (end >= text.size()) break;
    auto colon = skip_space(i);
    if (colon >= text.size() || text[colon] != ':' || !listed(name, fields)) continue;
    auto value = skip_space(colon + 1);
    if (text.compare(value, quote.size(), quote) != 0) continue;
    auto value_end = string_end(value + quote.size());
    out.append(text.substr(i, value - i));
    out.append(quote).append("[redacted]");
    if (value_end < text.size()) out.append(quote);
    i = std::min(value_end + quote.size(), text.size());
  }
  return out;
}

} // namespace

std::string redact_json_text(std::string_view text, const std::vector<std::string>& fields) {
  if (fields.empty()) return std::string(text);
  auto once = pass(text, "\"", fields);
  if (once.find("\\\"") == std::string::npos) return once;
  return pass(once, "\\\"", fields);
}

} // namespace lowart
