// The admin API's catalog (/admin/providers, /admin/models): providers and models made
// through the API, merged with those of lowart.toml, and how they are stored. The impl
// is declared in admin_impl.hpp; publish_catalog is in admin_service.cpp.

#include "actors/admin/admin_impl.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"

#include <set>

namespace lowart::actors {

using namespace admin_util;
using namespace detail;

namespace {

/// The settings of a provider that live in the `settings` JSON column.
std::string settings_json(const config::provider_config& p) {
  json::object_writer w;
  w.str("ca_file", p.ca_file)
      .boolean("verify_tls", p.verify_tls)
      .boolean("include_usage", p.include_usage)
      .boolean("responses", p.responses)
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
  if (doc["responses"].get_bool().get(b) == simdjson::SUCCESS) p.responses = b;
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

/// The entry of lowart.toml's `list` named `name`, or null.
template <class T> const T* find_named(const std::vector<T>& list, const std::string& name) {
  for (const auto& x : list)
    if (x.name == name) return &x;
  return nullptr;
}

/// Answers views by name (the API's replacing the file's) as a list in name order.
admin_result list_by_name(std::map<std::string, std::string>& items) {
  std::vector<std::string> list;
  for (auto& [_, v] : items)
    list.push_back(std::move(v));
  return {200, list_json(list)};
}

} // namespace

// --- providers and models ----------------------------------------------------------------------

/// API-made providers (keys still sealed) by name.
std::map<std::string, config::provider_config> admin_service::impl::db_providers(bool open_keys) {
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

std::map<std::string, std::vector<config::deployment_config>> admin_service::impl::db_models() {
  std::map<std::string, std::vector<config::deployment_config>> out;
  auto st = db.prepare("SELECT name, deployments FROM models");
  while (st.step())
    out[st.text(0)] = read_deployments(parser, st.text(1));
  return out;
}

std::string admin_service::impl::provider_view(const config::provider_config& p, std::string_view source) {
  json::object_writer w;
  w.str("name", p.name)
      .str("kind", p.kind)
      .str("base_url", p.base_url)
      .boolean("api_key_set", !p.api_key.empty())
      .str("source", source)
      .raw("settings", settings_json(p));
  return w.done();
}

admin_result admin_service::impl::providers(const admin_request& req, const std::vector<std::string>& parts) {
  auto file = gw.routing.load();
  auto stored = db_providers(false);
  auto find_file = [&](const std::string& name) { return find_named(file->providers, name); };
  if (parts.size() == 2 && req.method == "GET") {
    std::map<std::string, std::string> items;
    for (const auto& p : file->providers)
      items[p.name] = provider_view(p, "config");
    for (const auto& [name, p] : stored)
      items[name] = provider_view(p, "api");
    return list_by_name(items);
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
    auto responses = r.flag("responses");
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
                   "provider '" + pname + "' exists" + (in_file ? " (in lowart.toml; PUT overrides it)" : ""), "name");
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
    if (responses.has()) p.responses = responses.value;
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
  return method_not_allowed(req);
}

std::string admin_service::impl::model_view(const std::string& name, const std::vector<config::deployment_config>& deps,
                                            std::string_view source) {
  json::object_writer w;
  w.str("name", name).raw("deployments", deployments_json(deps)).str("source", source);
  return w.done();
}

admin_result admin_service::impl::models(const admin_request& req, const std::vector<std::string>& parts) {
  auto file = gw.routing.load();
  auto stored = db_models();
  auto find_file = [&](const std::string& name) { return find_named(file->models, name); };
  if (parts.size() == 2 && req.method == "GET") {
    std::map<std::string, std::string> items;
    for (const auto& m : file->models)
      items[m.name] = model_view(m.name, m.deployments, "config");
    for (const auto& [name, deps] : stored)
      items[name] = model_view(name, deps, "api");
    return list_by_name(items);
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
      return {200, in_db ? model_view(mname, stored[mname], "api") : model_view(mname, in_file->deployments, "config")};
    if (req.method == "DELETE") {
      if (!in_db) return error(409, "conflict_error", "model '" + mname + "' is defined in lowart.toml; edit the file");
      auto res = remove_row(req, "models", "name", mname, "model.delete", "name");
      res.catalog_changed = true;
      return res;
    }
  }
  return method_not_allowed(req);
}

} // namespace lowart::actors
