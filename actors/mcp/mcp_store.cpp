#include "actors/mcp/mcp_store.hpp"

#include "actors/admin/admin_util.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "core/log.hpp"
#include "core/secrets.hpp"
#include "storage/database.hpp"

#include <filesystem>

namespace lowart::actors {

using namespace admin_util;
using storage::database;

namespace {

std::string env_aad(std::string_view server) {
  return "mcp_servers/" + std::string(server) + "/env";
}

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > 40 || name.find("__") != std::string_view::npos) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return false;
  return true;
}

constexpr const char* approval_columns = "SELECT id, tool, arguments, key_id, team_id, session_id, status, scope, "
                                         "decided_by, result, error, created_at, decided_at FROM mcp_approvals";

/// The current row of a statement over approval_columns, as JSON.
std::string approval_row(storage::statement& st) {
  json::object_writer w;
  w.str("approval_id", st.text(0))
      .str("tool", st.text(1))
      .raw("arguments", st.text(2))
      .str("key_id", st.text(3))
      .str("team_id", st.text(4))
      .str("session_id", st.text(5))
      .str("status", st.text(6))
      .str("scope", st.text(7))
      .str("decided_by", st.text(8))
      .raw("result", st.is_null(9) ? "null" : st.text(9))
      .raw("error", st.is_null(10) ? "null" : st.text(10))
      .num("created_at", st.integer(11))
      .raw("decided_at", st.is_null(12) ? "null" : std::to_string(st.integer(12)));
  return w.done();
}

/// One approval as JSON, "" when there is none (or, with `key_id`, none of that key's).
std::string approval_json(database& db, const std::string& id, const std::string& key_id = {}) {
  auto st = db.prepare(std::string(approval_columns) + " WHERE id = ? AND (? = '' OR key_id = ?)");
  st.bind(1, id).bind(2, key_id).bind(3, key_id);
  return st.step() ? approval_row(st) : std::string();
}

} // namespace

struct mcp_store::impl {
  impl(database& d, gateway_state& s) : db(d), gw(s) {}
  database& db;
  gateway_state& gw;

  void audit(std::string_view actor, std::string_view action, std::string_view target, std::string_view detail) {
    write_audit(db, actor, action, target, detail);
  }

