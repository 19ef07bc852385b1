// The route table (net/routing.hpp): well-formed, every entry reachable by a path of its
// own, route_of derived from it, the RBAC resource of every admin route one the role
// table knows, and the public routes exactly those the session answers before a key.

#include "actors/admin/rbac.hpp"
#include "net/routing.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

using namespace lowart::net;

namespace {

/// A concrete path for a pattern: every {param} becomes "p1", "p2", ...
std::string instance(std::string_view pattern) {
  std::string out;
  int n = 0;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '{') {
      out += pattern[i];
      continue;
    }
    auto close = pattern.find('}', i);
    out += "p" + std::to_string(++n);
    if (pattern[close - 1] == '*') out += "/deeper/file.js";
    i = close;
  }
  return out;
}

} // namespace

TEST(route_table, entries_are_well_formed_and_unique) {
  std::set<std::string_view> patterns;
  for (const auto& r : route_table()) {
    SCOPED_TRACE(std::string(r.pattern));
    EXPECT_TRUE(patterns.insert(r.pattern).second) << "one entry per pattern (methods are a set)";
    ASSERT_GE(r.pattern.size(), 2u);
    EXPECT_EQ(r.pattern[0], '/');
    EXPECT_NE(r.pattern[1], '{') << "find_route tests the second character first";
    EXPECT_NE(r.pattern.back(), '/');
    EXPECT_NE(r.methods, 0u);
    EXPECT_FALSE(r.label.empty());
    EXPECT_NE(r.label, "other");
    for (std::size_t i = r.pattern.find('{'); i != std::string_view::npos; i = r.pattern.find('{', i + 1)) {
      auto close = r.pattern.find('}', i);
      ASSERT_NE(close, std::string_view::npos);
      EXPECT_EQ(r.pattern[i - 1], '/') << "a parameter is a whole segment";
      EXPECT_TRUE(close + 1 == r.pattern.size() || r.pattern[close + 1] == '/');
      if (r.pattern[close - 1] == '*') {
        EXPECT_EQ(close + 1, r.pattern.size()) << "{x*} only at the end";
      }
    }
  }
}

TEST(route_table, every_entry_serves_its_own_paths) {
  for (const auto& r : route_table()) {
    auto path = instance(r.pattern);
    SCOPED_TRACE(path);
    EXPECT_EQ(find_route(path), &r) << "no other entry shadows this one";
    auto info = route_of(path);
    EXPECT_EQ(info.route, r.label);
    EXPECT_EQ(info.format, r.format);
    EXPECT_EQ(find_route(path + "/extra") == &r, r.pattern.ends_with("*}")) << "no prefix matches";
  }
}

TEST(route_table, paths_it_does_not_list) {
  for (std::string_view p : {"/", "", "/v1", "/v2/chat/completions", "/v1/models/", "/admin", "/admin/nothing",
                             "/admin/keys/", "/v1/mcp/calls/", "/adminx", "/a2a/x/y", "/agents", "/jobs/x",
                             "/v1/jobs/j/files/", "/v1/jobs/j/other/f", "/.well-known/oauth-protected-resource"}) {
    SCOPED_TRACE(std::string(p));
    EXPECT_EQ(find_route(p), nullptr);
  }
  EXPECT_EQ(route_of("/admin/nothing").format, api_format::admin);
  EXPECT_EQ(route_of("/admin/nothing").route, "admin");
  EXPECT_EQ(route_of("/v1/nothing").route, "other");
  EXPECT_EQ(route_of("/v1/nothing").format, api_format::openai);
  EXPECT_EQ(route_of("/a2a/x/y").format, api_format::jsonrpc);
  EXPECT_EQ(route_of("/a2a/x").format, api_format::jsonrpc);
  EXPECT_EQ(route_of("/a2a/x/.well-known/agent-card.json").format, api_format::openai);
}

TEST(route_table, literal_segments_win_over_parameters) {
  EXPECT_EQ(find_route("/admin/agents/tasks")->pattern, "/admin/agents/tasks");
  EXPECT_EQ(find_route("/admin/agents/dead-letters")->pattern, "/admin/agents/dead-letters");
  EXPECT_EQ(find_route("/admin/agents/summarizer")->pattern, "/admin/agents/{name}");
  EXPECT_EQ(find_route("/admin/mcp/policies")->pattern, "/admin/mcp/policies");
  EXPECT_EQ(find_route("/admin/mcp/register")->pattern, "/admin/mcp/register");
  EXPECT_EQ(find_route("/admin/mcp/fs")->pattern, "/admin/mcp/{name}");
  EXPECT_EQ(find_route("/ui/")->pattern, "/ui/{file*}");
  EXPECT_EQ(find_route("/ui/assets/index-1.js")->pattern, "/ui/{file*}");
}

TEST(route_table, admin_routes_name_a_resource_the_role_table_knows) {
  for (const auto& r : route_table()) {
    SCOPED_TRACE(std::string(r.pattern));
    bool under_admin = r.pattern.starts_with("/admin/");
    EXPECT_EQ(under_admin, r.label == "admin");
    EXPECT_EQ(under_admin, r.format == api_format::admin);
    EXPECT_EQ(under_admin, !r.resource.empty());
    if (!under_admin) continue;
    auto first = r.pattern.substr(7, r.pattern.find('/', 7) == std::string_view::npos ? std::string_view::npos
                                                                                      : r.pattern.find('/', 7) - 7);
    EXPECT_EQ(r.resource, first);
    EXPECT_TRUE(lowart::rbac::may("viewer", "GET", r.resource)) << "a resource rbac.cpp does not know";
    EXPECT_FALSE(lowart::rbac::may("user", "GET", r.resource));
    EXPECT_EQ(r.auth, auth_kind::key);
  }
}

TEST(route_table, public_routes_are_the_probes_the_console_and_the_agent_cards) {
  std::set<std::string_view> open;
  for (const auto& r : route_table())
    if (r.auth == auth_kind::none) open.insert(r.pattern);
  EXPECT_EQ(open,
            (std::set<std::string_view>{"/healthz", "/readyz", "/metrics", "/ui", "/ui/{file*}",
                                        "/.well-known/agent-card.json", "/a2a/{name}/.well-known/agent-card.json"}));
}

TEST(route_table, methods_and_json_lines) {
  EXPECT_EQ(method_bit_of("GET"), m_get);
  EXPECT_EQ(method_bit_of("DELETE"), m_delete);
  EXPECT_EQ(method_bit_of("OPTIONS"), 0u);
  EXPECT_EQ(method_bit_of("get"), 0u) << "method names are case-sensitive (RFC 9110)";
  EXPECT_EQ(method_names(m_get | m_post, ", "), "GET, POST");
  EXPECT_EQ(route_json(*find_route("/admin/keys")),
            R"({"methods":["GET","POST"],"path":"/admin/keys","route":"admin","format":"admin","auth":"key",)"
            R"("resource":"keys"})");
  EXPECT_EQ(route_json(*find_route("/healthz")),
            R"({"methods":["GET","HEAD"],"path":"/healthz","route":"healthz","format":"openai","auth":"public",)"
            R"("resource":null})");
}
