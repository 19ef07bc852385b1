// Actor tests on CAF's deterministic test coordinator: no threads, messages run when
// the test says so, and timers fire only on trigger_timeouts().

#include "actors/routing/breaker.hpp"
#include "actors/config_actor.hpp"
#include "actors/messages.hpp"
#include "actors/persistence.hpp"
#include "actors/routing/router.hpp"
#include "actors/state.hpp"
#include "core/secrets.hpp"
#include "storage/database.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

using namespace lowart;
using namespace lowart::actors;

namespace {

config::gateway_config test_config(const std::string& db_path) {
  config::gateway_config cfg;
  cfg.storage.sqlite_path = db_path;
  config::provider_config p;
  p.name = "mock";
  p.base_url = "http://127.0.0.1:18090/v1";
  cfg.providers.push_back(p);
  p.name = "backup";
  p.base_url = "https://backup.example.com/v1";
  cfg.providers.push_back(p);
  config::model_config m;
  m.name = "gpt-demo";
  m.deployments.push_back({"backup", "b-model", 5, 1});
  m.deployments.push_back({"mock", "mock-model", 0, 1});
  cfg.models.push_back(m);
  return cfg;
}

class actor_test : public ::testing::Test {
protected:
  actor_test() {
    auto path = std::filesystem::path(::testing::TempDir()) /
                ("lowart_actors_" + std::to_string(::getpid()) + "_" +
                 ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".db");
    std::filesystem::remove(path);
    db_path = path.string();
    state = std::make_unique<gateway_state>(test_config(db_path));
    cfg.set("scheduler.policy", caf::atom("testing"));
    cfg.set("logger.verbosity", caf::atom("quiet"));
    sys = std::make_unique<caf::actor_system>(cfg);
    sched = &dynamic_cast<caf::scheduler::test_coordinator&>(sys->scheduler());
    self = std::make_unique<caf::scoped_actor>(*sys);
  }

  ~actor_test() override {
    // The actor system's destructor waits for every actor: end the ones we started.
    for (auto& a : spawned)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    self.reset();
    sched->run();
  }

  /// Sends, runs everything, and returns the (status, body) answer.
  template <class... Ts> std::pair<int, std::string> ask(const caf::actor& dest, Ts&&... xs) {
    (*self)->send(dest, std::forward<Ts>(xs)...);
    sched->run();
    std::pair<int, std::string> out{0, ""};
    (*self)->receive(
        [&](std::int32_t status, const std::string& body, const std::string&) {
          out = {status, body};
        },
        caf::after(std::chrono::seconds(0)) >> [] { ADD_FAILURE() << "no answer"; });
    return out;
  }

  /// An admin API call as the master key.
  std::pair<int, std::string> admin(const caf::actor& p, const std::string& method, const std::string& path,
                                    const std::string& body = "") {
    return ask(p, admin_atom::value, method, path, std::string(), body, std::string("master"), std::string("admin"),
               std::string(), std::string());
  }

  caf::actor start_persistence() {
    auto p = spawn_persistence(*sys, *state, false);
    spawned.push_back(p);
    (*self)->send(p, init_atom::value);
    sched->run();
    (*self)->receive([](const std::string& error) { EXPECT_EQ(error, ""); },
                     caf::after(std::chrono::seconds(0)) >> [] { ADD_FAILURE() << "init did not answer"; });
    return p;
  }

  std::string db_path;
  std::unique_ptr<gateway_state> state;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::scheduler::test_coordinator* sched = nullptr;
  std::unique_ptr<caf::scoped_actor> self;
  std::vector<caf::actor> spawned;
};

std::string field(const std::string& json, const std::string& name) {
  auto at = json.find("\"" + name + "\":\"");
  if (at == std::string::npos) return {};
  at += name.size() + 4;
  return json.substr(at, json.find('"', at) - at);
}

} // namespace

