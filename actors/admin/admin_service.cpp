#include "actors/admin/admin_service.hpp"

#include "actors/admin/admin_util.hpp"
#include "actors/admin/rbac.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "core/secrets.hpp"
#include "storage/database.hpp"

#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <map>
#include <optional>
#include <set>
#include <sstream>

namespace lowart::actors {

namespace {

using storage::database;
using namespace admin_util;

std::string optional_int(const storage::statement& st, int col) {
  return st.is_null(col) ? "null" : std::to_string(st.integer(col));
}

std::string optional_real(const storage::statement& st, int col) {
  if (st.is_null(col)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", st.real(col));
  return buf;
}

std::string optional_text(const storage::statement& st, int col) {
  return st.is_null(col) ? "null" : json::quoted(st.text(col));
}

std::string provider_aad(std::string_view name) {
  return "providers/" + std::string(name) + "/api_key";
}

/// The settings of a provider that live in the `settings` JSON column.
std::string settings_json(const config::provider_config& p) {
  json::object_writer w;
  w.str("ca_file", p.ca_file)
      .boolean("verify_tls", p.verify_tls)
      .boolean("include_usage", p.include_usage)
      .num("connect_timeout_ms", p.connect_timeout_ms)
      .num("first_byte_timeout_ms", p.first_byte_timeout_ms)
      .num("idle_timeout_ms", p.idle_timeout_ms)
      .num("total_timeout_ms", p.total_timeout_ms)
      .num("max_idle_connections", p.max_idle_connections);
  return w.done();
}

void read_settings(simdjson::dom::parser& parser, const std::string& text, config::provider_config& p) {
  simdjson::padded_string padded(text);
  simdjson::dom::element doc;
  if (parser.parse(padded).get(doc) != simdjson::SUCCESS) return;
  std::string_view s;
  bool b = false;
  std::int64_t n = 0;
  if (doc["ca_file"].get_string().get(s) == simdjson::SUCCESS) p.ca_file = std::string(s);
  if (doc["verify_tls"].get_bool().get(b) == simdjson::SUCCESS) p.verify_tls = b;
  if (doc["include_usage"].get_bool().get(b) == simdjson::SUCCESS) p.include_usage = b;
  if (doc["connect_timeout_ms"].get_int64().get(n) == simdjson::SUCCESS) p.connect_timeout_ms = static_cast<int>(n);
  if (doc["first_byte_timeout_ms"].get_int64().get(n) == simdjson::SUCCESS)
    p.first_byte_timeout_ms = static_cast<int>(n);
  if (doc["idle_timeout_ms"].get_int64().get(n) == simdjson::SUCCESS) p.idle_timeout_ms = static_cast<int>(n);
  if (doc["total_timeout_ms"].get_int64().get(n) == simdjson::SUCCESS) p.total_timeout_ms = static_cast<int>(n);
  if (doc["max_idle_connections"].get_int64().get(n) == simdjson::SUCCESS) p.max_idle_connections = static_cast<int>(n);
}

std::string deployments_json(const std::vector<config::deployment_config>& deps) {
  std::vector<std::string> items;
  for (const auto& d : deps) {
    json::object_writer w;
    w.str("provider", d.provider).str("model", d.model).num("priority", d.priority).num("weight", d.weight);
    items.push_back(w.done());
  }
  return json::array(items);
}

std::vector<config::deployment_config> read_deployments(simdjson::dom::parser& parser, const std::string& text) {
  std::vector<config::deployment_config> out;
  simdjson::padded_string padded(text);
  simdjson::dom::element doc;
  if (parser.parse(padded).get(doc) != simdjson::SUCCESS) return out;
  simdjson::dom::array arr;
  if (doc.get_array().get(arr) != simdjson::SUCCESS) return out;
  for (auto item : arr) {
    config::deployment_config d;
    std::string_view s;
    std::int64_t n = 0;
    if (item["provider"].get_string().get(s) == simdjson::SUCCESS) d.provider = std::string(s);
    if (item["model"].get_string().get(s) == simdjson::SUCCESS) d.model = std::string(s);
    if (item["priority"].get_int64().get(n) == simdjson::SUCCESS) d.priority = static_cast<int>(n);
    if (item["weight"].get_int64().get(n) == simdjson::SUCCESS) d.weight = static_cast<int>(n);
    out.push_back(std::move(d));
  }
  return out;
}

constexpr const char* key_columns =
    "id, name, key_prefix, role, team_id, user_id, models, expires_at, rpm, tpm, max_parallel, budget_tokens,"
    " budget_cost, budget_period, created_at, revoked_at, permissions, agents, tools, parent_id";

std::string key_json(const storage::statement& st) {
  json::object_writer w;
  w.str("id", st.text(0))
      .str("name", st.text(1))
      .str("key_prefix", st.text(2))
      .str("role", st.text(3))
      .raw("team_id", optional_text(st, 4))
      .raw("user_id", optional_text(st, 5))
      .raw("models", st.text(6))
      .raw("expires_at", optional_int(st, 7))
      .raw("rpm", optional_int(st, 8))
      .raw("tpm", optional_int(st, 9))
      .raw("max_parallel", optional_int(st, 10))
      .raw("budget_tokens", optional_int(st, 11))
      .raw("budget_cost", optional_real(st, 12))
      .raw("budget_period", optional_text(st, 13))
      .num("created_at", st.integer(14))
      .raw("revoked_at", optional_int(st, 15))
      .raw("permissions", st.text(16))
      .raw("agents", st.text(17))
      .raw("tools", st.text(18))
      .raw("parent_id", optional_text(st, 19));
  return w.done();
}

constexpr const char* team_columns = "id, name, rpm, tpm, max_parallel, budget_tokens, budget_cost, budget_period, "
                                     "created_at, updated_at, agents, tools";

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
      .raw("tools", st.text(11));
  return w.done();
}

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

/// The limit columns shared by keys and teams, read from a body.
struct limit_fields {
  field<std::int64_t> rpm, tpm, max_parallel, budget_tokens;
  field<double> budget_cost;
  field<std::string> budget_period;

  void read(body_reader& r) {
    rpm = r.integer("rpm");
    tpm = r.integer("tpm");
    max_parallel = r.integer("max_parallel");
    budget_tokens = r.integer("budget_tokens");
    budget_cost = r.number("budget_cost");
    budget_period = r.text("budget_period", 10);
    if (budget_period.has() && budget_period.value != "day" && budget_period.value != "month")
      r.fail("budget_period", "budget_period must be \"day\" or \"month\"");
  }

  /// Appends "col = ?" assignments for present fields; binds happen in `bind`.
  void assignments(std::vector<std::string>& cols) const {
    if (rpm.present) cols.push_back("rpm");
    if (tpm.present) cols.push_back("tpm");
    if (max_parallel.present) cols.push_back("max_parallel");
    if (budget_tokens.present) cols.push_back("budget_tokens");
    if (budget_cost.present) cols.push_back("budget_cost");
    if (budget_period.present) cols.push_back("budget_period");
  }

  int bind(storage::statement& st, int at) const {
    auto int_field = [&](const field<std::int64_t>& f) {
      if (!f.present) return;
      if (f.null)
        st.bind_null(at++);
      else
        st.bind(at++, f.value);
    };
    int_field(rpm);
    int_field(tpm);
    int_field(max_parallel);
    int_field(budget_tokens);
    if (budget_cost.present) {
      if (budget_cost.null)
        st.bind_null(at++);
      else
        st.bind(at++, budget_cost.value);
    }
    if (budget_period.present) {
      if (budget_period.null)
        st.bind_null(at++);
      else
        st.bind(at++, budget_period.value);
    }
    return at;
  }
};

/// A stored JSON array of strings (other elements are skipped; bad JSON is empty).
std::vector<std::string> string_list(const std::string& text) {
  std::vector<std::string> out;
  simdjson::dom::parser parser;
  simdjson::dom::array arr;
  if (parser.parse(simdjson::padded_string(text)).get_array().get(arr) != simdjson::SUCCESS) return out;
  for (auto item : arr) {
    std::string_view v;
    if (item.get_string().get(v) == simdjson::SUCCESS) out.emplace_back(v);
  }
  return out;
}

/// Allow lists (and, on keys, permissions) read from a body.
struct access_fields {
  field<std::vector<std::string>> permissions, agents, tools;

