// Scale-out pieces: the PostgreSQL form of SQL, Redis URLs and RESP, the limiter's
// parallel-only mode, and the fleet's Lua scripts against a real redis-server child.
#include "actors/limits/fleet.hpp"
#include "config/config.hpp"
#include "storage/redis.hpp"
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
  lowart::storage::redis_endpoint ep;
  ASSERT_TRUE(lowart::storage::parse_redis_url("redis://:s3cret@10.0.0.5:6380/2", ep));
  EXPECT_EQ(ep.host, "10.0.0.5");
  EXPECT_EQ(ep.port, "6380");
  EXPECT_EQ(ep.password, "s3cret");
  EXPECT_EQ(ep.db, 2);
  lowart::storage::redis_endpoint acl;
  ASSERT_TRUE(lowart::storage::parse_redis_url("redis://gw:p%40ss%3Aw@10.0.0.5:6380", acl));
  EXPECT_EQ(acl.user, "gw");
  EXPECT_EQ(acl.password, "p@ss:w") << "percent-encoded characters are decoded";
  lowart::storage::redis_endpoint plain;
  ASSERT_TRUE(lowart::storage::parse_redis_url("redis://localhost", plain));
  EXPECT_EQ(plain.port, "6379");
  EXPECT_FALSE(lowart::storage::parse_redis_url("http://localhost:6379", plain));
  std::string out;
  lowart::storage::append_command(out, {"SET", "k", "a b"});
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
    f->reserve(0, subjects, {}, 1'795'000'000'000, [&](bool reached, const lowart::limit_decision& d) {
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

  // Periods as the requests would name them now (the script compares them with Redis's clock).
  const std::int64_t now =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  auto wait_ms = [&](int ms) {
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    run_until(ioc, [&] { return std::chrono::steady_clock::now() > until; });
  };
  std::string reservation;
  auto ask = [&](lowart::fleet& f, const std::vector<lowart::fleet_subject>& of, std::int64_t tokens, double cost = 0,
                 std::int64_t hold_ms = 60'000) {
    std::optional<lowart::limit_decision> out;
    reservation =
        f.reserve(0, of, {tokens, cost, hold_ms}, now, [&](bool, const lowart::limit_decision& d) { out = d; });
    EXPECT_TRUE(run_until(ioc, [&] { return out.has_value(); }));
    return out.value_or(lowart::limit_decision{});
  };

  // TPM: an estimate of 800 of 1000 leaves 200; the settle gives back what was not used.
  lowart::limits tl;
  tl.tpm = 1000;
  std::vector<lowart::fleet_subject> tokens{{"key:tokens", tl}};
  ASSERT_TRUE(ask(*one, tokens, 800).allowed);
  auto first = reservation;
  auto short_of_tokens = ask(*two, tokens, 800);
  EXPECT_FALSE(short_of_tokens.allowed);
  EXPECT_EQ(short_of_tokens.reason, "tpm");
  EXPECT_EQ(short_of_tokens.requested_tokens, 0) << "it would fit a full bucket";
  one->settle(0, tokens, first, 800, 100, 0.0, now); // 700 back
  wait_ms(60);                                       // the batch goes after 10 ms
  ASSERT_TRUE(ask(*two, tokens, 800).allowed) << "the settle on one replica gave the tokens back for both";
  auto too_large = ask(*one, tokens, 1500);
  EXPECT_EQ(too_large.reason, "tpm");
  EXPECT_EQ(too_large.requested_tokens, 1500) << "more than the limit itself never fits";

  // Budgets count what requests in flight reserved, until they settle.
  lowart::limits bl;
  bl.budget_tokens = 150;
  bl.budget_period = "day";
  std::vector<lowart::fleet_subject> budget{{"key:budget", bl}};
  ASSERT_TRUE(ask(*one, budget, 100).allowed);
  auto held = reservation;
  auto in_flight = ask(*two, budget, 100);
  EXPECT_FALSE(in_flight.allowed) << "100 reserved of 150: another 100 does not fit";
  EXPECT_EQ(in_flight.reason, "budget_tokens");
  EXPECT_EQ(in_flight.retry_after_s, 1) << "refused by a reservation: it may settle soon";
  one->settle(0, budget, held, 100, 40, 0.0, now); // it used 40
  wait_ms(60);
  ASSERT_TRUE(ask(*two, budget, 100).allowed) << "40 used + 100 reserved fit 150";
  EXPECT_FALSE(ask(*one, budget, 20).allowed) << "40 used + 100 reserved + 20 is over 150";
  auto spent = ask(*one, budget, 120);
  EXPECT_EQ(spent.reason, "budget_tokens");
  EXPECT_GT(spent.retry_after_s, 60) << "40 used + 120 is over 150 whatever settles: the next period";

  // A reservation whose replica never settles ends with its hold time.
  lowart::limits el;
  el.budget_tokens = 100;
  el.budget_period = "day";
  std::vector<lowart::fleet_subject> expiring{{"key:expiring", el}};
  ASSERT_TRUE(ask(*one, expiring, 90, 0, 200).allowed);
  EXPECT_FALSE(ask(*two, expiring, 50).allowed);
  wait_ms(300);
  ASSERT_TRUE(ask(*two, expiring, 50).allowed) << "the held 90 expired";
  auto late = reservation;
  // A reservation whose answer was lost is released.
  EXPECT_FALSE(ask(*one, expiring, 60).allowed);
  two->release(0, expiring, late);
  wait_ms(60);
  EXPECT_TRUE(ask(*one, expiring, 60).allowed) << "the released 50 no longer counts";

  // Cost budgets the same way, with fractional costs.
  lowart::limits cl;
  cl.budget_cost = 1.0;
  cl.budget_period = "month";
  std::vector<lowart::fleet_subject> cost{{"team:cost", cl}};
  ASSERT_TRUE(ask(*one, cost, 10, 0.6).allowed);
  auto dear = reservation;
  EXPECT_EQ(ask(*two, cost, 10, 0.6).reason, "budget_cost");
  one->settle(0, cost, dear, 10, 10, 0.25, now);
  wait_ms(60);
  EXPECT_TRUE(ask(*two, cost, 10, 0.6).allowed) << "0.25 used + 0.6 fit 1.0";
  EXPECT_FALSE(ask(*one, cost, 10, 0.2).allowed) << "0.25 + 0.6 reserved + 0.2 is over 1.0";

  server.stop();
  bool answered = false, reached = true;
  one->reserve(0, subjects, {}, 1'795'000'000'000, [&](bool r, const lowart::limit_decision&) {
    answered = true;
    reached = r;
  });
  ASSERT_TRUE(run_until(ioc, [&] { return answered; })) << "a dead redis must still answer (within the timeout)";
  EXPECT_FALSE(reached);
  EXPECT_FALSE(one->up(0));
  one->release_workers();
  two->release_workers();
}