TEST_F(actor_test, persistence_publishes_created_keys_and_forgets_revoked_ones) {
  auto p = start_persistence();
  ASSERT_TRUE(state->keys.load());
  EXPECT_TRUE(state->keys.load()->by_hash.empty());

  auto [status, body] = admin(p, "POST", "/admin/keys", R"({"name":"team-a","models":["gpt-demo"],"role":"user"})");
  ASSERT_EQ(status, 201) << body;
  auto key = field(body, "key");
  auto id = field(body, "id");
  ASSERT_EQ(key.rfind("sk-lw-", 0), 0u);
  auto table = state->keys.load();
  auto it = table->by_hash.find(secrets::sha256_hex(key));
  ASSERT_NE(it, table->by_hash.end());
  EXPECT_EQ(it->second->id, id);
  EXPECT_TRUE(it->second->allows_model("gpt-demo"));
  EXPECT_FALSE(it->second->allows_model("other"));

  auto [list_status, list] = admin(p, "GET", "/admin/keys");
  EXPECT_EQ(list_status, 200);
  EXPECT_EQ(list.find(key), std::string::npos) << "a listing must never show the key";
  EXPECT_NE(list.find(key.substr(0, 12)), std::string::npos);

  EXPECT_EQ(admin(p, "DELETE", "/admin/keys/" + id).first, 200);
  EXPECT_TRUE(state->keys.load()->by_hash.empty());
  EXPECT_EQ(admin(p, "DELETE", "/admin/keys/" + id).first, 404);
}

TEST_F(actor_test, persistence_rejects_bad_key_requests_with_field_names) {
  auto p = start_persistence();
  auto [s1, b1] = admin(p, "POST", "/admin/keys", "{not json");
  EXPECT_EQ(s1, 400);
  auto [s2, b2] = admin(p, "POST", "/admin/keys", R"({"models":["x"]})");
  EXPECT_EQ(s2, 400);
  EXPECT_NE(b2.find("\"param\":\"name\""), std::string::npos) << b2;
  auto [s3, b3] = admin(p, "POST", "/admin/keys", R"({"name":"x","role":"god"})");
  EXPECT_EQ(s3, 400);
  EXPECT_NE(b3.find("role"), std::string::npos);
}

TEST_F(actor_test, usage_queue_is_written_on_the_flush_timer_and_on_exit) {
  auto p = start_persistence();
  for (int i = 0; i < 3; ++i) {
    usage_record r;
    r.request_id = "req_" + std::to_string(i);
    r.route = "chat";
    r.model = "gpt-demo";
    r.status = 200;
    r.prompt_tokens = 10;
    state->usage.push(std::move(r));
  }
  sched->trigger_timeouts(); // the write-behind tick
  sched->run();
  EXPECT_EQ(state->usage.size(), 0u);
  usage_record last;
  last.request_id = "req_last";
  last.route = "chat";
  state->usage.push(std::move(last));
  caf::anon_send_exit(p, caf::exit_reason::user_shutdown);
  sched->run();
  storage::database db{db_path};
  auto st = db.prepare("SELECT COUNT(*), SUM(prompt_tokens) FROM usage_records");
  ASSERT_TRUE(st.step());
  EXPECT_EQ(st.integer(0), 4);
  EXPECT_EQ(st.integer(1), 30);
}

TEST_F(actor_test, spooled_usage_is_written_once_even_when_part_of_it_is_in_the_database_already) {
  // A COMMIT that succeeded on a connection that then died: the first two records are in
  // the database and still in the spool. Replaying writes only the third.
  {
    storage::database db{db_path};
    for (int i = 0; i < 2; ++i) {
      auto st = db.prepare("INSERT INTO usage_records(request_id, ts_ms, route, status) VALUES (?, ?, 'chat', 200)");
      st.bind(1, "req_" + std::to_string(i)).bind(2, std::int64_t{1000 + i});
      st.step();
    }
  }
  auto with_spool = test_config(db_path);
  with_spool.storage.spool_path = db_path + ".spool";
  state = std::make_unique<gateway_state>(with_spool);
  {
    std::ofstream spool(with_spool.storage.spool_path);
    for (int i = 0; i < 3; ++i)
      spool << R"({"request_id":"req_)" << i << R"(","ts_ms":)" << 1000 + i
            << R"(,"route":"chat","status":200,"stream":false,"prompt_tokens":7})" << '\n';
    // A client may send the same x-request-id twice: at another time it is another record.
    spool << R"({"request_id":"req_0","ts_ms":5000,"route":"chat","status":200,"stream":false,"prompt_tokens":7})"
          << '\n';
  }
  auto p = start_persistence();
  sched->trigger_timeouts(); // the write-behind tick replays the spool
  sched->run();
  storage::database db{db_path};
  auto st = db.prepare("SELECT COUNT(*), SUM(prompt_tokens), COUNT(DISTINCT ts_ms) FROM usage_records");
  ASSERT_TRUE(st.step());
  EXPECT_EQ(st.integer(0), 4) << "two were there, two came from the spool";
  EXPECT_EQ(st.integer(1), 14);
  EXPECT_EQ(st.integer(2), 4);
  EXPECT_FALSE(std::filesystem::exists(state->config.storage.spool_path) &&
               std::filesystem::file_size(state->config.storage.spool_path) > 0)
      << "the spool is emptied once written";
  std::filesystem::remove(state->config.storage.spool_path);
}

