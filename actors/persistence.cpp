#include "actors/persistence.hpp"

#include "actors/admin/admin_service.hpp"
#include "actors/bus/a2a_store.hpp"
#include "actors/jobs/jobs_store.hpp"
#include "actors/mcp/mcp_store.hpp"
#include "actors/messages.hpp"
#include "actors/responses/responses_store.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"
#include "core/redact.hpp"
#include "core/secrets.hpp"
#include "storage/database.hpp"

#include <caf/all.hpp>
#include <simdjson.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sys/resource.h>
#include <unistd.h>

namespace lowart::actors {
namespace {

/// "postgresql://user:secret@host/db" without the password, for logs.
std::string redacted_url(const std::string& url) {
  auto scheme = url.find("://");
  auto query = url.find('?');
  if (query != std::string::npos) return redacted_url(url.substr(0, query)) + "?..."; // may hold a password
  auto at = url.find('@');
  if (scheme == std::string::npos || at == std::string::npos) return url;
  auto colon = url.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at) return url;
  return url.substr(0, colon) + ":***" + url.substr(at);
}

/// A usage record's source as one of the literals it is made of (records outlive the text
/// they were read from).
std::string_view usage_source_of(std::string_view text) {
  for (std::string_view known : {"upstream", "counted", "estimated"})
    if (text == known) return known;
  return {};
}

/// Usage records the database did not take, one JSON line each, in a local file that
/// survives a restart. Only the persistence thread touches it.
class usage_spool {
public:
  std::string path; ///< "" = no spool (in-memory database)

  bool pending() {
    if (path.empty()) return false;
    if (!checked_) {
      std::error_code ec;
      has_ = std::filesystem::exists(path, ec) && std::filesystem::file_size(path, ec) > 0;
      checked_ = true;
    }
    return has_;
  }

  bool append(const std::vector<usage_record>& rows) {
    if (path.empty()) return false;
    std::string text;
    for (const auto& r : rows) {
      json::object_writer w;
      w.str("request_id", r.request_id)
          .num("ts_ms", r.ts_ms)
          .str("key_id", r.key_id)
          .str("route", r.route)
          .str("model", r.model)
          .str("deployment", r.deployment)
          .num("status", r.status)
          .boolean("stream", r.stream)
          .num("prompt_tokens", r.prompt_tokens)
          .num("completion_tokens", r.completion_tokens)
          .num("cached_tokens", r.cached_tokens)
          .real("latency_ms", r.latency_ms)
          .real("cost", r.cost)
          .num("price_version", r.price_version)
          .str("usage_source", r.usage_source)
          .str("error_code", r.error_code)
          .str("team_id", r.team())
          .str("user_id", r.user())
          .str("attempts", r.attempts)
          .real("ttfb_ms", r.ttfb_ms)
          .str("client_ip", r.client_ip)
          .str("user_agent", r.user_agent);
      if (r.captured) w.str("request_body", r.request_body).str("response_body", r.response_body);
      text += w.done();
      text += '\n';
    }
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
      log::error("cannot open the usage spool", {{"path", path}, {"error", std::strerror(errno)}});
      return false;
    }
    // A line torn by a crash is left alone: these records start on a line of their own.
    auto size = ::lseek(fd, 0, SEEK_END);
    char last = '\n';
    if (size > 0 && ::pread(fd, &last, 1, size - 1) == 1 && last != '\n') text.insert(text.begin(), '\n');
    std::size_t done = 0;
    while (done < text.size()) {
      auto n = ::write(fd, text.data() + done, text.size() - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    if (done < text.size()) {
      // All or nothing: the caller keeps these records, so none may stay half in the file.
      if (size >= 0 && ::ftruncate(fd, size) != 0) log::error("usage spool truncate failed", {{"path", path}});
      ::close(fd);
      log::error("usage spool write failed", {{"path", path}, {"error", std::strerror(errno)}});
      return false;
    }
    ::close(fd);
    checked_ = has_ = true;
    spooled_ += rows.size();
    metrics::usage_spooled().set(static_cast<double>(spooled_));
    return true;
  }

  std::vector<usage_record> read() {
    std::vector<usage_record> out;
    std::ifstream in(path);
    std::string line;
    simdjson::dom::parser parser;
    while (std::getline(in, line)) {
      simdjson::dom::element doc;
      if (parser.parse(line).get(doc) != simdjson::SUCCESS) continue; // a torn last line
      usage_record r;
      auto text = [&](const char* k) {
        std::string_view v;
        return doc[k].get_string().get(v) == simdjson::SUCCESS ? std::string(v) : std::string();
      };
      auto integer = [&](const char* k) {
        std::int64_t v = 0;
        return doc[k].get_int64().get(v) == simdjson::SUCCESS ? v : 0;
      };
      auto real = [&](const char* k) {
        double v = 0;
        return doc[k].get_double().get(v) == simdjson::SUCCESS ? v : 0.0;
      };
      r.request_id = text("request_id");
      r.ts_ms = integer("ts_ms");
      r.key_id = text("key_id");
      r.route = text("route");
      r.model = text("model");
      r.deployment = text("deployment");
      r.status = static_cast<int>(integer("status"));
      bool stream = false;
      if (doc["stream"].get_bool().get(stream) == simdjson::SUCCESS) r.stream = stream;
      r.prompt_tokens = integer("prompt_tokens");
      r.completion_tokens = integer("completion_tokens");
      r.cached_tokens = integer("cached_tokens");
      r.latency_ms = real("latency_ms");
      r.cost = real("cost");
      r.price_version = integer("price_version");
      r.usage_source = usage_source_of(text("usage_source"));
      r.error_code = text("error_code");
      r.team_id = text("team_id");
      r.user_id = text("user_id");
      r.attempts = text("attempts");
      r.ttfb_ms = real("ttfb_ms");
      r.client_ip = text("client_ip");
      r.user_agent = text("user_agent");
      r.captured = doc["request_body"].error() == simdjson::SUCCESS;
      r.request_body = text("request_body");
      r.response_body = text("response_body");
      out.push_back(std::move(r));
    }
    return out;
  }

  void clear() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
    has_ = false;
    checked_ = true;
    spooled_ = 0;
    metrics::usage_spooled().set(0);
  }

private:
  bool checked_ = false;
  bool has_ = false;
  std::size_t spooled_ = 0; ///< records appended in this run (for the gauge)
};

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
  std::unique_ptr<responses_store> responses;
  std::int64_t responses_swept_ms = 0; ///< when expired responses were last looked for
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