  /// Names lowart's own secrets live under: never passed to a child, even when asked.
  std::string refused_inherit(const std::string& name) const {
    if (name.rfind("LOWART_", 0) == 0) return "lowart's own settings and secrets (LOWART_*) are never passed on";
    for (const auto& p : gw.config.providers)
      if (!p.api_key_env.empty() && p.api_key_env == name)
        return "'" + name + "' holds the key of provider '" + p.name + "'";
    for (char c : name)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return "'" + name + "' is not a variable name";
    if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0])))
      return "'" + name + "' is not a variable name";
    return "";
  }

  admin_result register_server(const admin_request& req) {
    body_reader r;
    if (!r.parse(req.body)) return r.result();
    auto name = r.text("name", 40);
    auto command = r.text("command", 1024);
    auto args = r.element("args");
    auto env = r.element("env");
    auto cwd = r.text("cwd", 4096, true);
    auto inherit = r.strings("inherit_env");
    if (!r.ok()) return r.result();
    if (!name.has() || !valid_name(name.value))
      return bad_field("name", "name is required: letters, digits, '-' and '_' (no '__'), at most 40");
    if (!command.has()) return bad_field("command", "command is required");
    std::vector<std::string> arg_list;
    if (args) {
      simdjson::dom::array arr;
      if (args->get_array().get(arr) != simdjson::SUCCESS) return bad_field("args", "args must be an array of strings");
      for (auto a : arr) {
        std::string_view s;
        if (a.get_string().get(s) != simdjson::SUCCESS) return bad_field("args", "args must be an array of strings");
        arg_list.emplace_back(s);
      }
    }
    std::string env_json = "{}";
    if (env) {
      simdjson::dom::object obj;
      if (env->get_object().get(obj) != simdjson::SUCCESS) return bad_field("env", "env must be an object of strings");
      for (auto [k, v] : obj) {
        std::string_view s;
        if (v.get_string().get(s) != simdjson::SUCCESS || k.empty())
          return bad_field("env", "env must be an object of strings");
      }
      env_json = simdjson::minify(*env);
    }
    if (cwd.has() && !cwd.value.empty() && !std::filesystem::is_directory(cwd.value))
      return bad_field("cwd", "cwd '" + cwd.value + "' is not a directory");
    std::string field;
    if (auto why = config::check_mcp_command(gw.config.mcp, command.value, arg_list, cwd.has() ? cwd.value : "", field);
        !why.empty())
      return bad_field(field, why);
    std::vector<std::string> inherit_list = inherit.has() ? inherit.value : std::vector<std::string>{};
    for (const auto& n : inherit_list)
      if (auto why = refused_inherit(n); !why.empty()) return bad_field("inherit_env", why);
    std::string sealed;
    if (env_json != "{}") {
      if (!gw.keyring.can_seal())
        return error(400, "invalid_request_error",
                     "env cannot be stored: start lowart with LOWART_ENCRYPTION_KEY so it is encrypted at rest", "env");
      sealed = gw.keyring.seal(env_json, env_aad(name.value));
    }
    if (db.prepare("SELECT 1 FROM mcp_servers WHERE name = ?").bind(1, name.value).step())
      return error(409, "conflict", "an MCP server named '" + name.value + "' is already registered", "name");
    db.transaction([&] {
      db.prepare("INSERT INTO mcp_servers(name, command, args, env, cwd, created_at, inherit_env) VALUES "
                 "(?,?,?,?,?,?,?)")
          .bind(1, name.value)
          .bind(2, command.value)
          .bind(3, json::string_array(arg_list))
          .bind(4, sealed)
          .bind(5, cwd.has() ? cwd.value : std::string())
          .bind(6, clock::unix_seconds())
          .bind(7, json::string_array(inherit_list))
          .step();
      audit(req.who.key_id, "mcp.register", name.value, "{}");
    });
    json::object_writer w;
    w.str("name", name.value)
        .str("command", command.value)
        .raw("args", json::string_array(arg_list))
        .raw("inherit_env", json::string_array(inherit_list));
    admin_result res{201, w.done()};
    res.mcp_changed = true;
    return res;
  }

  admin_result list_servers() {
    auto live = gw.mcp_live.load();
    std::vector<std::string> items;
    auto st =
        db.prepare("SELECT name, command, args, env, cwd, created_at, inherit_env FROM mcp_servers ORDER BY name");
    while (st.step()) {
      auto name = st.text(0);
      std::vector<std::string> env_keys;
      if (auto sealed = st.text(3); !sealed.empty())
        if (auto opened = gw.keyring.open(sealed, env_aad(name))) {
          simdjson::dom::parser p;
          simdjson::dom::object obj;
          if (p.parse(*opened).get_object().get(obj) == simdjson::SUCCESS)
            for (auto [k, v] : obj)
              env_keys.emplace_back(k);
        }
      json::object_writer w;
      w.str("name", name)
          .str("command", st.text(1))
          .raw("args", st.text(2))
          .raw("env_keys", json::string_array(env_keys)) // values never leave the database
          .str("cwd", st.text(4))
          .raw("inherit_env", st.text(6))
          .num("created_at", st.integer(5));
      const mcp_server_live* l = nullptr;
      if (live)
        if (auto it = live->servers.find(name); it != live->servers.end()) l = &it->second;
      std::vector<std::string> tools;
      if (l)
        for (const auto& t : l->tools)
          tools.push_back(t.first);
      w.str("state", l ? l->state : "starting")
          .num("pid", l ? l->pid : 0)
          .num("restarts", l ? l->restarts : 0)
          .str("last_error", l ? l->last_error : "")
          .str("protocol_version", l ? l->protocol_version : "")
          .raw("tools", json::string_array(tools));
      items.push_back(w.done());
    }
    return {200, list_json(items)};
  }

  admin_result policies(const admin_request& req, const std::vector<std::string>& parts) {
    if (parts.size() == 3 && req.method == "GET") {
      std::vector<std::string> items;
      auto st = db.prepare("SELECT id, tool, policy, team_id, key_id, created_at FROM mcp_policies ORDER BY tool, id");
      while (st.step()) {
        json::object_writer w;
        w.str("id", st.text(0))
            .str("tool", st.text(1))
            .str("policy", st.text(2))
            .str_or_null("team", st.text(3))
            .str_or_null("key_id", st.text(4))
            .num("created_at", st.integer(5));
        items.push_back(w.done());
      }
      return {200, list_json(items)};
    }
    if (parts.size() == 3 && req.method == "POST") {
      body_reader r;
      if (!r.parse(req.body)) return r.result();
      auto tool = r.text("tool", 200);
      auto policy = r.text("policy", 20);
      auto team = r.text("team", 200);
      auto key_id = r.text("key_id", 200);
      if (!r.ok()) return r.result();
      if (!tool.has() || tool.value.find("__") == std::string::npos)
        return bad_field("tool", "tool is required, namespaced as server__tool");
      if (!policy.has() || (policy.value != "auto" && policy.value != "confirm" && policy.value != "deny"))
        return bad_field("policy", "policy must be auto, confirm or deny");
      std::string team_id;
      if (team.has()) {
        auto st = db.prepare("SELECT id FROM teams WHERE id = ? OR name = ?");
        st.bind(1, team.value).bind(2, team.value);
        if (!st.step()) return bad_field("team", "no team '" + team.value + "'");
        team_id = st.text(0);
      }
      if (key_id.has() && !db.prepare("SELECT 1 FROM virtual_keys WHERE id = ?").bind(1, key_id.value).step())
        return bad_field("key_id", "no key '" + key_id.value + "'");
      if (team.has() && key_id.has()) return bad_field("team", "give team or key_id, not both");
      auto id = "pol_" + secrets::random_hex(8);
      db.transaction([&] {
        db.prepare("INSERT INTO mcp_policies(id, tool, policy, team_id, key_id, created_at) VALUES (?,?,?,?,?,?) "
                   "ON CONFLICT(tool, team_id, key_id) DO UPDATE SET policy = excluded.policy")
            .bind(1, id)
            .bind(2, tool.value)
            .bind(3, policy.value)
            .bind(4, team_id)
            .bind(5, key_id.has() ? key_id.value : std::string())
            .bind(6, clock::unix_seconds())
            .step();
        json::object_writer d;
        d.str("policy", policy.value).str("team_id", team_id).str("key_id", key_id.has() ? key_id.value : "");
        audit(req.who.key_id, "mcp.policy", tool.value, d.done());
      });
      auto st = db.prepare("SELECT id FROM mcp_policies WHERE tool = ? AND team_id = ? AND key_id = ?");
      st.bind(1, tool.value).bind(2, team_id).bind(3, key_id.has() ? key_id.value : std::string());
      st.step();
      json::object_writer w;
      w.str("id", st.text(0))
          .str("tool", tool.value)
          .str("policy", policy.value)
          .str_or_null("team", team_id)
          .str_or_null("key_id", key_id.has() ? key_id.value : "");
      admin_result res{201, w.done()};
      res.mcp_changed = true;
      return res;
    }
    if (parts.size() == 4 && req.method == "DELETE") {
      if (!db.prepare("SELECT 1 FROM mcp_policies WHERE id = ?").bind(1, parts[3]).step())
        return not_found("no policy '" + parts[3] + "'");
      db.transaction([&] {
        db.prepare("DELETE FROM mcp_policies WHERE id = ?").bind(1, parts[3]).step();
        audit(req.who.key_id, "mcp.policy_delete", parts[3], "{}");
      });
      json::object_writer w;
      w.str("id", parts[3]).boolean("deleted", true);
      admin_result res{200, w.done()};
      res.mcp_changed = true;
      return res;
    }
    return error(405, "invalid_request_error", "use GET or POST /admin/mcp/policies, DELETE /admin/mcp/policies/{id}");
  }

  admin_result approvals(const admin_request& req, const std::vector<std::string>& parts) {
    if (parts.size() == 2 && req.method == "GET") {
      auto q = parse_query(req.query);
      std::string status = q.count("status") ? q["status"] : "";
      std::vector<std::string> items;
      auto st =
          db.prepare(std::string(approval_columns) + " WHERE ? = '' OR status = ? ORDER BY created_at DESC LIMIT 200");
      st.bind(1, status).bind(2, status);
      while (st.step())
        items.push_back(approval_row(st));
      return {200, list_json(items)};
    }
    if (parts.size() == 3 && req.method == "GET") {
      auto j = approval_json(db, parts[2]);
      if (j.empty()) return not_found("no approval '" + parts[2] + "'");
      return {200, j};
    }
    if (parts.size() == 4 && req.method == "POST" && (parts[3] == "approve" || parts[3] == "deny")) {
      const auto& id = parts[2];
      bool approve = parts[3] == "approve";
      std::string scope = "call";
      if (approve && !req.body.empty()) {
        body_reader r;
        if (!r.parse(req.body)) return r.result();
        auto s = r.text("scope", 20);
        if (!r.ok()) return r.result();
        if (s.has()) scope = s.value;
        if (scope != "call" && scope != "session") return bad_field("scope", "scope must be call or session");
      }
      auto st = db.prepare("SELECT status, tool, key_id, session_id FROM mcp_approvals WHERE id = ?");
      st.bind(1, id);
      if (!st.step()) return not_found("no approval '" + id + "'");
      if (st.text(0) != "pending") return error(409, "conflict", "approval '" + id + "' is already " + st.text(0));
      auto tool = st.text(1), key_id = st.text(2), session_id = st.text(3);
      if (approve && scope == "session" && session_id.empty())
        return bad_field("scope", "this call carried no session_id: approve it with scope call");
      db.transaction([&] {
        db.prepare("UPDATE mcp_approvals SET status = ?, scope = ?, decided_by = ?, decided_at = ? WHERE id = ?")
            .bind(1, approve ? "approved" : "denied")
            .bind(2, approve ? scope : std::string())
            .bind(3, req.who.key_id)
            .bind(4, clock::unix_seconds())
            .bind(5, id)
            .step();
        if (approve && scope == "session")
          db.prepare("INSERT INTO mcp_grants(id, tool, key_id, session_id, expires_at) VALUES (?,?,?,?,?)")
              .bind(1, "grt_" + secrets::random_hex(8))
              .bind(2, tool)
              .bind(3, key_id)
              .bind(4, session_id)
              .bind(5, clock::unix_seconds() + gw.config.mcp.session_grant_s)
              .step();
        json::object_writer d;
        d.str("approval_id", id).str("scope", approve ? scope : "");
        audit(req.who.key_id, approve ? "mcp.approve" : "mcp.deny", tool, d.done());
      });
      admin_result res{200, approval_json(db, id)};
      res.mcp_decided = res.body;
      res.mcp_changed = approve && scope == "session";
      return res;
    }
    return error(405, "invalid_request_error",
                 "use GET /admin/approvals[?status=], POST /admin/approvals/{id}/approve or /deny");
  }
};