TEST_F(actor_test, router_publishes_deployments_by_priority_and_restarts_providers) {
  auto r = spawn_router(*sys, *state);
  spawned.push_back(r);
  sched->run();
  auto table = state->routes.load();
  ASSERT_TRUE(table);
  const auto& route = table->models.at("gpt-demo");
  ASSERT_EQ(route.deployments.size(), 2u);
  EXPECT_EQ(route.deployments[0]->id, "mock/mock-model");
  EXPECT_EQ(route.deployments[1]->id, "backup/b-model");
  EXPECT_TRUE(route.deployments[1]->target.tls);

  caf::actor provider;
  (*self)->send(r, status_atom::value, std::string("mock/mock-model"));
  sched->run();
  (*self)->receive([&](const caf::actor& a) { provider = a; },
                   caf::after(std::chrono::seconds(0)) >> [] { ADD_FAILURE() << "no provider"; });
  ASSERT_TRUE(provider);
  caf::anon_send_exit(provider, caf::exit_reason::unhandled_exception); // as if it crashed
  sched->run();
  sched->trigger_timeouts(); // restart backoff (and provider ticks)
  sched->run();
  caf::actor restarted;
  (*self)->send(r, status_atom::value, std::string("mock/mock-model"));
  sched->run();
  (*self)->receive([&](const caf::actor& a) { restarted = a; },
                   caf::after(std::chrono::seconds(0)) >> [] { ADD_FAILURE() << "no provider"; });
  ASSERT_TRUE(restarted);
  EXPECT_NE(restarted, provider);
  caf::anon_send_exit(r, caf::exit_reason::user_shutdown);
  sched->run();
}

TEST_F(actor_test, router_reload_adds_models_and_stops_providers_of_removed_deployments) {
  auto r = spawn_router(*sys, *state);
  spawned.push_back(r);
  sched->run();
  // Sorted by priority: [0] is mock/mock-model (0), [1] is backup/b-model (5).
  auto kept_stats = state->routes.load()->models.at("gpt-demo").deployments[1]->stats;

  auto next = std::make_shared<config::gateway_config>(*state->routing.load());
  next->models[0].deployments.pop_back(); // config order is backup, mock: drops mock
  config::model_config extra;
  extra.name = "gpt-extra";
  extra.deployments.push_back({"backup", "b-model", 0, 1});
  next->models.push_back(extra);
  state->routing.publish(next);
  (*self)->send(r, reload_atom::value);
  sched->run();

  auto table = state->routes.load();
  ASSERT_TRUE(table->models.count("gpt-extra"));
  ASSERT_EQ(table->models.at("gpt-demo").deployments.size(), 1u);
  EXPECT_EQ(table->models.at("gpt-demo").deployments[0]->id, "backup/b-model");
  // The surviving deployment keeps its live counters across the reload.
  EXPECT_EQ(table->models.at("gpt-demo").deployments[0]->stats, kept_stats);
  EXPECT_EQ(table->models.at("gpt-extra").deployments[0]->stats, kept_stats);

  auto provider_of = [&](const std::string& id) {
    caf::actor found;
    (*self)->send(r, status_atom::value, id);
    sched->run();
    (*self)->receive([&](const caf::actor& a) { found = a; },
                     caf::after(std::chrono::seconds(0)) >> [] { ADD_FAILURE() << "no answer"; });
    return found;
  };
  EXPECT_FALSE(provider_of("mock/mock-model")) << "the removed deployment's provider must stop";
  EXPECT_TRUE(provider_of("backup/b-model"));
  sched->trigger_timeouts(); // no restart may bring the stopped provider back
  sched->run();
  EXPECT_FALSE(provider_of("mock/mock-model"));
}

