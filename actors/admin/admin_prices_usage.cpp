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
  // Paging: the entries older than the last one shown (its id).
  std::int64_t before = 0;
  if (q.count("before")) {
    char* end = nullptr;
    before = std::strtoll(q["before"].c_str(), &end, 10);
    if (!end || *end || before < 1) return bad_field("before", "before must be the id of an audit entry");
    sql += " AND id < ?";
  }
  sql += " ORDER BY id DESC LIMIT ?";
  auto st = db.prepare(sql);
  int at = 1;
  for (const auto& b : binds)
    st.bind(at++, b);
  if (before) st.bind(at++, before);
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

/// GET /admin/usage?group_by=<dim>[,<dim>]&from=&to=&status=&error_code=&key=&team=&model=
/// &format=json|csv. Dimensions: key, team, model, deployment, status, error_code, day,
/// hour, minute (UTC buckets). from/to: unix seconds or YYYY-MM-DD, UTC; to is exclusive;
/// status: a code such as 429 or a class such as 4xx.
admin_result admin_service::impl::usage(const admin_request& req, const std::vector<std::string>& parts) {
  if (parts.size() != 2 || req.method != "GET") return error(405, "invalid_request_error", "use GET /admin/usage");
  auto q = parse_query(req.query);
  std::string group = q.count("group_by") ? q["group_by"] : "model";
  std::vector<std::string> dims, columns;
  for (std::size_t at = 0; at <= group.size();) {
    auto comma = group.find(',', at);
    if (comma == std::string::npos) comma = group.size();
    dims.push_back(group.substr(at, comma - at));
    at = comma + 1;
  }
  if (dims.size() > 2) return bad_field("group_by", "group_by takes at most two dimensions (key,day)");
  for (const auto& d : dims) {
    if (d == "key")
      columns.push_back("u.key_id");
    else if (d == "team")
      columns.push_back("COALESCE(u.team_id, k.team_id, '')");
    else if (d == "model")
      columns.push_back("COALESCE(u.model, '')");
    else if (d == "deployment")
      columns.push_back("COALESCE(u.deployment, '')");
    else if (d == "day" || d == "hour" || d == "minute")
      columns.push_back(db.utc_bucket("u.ts_ms", d));
    else if (d == "status")
      columns.push_back("CAST(u.status AS TEXT)");
    else if (d == "error_code")
      columns.push_back("COALESCE(u.error_code, '')");
    else
      return bad_field("group_by",
                       "group_by must be one or two of key, team, model, deployment, status, error_code, day, hour, "
                       "minute");
  }
  if (dims.size() == 2 && dims[0] == dims[1]) return bad_field("group_by", "group_by names a dimension twice");
  std::string where;
  std::vector<std::string> texts;
  std::int64_t status_lo = 0, status_hi = 0;
  if (q.count("status")) {
    if (!parse_status_filter(q["status"], status_lo, status_hi))
      return bad_field("status", "status must be an HTTP status (429) or a class (4xx)");
    where += " AND u.status BETWEEN ? AND ?";
  }
  // Filters by value, in this order after the status range.
  for (const auto& [name, column] :
       std::vector<std::pair<std::string, std::string>>{{"error_code", "u.error_code"},
                                                        {"key", "u.key_id"},
                                                        {"team", "COALESCE(u.team_id, k.team_id)"},
                                                        {"model", "u.model"}})
    if (q.count(name)) {
      where += " AND " + column + " = ?";
      texts.push_back(q[name]);
    }
  std::int64_t from = 0, to = 253402300800;
  if (q.count("from") && !parse_time_bound(q["from"], from))
    return bad_field("from", "from must be unix seconds or YYYY-MM-DD");
  if (q.count("to") && !parse_time_bound(q["to"], to)) return bad_field("to", "to must be unix seconds or YYYY-MM-DD");
  std::string format = q.count("format") ? q["format"] : "json";
  if (format != "json" && format != "csv") return bad_field("format", "format must be json or csv");
  std::string select, group_sql;
  for (std::size_t i = 0; i < columns.size(); ++i) {
    select += columns[i] + " AS g" + std::to_string(i) + ", ";
    group_sql += (i ? ", g" : "g") + std::to_string(i);
  }
  auto st = db.prepare("SELECT " + select +
                       "COUNT(*), SUM(u.prompt_tokens), SUM(u.completion_tokens),"
                       " SUM(u.cached_tokens), SUM(CASE WHEN u.status >= 400 THEN 1 ELSE 0 END), SUM(u.cost)"
                       " FROM usage_records u LEFT JOIN virtual_keys k ON k.id = u.key_id"
                       " WHERE u.ts_ms >= ? AND u.ts_ms < ?" +
                       where + " GROUP BY " + group_sql + " ORDER BY " + group_sql);
  st.bind(1, from * 1000).bind(2, to * 1000);
  int at = 3;
  if (q.count("status")) {
    st.bind(at, status_lo).bind(at + 1, status_hi);
    at += 2;
  }
  for (const auto& t : texts)
    st.bind(at++, t);
  int n = static_cast<int>(dims.size());
  std::vector<std::string> items;
  std::string csv;
  for (const auto& d : dims)
    csv += d + ",";
  csv += "requests,prompt_tokens,completion_tokens,cached_tokens,errors,cost\n";
  while (st.step()) {
    if (format == "csv") {
      for (int i = 0; i < n; ++i)
        csv += csv_cell(st.text(i)) + ",";
      csv += std::to_string(st.integer(n)) + "," + std::to_string(st.integer(n + 1)) + "," +
             std::to_string(st.integer(n + 2)) + "," + std::to_string(st.integer(n + 3)) + "," +
             std::to_string(st.integer(n + 4)) + "," + real_text(st.real(n + 5)) + "\n";
    } else {
      json::object_writer w;
      for (int i = 0; i < n; ++i)
        w.str(dims[static_cast<std::size_t>(i)], st.text(i));
      w.num("requests", st.integer(n))
          .num("prompt_tokens", st.integer(n + 1))
          .num("completion_tokens", st.integer(n + 2))
          .num("cached_tokens", st.integer(n + 3))
          .num("errors", st.integer(n + 4))
          .real("cost", st.real(n + 5));
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