  const std::string& target() const {
    return gw->config.storage.url.empty() ? gw->config.storage.sqlite_path : gw->config.storage.url;
  }

  void open() {
    spool.path = gw->config.storage.spool_path;
    db = std::make_unique<storage::database>(target());
    if (db->dialect() == storage::dialect::sqlite && gw->config.storage.sqlite_path != ":memory:" &&
        db->journal_mode() != "wal")
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
    a2a = std::make_unique<a2a_store>(*db, gw->fleet ? gw->config.cluster.replica_id : std::string());
    responses = std::make_unique<responses_store>(*db);
    if (db->dialect() == storage::dialect::postgres) {
      // Several replicas share this database: keys, catalog, prices and MCP changes reach
      // every one of them through it too, with or without Redis (without, limits and
      // breakers stay per replica).
      db->listen(notify_channel);
      pg_notify = true;
    }
    log::info("database open", {{"kind", db->kind()},
                                {"path", db->dialect() == storage::dialect::sqlite ? gw->config.storage.sqlite_path
                                                                                   : redacted_url(target())},
                                {"schema_version", db->schema_version()},
                                {"journal_mode", db->journal_mode()}});
  }

  static constexpr int usage_columns = 22;
  static constexpr const char* usage_column_list =
      "request_id, ts_ms, key_id, route, model, deployment, status, stream, prompt_tokens, completion_tokens,"
      " cached_tokens, latency_ms, cost, price_version, usage_source, error_code, team_id, user_id, attempts,"
      " ttfb_ms, client_ip, user_agent";
  /// "(?,?,...)" for one record.
  static std::string usage_placeholders() {
    std::string s = "(";
    for (int i = 0; i < usage_columns; ++i)
      s += i ? ",?" : "?";
    return s + ")";
  }