mcp_store::mcp_store(database& db, gateway_state& state) : impl_(std::make_unique<impl>(db, state)) {}
mcp_store::~mcp_store() = default;

bool mcp_store::owns(const std::string& path) {
  return path == "/admin/mcp" || path.rfind("/admin/mcp/", 0) == 0 || path == "/admin/approvals" ||
         path.rfind("/admin/approvals/", 0) == 0;
}

admin_result mcp_store::handle(const admin_request& req) {
  auto parts = split_path(req.path);
  auto& d = *impl_;
  if (parts.size() >= 2 && parts[1] == "approvals") return d.approvals(req, parts);
  if (parts.size() == 2 && req.method == "GET") return d.list_servers();
  if (parts.size() >= 3 && parts[2] == "policies") return d.policies(req, parts);
  if (parts.size() == 3 && parts[2] == "register" && req.method == "POST") return d.register_server(req);
  if (parts.size() == 3 && req.method == "DELETE") {
    if (!d.db.prepare("SELECT 1 FROM mcp_servers WHERE name = ?").bind(1, parts[2]).step())
      return not_found("no MCP server '" + parts[2] + "'");
    d.db.transaction([&] {
      d.db.prepare("DELETE FROM mcp_servers WHERE name = ?").bind(1, parts[2]).step();
      d.audit(req.who.key_id, "mcp.unregister", parts[2], "{}");
    });
    json::object_writer w;
    w.str("name", parts[2]).boolean("deleted", true);
    admin_result res{200, w.done()};
    res.mcp_changed = true;
    return res;
  }
  return error(405, "invalid_request_error",
               "use POST /admin/mcp/register, GET /admin/mcp, DELETE /admin/mcp/{name}, /admin/mcp/policies");
}

