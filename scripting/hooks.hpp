#pragma once
// Runs a hook of a loaded script on the calling thread. Each thread keeps its own Lua
// state per script (never shared between threads) and recompiles it when the script's
// version in the snapshot changes, so a reload takes effect with the next call.

#include "scripting/script_table.hpp"

#include <string>
#include <string_view>

namespace lowart::scripting {

struct hook_result {
  enum class outcome { ok, rejected, failed } kind = outcome::failed;
  std::string json;    ///< ok: what the hook returned (as JSON)
  int status = 0;      ///< rejected: the status it asked for
  std::string message; ///< rejected: its message; failed: why (script error, budget, not loaded)
};

/// Whether script `name` is loaded and defines global function `function`.
bool defines(const script_table& table, const std::string& name, std::string_view function);

/// Calls `function` of script `name` with `argument_json`. Never throws; a failure is
/// reported (and logged with `request_id`) in the result.
hook_result run_hook(const script_table& table, const std::string& name, std::string_view function,
                     std::string_view argument_json, std::string_view request_id);

/// Compiles `source` in a throw-away sandbox with the table's limits: "" or the error.
std::string check_compiles(const script_table& limits, std::string_view name, std::string_view source);

} // namespace lowart::scripting