  /// Binds one record's 22 columns (request_id ... user_agent) from parameter base + 1,
  /// without copying its text: `r` outlives the statement's step and reset.
  static storage::statement& bind_usage(storage::statement& st, int base, const usage_record& r) {
    return st.bind_view(base + 1, r.request_id)
        .bind(base + 2, r.ts_ms)
        .bind_optional_view(base + 3, r.key_id)
        .bind_view(base + 4, r.route)
        .bind_optional_view(base + 5, r.model)
        .bind_optional_view(base + 6, r.deployment)
        .bind(base + 7, static_cast<std::int64_t>(r.status))
        .bind(base + 8, static_cast<std::int64_t>(r.stream))
        .bind(base + 9, r.prompt_tokens)
        .bind(base + 10, r.completion_tokens)
        .bind(base + 11, r.cached_tokens)
        .bind(base + 12, r.latency_ms)
        .bind(base + 13, r.cost)
        .bind(base + 14, r.price_version)
        .bind_view(base + 15, r.usage_source.empty() ? std::string_view("") : r.usage_source) // '', not NULL
        .bind_optional_view(base + 16, r.error_code)
        .bind_optional_view(base + 17, r.team())
        .bind_optional_view(base + 18, r.user())
        .bind_optional_view(base + 19, r.attempts)
        .bind(base + 20, r.ttfb_ms)
        .bind_optional_view(base + 21, r.client_ip)
        .bind_optional_view(base + 22, r.user_agent);
  }

  /// The captured bodies of `rows` (log_bodies), redacted, inside the caller's transaction.
  void insert_bodies(const std::vector<usage_record>& rows) {
    std::optional<storage::statement> st;
    const auto& fields = gw->config.storage.redact_fields;
    for (const auto& r : rows) {
      if (!r.captured) continue;
      if (!st)
        st.emplace(db->prepare("INSERT INTO request_bodies(request_id, ts_ms, request, response) VALUES (?,?,?,?)"));
      auto request = redact_json_text(r.request_body, fields);
      auto response = redact_json_text(r.response_body, fields);
      st->bind_view(1, r.request_id).bind(2, r.ts_ms).bind_view(3, request).bind_view(4, response);
      st->step();
      st->reset();
    }
  }

  /// Spooled records may be in the database already (the connection died during a COMMIT
  /// that succeeded): each goes in only if no record has its timestamp and request id
  /// (looked up through the ts_ms index).
  void insert_usage_once(const std::vector<usage_record>& rows) {
    db->transaction([&] {
      auto values = usage_placeholders();
      auto st = db->prepare(std::string("INSERT INTO usage_records(") + usage_column_list + ") SELECT " +
                            values.substr(1, values.size() - 2) +
                            " WHERE NOT EXISTS (SELECT 1 FROM usage_records WHERE ts_ms = ?2 AND request_id = ?1)");
      for (const auto& r : rows) {
        bind_usage(st, 0, r);
        st.step();
        // Not in the database before: its bodies go in with it.
        if (db->changes() > 0 && r.captured) insert_bodies({r});
        st.reset();
      }
    });
  }

  /// Writes `rows` inside one transaction (throws on failure): SQLite steps one prepared
  /// statement per row (no round trips; parsing a statement of hundreds of placeholders
  /// at every flush cost more than the rows), PostgreSQL takes multi-row INSERTs (one
  /// round trip per 200 rows).
  void insert_usage(const std::vector<usage_record>& rows) {
    bool pg = db->dialect() == storage::dialect::postgres;
    const std::size_t per_statement = pg ? 200 : 1; // 22 parameters each, well under both limits
    db->transaction([&] {
      std::optional<storage::statement> single;
      for (std::size_t at = 0; at < rows.size(); at += per_statement) {
        auto n = std::min(per_statement, rows.size() - at);
        auto statement_for = [&](std::size_t count) {
          std::string sql = std::string("INSERT INTO usage_records(") + usage_column_list + ") VALUES ";
          auto values = usage_placeholders();
          for (std::size_t i = 0; i < count; ++i)
            (sql += i ? "," : "") += values;
          return db->prepare(sql);
        };
        std::optional<storage::statement> multi;
        if (n == 1 && !single) single.emplace(statement_for(1));
        if (n > 1) multi.emplace(statement_for(n));
        auto& st = n == 1 ? *single : *multi;
        for (std::size_t i = 0; i < n; ++i) {
          const auto& r = rows[at + i];
          int b = static_cast<int>(i) * usage_columns;
          bind_usage(st, b, r);
        }
        st.step();
        st.reset();
      }
      insert_bodies(rows);
    });
  }

  void storage_failed(const std::exception& e) {
    std::string why = e.what();
    if (gw->storage_problem() != why) log::error("database write failed; usage is spooled locally", {{"error", why}});
    gw->set_storage_problem(std::move(why));
  }