std::pair<int, std::string> mcp_store::op(const std::string& name, const std::string& a, const std::string& b,
                                          const std::string& c) {
  auto& d = *impl_;
  if (name == "approval_create") {
    simdjson::dom::parser p;
    simdjson::dom::element doc;
    if (p.parse(a).get(doc) != simdjson::SUCCESS) return {400, R"({"error":"bad approval"})"};
    auto field = [&](const char* k) {
      std::string_view s;
      return doc[k].get_string().get(s) == simdjson::SUCCESS ? std::string(s) : std::string();
    };
    simdjson::dom::element args;
    std::string args_json = doc["arguments"].get(args) == simdjson::SUCCESS ? simdjson::minify(args) : "{}";
    auto id = "apr_" + secrets::random_hex(12);
    d.db.transaction([&] {
      d.db.prepare("INSERT INTO mcp_approvals(id, tool, arguments, key_id, team_id, session_id, status, created_at) "
                   "VALUES (?,?,?,?,?,?,'pending',?)")
          .bind(1, id)
          .bind(2, field("tool"))
          .bind(3, args_json)
          .bind(4, field("key_id"))
          .bind(5, field("team_id"))
          .bind(6, field("session_id"))
          .bind(7, clock::unix_seconds())
          .step();
      json::object_writer det;
      det.str("approval_id", id).str("session_id", field("session_id"));
      d.audit(field("key_id"), "mcp.approval_requested", field("tool"), det.done());
    });
    json::object_writer w;
    w.str("approval_id", id).str("status", "pending");
    return {201, w.done()};
  }
  if (name == "approval_result") {
    bool ok = b == "completed";
    d.db.prepare("UPDATE mcp_approvals SET status = ?, result = ?, error = ? WHERE id = ?")
        .bind(1, b)
        .bind_optional(2, ok ? std::string_view(c) : std::string_view())
        .bind_optional(3, ok ? std::string_view() : std::string_view(c))
        .bind(4, a)
        .step();
    return {200, "{}"};
  }
  if (name == "approval_get") {
    // A caller (b: its key id; "" for an admin) sees only the approvals of its own calls.
    auto j = approval_json(d.db, a, b);
    if (j.empty()) return {404, {}};
    return {200, j};
  }
  if (name == "audit") {
    simdjson::dom::parser p;
    simdjson::dom::element doc;
    std::string_view target;
    simdjson::dom::element detail;
    if (p.parse(c).get(doc) != simdjson::SUCCESS) return {400, "{}"};
    if (doc["target"].get_string().get(target) != simdjson::SUCCESS) target = "";
    d.audit(a, b, target, doc["detail"].get(detail) == simdjson::SUCCESS ? simdjson::minify(detail) : "{}");
    return {200, "{}"};
  }
  return {400, R"({"error":"unknown operation"})"};
}

