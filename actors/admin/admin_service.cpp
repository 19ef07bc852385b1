// The admin API's entry: construction, handle()'s dispatch to each resource's handler,
// the members the handlers share (audit, remove_row, exists, team_of), and what the
// persistence actor publishes from the database (keys, prices, budgets, catalog) or
// re-seals. Handlers: admin_{teams_users,keys,catalog,prices_usage}.cpp; impl: admin_impl.hpp.

#include "actors/admin/admin_impl.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"

#include <unordered_set>

namespace lowart::actors {

using namespace admin_util;
using namespace detail;
using storage::database;

namespace detail {

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

} // namespace detail

void admin_service::impl::audit(const admin_caller& who, std::string_view action, std::string_view target,
                                std::string detail) {
  write_audit(db, who.key_id, action, target, detail);
}

/// Deletes one row, audits it, and answers {"<answer_key>": value, "deleted": true}.
admin_result admin_service::impl::remove_row(const admin_request& req, const char* table, const char* column,
                                             const std::string& value, const char* action, const char* answer_key) {
  db.transaction([&] {
    db.prepare(std::string("DELETE FROM ") + table + " WHERE " + column + " = ?").bind(1, value).step();
    audit(req.who, action, value);
  });
  json::object_writer w;
  w.str(answer_key, value).boolean("deleted", true);
  return {200, w.done()};
}

/// Resolves a team given by id or name; "" when absent. Sets `found` false when unknown.
std::string admin_service::impl::resolve_team(const std::string& ref, bool& found) {
  auto st = db.prepare("SELECT id FROM teams WHERE id = ? OR name = ?");
  st.bind(1, ref).bind(2, ref);
  found = st.step();
  return found ? st.text(0) : std::string{};
}

/// Resolves the team a body names (`team`, by id or name) into `team_id`; a 400 naming
/// the field when there is no such team. Leaves `team_id` alone when none is given.
std::optional<admin_result> admin_service::impl::team_of(const field<std::string>& team, std::string& team_id) {
  if (!team.has()) return std::nullopt;
  bool found = false;
  team_id = resolve_team(team.value, found);
  if (!found) return bad_field("team", "team '" + team.value + "' does not exist");
  return std::nullopt;
}

bool admin_service::impl::exists(const char* table, const char* column, const std::string& value) {
  auto st = db.prepare(std::string("SELECT 1 FROM ") + table + " WHERE " + column + " = ?");
  st.bind(1, value);
  return st.step();
}

admin_service::admin_service(database& db, gateway_state& state) : impl_(std::make_unique<impl>(db, state)) {}
admin_service::~admin_service() = default;

admin_result admin_service::handle(const admin_request& req) {
  auto parts = split_path(req.path);
  auto& d = *impl_;
  if (parts.size() >= 2 && parts[0] == "v1" && parts[1] == "me") return d.me(req, parts);
  if (parts.size() < 2 || parts[0] != "admin") return not_found("no admin endpoint " + req.path);
  const auto& resource = parts[1];
  bool rotate = resource == "keys" && parts.size() == 4 && parts[3] == "rotate";
  if (parts.size() > 3 && !rotate) return not_found("no admin endpoint " + req.path);
  if (resource == "teams") return d.teams(req, parts);
  if (resource == "users") return d.users(req, parts);
  if (resource == "keys") return d.keys(req, parts);
  if (resource == "providers") return d.providers(req, parts);
  if (resource == "models") return d.models(req, parts);
  if (resource == "audit") return d.audit_log(req, parts);
  if (resource == "prices") return d.prices(req, parts);
  if (resource == "usage") return d.usage(req, parts);
  if (resource == "logs") return d.logs(req, parts);
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
  std::unordered_set<std::string> logging_teams; // their keys' bodies are kept
  {
    auto t = d.db.prepare("SELECT id FROM teams WHERE log_bodies <> 0");
    while (t.step())
      logging_teams.insert(t.text(0));
  }
  auto st = d.db.prepare(
      std::string("SELECT id, name, key_hash, role, COALESCE(team_id, ''), COALESCE(user_id, ''),"
                  " models, COALESCE(expires_at, 0), ") +
      limit_cols +
      ", COALESCE(parent_id, ''), permissions, agents, tools, log_bodies FROM virtual_keys WHERE revoked_at IS NULL");
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
    e->models = string_list(st.text(6));
    e->expires_at = st.integer(7);
    read_limits(st, 8, e->lim);
    e->parent_id = st.text(14);
    e->permissions = string_list(st.text(15));
    e->agents = string_list(st.text(16));
    e->tools = string_list(st.text(17));
    e->log_bodies = st.integer(18) != 0 || logging_teams.count(e->team_id) > 0;
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