  std::int64_t flush_usage() {
    if (auto dropped = gw->usage.dropped(); dropped > dropped_seen) {
      log::error("usage queue full while the database refused writes; oldest records dropped",
                 {{"records", dropped - dropped_seen}});
      records_lost.inc(static_cast<double>(dropped - dropped_seen));
      dropped_seen = dropped;
    }
    auto rows = gw->usage.take();
    bool healthy = db->healthy();
    if (healthy && spool.pending()) replay_spool();
    if (rows.empty()) return 0;
    if (healthy && !spool.pending()) {
      try {
        insert_usage(rows);
        if (!gw->storage_ok.load(std::memory_order_relaxed)) log::info("database writes work again");
        gw->set_storage_problem({});
        records_ok.inc(static_cast<double>(rows.size()));
        return static_cast<std::int64_t>(rows.size());
      } catch (const std::exception& e) {
        storage_failed(e);
      }
    } else if (!healthy && gw->storage_ok.load(std::memory_order_relaxed)) {
      gw->set_storage_problem("the database does not answer");
    }
    // The database did not take them: spool to the local file (kept across restarts),
    // written in order once the database answers again. Without a spool file, back to
    // the (bounded) queue.
    if (!spool.append(rows)) {
      for (auto& r : rows)
        gw->usage.push(std::move(r));
    }
    return 0;
  }

  /// Writes the spooled records (oldest first); the file goes once they are in.
  void replay_spool() {
    auto rows = spool.read();
    if (rows.empty()) {
      spool.clear();
      return;
    }
    try {
      insert_usage_once(rows);
      spool.clear();
      records_ok.inc(static_cast<double>(rows.size()));
      gw->set_storage_problem({});
      log::info("spooled usage written to the database", {{"records", rows.size()}});
    } catch (const std::exception& e) {
      storage_failed(e);
    }
  }

  /// An admin change here: every other replica reloads the same from the database.
  void announce(const admin_result& res) {
    auto tell = [&](const char* topic) {
      // Both ways when both exist: LISTEN/NOTIFY still works while Redis is away (a
      // replica then reloads twice, which is harmless).
      if (gw->fleet) gw->fleet->publish(topic, "");
      if (pg_notify) {
        try {
          db->notify(notify_channel, gw->config.cluster.replica_id + '\n' + topic);
        } catch (const std::exception& e) {
          log::error("change notification failed", {{"topic", topic}, {"error", e.what()}});
        }
      }
    };
    if (res.keys_changed) tell("keys");
    if (res.prices_changed) tell("prices");
    if (res.catalog_changed) tell("catalog");
    if (res.mcp_changed) tell("mcp");
  }

  /// Replicas sharing PostgreSQL without Redis: changes other replicas made, from
  /// LISTEN/NOTIFY (read at every flush tick; never blocks).
  void take_notifications(caf::event_based_actor* self) {
    if (!pg_notify) return;
    for (const auto& n : db->notifications()) {
      if (n.empty()) { // the listening connection came back: reload everything
        reload("resync", self);
        continue;
      }
      auto nl = n.find('\n');
      if (nl == std::string::npos || n.compare(0, nl, gw->config.cluster.replica_id) == 0) continue;
      auto topic = n.substr(nl + 1);
      if (is_change_topic(topic)) reload(topic, self);
    }
  }

  /// Another replica changed `topic` in the shared database: publish it here too.
  void reload(const std::string& topic, caf::event_based_actor* self) {
    if (!admin) return;
    bool all = topic == "resync";
    try {
      if (all || topic == "keys") admin->publish_keys();
      // Redis may have lost its counters: budgets again from the database (Redis takes
      // them only for subjects it does not count this period yet).
      if (all) admin->seed_budgets();
      if (all || topic == "prices") admin->publish_prices();
      if (all || topic == "mcp") {
        mcp->publish();
        if (notify) self->send(notify, mcp_sync_atom::value);
      }
      if (all || topic == "catalog") {
        admin->publish_catalog();
        if (notify)
          self->request(notify, std::chrono::seconds(10), reload_atom::value).then([](bool) {}, [](caf::error&) {});
      }
      log::debug("reloaded after a change on another replica", {{"topic", topic}});
    } catch (const std::exception& e) {
      log::error("reload after a change on another replica failed", {{"topic", topic}, {"error", e.what()}});
    }
  }