void mcp_store::publish() {
  auto& d = *impl_;
  auto table = std::make_shared<mcp_table>();
  auto st = d.db.prepare("SELECT name, command, args, env, cwd, inherit_env FROM mcp_servers ORDER BY name");
  simdjson::dom::parser p;
  while (st.step()) {
    mcp_server_spec s;
    s.name = st.text(0);
    s.command = st.text(1);
    simdjson::dom::array arr;
    auto args = st.text(2);
    if (p.parse(args).get_array().get(arr) == simdjson::SUCCESS)
      for (auto a : arr) {
        std::string_view v;
        if (a.get_string().get(v) == simdjson::SUCCESS) s.args.emplace_back(v);
      }
    if (auto sealed = st.text(3); !sealed.empty()) {
      auto opened = d.gw.keyring.open(sealed, env_aad(s.name));
      if (!opened) {
        log::error("cannot open the env of an MCP server (wrong LOWART_ENCRYPTION_KEY?); not starting it",
                   {{"server", s.name}});
        continue;
      }
      simdjson::dom::object obj;
      if (p.parse(*opened).get_object().get(obj) == simdjson::SUCCESS)
        for (auto [k, v] : obj) {
          std::string_view sv;
          if (v.get_string().get(sv) == simdjson::SUCCESS) s.env.emplace_back(std::string(k), std::string(sv));
        }
    }
    s.cwd = st.text(4);
    std::string field;
    if (auto why = config::check_mcp_command(d.gw.config.mcp, s.command, s.args, s.cwd, field); !why.empty()) {
      // Registered under an older, wider allowlist: the current one decides what runs.
      log::error("MCP server not started: mcp.allowed_commands does not allow it",
                 {{"server", s.name}, {"reason", why}});
      continue;
    }
    if (p.parse(st.text(5)).get_array().get(arr) == simdjson::SUCCESS)
      for (auto a : arr) {
        std::string_view v;
        if (a.get_string().get(v) == simdjson::SUCCESS) s.inherit_env.emplace_back(v);
      }
    table->servers.push_back(std::move(s));
  }
  auto pst = d.db.prepare("SELECT tool, policy, team_id, key_id FROM mcp_policies");
  while (pst.step())
    table->policies.push_back({pst.text(0), pst.text(1), pst.text(2), pst.text(3)});
  auto gst = d.db.prepare("SELECT tool, key_id, session_id, expires_at FROM mcp_grants WHERE expires_at > ?");
  gst.bind(1, clock::unix_seconds());
  while (gst.step())
    table->grants.push_back({gst.text(0), gst.text(1), gst.text(2), gst.integer(3)});
  d.gw.mcp.publish(std::move(table));
}

} // namespace lowart::actors
