// The admin API's teams and users (/admin/teams, /admin/users), and the limit and
// allow-list columns teams share with keys (check_access, apply_access, apply_limits).
// The impl is declared in admin_impl.hpp; keys are in admin_keys.cpp, the dispatch in
// admin_service.cpp.

#include "actors/admin/admin_impl.hpp"
#include "actors/admin/rbac.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "core/secrets.hpp"

namespace lowart::actors {

using namespace admin_util;
using namespace detail;

namespace {

constexpr const char* team_columns = "id, name, rpm, tpm, max_parallel, budget_tokens, budget_cost, budget_period, "
                                     "created_at, updated_at, agents, tools, log_bodies";

std::string team_json(const storage::statement& st) {
  json::object_writer w;
  w.str("id", st.text(0))
      .str("name", st.text(1))
      .raw("rpm", optional_int(st, 2))
      .raw("tpm", optional_int(st, 3))
      .raw("max_parallel", optional_int(st, 4))
      .raw("budget_tokens", optional_int(st, 5))
      .raw("budget_cost", optional_real(st, 6))
      .raw("budget_period", optional_text(st, 7))
      .num("created_at", st.integer(8))
      .num("updated_at", st.integer(9))
      .raw("agents", st.text(10))
      .raw("tools", st.text(11))
      .boolean("log_bodies", st.integer(12) != 0);
  return w.done();
}

} // namespace

namespace detail {

std::string user_json(const storage::statement& st) {
  json::object_writer w;
  w.str("id", st.text(0))
      .str("name", st.text(1))
      .str("role", st.text(2))
      .raw("team_id", optional_text(st, 3))
      .num("created_at", st.integer(4))
      .num("updated_at", st.integer(5));
  return w.done();
}

} // namespace detail

// --- teams -----------------------------------------------------------------------------------

admin_result admin_service::impl::teams(const admin_request& req, const std::vector<std::string>& parts) {
  if (parts.size() == 2 && req.method == "GET") {
    auto st = db.prepare(std::string("SELECT ") + team_columns + " FROM teams ORDER BY name");
    return list_rows(st, team_json);
  }
  // A team body: its name (required when `create`), limits and allow lists.
  auto read_body = [&](body_reader& r, field<std::string>& name, limit_fields& lim, access_fields& access,
                       bool create) -> std::optional<admin_result> {
    if (!r.parse(req.body)) return r.result();
    name = r.text("name");
    lim.read(r);
    access.read(r, false);
    if (create && r.ok() && !name.has()) r.fail("name", "name is required");
    if (!r.ok()) return r.result();
    if (auto e = check_access(access)) return *e;
    return std::nullopt;
  };
  if (parts.size() == 2 && req.method == "POST") {
    body_reader r;
    field<std::string> name;
    limit_fields lim;
    access_fields access;
    if (auto e = read_body(r, name, lim, access, true)) return *e;
    if (exists("teams", "name", name.value))
      return error(409, "conflict_error", "a team named '" + name.value + "' exists", "name");
    auto id = "team_" + secrets::random_hex(8);
    auto now = clock::unix_seconds();
    db.transaction([&] {
      db.prepare("INSERT INTO teams(id, name, created_at, updated_at) VALUES (?,?,?,?)")
          .bind(1, id)
          .bind(2, name.value)
          .bind(3, now)
          .bind(4, now)
          .step();
      apply_limits("teams", id, lim);
      apply_access("teams", id, access);
      audit(req.who, "team.create", id, "{\"name\":" + json::quoted(name.value) + "}");
    });
    admin_result res{201, one("teams", team_columns, id, team_json)};
    res.keys_changed = true; // team allow lists travel with keys
    return res;
  }
  if (parts.size() == 3) {
    const auto& id = parts[2];
    if (!exists("teams", "id", id)) return not_found("no team with id '" + id + "'");
    if (req.method == "GET") return {200, one("teams", team_columns, id, team_json)};
    if (req.method == "PATCH" || req.method == "PUT") {
      body_reader r;
      field<std::string> name;
      limit_fields lim;
      access_fields access;
      if (auto e = read_body(r, name, lim, access, false)) return *e;
      if (name.has()) {
        auto st = db.prepare("SELECT 1 FROM teams WHERE name = ? AND id != ?");
        st.bind(1, name.value).bind(2, id);
        if (st.step()) return error(409, "conflict_error", "a team named '" + name.value + "' exists", "name");
      }
      db.transaction([&] {
        if (name.has()) db.prepare("UPDATE teams SET name = ? WHERE id = ?").bind(1, name.value).bind(2, id).step();
        apply_limits("teams", id, lim);
        apply_access("teams", id, access);
        db.prepare("UPDATE teams SET updated_at = ? WHERE id = ?").bind(1, clock::unix_seconds()).bind(2, id).step();
        audit(req.who, "team.update", id, r.fields_detail());
      });
      admin_result res{200, one("teams", team_columns, id, team_json)};
      res.keys_changed = true; // team limits travel with keys
      return res;
    }
    if (req.method == "DELETE") {
      auto res = remove_row(req, "teams", "id", id, "team.delete", "id");
      res.keys_changed = true;
      return res;
    }
  }
  return method_not_allowed(req);
}

/// Unknown permissions, and allow lists naming agents, servers or tools that do not
/// exist, are a 400 naming the field.
std::optional<admin_result> admin_service::impl::check_access(const access_fields& a) {
  if (a.permissions.has())
    for (const auto& p : a.permissions.value)
      if (!known_permission(p))
        return bad_field("permissions", "unknown permission '" + p + "' (known: register_agents)");
  if (a.agents.has())
    for (const auto& n : a.agents.value)
      if (!exists("a2a_agents", "name", n)) return bad_field("agents", "no agent named '" + n + "'");
  if (a.tools.has()) {
    auto live = gw.mcp_live.load();
    for (const auto& t : a.tools.value) {
      auto sep = t.find("__");
      auto server = t.substr(0, sep);
      if (!exists("mcp_servers", "name", server)) return bad_field("tools", "no MCP server named '" + server + "'");
      if (sep == std::string::npos) continue;
      auto tool = t.substr(sep + 2);
      const mcp_server_live* l = nullptr;
      if (live)
        if (auto it = live->servers.find(server); it != live->servers.end() && !it->second.tools.empty())
          l = &it->second;
      if (!l) continue; // not listed yet (starting): the server's name is checked
      bool found = false;
      for (const auto& [name, _] : l->tools)
        found = found || name == tool;
      if (!found) return bad_field("tools", "MCP server '" + server + "' has no tool '" + tool + "'");
    }
  }
  return std::nullopt;
}

void admin_service::impl::apply_access(const char* table, const std::string& id, const access_fields& a) {
  auto set = [&](const char* col, const field<std::vector<std::string>>& f) {
    if (!f.present) return;
    db.prepare(std::string("UPDATE ") + table + " SET " + col + " = ? WHERE id = ?")
        .bind(1, json::string_array(f.null ? std::vector<std::string>{} : f.value))
        .bind(2, id)
        .step();
  };
  set("permissions", a.permissions);
  set("agents", a.agents);
  set("tools", a.tools);
  if (a.log_bodies.has())
    db.prepare(std::string("UPDATE ") + table + " SET log_bodies = ? WHERE id = ?")
        .bind(1, static_cast<std::int64_t>(a.log_bodies.value))
        .bind(2, id)
        .step();
}

void admin_service::impl::apply_limits(const char* table, const std::string& id, const limit_fields& lim) {
  std::vector<std::string> cols;
  lim.assignments(cols);
  if (cols.empty()) return;
  std::string sql = std::string("UPDATE ") + table + " SET ";
  for (std::size_t i = 0; i < cols.size(); ++i)
    sql += (i ? ", " : "") + cols[i] + " = ?";
  sql += " WHERE id = ?";
  auto st = db.prepare(sql);
  int at = lim.bind(st, 1);
  st.bind(at, id);
  st.step();
}

// --- users -----------------------------------------------------------------------------------

admin_result admin_service::impl::users(const admin_request& req, const std::vector<std::string>& parts) {
  constexpr const char* cols = user_columns;
  if (parts.size() == 2 && req.method == "GET") {
    auto st = db.prepare(std::string("SELECT ") + cols + " FROM users ORDER BY name");
    return list_rows(st, user_json);
  }
  auto read_body = [&](body_reader& r, field<std::string>& name, field<std::string>& role, std::string& team_id,
                       bool& team_given) -> std::optional<admin_result> {
    if (!r.parse(req.body)) return r.result();
    name = r.text("name");
    role = r.text("role", 20);
    auto team = r.text("team");
    if (!team.present) team = r.text("team_id");
    if (!r.ok()) return r.result();
    if (role.has() && !rbac::known_role(role.value)) return unknown_role();
    team_given = team.present;
    return team_of(team, team_id);
  };
  if (parts.size() == 2 && req.method == "POST") {
    body_reader r;
    field<std::string> name, role;
    std::string team_id;
    bool team_given = false;
    if (auto e = read_body(r, name, role, team_id, team_given)) return *e;
    if (!name.has()) return bad_field("name", "name is required");
    if (exists("users", "name", name.value))
      return error(409, "conflict_error", "a user named '" + name.value + "' exists", "name");
    auto id = "user_" + secrets::random_hex(8);
    auto now = clock::unix_seconds();
    db.transaction([&] {
      auto st = db.prepare("INSERT INTO users(id, name, role, team_id, created_at, updated_at) VALUES (?,?,?,?,?,?)");
      st.bind(1, id)
          .bind(2, name.value)
          .bind(3, role.has() ? role.value : std::string("user"))
          .bind_optional(4, team_id)
          .bind(5, now)
          .bind(6, now);
      st.step();
      audit(req.who, "user.create", id, "{\"name\":" + json::quoted(name.value) + "}");
    });
    return {201, one("users", cols, id, user_json)};
  }
  if (parts.size() == 3) {
    const auto& id = parts[2];
    if (!exists("users", "id", id)) return not_found("no user with id '" + id + "'");
    if (req.method == "GET") return {200, one("users", cols, id, user_json)};
    if (req.method == "PATCH" || req.method == "PUT") {
      body_reader r;
      field<std::string> name, role;
      std::string team_id;
      bool team_given = false;
      if (auto e = read_body(r, name, role, team_id, team_given)) return *e;
      db.transaction([&] {
        if (name.has()) db.prepare("UPDATE users SET name = ? WHERE id = ?").bind(1, name.value).bind(2, id).step();
        if (role.has()) db.prepare("UPDATE users SET role = ? WHERE id = ?").bind(1, role.value).bind(2, id).step();
        if (team_given)
          db.prepare("UPDATE users SET team_id = ? WHERE id = ?").bind_optional(1, team_id).bind(2, id).step();
        db.prepare("UPDATE users SET updated_at = ? WHERE id = ?").bind(1, clock::unix_seconds()).bind(2, id).step();
        audit(req.who, "user.update", id, r.fields_detail());
      });
      return {200, one("users", cols, id, user_json)};
    }
    if (req.method == "DELETE") {
      db.transaction([&] {
        // The user's keys stop working; their rows stay for the usage history.
        db.prepare("UPDATE virtual_keys SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL")
            .bind(1, clock::unix_seconds())
            .bind(2, id)
            .step();
        db.prepare("DELETE FROM users WHERE id = ?").bind(1, id).step();
        audit(req.who, "user.delete", id);
      });
      admin_result res{200, "{\"id\":" + json::quoted(id) + ",\"deleted\":true}"};
      res.keys_changed = true;
      return res;
    }
  }
  return method_not_allowed(req);
}

} // namespace lowart::actors
