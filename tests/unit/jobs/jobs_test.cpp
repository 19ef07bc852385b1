// The pure parts of background jobs: URL parsing for backends and webhooks, the job
// record's JSON round trip (how job actors and persistence pass it), the jobs table in
// a real SQLite file (save, scoping, live jobs, expiry), webhook signatures, and the
// budget charge a finished job books.
#include "actors/jobs/jobs_store.hpp"
#include "actors/limits/limiter.hpp"
#include "actors/state.hpp"
#include "core/secrets.hpp"
#include "net/http_client.hpp"
#include "storage/database.hpp"

#include <gtest/gtest.h>

#include <filesystem>

using lowart::actors::job_record;
using lowart::actors::jobs_store;
using lowart::net::http_target;
using lowart::net::parse_url;

TEST(http_client, parse_url_splits_scheme_host_port_and_path) {
  http_target t;
  ASSERT_TRUE(parse_url("http://127.0.0.1:8188", t));
  EXPECT_FALSE(t.tls);
  EXPECT_EQ(t.host, "127.0.0.1");
  EXPECT_EQ(t.port, 8188);
  EXPECT_EQ(t.path, "/");
  ASSERT_TRUE(parse_url("https://hooks.example.com/a/b?x=1&y=2", t));
  EXPECT_TRUE(t.tls);
  EXPECT_EQ(t.port, 443);
  EXPECT_EQ(t.path, "/a/b?x=1&y=2");
  ASSERT_TRUE(parse_url("http://[::1]:9000/ws?clientId=abc", t));
  EXPECT_EQ(t.host, "::1");
  EXPECT_EQ(t.port, 9000);
  ASSERT_TRUE(parse_url("http://host?q", t));
  EXPECT_EQ(t.path, "/?q");
  for (const char* bad : {"ftp://x/", "http://", "http://:80/", "http://h:0/", "http://h:65536/", "http://h:8x/",
                          "http://user@h/", "http://h/a b", "http://h/a\r\nX: y", "http://[::1/"})
    EXPECT_FALSE(parse_url(bad, t)) << bad;
}

TEST(jobs, record_round_trips_through_json) {
  job_record r;
  r.id = "job_1";
  r.prompt_id = "0b7c-…";
  r.key_id = "key_a";
  r.model = "sdxl";
  r.status = "running";
  r.progress = 0.25;
  r.error = "quote \" and newline \n";
  r.input = R"({"prompt":"x","n":2})";
  r.workflow = R"({"3":{"class_type":"KSampler","inputs":{"seed":1}}})";
  r.submitted = true;
  r.files = R"([{"name":"a.png","bytes":10,"content_type":"image/png"}])";
  r.images = 1;
  r.cost = 0.5;
  r.created_ms = 1000;
  r.finished_ms = 2000;
  auto back = job_record::from_json(r.to_json());
  ASSERT_TRUE(back);
  EXPECT_EQ(back->to_json(), r.to_json());
  EXPECT_EQ(back->error, r.error);
  EXPECT_TRUE(back->submitted);
  EXPECT_DOUBLE_EQ(back->progress, 0.25);
  EXPECT_FALSE(job_record::from_json("{}")) << "a record without an id is refused";
  EXPECT_FALSE(job_record::from_json("not json"));
}

