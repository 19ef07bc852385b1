#include "actors/persistence.hpp"

#include "actors/a2a_store.hpp"
#include "actors/admin_service.hpp"
#include "actors/jobs_store.hpp"
#include "actors/mcp_store.hpp"
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

struct persistence_state {
  static inline const char* name = "persistence";

  gateway_state* gw = nullptr;
  caf::actor notify;           ///< told (reload_atom) when providers or models change
  bool lower_priority = false; ///< only for the detached (own-thread) instance
  std::unique_ptr<storage::database> db;
  std::unique_ptr<admin_service> admin;
  std::unique_ptr<mcp_store> mcp;
  std::unique_ptr<jobs_store> jobs;
  std::unique_ptr<a2a_store> a2a;
  metrics::counter records_ok = metrics::usage_records("ok");
  metrics::counter records_lost = metrics::usage_records("error");
  std::size_t dropped_seen = 0; ///< usage_queue::dropped() at the last flush

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
    admin = std::make_unique<admin_service>(*db, *gw);
    if (auto sealed = admin->sealed_values(); sealed > 0 && !gw->keyring.can_seal())
      throw std::runtime_error(
          "the database holds " + std::to_string(sealed) +
          " encrypted provider key(s) but LOWART_ENCRYPTION_KEY (or LOWART_ENCRYPTION_KEY_FILE) is "
          "not set; start lowart with the key they were sealed with");
    admin->publish_keys();
    admin->publish_catalog();
    admin->publish_prices();
    admin->seed_budgets();
    mcp = std::make_unique<mcp_store>(*db, *gw);
    mcp->publish();
    jobs = std::make_unique<jobs_store>(*db, *gw);
    a2a = std::make_unique<a2a_store>(*db);
    log::info("database open", {{"path", gw->config.storage.sqlite_path},
                                {"schema_version", db->schema_version()},
                                {"journal_mode", db->journal_mode()}});
  }

  std::int64_t flush_usage() {
    if (auto dropped = gw->usage.dropped(); dropped > dropped_seen) {
      log::error("usage queue full while the database refused writes; oldest records dropped",
                 {{"records", dropped - dropped_seen}});
      records_lost.inc(static_cast<double>(dropped - dropped_seen));
      dropped_seen = dropped;
    }
    auto rows = gw->usage.take();
    if (rows.empty()) return 0;
    try {
      db->transaction([&] {
        auto st =
            db->prepare("INSERT INTO usage_records(request_id, ts_ms, key_id, route, model, deployment, status,"
                        " stream, prompt_tokens, completion_tokens, cached_tokens, latency_ms, cost, price_version)"
                        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
        for (const auto& r : rows) {
          st.bind(1, r.request_id)
              .bind(2, r.ts_ms)
              .bind_optional(3, r.key_id)
              .bind(4, r.route)
              .bind_optional(5, r.model)
              .bind_optional(6, r.deployment)
              .bind(7, static_cast<std::int64_t>(r.status))
              .bind(8, static_cast<std::int64_t>(r.stream))
              .bind(9, r.prompt_tokens)
              .bind(10, r.completion_tokens)
              .bind(11, r.cached_tokens)
              .bind(12, r.latency_ms)
              .bind(13, r.cost)
              .bind(14, r.price_version);
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
};

using persistence_actor = caf::stateful_actor<persistence_state>;

caf::behavior persistence(persistence_actor* self, gateway_state* gw, bool own_thread, caf::actor notify) {
  self->state.gw = gw;
  self->state.notify = std::move(notify);
  self->state.lower_priority = own_thread;
  return {
      [=](init_atom) -> std::string {
        // SQLite batches are background work: on a small machine the I/O threads that
        // serve requests should win the CPU when both are runnable.
        if (self->state.lower_priority) ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
        try {
          self->state.open();
          // After a restart of this actor the router already runs: have it rebuild with
          // what the database holds now (at first start it does not exist yet).
          if (self->state.notify)
            self->request(self->state.notify, std::chrono::seconds(10), reload_atom::value)
                .then([](bool) {}, [](caf::error&) {});
          self->delayed_send(self, std::chrono::milliseconds(gw->config.storage.usage_flush_ms), tick_atom::value);
          return {};
        } catch (const std::exception& e) {
          return e.what();
        }
      },
      [=](tick_atom) {
        // The write-behind timer: flush, then re-arm. Returns nothing, so no reply
        // message goes back to ourselves.
        if (self->state.db) self->state.flush_usage();
        self->delayed_send(self, std::chrono::milliseconds(gw->config.storage.usage_flush_ms), tick_atom::value);
      },
      [=](mcp_store_atom, const std::string& op, const std::string& a, const std::string& b,
          const std::string& c) -> caf::result<std::int32_t, std::string> {
        auto& st = self->state;
        if (!st.mcp) return {std::int32_t{503}, std::string("{}")};
        try {
          auto [status, body] = st.mcp->op(op, a, b, c);
          return {static_cast<std::int32_t>(status), std::move(body)};
        } catch (const std::exception& e) {
          log::error("MCP storage operation failed", {{"op", op}, {"error", e.what()}});
          return {std::int32_t{500}, std::string("{}")};
        }
      },
      [=](jobs_store_atom, const std::string& op, const std::string& a,
          const std::string& b) -> caf::result<std::int32_t, std::string> {
        auto& st = self->state;
        if (!st.jobs) return {std::int32_t{503}, std::string("{}")};
        try {
          auto [status, body] = st.jobs->op(op, a, b);
          return {static_cast<std::int32_t>(status), std::move(body)};
        } catch (const std::exception& e) {
          log::error("jobs storage operation failed", {{"op", op}, {"error", e.what()}});
          return {std::int32_t{500}, std::string("{}")};
        }
      },
      [=](a2a_store_atom, const std::string& op, const std::string& a) -> caf::result<std::int32_t, std::string> {
        auto& st = self->state;
        if (!st.a2a) return {std::int32_t{503}, std::string("{}")};
        try {
          auto [status, body] = st.a2a->op(op, a);
          return {static_cast<std::int32_t>(status), std::move(body)};
        } catch (const std::exception& e) {
          log::error("a2a storage operation failed", {{"op", op}, {"error", e.what()}});
          return {std::int32_t{500}, std::string("{}")};
        }
      },
      [=](flush_atom) -> std::int64_t {
        // An explicit flush (shutdown, tests): answers the number of rows written.
        return self->state.db ? self->state.flush_usage() : 0;
      },
      [=](admin_atom, const std::string& method, const std::string& path, const std::string& query,
          const std::string& body, const std::string& key_id, const std::string& role, const std::string& team_id,
          const std::string& user_id) -> caf::result<std::int32_t, std::string, std::string> {
        auto& st = self->state;
        if (!st.admin)
          return {std::int32_t{503}, std::string(R"({"error":{"message":"storage is not open","type":"unavailable"}})"),
                  std::string("application/json")};
        admin_request req{method, path, query, body, {key_id, role, team_id, user_id}};
        try {
          auto res = mcp_store::owns(path) ? st.mcp->handle(req) : st.admin->handle(req);
          if (res.mcp_changed) {
            st.mcp->publish();
            if (st.notify) self->send(st.notify, mcp_sync_atom::value);
          }
          if (!res.mcp_decided.empty() && st.notify) self->send(st.notify, mcp_exec_atom::value, res.mcp_decided);
          if (res.keys_changed) st.admin->publish_keys();
          if (res.prices_changed) st.admin->publish_prices();
          if (res.catalog_changed) {
            st.admin->publish_catalog();
            if (st.notify) {
              // Answer only once the router has rebuilt: the caller's next request must
              // see the change ("no stale cache beyond one request").
              auto rp = self->make_response_promise();
              auto status = static_cast<std::int32_t>(res.status);
              self->request(st.notify, std::chrono::seconds(10), reload_atom::value)
                  .then([=](bool) mutable { rp.deliver(status, res.body, res.content_type); },
                        [=](caf::error& err) mutable {
                          log::error("route rebuild after an admin change failed", {{"error", caf::to_string(err)}});
                          rp.deliver(status, res.body, res.content_type);
                        });
              return rp;
            }
          }
          return {static_cast<std::int32_t>(res.status), std::move(res.body), std::move(res.content_type)};
        } catch (const std::exception& e) {
          log::error("admin operation failed", {{"path", path}, {"error", e.what()}});
          return {std::int32_t{500},
                  std::string(R"({"error":{"message":"the operation failed in storage","type":"storage_error"}})"),
                  std::string("application/json")};
        }
      },
  };
}

} // namespace

caf::actor spawn_persistence(caf::actor_system& sys, gateway_state& state, bool detached, caf::actor notify) {
  if (detached) return sys.spawn<caf::detached>(persistence, &state, true, std::move(notify));
  return sys.spawn(persistence, &state, false, std::move(notify));
}

} // namespace lowart::actors
