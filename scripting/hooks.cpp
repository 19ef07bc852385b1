#include "scripting/hooks.hpp"

#include "core/log.hpp"
#include "core/metrics.hpp"
#include "scripting/lua_sandbox.hpp"

#include <memory>
#include <unordered_map>

namespace lowart::scripting {
namespace {

struct compiled {
  std::int64_t version = -1;
  std::unique_ptr<lua_sandbox> lua;
};

/// The request a hook runs for, so that log() lines carry its id.
thread_local std::string current_request;
thread_local std::string current_script;

void script_log(std::string_view message) {
  log::info("script log", {{"script", current_script}, {"request_id", current_request}, {"message", message}});
}

/// This thread's state of `name`, compiled at the snapshot's version; null when the
/// script is not loaded.
lua_sandbox* state_of(const script_table& table, const std::string& name) {
  thread_local std::unordered_map<std::string, compiled> states;
  auto it = table.by_name.find(name);
  if (it == table.by_name.end() || it->second->source.empty()) return nullptr;
  const auto& entry = *it->second;
  auto& slot = states[name];
  if (slot.version != entry.version || !slot.lua) {
    limits lim;
    lim.instructions = table.instructions;
    lim.memory_bytes = table.memory_bytes;
    auto lua = std::make_unique<lua_sandbox>(lim, script_log);
    // The scripts actor compiled this source before publishing it; a failure here
    // means the sandbox limits are too small for the script's top level.
    current_script = name;
    if (auto error = lua->compile(name, entry.source); !error.empty()) {
      log::error("script does not load on this thread", {{"script", name}, {"error", error}});
      slot = {};
      return nullptr;
    }
    slot.version = entry.version;
    slot.lua = std::move(lua);
  }
  return slot.lua.get();
}

} // namespace

bool defines(const script_table& table, const std::string& name, std::string_view function) {
  auto* lua = state_of(table, name);
  return lua && lua->has(function);
}

hook_result run_hook(const script_table& table, const std::string& name, std::string_view function,
                     std::string_view argument_json, std::string_view request_id) {
  hook_result out;
  auto* lua = state_of(table, name);
  if (!lua) {
    out.message = "script " + name + " is not loaded";
    metrics::script_calls(name, function, "error").inc();
    log::error("hook failed",
               {{"script", name}, {"hook", function}, {"request_id", request_id}, {"error", out.message}});
    return out;
  }
  current_request.assign(request_id);
  current_script = name;
  auto r = lua->call(function, argument_json);
  current_request.clear();
  if (!r.ok) {
    out.message = "script " + name + ": " + std::string(function) + " failed: " + r.error;
    metrics::script_calls(name, function, "error").inc();
    log::error("hook failed", {{"script", name}, {"hook", function}, {"request_id", request_id}, {"error", r.error}});
    return out;
  }
  if (r.rejected) {
    out.kind = hook_result::outcome::rejected;
    out.status = r.reject_status;
    out.message = r.reject_message.empty() ? "rejected by script " + name : r.reject_message;
    metrics::script_calls(name, function, "rejected").inc();
    return out;
  }
  out.kind = hook_result::outcome::ok;
  out.json = std::move(r.json);
  metrics::script_calls(name, function, "ok").inc();
  return out;
}

std::string check_compiles(const script_table& table, std::string_view name, std::string_view source) {
  limits lim;
  lim.instructions = table.instructions;
  lim.memory_bytes = table.memory_bytes;
  lua_sandbox lua(lim, [](std::string_view) {});
  return lua.compile(name, source);
}

} // namespace lowart::scripting