  /// Retention of stored responses: those older than [storage] responses_ttl_s go,
  /// looked for every min(ttl, 60 s).
  void expire_responses() {
    auto ttl_ms = std::max<std::int64_t>(1, gw->config.storage.responses_ttl_s) * 1000;
    auto now = clock::unix_ms();
    if (!responses || now - responses_swept_ms < std::min<std::int64_t>(ttl_ms, 60'000)) return;
    responses_swept_ms = now;
    try {
      responses->op("expire", std::to_string(now - ttl_ms), {});
    } catch (const std::exception& e) {
      log::error("deleting expired responses failed", {{"error", e.what()}});
    }
  }

  /// Retention of usage records (the request log): those older than [storage]
  /// usage_ttl_s go, looked for every min(ttl, 60 s), at most about 10,000 rows per step
  /// (a step holds the write lock; a backlog goes on at the next flush tick).
  void expire_usage() {
    auto ttl_s = gw->config.storage.usage_ttl_s;
    if (ttl_s <= 0) return;
    auto ttl_ms = static_cast<std::int64_t>(ttl_s) * 1000;
    auto now = clock::unix_ms();
    if (now - usage_swept_ms < std::min<std::int64_t>(ttl_ms, 60'000)) return;
    usage_swept_ms = now;
    try {
      auto cutoff = now - ttl_ms;
      std::int64_t upto = 0;
      {
        auto st = db->prepare("SELECT ts_ms FROM usage_records WHERE ts_ms < ? ORDER BY ts_ms LIMIT 1 OFFSET 9999");
        st.bind(1, cutoff);
        if (st.step()) upto = st.integer(0);
      }
      std::int64_t removed = 0;
      db->transaction([&] {
        if (upto)
          db->prepare("DELETE FROM usage_records WHERE ts_ms <= ?").bind(1, upto).step();
        else
          db->prepare("DELETE FROM usage_records WHERE ts_ms < ?").bind(1, cutoff).step();
        removed = db->changes();
      });
      if (upto) usage_swept_ms = 0; // more to go: on at the next tick
      if (removed) log::info("expired usage records deleted", {{"records", removed}});
      db->transaction([&] { db->prepare("DELETE FROM request_bodies WHERE ts_ms < ?").bind(1, cutoff).step(); });
    } catch (const std::exception& e) {
      log::error("deleting expired usage records failed", {{"error", e.what()}});
    }
  }
  std::int64_t usage_swept_ms = 0;

  /// Captured bodies go after [storage] body_ttl_s (they are the bulk of the log).
  void expire_bodies() {
    auto ttl_ms = std::max<std::int64_t>(1, gw->config.storage.body_ttl_s) * 1000;
    auto now = clock::unix_ms();
    if (now - bodies_swept_ms < std::min<std::int64_t>(ttl_ms, 60'000)) return;
    bodies_swept_ms = now;
    try {
      db->transaction([&] { db->prepare("DELETE FROM request_bodies WHERE ts_ms < ?").bind(1, now - ttl_ms).step(); });
    } catch (const std::exception& e) {
      log::error("deleting expired request bodies failed", {{"error", e.what()}});
    }
  }
  std::int64_t bodies_swept_ms = 0;

  usage_spool spool;
  static constexpr const char* notify_channel = "lowart_changes";
  bool pg_notify = false; ///< PostgreSQL: changes also go by LISTEN/NOTIFY
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
        if (self->state.db) {
          self->state.flush_usage();
          self->state.take_notifications(self);
          self->state.expire_responses();
          self->state.expire_usage();
          self->state.expire_bodies();
        }
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
      [=](responses_store_atom, const std::string& op, const std::string& a,
          const std::string& b) -> caf::result<std::int32_t, std::string> {
        auto& st = self->state;
        if (!st.responses) return {std::int32_t{503}, std::string("{}")};
        try {
          auto [status, body] = st.responses->op(op, a, b);
          return {static_cast<std::int32_t>(status), std::move(body)};
        } catch (const std::exception& e) {
          log::error("responses storage operation failed", {{"op", op}, {"error", e.what()}});
          return {std::int32_t{500}, std::string("{}")};
        }
      },
      [=](fleet_atom, const std::string& topic) { self->state.reload(topic, self); },
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
          st.announce(res);
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
        } catch (const storage::database_unavailable& e) {
          log::error("admin operation failed: the database does not answer", {{"path", path}, {"error", e.what()}});
          st.storage_failed(e);
          return {
              std::int32_t{503},
              std::string(R"({"error":{"message":"the database does not answer; try again","type":"unavailable"}})"),
              std::string("application/json")};
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
