// Scale-out pieces: the PostgreSQL form of SQL, Redis URLs and RESP, the limiter's
// parallel-only mode, and the fleet's Lua scripts against a real redis-server child.
#include "actors/fleet.hpp"
#include "config/config.hpp"
#include "net/redis.hpp"
#include "storage/database.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <optional>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using lowart::storage::postgres_sql;

TEST(postgres_sql, numbers_placeholders_outside_quotes_and_comments) {
  EXPECT_EQ(postgres_sql("SELECT a FROM t WHERE b = ? AND c = '?' AND d = ?", false),
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND d = $2");
  EXPECT_EQ(postgres_sql("SELECT 1 -- why?\nWHERE x = ?", false), "SELECT 1 -- why?\nWHERE x = $1");
  EXPECT_EQ(postgres_sql("WHERE ?1 = '' OR key_id = ?1 LIMIT ?2", false), "WHERE $1 = '' OR key_id = $1 LIMIT $2");
}

TEST(postgres_sql, maps_sqlite_types_in_migrations_only_as_whole_words) {
  EXPECT_EQ(postgres_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, c REAL, realm TEXT,"
                         " INTEGERS TEXT)",
                         true),
            "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, n BIGINT NOT NULL, c DOUBLE PRECISION, realm TEXT,"
            " INTEGERS TEXT)");
  EXPECT_EQ(postgres_sql("n INTEGER", false), "n INTEGER") << "queries keep their words";
}

TEST(postgres_sql, database_refuses_an_unreachable_server_with_a_clear_error) {
  // A closed port on loopback: the error names PostgreSQL and comes at once.
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::acceptor probe(ioc, {boost::asio::ip::make_address("127.0.0.1"), 0});
  auto port = probe.local_endpoint().port();
  probe.close();
  try {
    lowart::storage::database db("postgresql://lowart@127.0.0.1:" + std::to_string(port) + "/lowart");
    FAIL() << "connected to a closed port";
  } catch (const lowart::storage::database_unavailable& e) {
    EXPECT_NE(std::string(e.what()).find("PostgreSQL"), std::string::npos) << e.what();
  }
}