  void read(body_reader& r, bool with_permissions) {
    if (with_permissions) permissions = r.strings("permissions");
    agents = r.strings("agents");
    tools = r.strings("tools");
  }
  bool any() const { return permissions.present || agents.present || tools.present; }
};

} // namespace

struct admin_service::impl {
  impl(database& d, gateway_state& s) : db(d), gw(s) {}

  database& db;
  gateway_state& gw;
  simdjson::dom::parser parser;

  void audit(const admin_caller& who, std::string_view action, std::string_view target, std::string detail = "{}") {
    db.prepare("INSERT INTO audit_log(ts_ms, actor, action, target, detail) VALUES (?,?,?,?,?)")
        .bind(1, clock::unix_ms())
        .bind(2, who.key_id)
        .bind(3, action)
        .bind(4, target)
        .bind(5, detail)
        .step();
  }

  /// Deletes one row, audits it, and answers {"<answer_key>": value, "deleted": true}.
  admin_result remove_row(const admin_request& req, const char* table, const char* column, const std::string& value,
                          const char* action, const char* answer_key) {
    db.transaction([&] {
      db.prepare(std::string("DELETE FROM ") + table + " WHERE " + column + " = ?").bind(1, value).step();
      audit(req.who, action, value);
    });
    json::object_writer w;
    w.str(answer_key, value).boolean("deleted", true);
    return {200, w.done()};
  }

  bool is_admin(const admin_caller& who) const { return who.key_id == "master" || who.role == "admin"; }

  /// Resolves a team given by id or name; "" when absent. Sets `found` false when unknown.
  std::string resolve_team(const std::string& ref, bool& found) {
    auto st = db.prepare("SELECT id FROM teams WHERE id = ? OR name = ?");
    st.bind(1, ref).bind(2, ref);
    found = st.step();
    return found ? st.text(0) : std::string{};
  }

  bool exists(const char* table, const char* column, const std::string& value) {
    auto st = db.prepare(std::string("SELECT 1 FROM ") + table + " WHERE " + column + " = ?");
    st.bind(1, value);
    return st.step();
  }

  // --- teams -----------------------------------------------------------------------------------