TEST(jobs, store_saves_scopes_lists_live_jobs_and_expires) {
  auto path = std::filesystem::temp_directory_path() / ("lowart-jobs-" + lowart::secrets::random_hex(6) + ".db");
  {
    lowart::storage::database db(path.string());
    lowart::gateway_state gw{{}};
    jobs_store store(db, gw);
    auto save = [&](const std::string& id, const std::string& key, const std::string& status, std::int64_t finished,
                    const std::string& webhook_state = "") {
      job_record r;
      r.id = id;
      r.prompt_id = id + "-p";
      r.key_id = key;
      r.model = "sdxl";
      r.status = status;
      r.created_ms = r.updated_ms = finished ? finished - 10 : 100;
      r.finished_ms = finished;
      r.webhook_state = webhook_state;
      if (!webhook_state.empty()) r.webhook = "http://127.0.0.1:1/h";
      EXPECT_EQ(store.op("save", r.to_json(), "").first, 200);
    };
    save("job_a", "key_1", "queued", 0);
    save("job_b", "key_1", "succeeded", 500);
    save("job_c", "key_2", "running", 0);
    save("job_d", "key_2", "failed", 600, "pending"); // its webhook still has to go out
    // Saving again replaces the row.
    save("job_a", "key_1", "running", 0);

    EXPECT_EQ(store.op("get", "job_a", "key_1").first, 200);
    EXPECT_EQ(store.op("get", "job_a", "key_2").first, 404) << "another key does not see it";
    EXPECT_EQ(store.op("get", "job_a", "").first, 200) << "an admin does";
    EXPECT_NE(store.op("get", "job_a", "").second.find(R"("status":"running")"), std::string::npos);

    auto mine = store.op("list", "key_1", "10").second;
    EXPECT_NE(mine.find("job_a"), std::string::npos);
    EXPECT_NE(mine.find("job_b"), std::string::npos);
    EXPECT_EQ(mine.find("job_c"), std::string::npos);

    auto live = store.op("live", "", "").second;
    EXPECT_NE(live.find("job_a"), std::string::npos);
    EXPECT_NE(live.find("job_c"), std::string::npos);
    EXPECT_NE(live.find("job_d"), std::string::npos);
    EXPECT_EQ(live.find("job_b"), std::string::npos);

    // Finished before 1000 and no webhook pending: job_b only.
    EXPECT_EQ(store.op("expire", "1000", "").second, R"(["job_b"])");
    EXPECT_EQ(store.op("get", "job_b", "").first, 404);
    EXPECT_EQ(store.op("get", "job_d", "").first, 200);
  }
  std::filesystem::remove(path);
  std::filesystem::remove(path.string() + "-wal");
  std::filesystem::remove(path.string() + "-shm");
}

TEST(jobs, in_a_fleet_a_replica_resumes_only_its_own_and_unowned_jobs) {
  auto path = std::filesystem::temp_directory_path() / ("lowart-owners-" + lowart::secrets::random_hex(6) + ".db");
  {
    lowart::storage::database db(path.string());
    auto replica = [](const std::string& id) {
      lowart::config::gateway_config cfg;
      cfg.cluster.redis_url = "redis://127.0.0.1:1"; // never connected: only ownership is tested
      cfg.cluster.replica_id = id;
      auto gw = std::make_unique<lowart::gateway_state>(cfg);
      gw->fleet = lowart::make_redis_fleet(gw->config.cluster);
      return gw;
    };
    auto one = replica("r1"), two = replica("r2");
    lowart::gateway_state alone{{}};
    jobs_store s1(db, *one), s2(db, *two), s0(db, alone);
    auto save = [](jobs_store& store, const std::string& id) {
      job_record r;
      r.id = id;
      r.prompt_id = id + "-p";
      r.key_id = "k";
      r.model = "sdxl";
      r.status = "running";
      r.created_ms = r.updated_ms = 100;
      EXPECT_EQ(store.op("save", r.to_json(), "").first, 200);
    };
    save(s1, "job_1");
    save(s2, "job_2");
    save(s0, "job_0");
    save(s2, "job_1"); // another replica's update does not take the job over
    auto live1 = s1.op("live", "", "").second, live2 = s2.op("live", "", "").second;
    EXPECT_NE(live1.find("job_1"), std::string::npos);
    EXPECT_EQ(live1.find("job_2"), std::string::npos);
    EXPECT_NE(live1.find("job_0"), std::string::npos) << "unowned jobs are anyone's";
    EXPECT_NE(live2.find("job_2"), std::string::npos);
    EXPECT_EQ(live2.find("job_1"), std::string::npos);
    auto all = s0.op("live", "", "").second;
    EXPECT_NE(all.find("job_1"), std::string::npos) << "a gateway on its own resumes everything";
    EXPECT_NE(all.find("job_2"), std::string::npos);
  }
  std::filesystem::remove(path);
  std::filesystem::remove(path.string() + "-wal");
  std::filesystem::remove(path.string() + "-shm");
}

TEST(jobs, webhook_signature_is_hmac_sha256) {
  // RFC 4231 test case 2.
  EXPECT_EQ(lowart::secrets::hmac_sha256_hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(jobs, a_finished_jobs_cost_is_charged_to_budgets) {
  lowart::rate_limiter limiter;
  lowart::limits lim;
  lim.budget_cost = 1.0;
  std::vector<lowart::rate_limiter::subject_ref> subjects{{"key:k", &lim}};
  lowart::rate_limiter::ticket t;
  auto now = 1'700'000'000'000;
  EXPECT_TRUE(limiter.reserve(subjects, 0, now, t).allowed);
  limiter.settle(t, 0, 0, now);
  limiter.charge(subjects, 0, 1.5, now); // the job cost more than the budget
  lowart::rate_limiter::ticket t2;
  auto d = limiter.reserve(subjects, 0, now, t2);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, "budget_cost");
}
