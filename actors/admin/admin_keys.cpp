// The admin API's virtual keys (/admin/keys): listing, creating (also for /v1/me),
// updating and revoking, with the bounds a key-made key inherits from its maker. The
// impl is declared in admin_impl.hpp; /v1/me is in admin_prices_usage.cpp.

#include "actors/admin/admin_impl.hpp"
#include "actors/admin/rbac.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "core/secrets.hpp"

#include <algorithm>
#include <sstream>

namespace lowart::actors {

using namespace admin_util;
using namespace detail;

namespace detail {

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
      .raw("parent_id", optional_text(st, 19))
      .boolean("log_bodies", st.integer(20) != 0);
  return w.done();
}

} // namespace detail

// --- keys ------------------------------------------------------------------------------------

/// Creates a key; `forced_*` pin the owner for /v1/me.
admin_result admin_service::impl::create_key(const admin_request& req, bool self_service) {
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
  if (!rbac::known_role(key_role)) return unknown_role();
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
      return error(403, "permission_error", "a " + req.who.role + " may not create keys with role " + key_role, "role");
    if (auto e = team_of(team, team_id)) return *e;
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

admin_service::impl::key_bounds admin_service::impl::caller_bounds(const std::string& key_id) {
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
std::optional<admin_result> admin_service::impl::bound_access(const key_bounds& b, access_fields& a) {
  // What the request log keeps is the operators' decision, not the key holder's.
  if (a.log_bodies.present)
    return error(403, "permission_error", "log_bodies is set through /admin/keys", "log_bodies");
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
std::optional<admin_result> admin_service::impl::bound_limits(const key_bounds& b, limit_fields& lim,
                                                              field<std::int64_t>& expires) {
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

std::vector<std::string> admin_service::impl::caller_models(const admin_caller& who) {
  auto st = db.prepare("SELECT models FROM virtual_keys WHERE id = ?");
  st.bind(1, who.key_id);
  if (!st.step()) return {};
  return string_list(st.text(0));
}

admin_result admin_service::impl::revoke_key(const admin_request& req, const std::string& id, const char* action) {
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

/// POST /admin/keys/{id}/rotate: a new secret for the key, shown once; the old one stops
/// working at once. Id, settings, usage and the keys it made stay. The caller gets the
/// secret, so a non-admin rotates only keys of a lower role than its own.
admin_result admin_service::impl::rotate_key(const admin_request& req, const std::string& id) {
  std::string role;
  {
    auto st = db.prepare("SELECT role FROM virtual_keys WHERE id = ? AND revoked_at IS NULL");
    st.bind(1, id);
    if (!st.step()) return not_found("no active key with id '" + id + "'");
    role = st.text(0);
  }
  if (!is_admin(req.who) && id == req.who.key_id)
    return error(403, "permission_error", "a key may not rotate itself; ask an admin");
  if (!is_admin(req.who) && rbac::rank(role) >= rbac::rank(req.who.role))
    return error(403, "permission_error", "a " + req.who.role + " may not rotate keys with role " + role);
  auto key = secrets::new_virtual_key();
  db.transaction([&] {
    db.prepare("UPDATE virtual_keys SET key_hash = ?, key_prefix = ? WHERE id = ?")
        .bind(1, secrets::sha256_hex(key))
        .bind(2, secrets::key_prefix(key))
        .bind(3, id)
        .step();
    audit(req.who, "key.rotate", id, "{\"key_prefix\":" + json::quoted(secrets::key_prefix(key)) + "}");
  });
  auto view = one("virtual_keys", key_columns, id, key_json);
  view.insert(1, "\"key\":" + json::quoted(key) + ",");
  admin_result res{200, std::move(view)};
  res.keys_changed = true;
  return res;
}

admin_result admin_service::impl::keys(const admin_request& req, const std::vector<std::string>& parts) {
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
    return list_rows(st, key_json);
  }
  if (parts.size() == 2 && req.method == "POST") return create_key(req, false);
  if (parts.size() == 4 && parts[3] == "rotate") {
    if (req.method != "POST") return method_not_allowed(req);
    return rotate_key(req, parts[2]);
  }
  if (parts.size() == 3) {
    const auto& id = parts[2];
    if (!exists("virtual_keys", "id", id)) return not_found("no key with id '" + id + "'");
    if (req.method == "GET") return {200, one("virtual_keys", key_columns, id, key_json)};
    // Changing or revoking a key is for roles above it: an operator edits user and viewer
    // keys, not another operator's or an admin's (as for create and rotate).
    if (req.method != "GET" && !is_admin(req.who) && id != req.who.key_id) {
      auto st = db.prepare("SELECT role FROM virtual_keys WHERE id = ?");
      st.bind(1, id);
      if (st.step() && rbac::rank(st.text(0)) >= rbac::rank(req.who.role))
        return error(403, "permission_error", "a " + req.who.role + " may not change keys with role " + st.text(0));
    }
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
      auto user = r.text("user_id");
      limit_fields lim;
      lim.read(r);
      access_fields access;
      access.read(r, true);
      if (!r.ok()) return r.result();
      if (user.has() && !exists("users", "id", user.value))
        return bad_field("user_id", "user '" + user.value + "' does not exist");
      if (auto e = check_access(access)) return *e;
      if (role.has()) {
        if (!rbac::known_role(role.value)) return unknown_role();
        if (!is_admin(req.who)) return error(403, "permission_error", "only admins change a key's role", "role");
      }
      std::string team_id;
      if (auto e = team_of(team, team_id)) return *e;
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
        if (user.present)
          db.prepare("UPDATE virtual_keys SET user_id = ? WHERE id = ?")
              .bind_optional(1, user.has() ? user.value : std::string{})
              .bind(2, id)
              .step();
        apply_limits("virtual_keys", id, lim);
        apply_access("virtual_keys", id, access);
        audit(req.who, "key.update", id, r.fields_detail());
      });
      admin_result res{200, one("virtual_keys", key_columns, id, key_json)};
      res.keys_changed = true;
      return res;
    }
  }
  return method_not_allowed(req);
}

} // namespace lowart::actors
