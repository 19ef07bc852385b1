#pragma once
// The loaded operator scripts as every thread sees them: a snapshot the scripts actor
// publishes after each accepted change. Plain data: no Lua here.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lowart::scripting {

struct script_entry {
  std::string name;   ///< file name in [scripts] dir, e.g. "transform.lua"
  std::string source; ///< the active source ("" when no version ever compiled)
  std::string sha256; ///< of `source`
  /// Unique per accepted source over the whole run: threads recompile when it changes.
  std::int64_t version = 0;
  std::int64_t loaded_at_ms = 0;
  std::string origin;             ///< file | upload
  std::vector<std::string> hooks; ///< the hooks the active source defines (on_request, ...)
  std::string error;              ///< why the newest version was refused ("" when it is the active one)
  std::int64_t error_at_ms = 0;   ///< when it was refused

  bool has_hook(std::string_view hook) const {
    for (const auto& h : hooks)
      if (h == hook) return true;
    return false;
  }
};

struct script_table {
  /// The entry of `name` when it is loaded and defines `hook`, else null.
  const script_entry* with_hook(const std::string& name, std::string_view hook) const {
    auto it = by_name.find(name);
    return it != by_name.end() && !it->second->source.empty() && it->second->has_hook(hook) ? it->second.get()
                                                                                            : nullptr;
  }

  std::map<std::string, std::shared_ptr<const script_entry>> by_name;
  /// Data files of the directory (workflow templates, *.json) by name: their text.
  std::map<std::string, std::shared_ptr<const std::string>> files;
  std::int64_t instructions = 1'000'000;
  std::size_t memory_bytes = 8 * 1024 * 1024;
};

} // namespace lowart::scripting
