// The admin API's reports and prices: the audit log (/admin/audit), prices
// (/admin/prices), usage reports (/admin/usage) and a plain user's /v1/me views. The
// impl is declared in admin_impl.hpp; the keys /v1/me makes are in admin_keys.cpp.

#include "actors/admin/admin_impl.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"

#include <ctime>

namespace lowart::actors {

using namespace admin_util;
using namespace detail;

// --- audit and usage ---------------------------------------------------------------------------

admin_result admin_service::impl::audit_log(const admin_request& req, const std::vector<std::string>& parts) {
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

admin_result admin_service::impl::prices(const admin_request& req, const std::vector<std::string>& parts) {
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
  // The SQL is built with append, not +: GCC 12 warns (-Warray-bounds, a false positive)
  // on the + chain over this constant in this translation unit.
  if (parts.size() == 2 && req.method == "GET") {
    auto st = db.prepare(std::string("SELECT ").append(cols).append(" FROM prices ORDER BY model"));
    return list_rows(st, render);
  }
  if (parts.size() != 3) return error(405, "invalid_request_error", "use /admin/prices/{model}");
  const auto& model = parts[2];
  auto one_price = [&] {
    auto st = db.prepare(std::string("SELECT ").append(cols).append(" FROM prices WHERE model = ?"));
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
        return bad_field("tiers",
                         "tiers must be an array of {above_tokens, input_per_1m, output_per_1m, cached_input_per_1m}");
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
  return method_not_allowed(req);
}

// --- usage reports -------------------------------------------------------------------------------

/// GET /admin/usage?group_by=key|team|model|day|status|error_code&from=&to=&status=&error_code=
/// &format=json|csv (from/to: unix seconds or YYYY-MM-DD, UTC; to is exclusive; status: a
/// code such as 429 or a class such as 4xx).
admin_result admin_service::impl::usage(const admin_request& req, const std::vector<std::string>& parts) {
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
             std::to_string(st.integer(3)) + "," + std::to_string(st.integer(4)) + "," + std::to_string(st.integer(5)) +
             "," + std::to_string(st.real(6)) + "\n";
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

admin_result admin_service::impl::me(const admin_request& req, const std::vector<std::string>& parts) {
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
    w.raw("user", who.user_id.empty() ? std::string("null") : one("users", user_columns, who.user_id, user_json));
    return {200, w.done()};
  }
  if (parts.size() >= 3 && parts[2] == "keys") {
    if (parts.size() == 3 && req.method == "GET") {
      auto st = db.prepare(std::string("SELECT ") + key_columns + own_keys_sql + " ORDER BY created_at, id");
      st.bind(1, own_bind);
      return list_rows(st, key_json);
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

} // namespace lowart::actors
