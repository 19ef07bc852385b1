#pragma once
// Internal to the admin API: `admin_service::impl` (the database, the gateway state and
// one handler per resource) and the row renderers and body readers its handler files
// share. Definitions: admin_service.cpp (dispatch, shared members, publishing),
// admin_teams_users.cpp, admin_keys.cpp, admin_catalog.cpp, admin_prices_usage.cpp.

#include "actors/admin/admin_service.hpp"
#include "actors/admin/admin_util.hpp"
#include "actors/limits/limiter.hpp"
#include "config/config.hpp"
#include "core/json_text.hpp"
#include "storage/database.hpp"

#include <simdjson.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lowart::actors {

namespace detail {

inline std::string optional_int(const storage::statement& st, int col) {
  return st.is_null(col) ? "null" : std::to_string(st.integer(col));
}

inline std::string optional_real(const storage::statement& st, int col) {
  if (st.is_null(col)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", st.real(col));
  return buf;
}

inline std::string optional_text(const storage::statement& st, int col) {
  return st.is_null(col) ? "null" : json::quoted(st.text(col));
}

inline std::string provider_aad(std::string_view name) {
  return "providers/" + std::string(name) + "/api_key";
}

inline constexpr const char* key_columns =
    "id, name, key_prefix, role, team_id, user_id, models, expires_at, rpm, tpm, max_parallel, budget_tokens,"
    " budget_cost, budget_period, created_at, revoked_at, permissions, agents, tools, parent_id, log_bodies";

inline constexpr const char* user_columns = "id, name, role, team_id, created_at, updated_at";

// Defined in admin_keys.cpp, admin_teams_users.cpp and admin_service.cpp:
std::string key_json(const storage::statement& st);
std::string user_json(const storage::statement& st);
std::vector<std::string> string_list(const std::string& text);

/// The answer to a method a resource does not take.
inline admin_result method_not_allowed(const admin_request& req) {
  return admin_util::error(405, "invalid_request_error", "method not allowed on " + req.path);
}

/// The answer to a role rbac does not know.
inline admin_result unknown_role() {
  return admin_util::bad_field("role", "role must be admin, operator, viewer or user");
}

/// Answers every row of `st`, each rendered by `render`, as a list.
template <class Render> admin_result list_rows(storage::statement& st, Render render) {
  std::vector<std::string> items;
  while (st.step())
    items.push_back(render(st));
  return {200, admin_util::list_json(items)};
}

/// The limit columns shared by keys and teams, read from a body.
struct limit_fields {
  admin_util::field<std::int64_t> rpm, tpm, max_parallel, budget_tokens;
  admin_util::field<double> budget_cost;
  admin_util::field<std::string> budget_period;

  void read(admin_util::body_reader& r) {
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
    auto int_field = [&](const admin_util::field<std::int64_t>& f) {
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

/// Allow lists (and, on keys, permissions) read from a body; and whether the request log
/// keeps the bodies of the key's (the team's) requests.
struct access_fields {
  admin_util::field<std::vector<std::string>> permissions, agents, tools;
  admin_util::field<bool> log_bodies;

  void read(admin_util::body_reader& r, bool with_permissions) {
    if (with_permissions) permissions = r.strings("permissions");
    agents = r.strings("agents");
    tools = r.strings("tools");
    log_bodies = r.flag("log_bodies");
  }
  bool any() const { return permissions.present || agents.present || tools.present || log_bodies.present; }
};

} // namespace detail

struct admin_service::impl {
  impl(storage::database& d, gateway_state& s) : db(d), gw(s) {}

  storage::database& db;
  gateway_state& gw;
  simdjson::dom::parser parser;

  // The handlers' definitions are in the admin_*.cpp file each section names; comments
  // stand with the definitions.

  // --- shared by the handlers (admin_service.cpp) ----------------------------------------------

  void audit(const admin_caller& who, std::string_view action, std::string_view target, std::string detail = "{}");

  admin_result remove_row(const admin_request& req, const char* table, const char* column, const std::string& value,
                          const char* action, const char* answer_key);

  bool is_admin(const admin_caller& who) const { return who.key_id == "master" || who.role == "admin"; }

  std::string resolve_team(const std::string& ref, bool& found);

  std::optional<admin_result> team_of(const admin_util::field<std::string>& team, std::string& team_id);

  bool exists(const char* table, const char* column, const std::string& value);

  /// The row of `table` with this id, rendered; "null" when there is none.
  template <class Render>
  std::string one(const char* table, const char* columns, const std::string& id, Render render) {
    auto st = db.prepare(std::string("SELECT ") + columns + " FROM " + table + " WHERE id = ?");
    st.bind(1, id);
    return st.step() ? render(st) : std::string("null");
  }

  // --- teams and users (admin_teams_users.cpp) -------------------------------------------------

  admin_result teams(const admin_request& req, const std::vector<std::string>& parts);

  std::optional<admin_result> check_access(const detail::access_fields& a);
  void apply_access(const char* table, const std::string& id, const detail::access_fields& a);
  void apply_limits(const char* table, const std::string& id, const detail::limit_fields& lim);

  admin_result users(const admin_request& req, const std::vector<std::string>& parts);

  // --- keys (admin_keys.cpp) -------------------------------------------------------------------

  admin_result create_key(const admin_request& req, bool self_service);

  /// The calling key's own limits, expiry and maker.
  struct key_bounds {
    lowart::limits lim;
    std::int64_t expires_at = 0;
    std::string parent_id;
    std::vector<std::string> permissions, agents, tools;
  };
  key_bounds caller_bounds(const std::string& key_id);

  std::optional<admin_result> bound_access(const key_bounds& b, detail::access_fields& a);

  std::optional<admin_result> bound_limits(const key_bounds& b, detail::limit_fields& lim,
                                           admin_util::field<std::int64_t>& expires);

  std::vector<std::string> caller_models(const admin_caller& who);
  admin_result rotate_key(const admin_request& req, const std::string& id);
  admin_result revoke_key(const admin_request& req, const std::string& id, const char* action);
  admin_result keys(const admin_request& req, const std::vector<std::string>& parts);

  // --- providers and models (admin_catalog.cpp) ------------------------------------------------

  std::map<std::string, config::provider_config> db_providers(bool open_keys);
  std::map<std::string, std::vector<config::deployment_config>> db_models();
  std::string provider_view(const config::provider_config& p, std::string_view source);
  admin_result providers(const admin_request& req, const std::vector<std::string>& parts);
  std::string model_view(const std::string& name, const std::vector<config::deployment_config>& deps,
                         std::string_view source);
  admin_result models(const admin_request& req, const std::vector<std::string>& parts);

  // --- audit, prices, usage and /v1/me (admin_prices_usage.cpp) --------------------------------

  admin_result audit_log(const admin_request& req, const std::vector<std::string>& parts);
  admin_result prices(const admin_request& req, const std::vector<std::string>& parts);
  admin_result usage(const admin_request& req, const std::vector<std::string>& parts);
  admin_result logs(const admin_request& req, const std::vector<std::string>& parts);
  admin_result me(const admin_request& req, const std::vector<std::string>& parts);
};

} // namespace lowart::actors
