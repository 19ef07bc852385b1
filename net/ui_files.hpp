#pragma once
// The web console's built files (web/dist), read once at start and served from memory
// at /ui (a single-page app: unknown paths without an extension get index.html).

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

namespace lowart::net {

struct ui_file {
  std::string content_type;
  std::string body;
  bool immutable = false; ///< hashed asset names: cache for a year
};

struct ui_bundle {
  std::string dir;
  std::unordered_map<std::string, ui_file> files; ///< by path below dir: "index.html", "assets/app-1a2b.js"
  /// The file for a request path below /ui/ ("" = index.html); null when there is none.
  const ui_file* find(std::string_view path) const;
};

/// Reads every file below `dir` (at most 64 MiB in all); null when `dir` has no index.html.
std::shared_ptr<const ui_bundle> load_ui(const std::string& dir);

} // namespace lowart::net