  admin_result teams(const admin_request& req, const std::vector<std::string>& parts) {
    if (parts.size() == 2 && req.method == "GET") {
      std::vector<std::string> items;
      auto st = db.prepare(std::string("SELECT ") + team_columns + " FROM teams ORDER BY name");
      while (st.step())
        items.push_back(team_json(st));
      return {200, list_json(items)};
    }
    if (parts.size() == 2 && req.method == "POST") {
      body_reader r;
      if (!r.parse(req.body)) return r.result();
      auto name = r.text("name");
      limit_fields lim;
      lim.read(r);
      access_fields access;
      access.read(r, false);
      if (r.ok() && !name.has()) r.fail("name", "name is required");
      if (!r.ok()) return r.result();
      if (auto e = check_access(access)) return *e;
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
        if (!r.parse(req.body)) return r.result();
        auto name = r.text("name");
        limit_fields lim;
        lim.read(r);
        access_fields access;
        access.read(r, false);
        if (!r.ok()) return r.result();
        if (auto e = check_access(access)) return *e;
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
          audit(req.who, "team.update", id);
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
    return error(405, "invalid_request_error", "method not allowed on " + req.path);
  }

  /// Unknown permissions, and allow lists naming agents, servers or tools that do not
  /// exist, are a 400 naming the field.
  std::optional<admin_result> check_access(const access_fields& a) {
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

  void apply_access(const char* table, const std::string& id, const access_fields& a) {
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
  }

  void apply_limits(const char* table, const std::string& id, const limit_fields& lim) {
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

  template <class Render>
  std::string one(const char* table, const char* columns, const std::string& id, Render render) {
    auto st = db.prepare(std::string("SELECT ") + columns + " FROM " + table + " WHERE id = ?");
    st.bind(1, id);
    return st.step() ? render(st) : std::string("null");
  }

  // --- users -----------------------------------------------------------------------------------

  admin_result users(const admin_request& req, const std::vector<std::string>& parts) {
    constexpr const char* cols = "id, name, role, team_id, created_at, updated_at";
    if (parts.size() == 2 && req.method == "GET") {
      std::vector<std::string> items;
      auto st = db.prepare(std::string("SELECT ") + cols + " FROM users ORDER BY name");
      while (st.step())
        items.push_back(user_json(st));
      return {200, list_json(items)};
    }
    auto read_body = [&](body_reader& r, field<std::string>& name, field<std::string>& role, std::string& team_id,
                         bool& team_given) -> std::optional<admin_result> {
      if (!r.parse(req.body)) return r.result();
      name = r.text("name");
      role = r.text("role", 20);
      auto team = r.text("team");
      if (!team.present) team = r.text("team_id");
      if (!r.ok()) return r.result();
      if (role.has() && !rbac::known_role(role.value))
        return bad_field("role", "role must be admin, operator, viewer or user");
      team_given = team.present;
      if (team.has()) {
        bool found = false;
        team_id = resolve_team(team.value, found);
        if (!found) return bad_field("team", "team '" + team.value + "' does not exist");
      }
      return std::nullopt;
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
          audit(req.who, "user.update", id);
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
    return error(405, "invalid_request_error", "method not allowed on " + req.path);
  }

  // --- keys ------------------------------------------------------------------------------------

  /// Creates a key; `forced_*` pin the owner for /v1/me.
  admin_result create_key(const admin_request& req, bool self_service) {
    body_reader r;
    if (!r.parse(req.body)) return r.result();
    auto name = r.text("name");
    auto role = r.text("role", 20);
    auto team = r.text("team");
    if (!team.present) team = r.text("team_id");
    auto user = r.text("user_id");
    auto models = r.strings("models");
    auto expires = r.integer("expires_at", 1);
    limit_fields lim;
    lim.read(r);
    access_fields access;
    access.read(r, true);
    if (r.ok() && !name.has()) r.fail("name", "name is required");
    if (!r.ok()) return r.result();
    if (auto e = check_access(access)) return *e;
    std::string key_role = role.has() ? role.value : "user";
    if (!rbac::known_role(key_role)) return bad_field("role", "role must be admin, operator, viewer or user");
    std::string team_id, user_id;
    std::vector<std::string> allowed = models.has() ? models.value : std::vector<std::string>{};
    if (self_service) {
      // A user mints keys for themself: role user, their team, at most their models.
      if (key_role != "user") return error(403, "permission_error", "self-service keys have role user", "role");
      team_id = req.who.team_id;
      user_id = req.who.user_id;
      auto mine = caller_models(req.who);
      if (!mine.empty()) {
        if (allowed.empty()) allowed = mine;
        for (const auto& m : allowed)
          if (std::find(mine.begin(), mine.end(), m) == mine.end())
            return error(403, "permission_error", "model '" + m + "' is not allowed for your key", "models");
      }
    } else {
      if (!is_admin(req.who) && rbac::rank(key_role) >= rbac::rank(req.who.role))
        return error(403, "permission_error", "a " + req.who.role + " may not create keys with role " + key_role,
                     "role");
      if (team.has()) {
        bool found = false;
        team_id = resolve_team(team.value, found);
        if (!found) return bad_field("team", "team '" + team.value + "' does not exist");
      }
      if (user.has()) {
        if (!exists("users", "id", user.value)) return bad_field("user_id", "user '" + user.value + "' does not exist");
        user_id = user.value;
      }
    }
    if (expires.has() && expires.value <= clock::unix_seconds())
      return bad_field("expires_at", "expires_at must be in the future");
    // No key makes one with more than it has: the caller's limits and expiry bound the
    // new key's (absent ones are inherited, larger ones refused). Admins are unbounded.
    std::string parent_id;
    if (!is_admin(req.who)) {
      auto bounds = caller_bounds(req.who.key_id);
      if (auto refusal = bound_limits(bounds, lim, expires)) return *refusal;
      if (self_service) {
        parent_id = bounds.parent_id.empty() ? req.who.key_id : bounds.parent_id;
        if (auto refusal = bound_access(bounds, access)) return *refusal;
      }
    }
    auto key = secrets::new_virtual_key();
    auto id = "key_" + secrets::random_hex(8);
    db.transaction([&] {
      auto st = db.prepare("INSERT INTO virtual_keys(id, name, key_hash, key_prefix, role, team_id, user_id, models,"
                           " expires_at, created_at, parent_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)");
      st.bind(1, id)
          .bind(2, name.value)
          .bind(3, secrets::sha256_hex(key))
          .bind(4, secrets::key_prefix(key))
          .bind(5, key_role)
          .bind_optional(6, team_id)
          .bind_optional(7, user_id)
          .bind(8, json::string_array(allowed));
      if (expires.has())
        st.bind(9, expires.value);
      else
        st.bind_null(9);
      st.bind(10, clock::unix_seconds());
      st.bind_optional(11, parent_id);
      st.step();
      apply_limits("virtual_keys", id, lim);
      apply_access("virtual_keys", id, access);
      audit(req.who, self_service ? "key.create.self" : "key.create", id,
            "{\"name\":" + json::quoted(name.value) + ",\"role\":" + json::quoted(key_role) + "}");
    });
    auto view = one("virtual_keys", key_columns, id, key_json);
    // The key itself appears in this one answer and nowhere else.
    view.insert(1, "\"key\":" + json::quoted(key) + ",");
    admin_result res{201, std::move(view)};
    res.keys_changed = true;
    return res;
  }

  /// The calling key's own limits, expiry and maker.
  struct key_bounds {
    lowart::limits lim;
    std::int64_t expires_at = 0;
    std::string parent_id;
    std::vector<std::string> permissions, agents, tools;
  };
  key_bounds caller_bounds(const std::string& key_id) {
    key_bounds b;
    auto st = db.prepare("SELECT COALESCE(rpm, 0), COALESCE(tpm, 0), COALESCE(max_parallel, 0),"
                         " COALESCE(budget_tokens, 0), COALESCE(budget_cost, 0), COALESCE(budget_period, ''),"
                         " COALESCE(expires_at, 0), COALESCE(parent_id, ''), permissions, agents, tools"
                         " FROM virtual_keys WHERE id = ?");
    st.bind(1, key_id);
    if (!st.step()) return b;
    b.lim = {st.integer(0), st.integer(1), st.integer(2), st.integer(3), st.real(4), st.text(5)};
    b.expires_at = st.integer(6);
    b.parent_id = st.text(7);
    b.permissions = string_list(st.text(8));
    b.agents = string_list(st.text(9));
    b.tools = string_list(st.text(10));
    return b;
  }

  /// A self-made key's permissions and allow lists are within its maker's (inherited
  /// when absent).
  std::optional<admin_result> bound_access(const key_bounds& b, access_fields& a) {
    if (a.permissions.has())
      for (const auto& p : a.permissions.value)
        if (std::find(b.permissions.begin(), b.permissions.end(), p) == b.permissions.end())
          return error(403, "permission_error", "your key does not have the permission '" + p + "'", "permissions");
    auto within = [&](field<std::vector<std::string>>& f, const std::vector<std::string>& mine,
                      const char* name) -> std::optional<admin_result> {
      if (mine.empty()) return std::nullopt;
      if (!f.has() || f.value.empty()) {
        f.present = true;
        f.null = false;
        f.value = mine;
        return std::nullopt;
      }
      for (const auto& x : f.value)
        if (std::find(mine.begin(), mine.end(), x) == mine.end())
          return error(403, "permission_error", std::string(name) + ": '" + x + "' is not allowed for your key", name);
      return std::nullopt;
    };
    if (auto r = within(a.agents, b.agents, "agents")) return r;
    return within(a.tools, b.tools, "tools");
  }

  /// Fills absent limits (and expiry) of a new key from the caller's and refuses larger
  /// ones: 403 naming the field.
  std::optional<admin_result> bound_limits(const key_bounds& b, limit_fields& lim, field<std::int64_t>& expires) {
    auto over = [](const char* name, const std::string& mine) {
      return error(403, "permission_error",
                   std::string(name) + " may not be more than your key's (" + mine +
                       "): a key made by a key "
                       "never has more than it",
                   name);
    };
    auto bound = [&](auto& f, auto mine, const char* name) -> std::optional<admin_result> {
      if (mine <= 0) return std::nullopt;
      if (!f.present) {
        f.present = true;
        f.null = false;
        f.value = mine;
        return std::nullopt;
      }
      if (f.null || f.value <= 0 || f.value > mine) { // 0 and null mean no limit
        std::ostringstream text;
        text << mine;
        return over(name, text.str());
      }
      return std::nullopt;
    };
    if (auto r = bound(lim.rpm, b.lim.rpm, "rpm")) return r;
    if (auto r = bound(lim.tpm, b.lim.tpm, "tpm")) return r;
    if (auto r = bound(lim.max_parallel, b.lim.max_parallel, "max_parallel")) return r;
    if (auto r = bound(lim.budget_tokens, b.lim.budget_tokens, "budget_tokens")) return r;
    if (auto r = bound(lim.budget_cost, b.lim.budget_cost, "budget_cost")) return r;
    if (b.lim.budget_tokens > 0 || b.lim.budget_cost > 0) {
      auto mine = b.lim.budget_period.empty() ? std::string("month") : b.lim.budget_period;
      if (!lim.budget_period.has()) {
        lim.budget_period.present = true;
        lim.budget_period.null = false;
        lim.budget_period.value = mine;
      } else if (lim.budget_period.value != mine) {
        return over("budget_period", mine);
      }
    }
    if (b.expires_at > 0) {
      if (!expires.has()) {
        expires.present = true;
        expires.null = false;
        expires.value = b.expires_at;
      } else if (expires.value > b.expires_at) {
        return over("expires_at", std::to_string(b.expires_at));
      }
    }
    return std::nullopt;
  }

  std::vector<std::string> caller_models(const admin_caller& who) {
    std::vector<std::string> out;
    auto st = db.prepare("SELECT models FROM virtual_keys WHERE id = ?");
    st.bind(1, who.key_id);
    if (!st.step()) return out;
    auto text = st.text(0);
    simdjson::padded_string padded(text);
    simdjson::dom::element doc;
    if (parser.parse(padded).get(doc) != simdjson::SUCCESS) return out;
    simdjson::dom::array arr;
    if (doc.get_array().get(arr) != simdjson::SUCCESS) return out;
    for (auto item : arr) {
      std::string_view s;
      if (item.get_string().get(s) == simdjson::SUCCESS) out.emplace_back(s);
    }
    return out;
  }

  admin_result revoke_key(const admin_request& req, const std::string& id, const char* action) {
    std::int64_t changed = 0;
    db.transaction([&] {
      db.prepare("UPDATE virtual_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
          .bind(1, clock::unix_seconds())
          .bind(2, id)
          .step();
      changed = db.changes();
      if (changed) {
        // The keys it made go with it.
        db.prepare("UPDATE virtual_keys SET revoked_at = ? WHERE parent_id = ? AND revoked_at IS NULL")
            .bind(1, clock::unix_seconds())
            .bind(2, id)
            .step();
        audit(req.who, action, id);
      }
    });
    if (!changed) return not_found("no active key with id '" + id + "'");
    admin_result res{200, "{\"id\":" + json::quoted(id) + ",\"revoked\":true}"};
    res.keys_changed = true;
    return res;
  }

  admin_result keys(const admin_request& req, const std::vector<std::string>& parts) {
    if (parts.size() == 2 && req.method == "GET") {
      auto q = parse_query(req.query);
      std::string sql = std::string("SELECT ") + key_columns + " FROM virtual_keys WHERE 1=1";
      std::vector<std::string> binds;
      if (q.count("team")) {
        sql += " AND team_id = ?";
        binds.push_back(q["team"]);
      }
      if (q.count("user")) {
        sql += " AND user_id = ?";
        binds.push_back(q["user"]);
      }
      if (q.count("active")) sql += " AND revoked_at IS NULL";
      sql += " ORDER BY created_at, id";
      auto st = db.prepare(sql);
      for (std::size_t i = 0; i < binds.size(); ++i)
        st.bind(static_cast<int>(i + 1), binds[i]);
      std::vector<std::string> items;
      while (st.step())
        items.push_back(key_json(st));
      return {200, list_json(items)};
    }
    if (parts.size() == 2 && req.method == "POST") return create_key(req, false);
    if (parts.size() == 3) {
      const auto& id = parts[2];
      if (!exists("virtual_keys", "id", id)) return not_found("no key with id '" + id + "'");
      if (req.method == "GET") return {200, one("virtual_keys", key_columns, id, key_json)};
      if (req.method == "DELETE") return revoke_key(req, id, "key.revoke");
      if (req.method == "PATCH" || req.method == "PUT") {
        if (!is_admin(req.who) && id == req.who.key_id)
          return error(403, "permission_error", "a key may not change itself; ask an admin");
        body_reader r;
        if (!r.parse(req.body)) return r.result();
        auto name = r.text("name");
        auto role = r.text("role", 20);
        auto models = r.strings("models");
        auto expires = r.integer("expires_at", 1);
        auto team = r.text("team");
        limit_fields lim;
        lim.read(r);
        access_fields access;
        access.read(r, true);
        if (!r.ok()) return r.result();
        if (auto e = check_access(access)) return *e;
        if (role.has()) {
          if (!rbac::known_role(role.value)) return bad_field("role", "role must be admin, operator, viewer or user");
          if (!is_admin(req.who)) return error(403, "permission_error", "only admins change a key's role", "role");
        }
        std::string team_id;
        if (team.has()) {
          bool found = false;
          team_id = resolve_team(team.value, found);
          if (!found) return bad_field("team", "team '" + team.value + "' does not exist");
        }
        db.transaction([&] {
          if (name.has())
            db.prepare("UPDATE virtual_keys SET name = ? WHERE id = ?").bind(1, name.value).bind(2, id).step();
          if (role.has())
            db.prepare("UPDATE virtual_keys SET role = ? WHERE id = ?").bind(1, role.value).bind(2, id).step();
          if (models.present)
            db.prepare("UPDATE virtual_keys SET models = ? WHERE id = ?")
                .bind(1, json::string_array(models.has() ? models.value : std::vector<std::string>{}))
                .bind(2, id)
                .step();
          if (expires.present) {
            auto st = db.prepare("UPDATE virtual_keys SET expires_at = ? WHERE id = ?");
            if (expires.null)
              st.bind_null(1);
            else
              st.bind(1, expires.value);
            st.bind(2, id).step();
          }
          if (team.present)
            db.prepare("UPDATE virtual_keys SET team_id = ? WHERE id = ?").bind_optional(1, team_id).bind(2, id).step();
          apply_limits("virtual_keys", id, lim);
          apply_access("virtual_keys", id, access);
          audit(req.who, "key.update", id);
        });
        admin_result res{200, one("virtual_keys", key_columns, id, key_json)};
        res.keys_changed = true;
        return res;
      }
    }
    return error(405, "invalid_request_error", "method not allowed on " + req.path);
  }

  // --- providers and models ----------------------------------------------------------------------

  /// API-made providers (keys still sealed) by name.
  std::map<std::string, config::provider_config> db_providers(bool open_keys) {
    std::map<std::string, config::provider_config> out;
    auto st = db.prepare("SELECT name, kind, base_url, api_key, settings FROM providers");
    while (st.step()) {
      config::provider_config p;
      p.name = st.text(0);
      p.kind = st.text(1);
      p.base_url = st.text(2);
      auto sealed = st.text(3);
      if (open_keys && !sealed.empty()) {
        auto opened = gw.keyring.open(sealed, provider_aad(p.name));
        if (!opened)
          throw std::runtime_error("cannot open the stored api_key of provider '" + p.name +
                                   "': LOWART_ENCRYPTION_KEY is missing or is not the key it was sealed with (key id " +
                                   crypto::keyring::key_id_of(sealed) + ")");
        p.api_key = std::move(*opened);
      } else if (!sealed.empty()) {
        p.api_key = "sealed";
      }
      read_settings(parser, st.text(4), p);
      out[p.name] = std::move(p);
    }
    return out;
  }

  std::map<std::string, std::vector<config::deployment_config>> db_models() {
    std::map<std::string, std::vector<config::deployment_config>> out;
    auto st = db.prepare("SELECT name, deployments FROM models");
    while (st.step())
      out[st.text(0)] = read_deployments(parser, st.text(1));
    return out;
  }

  std::string provider_view(const config::provider_config& p, std::string_view source) {
    json::object_writer w;
    w.str("name", p.name)
        .str("kind", p.kind)
        .str("base_url", p.base_url)
        .boolean("api_key_set", !p.api_key.empty())
        .str("source", source)
        .raw("settings", settings_json(p));
    return w.done();
  }

  admin_result providers(const admin_request& req, const std::vector<std::string>& parts) {
    auto file = gw.routing.load();
    auto stored = db_providers(false);
    auto find_file = [&](const std::string& name) -> const config::provider_config* {
      for (const auto& p : file->providers)
        if (p.name == name) return &p;
      return nullptr;
    };
    if (parts.size() == 2 && req.method == "GET") {
      std::map<std::string, std::string> items;
      for (const auto& p : file->providers)
        items[p.name] = provider_view(p, "config");
      for (const auto& [name, p] : stored)
        items[name] = provider_view(p, "api");
      std::vector<std::string> list;
      for (auto& [_, v] : items)
        list.push_back(std::move(v));
      return {200, list_json(list)};
    }
    bool create = parts.size() == 2 && req.method == "POST";
    bool update = parts.size() == 3 && (req.method == "PUT" || req.method == "PATCH");
    if (create || update) {
      body_reader r;
      if (!r.parse(req.body)) return r.result();
      auto name = r.text("name", 100);
      auto kind = r.text("kind", 20);
      auto base_url = r.text("base_url", 2000);
      auto api_key = r.text("api_key", 4000);
      auto ca_file = r.text("ca_file", 4000, true);
      auto verify = r.flag("verify_tls");
      auto usage = r.flag("include_usage");
      auto connect = r.integer("connect_timeout_ms", 1);
      auto first_byte = r.integer("first_byte_timeout_ms", 1);
      auto idle = r.integer("idle_timeout_ms", 1);
      auto total = r.integer("total_timeout_ms", 1);
      auto max_idle = r.integer("max_idle_connections", 0);
      if (!r.ok()) return r.result();
      std::string pname = create ? name.value : parts[2];
      if (create && !name.has()) return bad_field("name", "name is required");
      if (update && name.has() && name.value != pname)
        return bad_field("name", "name cannot be changed; create a new provider");
      bool in_db = stored.count(pname) > 0;
      const auto* in_file = find_file(pname);
      if (create && (in_db || in_file))
        return error(409, "conflict_error",
                     "provider '" + pname + "' exists" + (in_file ? " (in lowart.toml; PUT overrides it)" : ""),
                     "name");
      // Start from what exists (stored override, else the file's), then apply the body.
      config::provider_config p;
      std::string sealed_key;
      if (in_db) {
        p = stored[pname];
        auto st = db.prepare("SELECT api_key FROM providers WHERE name = ?");
        st.bind(1, pname);
        if (st.step() && !st.is_null(0)) sealed_key = st.text(0);
      } else if (in_file) {
        p = *in_file;
      }
      p.name = pname;
      if (kind.has()) p.kind = kind.value;
      if (base_url.has()) p.base_url = base_url.value;
      if (ca_file.present) p.ca_file = ca_file.has() ? ca_file.value : "";
      if (verify.has()) p.verify_tls = verify.value;
      if (usage.has()) p.include_usage = usage.value;
      if (connect.has()) p.connect_timeout_ms = static_cast<int>(connect.value);
      if (first_byte.has()) p.first_byte_timeout_ms = static_cast<int>(first_byte.value);
      if (idle.has()) p.idle_timeout_ms = static_cast<int>(idle.value);
      if (total.has()) p.total_timeout_ms = static_cast<int>(total.value);
      if (max_idle.has()) p.max_idle_connections = static_cast<int>(max_idle.value);
      if (p.kind != "openai" && p.kind != "anthropic" && p.kind != "comfyui")
        return bad_field("kind", "kind must be openai, anthropic or comfyui");
      upstream_target target;
      while (!p.base_url.empty() && p.base_url.back() == '/')
        p.base_url.pop_back();
      if (!parse_upstream(p.base_url, target))
        return bad_field("base_url", "base_url must be an http:// or https:// URL");
      bool key_changed = false;
      if (api_key.present) {
        key_changed = true;
        if (api_key.null) {
          sealed_key.clear();
        } else {
          if (!gw.keyring.can_seal())
            return error(
                400, "invalid_request_error",
                "api_key cannot be stored: start lowart with LOWART_ENCRYPTION_KEY so keys are encrypted at rest",
                "api_key");
          sealed_key = gw.keyring.seal(api_key.value, provider_aad(pname));
        }
      } else if (!in_db && in_file && !in_file->api_key.empty()) {
        // Overriding a file provider keeps the file's key source (its env variable).
        if (!gw.keyring.can_seal())
          return error(400, "invalid_request_error",
                       "overriding this provider needs its api_key stored: start lowart with LOWART_ENCRYPTION_KEY",
                       "api_key");
        sealed_key = gw.keyring.seal(in_file->api_key, provider_aad(pname));
      }
      auto now = clock::unix_seconds();
      db.transaction([&] {
        auto st =
            db.prepare("INSERT INTO providers(name, kind, base_url, api_key, settings, created_at, updated_at) VALUES "
                       "(?,?,?,?,?,?,?)"
                       " ON CONFLICT(name) DO UPDATE SET kind = excluded.kind, base_url = excluded.base_url,"
                       " api_key = excluded.api_key, settings = excluded.settings, updated_at = excluded.updated_at");
        st.bind(1, pname)
            .bind(2, p.kind)
            .bind(3, p.base_url)
            .bind_optional(4, sealed_key)
            .bind(5, settings_json(p))
            .bind(6, now)
            .bind(7, now);
        st.step();
        json::object_writer detail;
        detail.str("kind", p.kind).str("base_url", p.base_url).boolean("api_key_changed", key_changed);
        audit(req.who, create ? "provider.create" : "provider.update", pname, detail.done());
      });
      p.api_key = sealed_key;
      admin_result res{create ? 201 : 200, provider_view(p, "api")};
      res.catalog_changed = true;
      return res;
    }
    if (parts.size() == 3) {
      const auto& pname = parts[2];
      bool in_db = stored.count(pname) > 0;
      const auto* in_file = find_file(pname);
      if (!in_db && !in_file) return not_found("no provider named '" + pname + "'");
      if (req.method == "GET")
        return {200, in_db ? provider_view(stored[pname], "api") : provider_view(*in_file, "config")};
      if (req.method == "DELETE") {
        if (!in_db)
          return error(409, "conflict_error", "provider '" + pname + "' is defined in lowart.toml; edit the file");
        if (!in_file) {
          // Without a file fallback, models must not be left pointing at nothing.
          for (const auto& [model, deps] : db_models())
            for (const auto& d : deps)
              if (d.provider == pname)
                return error(409, "conflict_error", "model '" + model + "' still uses provider '" + pname + "'");
        }
        auto res = remove_row(req, "providers", "name", pname, "provider.delete", "name");
        res.catalog_changed = true;
        return res;
      }
    }
    return error(405, "invalid_request_error", "method not allowed on " + req.path);
  }

  std::string model_view(const std::string& name, const std::vector<config::deployment_config>& deps,
                         std::string_view source) {
    json::object_writer w;
    w.str("name", name).raw("deployments", deployments_json(deps)).str("source", source);
    return w.done();
  }

  admin_result models(const admin_request& req, const std::vector<std::string>& parts) {
    auto file = gw.routing.load();
    auto stored = db_models();
    auto find_file = [&](const std::string& name) -> const config::model_config* {
      for (const auto& m : file->models)
        if (m.name == name) return &m;
      return nullptr;
    };
    if (parts.size() == 2 && req.method == "GET") {
      std::map<std::string, std::string> items;
      for (const auto& m : file->models)
        items[m.name] = model_view(m.name, m.deployments, "config");
      for (const auto& [name, deps] : stored)
        items[name] = model_view(name, deps, "api");
      std::vector<std::string> list;
      for (auto& [_, v] : items)
        list.push_back(std::move(v));
      return {200, list_json(list)};
    }
    bool create = parts.size() == 2 && req.method == "POST";
    bool update = parts.size() == 3 && (req.method == "PUT" || req.method == "PATCH");
    if (create || update) {
      body_reader r;
      if (!r.parse(req.body)) return r.result();
      auto name = r.text("name", 200);
      if (!r.ok()) return r.result();
      // Routing options beyond the deployments (fallbacks, balancing, retries, timeouts,
      // limits, scripts) live in lowart.toml; refused here rather than silently dropped.
      if (auto extra = r.unknown_member({"name", "deployments"}); !extra.empty())
        return bad_field(extra, "'" + extra +
                                    "' cannot be set through the admin API; models made here have name and "
                                    "deployments (set other options for a model in lowart.toml)");
      std::string mname = create ? name.value : parts[2];
      if (create && !name.has()) return bad_field("name", "name is required");
      if (create && (stored.count(mname) || find_file(mname)))
        return error(409, "conflict_error", "model '" + mname + "' exists", "name");
      auto deps_el = r.element("deployments");
      simdjson::dom::array arr;
      if (!deps_el || deps_el->get_array().get(arr) != simdjson::SUCCESS || arr.size() == 0)
        return bad_field("deployments", "deployments must be a non-empty array of {provider, model, priority, weight}");
      std::set<std::string> known;
      for (const auto& p : file->providers)
        known.insert(p.name);
      for (const auto& [n, _] : db_providers(false))
        known.insert(n);
      std::vector<config::deployment_config> deps;
      std::size_t i = 0;
      for (auto item : arr) {
        auto where = "deployments[" + std::to_string(i++) + "]";
        config::deployment_config d;
        std::string_view s;
        std::int64_t n = 0;
        if (item["provider"].get_string().get(s) != simdjson::SUCCESS || s.empty())
          return bad_field(where + ".provider", where + ".provider must name a provider");
        d.provider = std::string(s);
        if (!known.count(d.provider))
          return bad_field(where + ".provider", "provider '" + d.provider + "' does not exist");
        if (item["model"].get_string().get(s) != simdjson::SUCCESS || s.empty())
          return bad_field(where + ".model", where + ".model must be the upstream model name");
        d.model = std::string(s);
        if (auto e = item["priority"]; e.error() != simdjson::NO_SUCH_FIELD) {
          if (e.get_int64().get(n) != simdjson::SUCCESS)
            return bad_field(where + ".priority", "priority must be an integer");
          d.priority = static_cast<int>(n);
        }
        if (auto e = item["weight"]; e.error() != simdjson::NO_SUCH_FIELD) {
          if (e.get_int64().get(n) != simdjson::SUCCESS || n < 1)
            return bad_field(where + ".weight", "weight must be an integer of at least 1");
          d.weight = static_cast<int>(n);
        }
        deps.push_back(std::move(d));
      }
      auto now = clock::unix_seconds();
      db.transaction([&] {
        db.prepare(
              "INSERT INTO models(name, deployments, created_at, updated_at) VALUES (?,?,?,?)"
              " ON CONFLICT(name) DO UPDATE SET deployments = excluded.deployments, updated_at = excluded.updated_at")
            .bind(1, mname)
            .bind(2, deployments_json(deps))
            .bind(3, now)
            .bind(4, now)
            .step();
        audit(req.who, create ? "model.create" : "model.update", mname, deployments_json(deps));
      });
      admin_result res{create ? 201 : 200, model_view(mname, deps, "api")};
      res.catalog_changed = true;
      return res;
    }
    if (parts.size() == 3) {
      const auto& mname = parts[2];
      bool in_db = stored.count(mname) > 0;
      const auto* in_file = find_file(mname);
      if (!in_db && !in_file) return not_found("no model named '" + mname + "'");
      if (req.method == "GET")
        return {200,
                in_db ? model_view(mname, stored[mname], "api") : model_view(mname, in_file->deployments, "config")};
      if (req.method == "DELETE") {
        if (!in_db)
          return error(409, "conflict_error", "model '" + mname + "' is defined in lowart.toml; edit the file");
        auto res = remove_row(req, "models", "name", mname, "model.delete", "name");
        res.catalog_changed = true;
        return res;
      }
    }
    return error(405, "invalid_request_error", "method not allowed on " + req.path);
  }

  // --- audit and usage ---------------------------------------------------------------------------

  admin_result audit_log(const admin_request& req, const std::vector<std::string>& parts) {
    if (parts.size() != 2 || req.method != "GET") return error(405, "invalid_request_error", "use GET /admin/audit");
    auto q = parse_query(req.query);
    std::int64_t limit = 100;
    if (q.count("limit")) {
      limit = std::atoll(q["limit"].c_str());
      if (limit < 1 || limit > 1000) return bad_field("limit", "limit must be 1 to 1000");
    }
    std::string sql = "SELECT id, ts_ms, actor, action, target, detail FROM audit_log WHERE 1=1";
    std::vector<std::string> binds;
    if (q.count("actor")) {
      sql += " AND actor = ?";
      binds.push_back(q["actor"]);
    }
    if (q.count("action")) {
      sql += " AND LOWER(action) LIKE LOWER(?)"; // case-insensitive on both databases
      binds.push_back(q["action"] + "%");
    }
    if (q.count("target")) {
      sql += " AND target = ?";
      binds.push_back(q["target"]);
    }
    sql += " ORDER BY id DESC LIMIT ?";
    auto st = db.prepare(sql);
    int at = 1;
    for (const auto& b : binds)
      st.bind(at++, b);
    st.bind(at, limit);
    std::vector<std::string> items;
    while (st.step()) {
      json::object_writer w;
      w.num("id", st.integer(0))
          .num("ts_ms", st.integer(1))
          .str("actor", st.text(2))
          .str("action", st.text(3))
          .raw("target", optional_text(st, 4))
          .raw("detail", st.is_null(5) ? "null" : st.text(5));
      items.push_back(w.done());
    }
    return {200, list_json(items)};
  }

  // --- prices ------------------------------------------------------------------------------------

  admin_result prices(const admin_request& req, const std::vector<std::string>& parts) {
    constexpr const char* cols =
        "model, input_per_1m, output_per_1m, cached_input_per_1m, per_request, version, updated_at, tiers, per_image";
    auto render = [](const storage::statement& st) {
      json::object_writer w;
      w.str("model", st.text(0))
          .real("input_per_1m", st.real(1))
          .real("output_per_1m", st.real(2))
          .real("cached_input_per_1m", st.real(3))
          .real("per_request", st.real(4))
          .num("version", st.integer(5))
          .num("updated_at", st.integer(6))
          .raw("tiers", st.text(7))
          .real("per_image", st.real(8));
      return w.done();
    };
    if (parts.size() == 2 && req.method == "GET") {
      std::vector<std::string> items;
      auto st = db.prepare(std::string("SELECT ") + cols + " FROM prices ORDER BY model");
      while (st.step())
        items.push_back(render(st));
      return {200, list_json(items)};
    }
    if (parts.size() != 3) return error(405, "invalid_request_error", "use /admin/prices/{model}");
    const auto& model = parts[2];
    auto one_price = [&] {
      auto st = db.prepare(std::string("SELECT ") + cols + " FROM prices WHERE model = ?");
      st.bind(1, model);
      return st.step() ? render(st) : std::string("null");
    };
    if (req.method == "GET") {
      if (!exists("prices", "model", model)) return not_found("no price for model '" + model + "'");
      return {200, one_price()};
    }
    if (req.method == "PUT" || req.method == "PATCH") {
      body_reader r;
      if (!r.parse(req.body)) return r.result();
      auto in = r.number("input_per_1m");
      auto out = r.number("output_per_1m");
      auto cached = r.number("cached_input_per_1m");
      auto per_request = r.number("per_request");
      auto per_image = r.number("per_image");
      if (!r.ok()) return r.result();
      // tiers: [{above_tokens, input_per_1m, output_per_1m, cached_input_per_1m}], ascending.
      std::optional<std::string> tiers_json;
      if (auto tiers = r.element("tiers")) {
        simdjson::dom::array arr;
        if (tiers->get_array().get(arr) != simdjson::SUCCESS)
          return bad_field(
              "tiers", "tiers must be an array of {above_tokens, input_per_1m, output_per_1m, cached_input_per_1m}");
        std::vector<std::string> items;
        std::int64_t last = -1;
        std::size_t i = 0;
        for (auto t : arr) {
          auto where = "tiers[" + std::to_string(i++) + "]";
          std::int64_t above = 0;
          if (t["above_tokens"].get_int64().get(above) != simdjson::SUCCESS || above <= last)
            return bad_field(where + ".above_tokens", "above_tokens must be an integer, ascending across tiers");
          last = above;
          json::object_writer w;
          w.num("above_tokens", above);
          for (const char* k : {"input_per_1m", "output_per_1m", "cached_input_per_1m"}) {
            double v = 0;
            if (t[k].error() != simdjson::NO_SUCH_FIELD && (t[k].get_double().get(v) != simdjson::SUCCESS || v < 0))
              return bad_field(where + "." + k, std::string(k) + " must be a non-negative number");
            w.real(k, v);
          }
          items.push_back(w.done());
        }
        tiers_json = json::array(items);
      }
      bool had = exists("prices", "model", model);
      db.transaction([&] {
        // Every change is a new version; usage records name the version they were priced at.
        db.prepare("INSERT INTO prices(model, updated_at) VALUES (?, ?) ON CONFLICT(model) DO UPDATE SET"
                   " version = prices.version + 1, updated_at = excluded.updated_at")
            .bind(1, model)
            .bind(2, clock::unix_seconds())
            .step();
        auto set = [&](const char* col, const field<double>& f) {
          if (f.has())
            db.prepare(std::string("UPDATE prices SET ") + col + " = ? WHERE model = ?")
                .bind(1, f.value)
                .bind(2, model)
                .step();
        };
        set("input_per_1m", in);
        set("output_per_1m", out);
        set("cached_input_per_1m", cached);
        set("per_request", per_request);
        set("per_image", per_image);
        if (tiers_json)
          db.prepare("UPDATE prices SET tiers = ? WHERE model = ?").bind(1, *tiers_json).bind(2, model).step();
        audit(req.who, had ? "price.update" : "price.create", model, one_price());
      });
      admin_result res{had ? 200 : 201, one_price()};
      res.prices_changed = true;
      return res;
    }
    if (req.method == "DELETE") {
      if (!exists("prices", "model", model)) return not_found("no price for model '" + model + "'");
      auto res = remove_row(req, "prices", "model", model, "price.delete", "model");
      res.prices_changed = true;
      return res;
    }
    return error(405, "invalid_request_error", "method not allowed on " + req.path);
  }

  // --- usage reports -------------------------------------------------------------------------------

  /// GET /admin/usage?group_by=key|team|model|day|status|error_code&from=&to=&status=&error_code=
  /// &format=json|csv (from/to: unix seconds or YYYY-MM-DD, UTC; to is exclusive; status: a
  /// code such as 429 or a class such as 4xx).
  admin_result usage(const admin_request& req, const std::vector<std::string>& parts) {
    if (parts.size() != 2 || req.method != "GET") return error(405, "invalid_request_error", "use GET /admin/usage");
    auto q = parse_query(req.query);
    std::string group = q.count("group_by") ? q["group_by"] : "model";
    std::string column;
    if (group == "key")
      column = "u.key_id";
    else if (group == "team")
      column = "COALESCE(k.team_id, '')";
    else if (group == "model")
      column = "COALESCE(u.model, '')";
    else if (group == "day")
      column = db.utc_day("u.ts_ms");
    else if (group == "status")
      column = "CAST(u.status AS TEXT)";
    else if (group == "error_code")
      column = "COALESCE(u.error_code, '')";
    else
      return bad_field("group_by", "group_by must be key, team, model, day, status or error_code");
    // Refusals and failures: by status code or class, by reason code.
    std::string status_sql;
    std::int64_t status_lo = 0, status_hi = 0;
    if (q.count("status")) {
      const auto& v = q["status"];
      char* end = nullptr;
      if (v.size() == 3 && v[0] >= '1' && v[0] <= '5' && (v.substr(1) == "xx" || v.substr(1) == "XX")) {
        status_lo = (v[0] - '0') * 100;
        status_hi = status_lo + 99;
      } else if (auto n = std::strtoll(v.c_str(), &end, 10); end && *end == 0 && n >= 100 && n <= 599) {
        status_lo = status_hi = n;
      } else {
        return bad_field("status", "status must be an HTTP status (429) or a class (4xx)");
      }
      status_sql = " AND u.status BETWEEN ? AND ?";
    }
    std::string code_sql = q.count("error_code") ? " AND u.error_code = ?" : "";
    auto when = [&](const char* name, std::int64_t fallback, std::int64_t& out) -> bool {
      if (!q.count(name)) {
        out = fallback;
        return true;
      }
      const auto& v = q[name];
      if (v.size() == 10 && v[4] == '-' && v[7] == '-') {
        std::tm tm{};
        char* end = nullptr;
        tm.tm_year = static_cast<int>(std::strtol(v.c_str(), &end, 10)) - 1900;
        tm.tm_mon = static_cast<int>(std::strtol(v.c_str() + 5, &end, 10)) - 1;
        tm.tm_mday = static_cast<int>(std::strtol(v.c_str() + 8, &end, 10));
        if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_year < 0) return false;
        out = static_cast<std::int64_t>(timegm(&tm));
        return true;
      }
      char* end = nullptr;
      out = std::strtoll(v.c_str(), &end, 10);
      return end && *end == 0 && !v.empty();
    };
    std::int64_t from = 0, to = 0;
    if (!when("from", 0, from)) return bad_field("from", "from must be unix seconds or YYYY-MM-DD");
    if (!when("to", 253402300800, to)) return bad_field("to", "to must be unix seconds or YYYY-MM-DD");
    std::string format = q.count("format") ? q["format"] : "json";
    if (format != "json" && format != "csv") return bad_field("format", "format must be json or csv");
    auto st = db.prepare("SELECT " + column +
                         " AS grp, COUNT(*), SUM(u.prompt_tokens), SUM(u.completion_tokens),"
                         " SUM(u.cached_tokens), SUM(CASE WHEN u.status >= 400 THEN 1 ELSE 0 END), SUM(u.cost)"
                         " FROM usage_records u LEFT JOIN virtual_keys k ON k.id = u.key_id"
                         " WHERE u.ts_ms >= ? AND u.ts_ms < ?" +
                         status_sql + code_sql + " GROUP BY grp ORDER BY grp");
    st.bind(1, from * 1000).bind(2, to * 1000);
    int at = 3;
    if (!status_sql.empty()) {
      st.bind(at, status_lo).bind(at + 1, status_hi);
      at += 2;
    }
    if (!code_sql.empty()) st.bind(at, q["error_code"]);
    std::vector<std::string> items;
    std::string csv = group + ",requests,prompt_tokens,completion_tokens,cached_tokens,errors,cost\n";
    while (st.step()) {
      if (format == "csv") {
        auto cell = st.text(0);
        bool quote = cell.find_first_of(",\"\n") != std::string::npos;
        if (quote) {
          std::string q2 = "\"";
          for (char c : cell) {
            if (c == '"') q2 += '"';
            q2 += c;
          }
          cell = q2 + "\"";
        }
        csv += cell + "," + std::to_string(st.integer(1)) + "," + std::to_string(st.integer(2)) + "," +
               std::to_string(st.integer(3)) + "," + std::to_string(st.integer(4)) + "," +
               std::to_string(st.integer(5)) + "," + std::to_string(st.real(6)) + "\n";
      } else {
        json::object_writer w;
        w.str(group, st.text(0))
            .num("requests", st.integer(1))
            .num("prompt_tokens", st.integer(2))
            .num("completion_tokens", st.integer(3))
            .num("cached_tokens", st.integer(4))
            .num("errors", st.integer(5))
            .real("cost", st.real(6));
        items.push_back(w.done());
      }
    }
    if (format == "csv") {
      admin_result res{200, std::move(csv)};
      res.content_type = "text/csv; charset=utf-8";
      return res;
    }
    json::object_writer out;
    out.str("object", "list").str("group_by", group).num("from", from).num("to", to).raw("data", json::array(items));
    return {200, out.done()};
  }

  // --- /v1/me ------------------------------------------------------------------------------------

  admin_result me(const admin_request& req, const std::vector<std::string>& parts) {
    // parts: v1, me, [keys|usage], [id]
    const auto& who = req.who;
    if (who.key_id == "master") {
      // Who am I, for the master key too (the console asks); its own keys and usage live
      // under /admin.
      if (parts.size() == 2 && req.method == "GET")
        return {200, R"({"key":{"id":"master","name":"master key","role":"admin"},"user":null})"};
      return error(400, "invalid_request_error", "the master key has no /v1/me keys or usage; use /admin");
    }
    auto own_keys_sql = std::string(" FROM virtual_keys WHERE ") + (who.user_id.empty() ? "id = ?" : "user_id = ?");
    auto own_bind = who.user_id.empty() ? who.key_id : who.user_id;
    if (parts.size() == 2 && req.method == "GET") {
      json::object_writer w;
      w.raw("key", one("virtual_keys", key_columns, who.key_id, key_json));
      w.raw("user", who.user_id.empty()
                        ? std::string("null")
                        : one("users", "id, name, role, team_id, created_at, updated_at", who.user_id, user_json));
      return {200, w.done()};
    }
    if (parts.size() >= 3 && parts[2] == "keys") {
      if (parts.size() == 3 && req.method == "GET") {
        auto st = db.prepare(std::string("SELECT ") + key_columns + own_keys_sql + " ORDER BY created_at, id");
        st.bind(1, own_bind);
        std::vector<std::string> items;
        while (st.step())
          items.push_back(key_json(st));
        return {200, list_json(items)};
      }
      if (parts.size() == 3 && req.method == "POST") {
        if (who.user_id.empty())
          return error(403, "permission_error", "this key belongs to no user; ask an admin for more keys");
        return create_key(req, true);
      }
      if (parts.size() == 4 && req.method == "DELETE") {
        auto st = db.prepare("SELECT 1" + own_keys_sql + " AND id = ?");
        st.bind(1, own_bind).bind(2, parts[3]);
        if (!st.step()) return not_found("no key of yours with id '" + parts[3] + "'");
        return revoke_key(req, parts[3], "key.revoke.self");
      }
    }
    if (parts.size() == 3 && parts[2] == "usage" && req.method == "GET") {
      auto st = db.prepare("SELECT model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens)"
                           " FROM usage_records WHERE key_id IN (SELECT id" +
                           own_keys_sql +
                           ")"
                           " GROUP BY model ORDER BY model");
      st.bind(1, own_bind);
      std::vector<std::string> items;
      while (st.step()) {
        json::object_writer w;
        w.raw("model", optional_text(st, 0))
            .num("requests", st.integer(1))
            .num("prompt_tokens", st.integer(2))
            .num("completion_tokens", st.integer(3))
            .num("cached_tokens", st.integer(4));
        items.push_back(w.done());
      }
      return {200, list_json(items)};
    }
    return not_found("no endpoint " + req.method + " " + req.path);
  }
};

admin_service::admin_service(database& db, gateway_state& state) : impl_(std::make_unique<impl>(db, state)) {}
admin_service::~admin_service() = default;

admin_result admin_service::handle(const admin_request& req) {
  auto parts = split_path(req.path);
  auto& d = *impl_;
  if (parts.size() >= 2 && parts[0] == "v1" && parts[1] == "me") return d.me(req, parts);
  if (parts.size() < 2 || parts[0] != "admin") return not_found("no admin endpoint " + req.path);
  const auto& resource = parts[1];
  if (parts.size() > 3) return not_found("no admin endpoint " + req.path);
  if (resource == "teams") return d.teams(req, parts);
  if (resource == "users") return d.users(req, parts);
  if (resource == "keys") return d.keys(req, parts);
  if (resource == "providers") return d.providers(req, parts);
  if (resource == "models") return d.models(req, parts);
  if (resource == "audit") return d.audit_log(req, parts);
  if (resource == "prices") return d.prices(req, parts);
  if (resource == "usage") return d.usage(req, parts);
  return not_found("no admin endpoint " + req.path);
}

void admin_service::publish_keys() {
  auto& d = *impl_;
  auto table = std::make_shared<key_table>();
  auto read_limits = [](const storage::statement& st, int at, lowart::limits& l) {
    l.rpm = st.integer(at);
    l.tpm = st.integer(at + 1);
    l.max_parallel = st.integer(at + 2);
    l.budget_tokens = st.integer(at + 3);
    l.budget_cost = st.real(at + 4);
    l.budget_period = st.text(at + 5);
  };
  constexpr const char* limit_cols =
      "COALESCE(rpm, 0), COALESCE(tpm, 0), COALESCE(max_parallel, 0),"
      " COALESCE(budget_tokens, 0), COALESCE(budget_cost, 0), COALESCE(budget_period, '')";
  auto st = d.db.prepare(
      std::string("SELECT id, name, key_hash, role, COALESCE(team_id, ''), COALESCE(user_id, ''),"
                  " models, COALESCE(expires_at, 0), ") +
      limit_cols + ", COALESCE(parent_id, ''), permissions, agents, tools FROM virtual_keys WHERE revoked_at IS NULL");
  std::vector<std::shared_ptr<key_entry>> made;
  std::unordered_map<std::string, lowart::limits> by_id;
  while (st.step()) {
    auto e = std::make_shared<key_entry>();
    e->id = st.text(0);
    e->name = st.text(1);
    e->hash = st.text(2);
    e->role = st.text(3);
    e->team_id = st.text(4);
    e->user_id = st.text(5);
    auto models = st.text(6);
    simdjson::padded_string padded(models);
    simdjson::dom::element doc;
    simdjson::dom::array arr;
    if (d.parser.parse(padded).get(doc) == simdjson::SUCCESS && doc.get_array().get(arr) == simdjson::SUCCESS)
      for (auto item : arr) {
        std::string_view s;
        if (item.get_string().get(s) == simdjson::SUCCESS) e->models.emplace_back(s);
      }
    e->expires_at = st.integer(7);
    read_limits(st, 8, e->lim);
    e->parent_id = st.text(14);
    e->permissions = string_list(st.text(15));
    e->agents = string_list(st.text(16));
    e->tools = string_list(st.text(17));
    by_id.emplace(e->id, e->lim);
    made.push_back(std::move(e));
  }
  for (auto& e : made) {
    if (!e->parent_id.empty())
      if (auto p = by_id.find(e->parent_id); p != by_id.end()) e->parent_lim = p->second;
    table->by_id.emplace(e->id, e);
    table->by_hash.emplace(e->hash, std::move(e));
  }
  auto teams = d.db.prepare(std::string("SELECT id, ") + limit_cols + ", name, agents, tools FROM teams");
  while (teams.step()) {
    lowart::limits l;
    read_limits(teams, 1, l);
    auto id = teams.text(0);
    table->team_info[id] = team_entry{id, teams.text(7), string_list(teams.text(8)), string_list(teams.text(9))};
    if (l.any()) table->teams.emplace(id, std::move(l));
  }
  d.gw.keys.publish(std::move(table));
}

void admin_service::publish_prices() {
  auto& d = *impl_;
  auto table = std::make_shared<price_table>();
  auto st = d.db.prepare(
      "SELECT model, input_per_1m, output_per_1m, cached_input_per_1m, per_request, version, tiers, per_image"
      " FROM prices");
  while (st.step()) {
    price p{st.real(1), st.real(2), st.real(3), st.real(4), st.integer(5), {}, st.real(7)};
    auto tiers = st.text(6);
    simdjson::padded_string padded(tiers);
    simdjson::dom::element doc;
    simdjson::dom::array arr;
    if (d.parser.parse(padded).get(doc) == simdjson::SUCCESS && doc.get_array().get(arr) == simdjson::SUCCESS)
      for (auto t : arr) {
        price_tier tier;
        std::int64_t above = 0;
        double v = 0;
        if (t["above_tokens"].get_int64().get(above) == simdjson::SUCCESS) tier.above_tokens = above;
        if (t["input_per_1m"].get_double().get(v) == simdjson::SUCCESS) tier.input_per_1m = v;
        if (t["output_per_1m"].get_double().get(v) == simdjson::SUCCESS) tier.output_per_1m = v;
        if (t["cached_input_per_1m"].get_double().get(v) == simdjson::SUCCESS) tier.cached_input_per_1m = v;
        p.tiers.push_back(tier);
      }
    table->by_model[st.text(0)] = std::move(p);
  }
  d.gw.prices.publish(std::move(table));
}

void admin_service::seed_budgets() {
  // Budgets count from the start of their period: replay what the database holds for it,
  // in one range scan of this month's usage per kind of subject (not one query each).
  auto& d = *impl_;
  auto now = clock::unix_ms();
  auto day = rate_limiter::period_start("day", now);
  auto month = rate_limiter::period_start("month", now);
  auto seed = [&](const char* sql, const char* prefix) {
    auto st = d.db.prepare(sql);
    st.bind(1, day).bind(2, month);
    while (st.step()) {
      d.gw.limiter.seed_budget(prefix + st.text(0), st.text(1), st.integer(2), st.real(3), now);
      if (d.gw.fleet) d.gw.fleet->seed_budget(prefix + st.text(0), st.text(1), st.integer(2), st.real(3), now);
    }
  };
  seed("SELECT k.id, COALESCE(k.budget_period, ''), COALESCE(SUM(u.prompt_tokens + u.completion_tokens), 0),"
       " COALESCE(SUM(u.cost), 0) FROM virtual_keys k LEFT JOIN usage_records u"
       " ON (u.key_id = k.id OR u.key_id IN (SELECT c.id FROM virtual_keys c WHERE c.parent_id = k.id))"
       " AND u.ts_ms >= ?2"
       " AND u.ts_ms >= CASE WHEN k.budget_period = 'day' THEN ?1 ELSE ?2 END"
       " WHERE k.revoked_at IS NULL AND (k.budget_tokens > 0 OR k.budget_cost > 0) GROUP BY k.id",
       "key:");
  seed("SELECT t.id, COALESCE(t.budget_period, ''), COALESCE(SUM(u.prompt_tokens + u.completion_tokens), 0),"
       " COALESCE(SUM(u.cost), 0) FROM teams t LEFT JOIN virtual_keys k ON k.team_id = t.id"
       " LEFT JOIN usage_records u ON u.key_id = k.id AND u.ts_ms >= ?2"
       " AND u.ts_ms >= CASE WHEN t.budget_period = 'day' THEN ?1 ELSE ?2 END"
       " WHERE t.budget_tokens > 0 OR t.budget_cost > 0 GROUP BY t.id",
       "team:");
  // Monthly volume per team and model, for price tiers.
  auto volumes = d.db.prepare("SELECT k.team_id, u.model, SUM(u.prompt_tokens + u.completion_tokens)"
                              " FROM usage_records u JOIN virtual_keys k ON k.id = u.key_id"
                              " WHERE k.team_id IS NOT NULL AND u.model IS NOT NULL AND u.ts_ms >= ?"
                              " GROUP BY k.team_id, u.model");
  volumes.bind(1, month);
  while (volumes.step())
    d.gw.volumes.seed(volumes.text(0), volumes.text(1), volumes.integer(2), now);
}

void admin_service::publish_catalog() {
  auto& d = *impl_;
  auto cat = std::make_shared<config::gateway_config>();
  for (auto& [_, p] : d.db_providers(true))
    cat->providers.push_back(std::move(p));
  for (auto& [name, deps] : d.db_models()) {
    config::model_config m;
    m.name = name;
    m.deployments = std::move(deps);
    cat->models.push_back(std::move(m));
  }
  d.gw.catalog.publish(std::move(cat));
}

int admin_service::sealed_values() {
  auto st = impl_->db.prepare("SELECT COUNT(*) FROM providers WHERE api_key LIKE 'lwenc:%'");
  st.step();
  return static_cast<int>(st.integer(0));
}

int admin_service::rotate() {
  auto& d = *impl_;
  int n = 0;
  d.db.transaction([&] {
    std::vector<std::pair<std::string, std::string>> rows;
    auto st = d.db.prepare("SELECT name, api_key FROM providers WHERE api_key IS NOT NULL");
    while (st.step())
      rows.emplace_back(st.text(0), st.text(1));
    for (const auto& [name, sealed] : rows) {
      auto plain = d.gw.keyring.open(sealed, provider_aad(name));
      if (!plain)
        throw std::runtime_error("cannot open the api_key of provider '" + name + "' (sealed with key id " +
                                 crypto::keyring::key_id_of(sealed) +
                                 "): set LOWART_ENCRYPTION_KEY_PREVIOUS to that key");
      d.db.prepare("UPDATE providers SET api_key = ? WHERE name = ?")
          .bind(1, d.gw.keyring.seal(*plain, provider_aad(name)))
          .bind(2, name)
          .step();
      ++n;
    }
    d.audit({"cli", "admin", "", ""}, "secrets.rotate", d.gw.keyring.sealing_key_id(),
            "{\"values\":" + std::to_string(n) + "}");
  });
  return n;
}

} // namespace lowart::actors
