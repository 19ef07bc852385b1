#include "scripting/lua_sandbox.hpp"

#include "core/json_text.hpp"

#include <simdjson.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <lua.hpp>

namespace lowart::scripting {

namespace {

constexpr int max_depth = 64;
const char* const array_mt_key = "lowart.json.array"; ///< marks tables that were JSON arrays
int null_sentinel = 0;                                ///< its address is json.null

struct budget {
  std::size_t used = 0;
  std::size_t cap = 0;
  std::int64_t instructions_left = 0;
  bool over_instructions = false;
};

void* allocate(void* ud, void* ptr, std::size_t osize, std::size_t nsize) {
  auto* b = static_cast<budget*>(ud);
  std::size_t old = ptr ? osize : 0; // with ptr null, osize is a type tag, not a size
  if (nsize == 0) {
    b->used -= old;
    std::free(ptr);
    return nullptr;
  }
  if (b->used - old + nsize > b->cap) return nullptr; // Lua raises "not enough memory"
  void* p = std::realloc(ptr, nsize);
  if (p) b->used = b->used - old + nsize;
  return p;
}

constexpr int hook_every = 1000;

void count_hook(lua_State* L, lua_Debug*) {
  budget* b = nullptr;
  lua_getallocf(L, reinterpret_cast<void**>(&b));
  b->instructions_left -= hook_every;
  if (b->instructions_left < 0) {
    b->over_instructions = true;
    luaL_error(L, "instruction budget exceeded");
  }
}

// --- JSON <-> Lua -------------------------------------------------------------------------

void push_json(lua_State* L, simdjson::dom::element e, int depth) {
  if (depth > max_depth) luaL_error(L, "json: nested too deeply");
  luaL_checkstack(L, 4, "json: nested too deeply");
  switch (e.type()) {
  case simdjson::dom::element_type::OBJECT: {
    lua_newtable(L);
    for (auto [k, v] : simdjson::dom::object(e)) {
      lua_pushlstring(L, k.data(), k.size());
      push_json(L, v, depth + 1);
      lua_rawset(L, -3);
    }
    return;
  }
  case simdjson::dom::element_type::ARRAY: {
    lua_newtable(L);
    lua_Integer i = 1;
    for (auto v : simdjson::dom::array(e)) {
      push_json(L, v, depth + 1);
      lua_rawseti(L, -2, i++);
    }
    luaL_setmetatable(L, array_mt_key);
    return;
  }
  case simdjson::dom::element_type::STRING: {
    std::string_view s = e.get_string().value_unsafe();
    lua_pushlstring(L, s.data(), s.size());
    return;
  }
  case simdjson::dom::element_type::INT64:
    lua_pushinteger(L, e.get_int64().value_unsafe());
    return;
  case simdjson::dom::element_type::UINT64:
    lua_pushnumber(L, static_cast<lua_Number>(e.get_uint64().value_unsafe()));
    return;
  case simdjson::dom::element_type::DOUBLE:
    lua_pushnumber(L, e.get_double().value_unsafe());
    return;
  case simdjson::dom::element_type::BOOL:
    lua_pushboolean(L, e.get_bool().value_unsafe());
    return;
  case simdjson::dom::element_type::NULL_VALUE:
    lua_pushlightuserdata(L, &null_sentinel);
    return;
  }
}

void encode(lua_State* L, int index, std::string& out, int depth) {
  if (depth > max_depth) luaL_error(L, "json: nested too deeply (or a cycle)");
  index = lua_absindex(L, index);
  switch (lua_type(L, index)) {
  case LUA_TNIL:
    out += "null";
    return;
  case LUA_TBOOLEAN:
    out += lua_toboolean(L, index) ? "true" : "false";
    return;
  case LUA_TNUMBER: {
    if (lua_isinteger(L, index)) {
      out += std::to_string(lua_tointeger(L, index));
    } else {
      double d = lua_tonumber(L, index);
      if (!std::isfinite(d)) luaL_error(L, "json: cannot encode %f", d);
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", d);
      out += buf;
    }
    return;
  }
  case LUA_TSTRING: {
    std::size_t n = 0;
    const char* s = lua_tolstring(L, index, &n);
    json::append_quoted(out, std::string_view(s, n));
    return;
  }
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, index) == &null_sentinel) {
      out += "null";
      return;
    }
    break;
  case LUA_TTABLE: {
    luaL_checkstack(L, 4, "json: nested too deeply");
    bool marked = false;
    if (lua_getmetatable(L, index)) {
      luaL_getmetatable(L, array_mt_key);
      marked = lua_rawequal(L, -1, -2);
      lua_pop(L, 2);
    }
    auto n = static_cast<lua_Integer>(lua_rawlen(L, index));
    if (marked || n > 0) {
      out += '[';
      for (lua_Integer i = 1; i <= n; ++i) {
        if (i > 1) out += ',';
        lua_rawgeti(L, index, i);
        encode(L, -1, out, depth + 1);
        lua_pop(L, 1);
      }
      out += ']';
      return;
    }
    out += '{';
    bool first = true;
    lua_pushnil(L);
    while (lua_next(L, index)) {
      if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "json: object keys must be strings");
      if (!first) out += ',';
      first = false;
      std::size_t kn = 0;
      const char* k = lua_tolstring(L, -2, &kn);
      json::append_quoted(out, std::string_view(k, kn));
      out += ':';
      encode(L, -1, out, depth + 1);
      lua_pop(L, 1);
    }
    out += '}';
    return;
  }
  default:
    break;
  }
  luaL_error(L, "json: cannot encode a %s", luaL_typename(L, index));
}

