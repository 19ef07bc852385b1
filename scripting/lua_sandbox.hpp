#pragma once
// A sandboxed Lua 5.4 state for operator scripts (hooks such as on_request). One state
// per worker thread, never shared. The sandbox:
//   - opens only base (without dofile/loadfile/load/require/collectgarbage), string,
//     table, math and utf8 — no io, os, package, debug, coroutine;
//   - caps memory with its own allocator (an allocation over the cap fails, Lua raises
//     "not enough memory" and the call fails cleanly);
//   - caps instructions per call with a count hook (an endless loop fails the call);
//   - gives scripts `json.encode(value)` / `json.decode(text)` and `log(message)`.
// A script is compiled once (compile() refuses one that does not compile and keeps the
// previous version); call() runs one global function with a JSON argument and returns
// its JSON result. No Lua types leave this header.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace lowart::scripting {

struct limits {
  std::size_t memory_bytes = 8 * 1024 * 1024;
  std::int64_t instructions = 1'000'000; ///< per call
};

struct call_result {
  bool ok = false;
  std::string json;  ///< the function's return value as JSON ("null" when it returned nothing)
  std::string error; ///< why not ok: a Lua error, over budget, out of memory, not defined
  /// The function returned `nil, status, message`: a deliberate refusal (ok stays true,
  /// json is "null").
  bool rejected = false;
  int reject_status = 0;
  std::string reject_message;
};

class lua_sandbox {
public:
  explicit lua_sandbox(limits lim = {}, std::function<void(std::string_view)> log = {});
  ~lua_sandbox();
  lua_sandbox(const lua_sandbox&) = delete;
  lua_sandbox& operator=(const lua_sandbox&) = delete;

  /// Compiles and runs `source` (its top level defines the hooks) in a fresh global
  /// environment. On error the previous script stays active and the message is returned.
  std::string compile(std::string_view name, std::string_view source);

  /// Whether the active script defines global function `function`.
  bool has(std::string_view function) const;

  /// Calls global `function` with `argument_json` decoded to a Lua value. Its first
  /// return value comes back as JSON; `nil, status, message` comes back as a refusal.
  call_result call(std::string_view function, std::string_view argument_json);

  std::size_t memory_in_use() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace lowart::scripting