TEST(redis, parses_urls_and_writes_resp) {
  lowart::net::redis_endpoint ep;
  ASSERT_TRUE(lowart::net::parse_redis_url("redis://:s3cret@10.0.0.5:6380/2", ep));
  EXPECT_EQ(ep.host, "10.0.0.5");
  EXPECT_EQ(ep.port, "6380");
  EXPECT_EQ(ep.password, "s3cret");
  EXPECT_EQ(ep.db, 2);
  lowart::net::redis_endpoint acl;
  ASSERT_TRUE(lowart::net::parse_redis_url("redis://gw:p%40ss%3Aw@10.0.0.5:6380", acl));
  EXPECT_EQ(acl.user, "gw");
  EXPECT_EQ(acl.password, "p@ss:w") << "percent-encoded characters are decoded";
  lowart::net::redis_endpoint plain;
  ASSERT_TRUE(lowart::net::parse_redis_url("redis://localhost", plain));
  EXPECT_EQ(plain.port, "6379");
  EXPECT_FALSE(lowart::net::parse_redis_url("http://localhost:6379", plain));
  std::string out;
  lowart::net::append_command(out, {"SET", "k", "a b"});
  EXPECT_EQ(out, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\na b\r\n");
}

TEST(rate_limiter, parallel_only_takes_the_concurrency_slot_and_nothing_else) {
  lowart::rate_limiter rl;
  lowart::limits l;
  l.rpm = 1;
  l.max_parallel = 1;
  std::vector<lowart::rate_limiter::subject_ref> subjects{{"key:p", &l}};
  lowart::rate_limiter::ticket t1, t2;
  ASSERT_TRUE(rl.reserve(subjects, 0, 1'000, t1, true).allowed);
  auto second = rl.reserve(subjects, 0, 1'000, t2, true);
  EXPECT_FALSE(second.allowed);
  EXPECT_EQ(second.reason, "parallel");
  rl.settle(t1, 10, 0, 1'000);
  // The request bucket was never touched: the one request of this minute is still there.
  lowart::rate_limiter::ticket t3;
  EXPECT_TRUE(rl.reserve(subjects, 0, 1'000, t3).allowed);
}

namespace {

/// A real redis-server on a free loopback port, killed at the end.
class redis_child {
public:
  redis_child() {
    boost::asio::io_context ioc;
    boost::asio::ip::tcp::acceptor probe(ioc, {boost::asio::ip::make_address("127.0.0.1"), 0});
    port = probe.local_endpoint().port();
    probe.close();
    pid = ::fork();
    if (pid == 0) {
      auto p = std::to_string(port);
      ::execlp("redis-server", "redis-server", "--port", p.c_str(), "--bind", "127.0.0.1", "--save", "", "--appendonly",
               "no", "--loglevel", "warning", static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~redis_child() { stop(); }
  void stop() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      pid = -1;
    }
  }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port); }
  int port = 0;
  pid_t pid = -1;
};

/// Runs `ioc` until `done` or 5 s.
template <class Pred> bool run_until(boost::asio::io_context& ioc, Pred done) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!done() && std::chrono::steady_clock::now() < end) {
    ioc.restart();
    ioc.run_for(std::chrono::milliseconds(10));
  }
  return done();
}

} // namespace

TEST(fleet, two_replicas_share_one_rpm_bucket_in_a_real_redis_and_see_it_go) {
  redis_child server;
  lowart::config::cluster_config cfg;
  cfg.timeout_ms = 300;
  cfg.prefix = "unit" + std::to_string(::getpid());
  cfg.redis_url = server.url();
  boost::asio::io_context ioc;
  cfg.replica_id = "r1";
  auto one = lowart::make_redis_fleet(cfg);
  cfg.replica_id = "r2";
  auto two = lowart::make_redis_fleet(cfg);
  one->attach(0, ioc);
  two->attach(0, ioc);
  ASSERT_TRUE(run_until(ioc, [&] { return one->up(0) && two->up(0); })) << "redis-server did not come up";

  lowart::limits l;
  l.rpm = 5;
  std::vector<lowart::fleet_subject> subjects{{"key:shared", l}};
  int allowed = 0, refused = 0, answers = 0;
  std::string reason;
  for (int i = 0; i < 12; ++i) {
    auto& f = i % 2 ? one : two;
    f->reserve(0, subjects, 0, 1'795'000'000'000, [&](bool reached, const lowart::limit_decision& d) {
      ++answers;
      ASSERT_TRUE(reached);
      if (d.allowed) {
        ++allowed;
      } else {
        ++refused;
        reason = d.reason;
      }
    });
  }
  ASSERT_TRUE(run_until(ioc, [&] { return answers == 12; }));
  EXPECT_EQ(allowed, 5) << "one bucket for both replicas";
  EXPECT_EQ(refused, 7);
  EXPECT_EQ(reason, "rpm");

  // TPM: an estimate of 800 of 1000 leaves 200; the settle gives back what was not used.
  lowart::limits tl;
  tl.tpm = 1000;
  tl.budget_tokens = 150;
  tl.budget_period = "day";
  std::vector<lowart::fleet_subject> tokens{{"key:tokens", tl}};
  auto ask = [&](lowart::fleet& f, std::int64_t estimate) {
    std::optional<lowart::limit_decision> out;
    f.reserve(0, tokens, estimate, 1'795'000'000'000, [&](bool, const lowart::limit_decision& d) { out = d; });
    EXPECT_TRUE(run_until(ioc, [&] { return out.has_value(); }));
    return out.value_or(lowart::limit_decision{});
  };
  ASSERT_TRUE(ask(*one, 800).allowed);
  auto short_of_tokens = ask(*two, 800);
  EXPECT_FALSE(short_of_tokens.allowed);
  EXPECT_EQ(short_of_tokens.reason, "tpm");
  one->settle(0, tokens, 800, 100, 0.0, 1'795'000'000'000); // 700 back, 100 of the budget used
  auto after = std::chrono::steady_clock::now() + std::chrono::milliseconds(60);
  run_until(ioc, [&] { return std::chrono::steady_clock::now() > after; }); // the batch goes after 10 ms
  ASSERT_TRUE(ask(*two, 800).allowed) << "the settle on one replica gave the tokens back for both";
  two->settle(0, tokens, 800, 100, 0.0, 1'795'000'000'000); // 200 of 150 budget tokens used
  after = std::chrono::steady_clock::now() + std::chrono::milliseconds(60);
  run_until(ioc, [&] { return std::chrono::steady_clock::now() > after; });
  auto over_budget = ask(*one, 10);
  EXPECT_FALSE(over_budget.allowed);
  EXPECT_EQ(over_budget.reason, "budget_tokens");

  server.stop();
  bool answered = false, reached = true;
  one->reserve(0, subjects, 0, 1'795'000'000'000, [&](bool r, const lowart::limit_decision&) {
    answered = true;
    reached = r;
  });
  ASSERT_TRUE(run_until(ioc, [&] { return answered; })) << "a dead redis must still answer (within the timeout)";
  EXPECT_FALSE(reached);
  EXPECT_FALSE(one->up(0));
  one->release_workers();
  two->release_workers();
}