// Lua reports errors with longjmp, which skips C++ destructors: the C functions below
// keep no C++ object with a destructor on their stack (thread-local buffers instead).

int json_encode(lua_State* L) {
  thread_local std::string out;
  out.clear();
  encode(L, 1, out, 0);
  lua_pushlstring(L, out.data(), out.size());
  return 1;
}

int json_decode(lua_State* L) {
  std::size_t n = 0;
  const char* s = luaL_checklstring(L, 1, &n);
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(s, n, true).get(doc) != simdjson::SUCCESS) return luaL_error(L, "json.decode: invalid JSON");
  push_json(L, doc, 0);
  return 1;
}

} // namespace

struct lua_sandbox::impl {
  budget mem;
  lua_State* L = nullptr;
  int env_ref = LUA_NOREF;
  std::function<void(std::string_view)> log;
  limits lim;

  static int lua_log(lua_State* L) {
    auto* self = static_cast<impl*>(lua_touserdata(L, lua_upvalueindex(1)));
    std::size_t n = 0;
    const char* s = luaL_tolstring(L, 1, &n);
    if (self->log) self->log(std::string_view(s, n));
    return 0;
  }

  /// A fresh environment with the safe subset of the standard library.
  void push_environment() {
    lua_newtable(L);
    for (const char* name : {"assert",   "error",  "ipairs", "next",   "pairs",        "pcall",        "rawequal",
                             "rawget",   "rawlen", "rawset", "select", "setmetatable", "getmetatable", "tonumber",
                             "tostring", "type",   "xpcall", "string", "table",        "math",         "utf8"}) {
      lua_getglobal(L, name);
      lua_setfield(L, -2, name);
    }
    lua_newtable(L); // json
    lua_pushcfunction(L, json_encode);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, json_decode);
    lua_setfield(L, -2, "decode");
    lua_pushlightuserdata(L, &null_sentinel);
    lua_setfield(L, -2, "null");
    lua_setfield(L, -2, "json");
    lua_pushlightuserdata(L, this);
    lua_pushcclosure(L, lua_log, 1);
    lua_setfield(L, -2, "log");
  }

  void arm(std::int64_t instructions) {
    mem.instructions_left = instructions;
    mem.over_instructions = false;
    lua_sethook(L, count_hook, LUA_MASKCOUNT, hook_every);
  }
};

