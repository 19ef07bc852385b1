#include "actors/persistence.hpp"

#include "actors/messages.hpp"
#include "actors/state.hpp"
#include "core/json_text.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"
#include "core/secrets.hpp"
#include "storage/database.hpp"

#include <caf/all.hpp>
#include <simdjson.h>

#include <chrono>

#include <sys/resource.h>
#include <unistd.h>

namespace lowart::actors {
namespace {

using status_reply = std::tuple<std::int32_t, std::string>;

std::int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

status_reply admin_error(int status, std::string_view type, std::string_view message) {
  std::string body = "{\"error\":{\"message\":";
  json::append_quoted(body, message);
  body += ",\"type\":";
  json::append_quoted(body, type);
  body += "}}";
  return {status, std::move(body)};
}

std::string models_json(const std::vector<std::string>& models) {
  std::string out = "[";
  for (std::size_t i = 0; i < models.size(); ++i) {
    if (i) out += ',';
    json::append_quoted(out, models[i]);
  }
  out += ']';
  return out;
}

std::vector<std::string> parse_models_json(const std::string& text) {
  std::vector<std::string> out;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(text).get(doc) != simdjson::SUCCESS)
    return out;
  simdjson::dom::array arr;
  if (doc.get_array().get(arr) != simdjson::SUCCESS)
    return out;
  for (auto item : arr) {
    std::string_view s;
    if (item.get_string().get(s) == simdjson::SUCCESS)
      out.emplace_back(s);
  }
  return out;
}

struct persistence_state {
  static inline const char* name = "persistence";

  gateway_state* gw = nullptr;
  bool lower_priority = false; ///< only for the detached (own-thread) instance
  std::unique_ptr<storage::database> db;
  simdjson::dom::parser parser;
  metrics::counter records_ok = metrics::usage_records("ok");
  metrics::counter records_lost = metrics::usage_records("error");

  ~persistence_state() {
    // Whatever requests queued before the actor went away is written now (SIGTERM path).
    if (db && gw) {
      try {
        flush_usage();
      } catch (const std::exception& e) {
        log::error("usage flush on exit failed", {{"error", e.what()}});
      }
    }
  }

  void open() {
    db = std::make_unique<storage::database>(gw->config.storage.sqlite_path);
    if (gw->config.storage.sqlite_path != ":memory:" && db->journal_mode() != "wal")
      log::warn("sqlite did not enable WAL", {{"journal_mode", db->journal_mode()}});
    publish_keys();
    log::info("database open", {{"path", gw->config.storage.sqlite_path},
                                {"schema_version", db->schema_version()},
                                {"journal_mode", db->journal_mode()}});
  }

  void publish_keys() {
    auto table = std::make_shared<key_table>();
    auto st = db->prepare("SELECT id, name, key_hash, role, COALESCE(team, ''), models, "
                          "COALESCE(expires_at, 0) FROM virtual_keys WHERE revoked_at IS NULL");
    while (st.step()) {
      auto e = std::make_shared<key_entry>();
      e->id = st.text(0);
      e->name = st.text(1);
      e->hash = st.text(2);
      e->role = st.text(3);
      e->team = st.text(4);
      e->models = parse_models_json(st.text(5));
      e->expires_at = st.integer(6);
      table->by_hash.emplace(e->hash, std::move(e));
    }
    gw->keys.publish(std::move(table));
  }

  void audit(std::string_view actor, std::string_view action, std::string_view target,
             std::string_view detail) {
    db->prepare("INSERT INTO audit_log(ts_ms, actor, action, target, detail) VALUES (?,?,?,?,?)")
        .bind(1, now_ms())
        .bind(2, actor)
        .bind(3, action)
        .bind(4, target)
        .bind(5, detail)
        .step();
  }

