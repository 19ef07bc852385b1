// The Lua sandbox: hooks run with JSON in and out; no io/os/require/load/debug; an
// endless loop or a memory hog fails its call and the state carries on; a script that
// does not compile is refused and the previous one stays active.
#include "scripting/lua_sandbox.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using lowart::scripting::limits;
using lowart::scripting::lua_sandbox;

TEST(lua_sandbox, a_hook_changes_a_request_as_json) {
  lua_sandbox lua;
  ASSERT_EQ(lua.compile("hooks", R"(
    function on_request(req)
      req.model = "rewritten-" .. req.model
      table.insert(req.messages, {role = "system", content = "added"})
      req.temperature = 0.5
      return req
    end)"),
            "");
  ASSERT_TRUE(lua.has("on_request"));
  auto r =
      lua.call("on_request", R"({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false,"n":null})");
  ASSERT_TRUE(r.ok) << r.error;
  // Arrays stay arrays (even empty ones), null stays null, integers stay integers.
  EXPECT_NE(r.json.find(R"("model":"rewritten-m")"), std::string::npos) << r.json;
  EXPECT_NE(r.json.find(R"("messages":[{)"), std::string::npos) << r.json;
  EXPECT_NE(r.json.find(R"("content":"added")"), std::string::npos) << r.json;
  EXPECT_NE(r.json.find(R"("n":null)"), std::string::npos) << r.json;
  auto empty = lua.call("on_request", R"({"model":"x","messages":[]})");
  ASSERT_TRUE(empty.ok) << empty.error;
  // (Lua tables keep no key order: check members, not their sequence.)
  EXPECT_NE(empty.json.find(R"("messages":[{)"), std::string::npos) << empty.json;
  EXPECT_NE(empty.json.find(R"("role":"system")"), std::string::npos) << empty.json;
  EXPECT_EQ(empty.json.find(R"("messages":[])"), std::string::npos) << empty.json;
}

TEST(lua_sandbox, dangerous_libraries_are_absent) {
  lua_sandbox lua;
  ASSERT_EQ(lua.compile("probe", R"(
    function probe()
      return {io = type(io), os = type(os), require = type(require), load = type(load), loadfile = type(loadfile),
              dofile = type(dofile), debug = type(debug), package = type(package), string = type(string),
              json = type(json), collectgarbage = type(collectgarbage)}
    end)"),
            "");
  auto r = lua.call("probe", "null");
  ASSERT_TRUE(r.ok) << r.error;
  for (const char* gone : {"io", "os", "require", "load", "loadfile", "dofile", "debug", "package", "collectgarbage"})
    EXPECT_NE(r.json.find(std::string("\"") + gone + "\":\"nil\""), std::string::npos) << gone << " in " << r.json;
  EXPECT_NE(r.json.find(R"("string":"table")"), std::string::npos);
  EXPECT_NE(r.json.find(R"("json":"table")"), std::string::npos);
  // Precompiled bytecode is refused outright.
  EXPECT_NE(lua.compile("bytecode", std::string("\x1bLua\x54\x00", 6)), "");
}

TEST(lua_sandbox, over_budget_calls_fail_and_the_state_carries_on) {
  limits lim;
  lim.instructions = 100'000;
  lim.memory_bytes = 1024 * 1024;
  lua_sandbox lua(lim);
  ASSERT_EQ(lua.compile("bad", R"(
    function spin() while true do end end
    function hog() local t = {} for i = 1, 1e7 do t[i] = string.rep("x", 100) .. i end return #t end
    function ok(x) return x + 1 end)"),
            "");
  auto spin = lua.call("spin", "null");
  EXPECT_FALSE(spin.ok);
  EXPECT_EQ(spin.error, "the script exceeded its instruction budget");
  // A memory hog, in a state whose instruction budget is out of the way.
  limits roomy = lim;
  roomy.instructions = 1'000'000'000;
  lua_sandbox big(roomy);
  ASSERT_EQ(
      big.compile(
          "hog", R"(function hog() local t = {} for i = 1, 1e7 do t[i] = string.rep("x", 100) .. i end return #t end)"),
      "");
  auto hog = big.call("hog", "null");
  EXPECT_FALSE(hog.ok);
  EXPECT_EQ(hog.error, "the script exceeded its memory limit");
  EXPECT_LT(big.memory_in_use(), 2u * 1024 * 1024);
  EXPECT_TRUE(big.call("hog", "null").error.find("memory") != std::string::npos) << "and again, cleanly";
  auto fine = lua.call("ok", "41");
  ASSERT_TRUE(fine.ok) << fine.error;
  EXPECT_EQ(fine.json, "42");
}

TEST(lua_sandbox, a_script_that_does_not_compile_keeps_the_previous_one) {
  std::vector<std::string> logged;
  lua_sandbox lua({}, [&](std::string_view m) { logged.emplace_back(m); });
  ASSERT_EQ(lua.compile("v1", R"(function version() log("v1 called") return 1 end)"), "");
  auto error = lua.compile("v2", "function version( return 2 end");
  EXPECT_NE(error.find("v2"), std::string::npos) << error; // names the script and the line
  auto r = lua.call("version", "null");
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.json, "1");
  EXPECT_EQ(logged, std::vector<std::string>{"v1 called"});
  // A top-level error (not a syntax error) is refused the same way.
  EXPECT_NE(lua.compile("v3", "error('boom')"), "");
  EXPECT_EQ(lua.call("version", "null").json, "1");
  EXPECT_FALSE(lua.call("missing", "null").ok);
  EXPECT_FALSE(lua.call("version", "{not json").ok);
}

TEST(lua_sandbox, json_round_trips_keep_empty_arrays_nulls_and_numbers) {
  lua_sandbox lua;
  ASSERT_EQ(lua.compile("same", "function same(x) return x end"), "");
  for (std::string doc : {R"({"a":[]})", R"([1,2.5,null,"x",true])", R"({"nested":{"list":[[],{}]}})", "null", "7"}) {
    auto r = lua.call("same", doc);
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.json, doc);
  }
}

TEST(lua_sandbox, nil_status_message_is_a_refusal) {
  lua_sandbox lua;
  ASSERT_EQ(lua.compile("gate", R"(
    function on_request(req)
      if req.body.user == "blocked" then return nil, 403, "user is blocked" end
      if req.body.user == "odd" then return nil, 99 end
      return req
    end)"),
            "");
  auto refused = lua.call("on_request", R"({"body":{"user":"blocked"}})");
  ASSERT_TRUE(refused.ok) << refused.error;
  EXPECT_TRUE(refused.rejected);
  EXPECT_EQ(refused.reject_status, 403);
  EXPECT_EQ(refused.reject_message, "user is blocked");
  // A status outside 400..599 becomes 400; the message may be left out.
  auto odd = lua.call("on_request", R"({"body":{"user":"odd"}})");
  EXPECT_TRUE(odd.rejected);
  EXPECT_EQ(odd.reject_status, 400);
  EXPECT_EQ(odd.reject_message, "");
  auto passed = lua.call("on_request", R"({"body":{"user":"ok"}})");
  ASSERT_TRUE(passed.ok);
  EXPECT_FALSE(passed.rejected);
  EXPECT_NE(passed.json.find(R"("user":"ok")"), std::string::npos) << passed.json;
}