TEST_F(actor_test, config_actor_publishes_a_changed_file_and_keeps_the_old_one_when_invalid) {
  auto path = db_path + ".toml";
  auto write = [&](const std::string& text, int bump) {
    std::ofstream(path) << text;
    // File systems with coarse timestamps: move the time forward explicitly.
    std::filesystem::last_write_time(path, std::filesystem::file_time_type::clock::now() + std::chrono::seconds(bump));
  };
  const std::string base = R"([[providers]]
name = "mock"
base_url = "http://127.0.0.1:18090/v1"
[[models]]
name = "first"
[[models.deployments]]
provider = "mock"
model = "m"
)";
  write(base, 0);
  gateway_state file_state{*config::load(path).config, path};
  auto c = spawn_config(*sys, file_state, caf::actor_cast<caf::actor>(*self), std::chrono::seconds(2), false);
  spawned.push_back(c);
  sched->run();

  write(base + R"([[models]]
name = "second"
[[models.deployments]]
provider = "mock"
model = "m2"
)",
        5);
  auto tick = [&] {
    sched->trigger_timeouts();
    sched->run();
    bool notified = false;
    (*self)->receive([&](reload_atom) { notified = true; }, caf::after(std::chrono::seconds(0)) >> [] {});
    return notified;
  };
  EXPECT_FALSE(tick()) << "a change is taken once it has stopped changing (two polls alike)";
  EXPECT_EQ(file_state.routing.load()->models.size(), 1u);
  EXPECT_TRUE(tick());
  ASSERT_EQ(file_state.routing.load()->models.size(), 2u);

  write("[[models]]\nname = \"broken\"\n", 10); // no deployments: invalid
  EXPECT_FALSE(tick());
  EXPECT_FALSE(tick());
  EXPECT_EQ(file_state.routing.load()->models.size(), 2u) << "an invalid file must not replace the config";
  std::filesystem::remove(path);
}

TEST_F(actor_test, breaker_opens_on_the_failure_rate_probes_after_the_open_period_and_closes_on_success) {
  auto control = std::make_shared<breaker_control>();
  config::breaker_config settings;
  settings.window_s = 10;
  settings.failure_rate = 0.5;
  settings.min_requests = 4;
  settings.open_ms = 1000;
  settings.half_open_probes = 1;
  auto b = spawn_breaker(*sys, "mock/x", control, settings);
  spawned.push_back(b);
  sched->run();
  auto now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  auto report = [&](bool probe, bool success) {
    (*self)->send(b, report_atom::value, probe, success);
    sched->run();
  };

  control->record(now, false);
  control->record(now, true);
  report(false, false);
  EXPECT_EQ(control->mode(), breaker_mode::closed) << "2 outcomes are below min_requests";
  control->record(now, false);
  control->record(now, true);
  report(false, false);
  EXPECT_EQ(control->mode(), breaker_mode::open) << "2 of 4 failed: rate 0.5 reaches the threshold";
  bool probe = false;
  EXPECT_FALSE(control->admit(probe)) << "an open breaker lets nothing through";

  sched->trigger_timeouts(); // open_ms is over
  sched->run();
  EXPECT_EQ(control->mode(), breaker_mode::half_open);
  EXPECT_TRUE(control->admit(probe));
  EXPECT_TRUE(probe);
  bool second = false;
  EXPECT_FALSE(control->admit(second)) << "only half_open_probes requests go through";

  report(true, false); // the probe failed
  EXPECT_EQ(control->mode(), breaker_mode::open);
  sched->trigger_timeouts();
  sched->run();
  ASSERT_EQ(control->mode(), breaker_mode::half_open);
  ASSERT_TRUE(control->admit(probe));
  report(true, true); // the probe succeeded
  EXPECT_EQ(control->mode(), breaker_mode::closed);
  std::int64_t ok = -1, failed = -1;
  control->totals(now, 10, ok, failed);
  EXPECT_EQ(ok + failed, 0) << "closing starts a fresh window";
}

TEST(breaker_control, a_probe_without_an_answer_gives_its_place_back_and_closes_nothing) {
  breaker_control c;
  c.set_mode(breaker_mode::half_open);
  c.allow_probes(1);
  bool probe = false;
  ASSERT_TRUE(c.admit(probe));
  ASSERT_TRUE(probe);
  EXPECT_FALSE(c.admit(probe)) << "the one probe is out";
  c.return_probe();
  EXPECT_EQ(c.mode(), breaker_mode::half_open);
  EXPECT_TRUE(c.admit(probe)) << "the next request probes";
  EXPECT_TRUE(probe);
  c.set_mode(breaker_mode::open);
  c.return_probe(); // the breaker moved on meanwhile: nothing to give back
  c.set_mode(breaker_mode::half_open);
  EXPECT_FALSE(c.admit(probe));
}

TEST(breaker_control, window_counts_only_recent_seconds) {
  breaker_control c;
  c.record(100, true);
  c.record(105, false);
  c.record(109, true);
  std::int64_t ok = 0, failed = 0;
  c.totals(109, 10, ok, failed);
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(failed, 2);
  c.totals(112, 5, ok, failed);
  EXPECT_EQ(ok, 0);
  EXPECT_EQ(failed, 1);
  c.record(100 + breaker_control::buckets, false); // same bucket as second 100: reused
  c.totals(100 + breaker_control::buckets, 1, ok, failed);
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(failed, 0);
}