  std::int64_t flush_usage() {
    auto rows = gw->usage.take();
    if (rows.empty())
      return 0;
    try {
      db->transaction([&] {
        auto st = db->prepare(
            "INSERT INTO usage_records(request_id, ts_ms, key_id, route, model, deployment, status,"
            " stream, prompt_tokens, completion_tokens, cached_tokens, latency_ms)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)");
        for (const auto& r : rows) {
          st.bind(1, r.request_id).bind(2, r.ts_ms).bind_optional(3, r.key_id).bind(4, r.route)
              .bind_optional(5, r.model).bind_optional(6, r.deployment)
              .bind(7, static_cast<std::int64_t>(r.status)).bind(8, static_cast<std::int64_t>(r.stream))
              .bind(9, r.prompt_tokens).bind(10, r.completion_tokens).bind(11, r.cached_tokens)
              .bind(12, r.latency_ms);
          st.step();
          st.reset();
        }
      });
      gw->storage_ok.store(true, std::memory_order_relaxed);
      records_ok.inc(static_cast<double>(rows.size()));
    } catch (const std::exception& e) {
      // Put the rows back so the next flush retries them; nothing is dropped silently.
      gw->storage_ok.store(false, std::memory_order_relaxed);
      log::error("usage flush failed; will retry", {{"error", e.what()}, {"rows", rows.size()}});
      for (auto& r : rows)
        gw->usage.push(std::move(r));
      return 0;
    }
    return static_cast<std::int64_t>(rows.size());
  }

  status_reply create_key(const std::string& actor, const std::string& body) {
    simdjson::padded_string padded(body);
    simdjson::dom::element doc;
    if (parser.parse(padded).get(doc) != simdjson::SUCCESS)
      return admin_error(400, "invalid_request_error", "request body is not valid JSON");
    simdjson::dom::object obj;
    if (doc.get_object().get(obj) != simdjson::SUCCESS)
      return admin_error(400, "invalid_request_error", "request body must be a JSON object");
    std::string name, role = "user", team;
    std::vector<std::string> models;
    std::int64_t expires_at = 0;
    for (auto field : obj) {
      auto key = field.key;
      auto value = field.value;
      if (key == "name") {
        std::string_view s;
        if (value.get_string().get(s) != simdjson::SUCCESS || s.empty() || s.size() > 200)
          return admin_error(400, "invalid_request_error", "name must be a string of 1 to 200 characters");
        name = std::string(s);
      } else if (key == "role") {
        std::string_view s;
        if (value.get_string().get(s) != simdjson::SUCCESS ||
            (s != "admin" && s != "operator" && s != "viewer" && s != "user"))
          return admin_error(400, "invalid_request_error", "role must be admin, operator, viewer or user");
        role = std::string(s);
      } else if (key == "team") {
        std::string_view s;
        if (value.is_null()) continue;
        if (value.get_string().get(s) != simdjson::SUCCESS)
          return admin_error(400, "invalid_request_error", "team must be a string");
        team = std::string(s);
      } else if (key == "models") {
        simdjson::dom::array arr;
        if (value.is_null()) continue;
        if (value.get_array().get(arr) != simdjson::SUCCESS)
          return admin_error(400, "invalid_request_error", "models must be an array of model names");
        for (auto item : arr) {
          std::string_view s;
          if (item.get_string().get(s) != simdjson::SUCCESS || s.empty())
            return admin_error(400, "invalid_request_error", "models must be an array of model names");
          models.emplace_back(s);
        }
      } else if (key == "expires_at") {
        if (value.is_null()) continue;
        std::int64_t t = 0;
        if (value.get_int64().get(t) != simdjson::SUCCESS || t <= 0)
          return admin_error(400, "invalid_request_error", "expires_at must be unix seconds");
        expires_at = t;
      }
    }
    if (name.empty())
      return admin_error(400, "invalid_request_error", "name is required");

    auto key = secrets::new_virtual_key();
    auto id = "key_" + secrets::random_hex(8);
    auto created = now_seconds();
    auto models_text = models_json(models);
    db->transaction([&] {
      auto st = db->prepare("INSERT INTO virtual_keys(id, name, key_hash, key_prefix, role, team,"
                            " models, expires_at, created_at) VALUES (?,?,?,?,?,?,?,?,?)");
      st.bind(1, id).bind(2, name).bind(3, secrets::sha256_hex(key)).bind(4, secrets::key_prefix(key))
          .bind(5, role).bind_optional(6, team).bind(7, models_text);
      if (expires_at) st.bind(8, expires_at); else st.bind_null(8);
      st.bind(9, created);
      st.step();
      audit(actor, "key.create", id, "{\"name\":" + json::quoted(name) + ",\"role\":" + json::quoted(role) + "}");
    });
    publish_keys();
    std::string out = "{\"id\":" + json::quoted(id) + ",\"key\":" + json::quoted(key) +
                      ",\"name\":" + json::quoted(name) + ",\"key_prefix\":" +
                      json::quoted(secrets::key_prefix(key)) + ",\"role\":" + json::quoted(role) +
                      ",\"team\":" + (team.empty() ? std::string("null") : json::quoted(team)) +
                      ",\"models\":" + models_text + ",\"expires_at\":" +
                      (expires_at ? std::to_string(expires_at) : std::string("null")) +
                      ",\"created_at\":" + std::to_string(created) + "}";
    return {201, std::move(out)};
  }