lua_sandbox::lua_sandbox(limits lim, std::function<void(std::string_view)> log) : impl_(std::make_unique<impl>()) {
  auto& d = *impl_;
  d.lim = lim;
  d.log = std::move(log);
  // The libraries themselves need memory beyond a script's share.
  d.mem.cap = lim.memory_bytes + 512 * 1024;
  d.L = lua_newstate(allocate, &d.mem);
  if (!d.L) throw std::runtime_error("cannot create a Lua state");
  luaL_requiref(d.L, "_G", luaopen_base, 1);
  luaL_requiref(d.L, LUA_STRLIBNAME, luaopen_string, 1);
  luaL_requiref(d.L, LUA_TABLIBNAME, luaopen_table, 1);
  luaL_requiref(d.L, LUA_MATHLIBNAME, luaopen_math, 1);
  luaL_requiref(d.L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
  lua_pop(d.L, 5);
  luaL_newmetatable(d.L, array_mt_key);
  lua_pop(d.L, 1);
}

lua_sandbox::~lua_sandbox() {
  if (impl_->L) lua_close(impl_->L);
}

std::string lua_sandbox::compile(std::string_view name, std::string_view source) {
  auto& d = *impl_;
  lua_State* L = d.L;
  int top = lua_gettop(L);
  std::string chunk = "=" + std::string(name);
  // Text only: precompiled bytecode can crash the VM.
  if (luaL_loadbufferx(L, source.data(), source.size(), chunk.c_str(), "t") != LUA_OK) {
    std::string error = lua_tostring(L, -1);
    lua_settop(L, top);
    return error;
  }
  d.push_environment();
  lua_pushvalue(L, -1);
  int env = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_setupvalue(L, -2, 1); // the chunk's _ENV
  d.arm(d.lim.instructions);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    std::string error = lua_tostring(L, -1) ? lua_tostring(L, -1) : "error";
    lua_settop(L, top);
    luaL_unref(L, LUA_REGISTRYINDEX, env);
    return error;
  }
  lua_sethook(L, nullptr, 0, 0);
  if (d.env_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, d.env_ref);
  d.env_ref = env;
  lua_settop(L, top);
  lua_gc(L, LUA_GCCOLLECT);
  return {};
}

bool lua_sandbox::has(std::string_view function) const {
  auto& d = *impl_;
  if (d.env_ref == LUA_NOREF) return false;
  lua_rawgeti(d.L, LUA_REGISTRYINDEX, d.env_ref);
  lua_pushlstring(d.L, function.data(), function.size());
  lua_rawget(d.L, -2);
  bool is_function = lua_isfunction(d.L, -1);
  lua_pop(d.L, 2);
  return is_function;
}

call_result lua_sandbox::call(std::string_view function, std::string_view argument_json) {
  auto& d = *impl_;
  lua_State* L = d.L;
  call_result r;
  if (!has(function)) {
    r.error = "the script defines no function " + std::string(function);
    return r;
  }
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, d.env_ref);
  lua_pushlstring(L, function.data(), function.size());
  lua_rawget(L, -2);
  lua_remove(L, -2);
  // The argument is decoded inside the protected call, so a bad one fails cleanly.
  lua_pushcfunction(L, json_decode);
  lua_pushlstring(L, argument_json.data(), argument_json.size());
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    r.error = std::string("bad argument: ") + (lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
    lua_settop(L, top);
    return r;
  }
  d.arm(d.lim.instructions);
  int status = lua_pcall(L, 1, LUA_MULTRET, 0);
  lua_sethook(L, nullptr, 0, 0);
  if (status != LUA_OK) {
    r.error = d.mem.over_instructions ? "the script exceeded its instruction budget"
              : status == LUA_ERRMEM  ? "the script exceeded its memory limit"
                                      : (lua_tostring(L, -1) ? lua_tostring(L, -1) : "script error");
    lua_settop(L, top);
    lua_gc(L, LUA_GCCOLLECT);
    return r;
  }
  int results = lua_gettop(L) - top;
  if (results >= 2 && lua_isnil(L, top + 1)) {
    // `return nil, status, message`: the script refuses.
    r.ok = true;
    r.rejected = true;
    r.json = "null";
    int is_number = 0;
    auto code = lua_tointegerx(L, top + 2, &is_number);
    r.reject_status = is_number && code >= 400 && code <= 599 ? static_cast<int>(code) : 400;
    if (results >= 3 && lua_type(L, top + 3) == LUA_TSTRING) r.reject_message = lua_tostring(L, top + 3);
    lua_settop(L, top);
    return r;
  }
  if (results == 0) lua_pushnil(L);
  lua_settop(L, top + 1);
  // Encode the result (protected too: a function or a cycle in it is an error).
  lua_pushcfunction(L, json_encode);
  lua_insert(L, -2);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    r.error = std::string("bad result: ") + (lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
    lua_settop(L, top);
    return r;
  }
  std::size_t n = 0;
  const char* s = lua_tolstring(L, -1, &n);
  r.json.assign(s, n);
  r.ok = true;
  lua_settop(L, top);
  return r;
}

std::size_t lua_sandbox::memory_in_use() const {
  return impl_->mem.used;
}

} // namespace lowart::scripting