  status_reply list_keys() {
    std::string out = "{\"object\":\"list\",\"data\":[";
    auto st = db->prepare("SELECT id, name, key_prefix, role, team, models, expires_at, created_at,"
                          " revoked_at FROM virtual_keys ORDER BY created_at, id");
    bool first = true;
    while (st.step()) {
      if (!first) out += ',';
      first = false;
      out += "{\"id\":" + json::quoted(st.text(0)) + ",\"name\":" + json::quoted(st.text(1)) +
             ",\"key_prefix\":" + json::quoted(st.text(2)) + ",\"role\":" + json::quoted(st.text(3)) +
             ",\"team\":" + (st.is_null(4) ? std::string("null") : json::quoted(st.text(4))) +
             ",\"models\":" + st.text(5) +
             ",\"expires_at\":" + (st.is_null(6) ? std::string("null") : std::to_string(st.integer(6))) +
             ",\"created_at\":" + std::to_string(st.integer(7)) +
             ",\"revoked_at\":" + (st.is_null(8) ? std::string("null") : std::to_string(st.integer(8))) + "}";
    }
    out += "]}";
    return {200, std::move(out)};
  }

  status_reply revoke_key(const std::string& actor, const std::string& id) {
    std::int64_t changed = 0;
    db->transaction([&] {
      db->prepare("UPDATE virtual_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
          .bind(1, now_seconds())
          .bind(2, id)
          .step();
      changed = db->changes();
      if (changed)
        audit(actor, "key.revoke", id, "{}");
    });
    if (!changed)
      return admin_error(404, "not_found_error", "no active key with id '" + id + "'");
    publish_keys();
    return {200, "{\"id\":" + json::quoted(id) + ",\"revoked\":true}"};
  }
};

using persistence_actor = caf::stateful_actor<persistence_state>;

/// Runs `fn` and turns a storage exception into a 500 answer instead of killing the actor.
template <class Fn>
status_reply guarded(Fn&& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    log::error("database operation failed", {{"error", e.what()}});
    return admin_error(500, "storage_error", "database operation failed");
  }
}

caf::behavior persistence(persistence_actor* self, gateway_state* gw, bool own_thread) {
  self->state.gw = gw;
  self->state.lower_priority = own_thread;
  return {
    [=](init_atom) -> std::string {
      // SQLite batches are background work: on a small machine the I/O threads that
      // serve requests should win the CPU when both are runnable.
      if (self->state.lower_priority)
        ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
      try {
        self->state.open();
        self->delayed_send(self, std::chrono::milliseconds(gw->config.storage.usage_flush_ms), tick_atom::value);
        return {};
      } catch (const std::exception& e) {
        return e.what();
      }
    },
    [=](tick_atom) {
      // The write-behind timer: flush, then re-arm. Returns nothing, so no reply
      // message goes back to ourselves.
      if (self->state.db)
        self->state.flush_usage();
      self->delayed_send(self, std::chrono::milliseconds(gw->config.storage.usage_flush_ms), tick_atom::value);
    },
    [=](flush_atom) -> std::int64_t {
      // An explicit flush (shutdown, tests): answers the number of rows written.
      return self->state.db ? self->state.flush_usage() : 0;
    },
    [=](key_create_atom, const std::string& actor, const std::string& body) {
      return guarded([&] { return self->state.create_key(actor, body); });
    },
    [=](key_list_atom, const std::string&) {
      return guarded([&] { return self->state.list_keys(); });
    },
    [=](key_revoke_atom, const std::string& actor, const std::string& id) {
      return guarded([&] { return self->state.revoke_key(actor, id); });
    },
  };
}

} // namespace

caf::actor spawn_persistence(caf::actor_system& sys, gateway_state& state, bool detached) {
  if (detached)
    return sys.spawn<caf::detached>(persistence, &state, true);
  return sys.spawn(persistence, &state, false);
}

} // namespace lowart::actors
