#include "actors/limits/limiter.hpp"

#include <gtest/gtest.h>

using lowart::limits;
using lowart::rate_limiter;

namespace {
constexpr std::int64_t t0 = 1'795'000'000'000; // a fixed wall-clock instant (ms)
}

TEST(rate_limiter, rpm_bucket_allows_the_burst_then_refills_at_rpm_per_minute) {
  rate_limiter rl;
  limits l;
  l.rpm = 3;
  std::vector<rate_limiter::subject_ref> subjects{{"key:a", &l}};
  rate_limiter::ticket t;
  for (int i = 0; i < 3; ++i) {
    auto d = rl.reserve(subjects, 0, t0, t);
    ASSERT_TRUE(d.allowed);
    rl.settle(t, 0, 0, t0);
  }
  auto refused = rl.reserve(subjects, 0, t0, t);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.reason, "rpm");
  EXPECT_EQ(refused.subject, "key");
  EXPECT_EQ(refused.retry_after_s, 20) << "one request comes back every 60/3 s";
  EXPECT_TRUE(rl.reserve(subjects, 0, t0 + 20'000, t).allowed);
}

TEST(rate_limiter, a_refusal_by_one_subject_takes_nothing_from_the_others) {
  rate_limiter rl;
  limits key, team;
  key.rpm = 10;
  team.rpm = 1;
  std::vector<rate_limiter::subject_ref> both{{"key:a", &key}, {"team:t", &team}};
  rate_limiter::ticket t;
  ASSERT_TRUE(rl.reserve(both, 0, t0, t).allowed);
  rl.settle(t, 0, 0, t0);
  auto d = rl.reserve(both, 0, t0, t);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.subject, "team");
  std::vector<rate_limiter::subject_ref> key_only{{"key:a", &key}};
  auto after = rl.reserve(key_only, 0, t0, t);
  EXPECT_EQ(after.remaining_requests, 8) << "only the successful reservation was taken from the key";
}

TEST(rate_limiter, tpm_reserves_the_estimate_and_settles_the_truth) {
  rate_limiter rl;
  limits l;
  l.tpm = 1000;
  std::vector<rate_limiter::subject_ref> s{{"key:a", &l}};
  rate_limiter::ticket first, second;
  ASSERT_TRUE(rl.reserve(s, 800, t0, first).allowed);
  EXPECT_FALSE(rl.reserve(s, 300, t0, second).allowed) << "800 reserved, 200 left";
  rl.settle(first, 100, 0, t0); // it used 100: 700 come back
  EXPECT_TRUE(rl.reserve(s, 300, t0, second).allowed);
}

TEST(rate_limiter, parallel_slots_return_on_settle) {
  rate_limiter rl;
  limits l;
  l.max_parallel = 1;
  std::vector<rate_limiter::subject_ref> s{{"key:a", &l}};
  rate_limiter::ticket first, second;
  ASSERT_TRUE(rl.reserve(s, 0, t0, first).allowed);
  EXPECT_EQ(rl.reserve(s, 0, t0, second).reason, "parallel");
  rl.settle(first, 0, 0, t0);
  EXPECT_TRUE(rl.reserve(s, 0, t0, second).allowed);
}

TEST(rate_limiter, budgets_refuse_once_spent_and_reset_with_the_period) {
  rate_limiter rl;
  limits l;
  l.budget_tokens = 100;
  l.budget_period = "day";
  std::vector<rate_limiter::subject_ref> s{{"key:a", &l}};
  rate_limiter::ticket t;
  ASSERT_TRUE(rl.reserve(s, 0, t0, t).allowed);
  rl.settle(t, 100, 0, t0);
  auto d = rl.reserve(s, 0, t0, t);
  EXPECT_EQ(d.reason, "budget_tokens");
  auto next_day = rate_limiter::period_end("day", t0);
  EXPECT_EQ(d.retry_after_s, (next_day - t0 + 999) / 1000);
  EXPECT_TRUE(rl.reserve(s, 0, next_day, t).allowed) << "a new day, a new budget";
}

TEST(rate_limiter, budgets_count_the_reservations_in_flight_until_they_settle) {
  rate_limiter rl;
  limits l;
  l.budget_tokens = 1000;
  l.budget_period = "day";
  std::vector<rate_limiter::subject_ref> s{{"key:a", &l}};
  std::vector<rate_limiter::ticket> held(8);
  int admitted = 0;
  for (auto& t : held) // eight in flight, 120 each: 960 reserved, the ninth does not fit
    admitted += rl.reserve(s, 120, t0, t).allowed ? 1 : 0;
  EXPECT_EQ(admitted, 8);
  rate_limiter::ticket ninth;
  auto d = rl.reserve(s, 120, t0, ninth);
  EXPECT_EQ(d.reason, "budget_tokens");
  EXPECT_EQ(d.retry_after_s, 1) << "refused by reservations: they settle soon";
  for (auto& t : held)
    rl.settle(t, 48, 0, t0);    // each used 48: 384 used, nothing reserved
  for (int i = 0; i < 5; ++i) { // 384 + 5 * 120 = 984
    rate_limiter::ticket t;
    ASSERT_TRUE(rl.reserve(s, 120, t0, t).allowed) << i;
    rl.settle(t, 120, 0, t0);
  }
  auto spent = rl.reserve(s, 120, t0, ninth);
  EXPECT_EQ(spent.reason, "budget_tokens");
  EXPECT_GT(spent.retry_after_s, 60) << "used 984 + 120 is over 1000 whatever settles: the next period";
  EXPECT_TRUE(rl.reserve(s, 16, t0, ninth).allowed) << "a smaller estimate still fits";
}

TEST(rate_limiter, cost_budgets_reserve_the_estimated_cost) {
  rate_limiter rl;
  limits l;
  l.budget_cost = 0.001;
  l.budget_period = "month";
  std::vector<rate_limiter::subject_ref> s{{"team:t", &l}};
  rate_limiter::ticket a, b;
  ASSERT_TRUE(rl.reserve(s, 100, t0, a, false, 0.0006).allowed);
  EXPECT_EQ(rl.reserve(s, 100, t0, b, false, 0.0006).reason, "budget_cost");
  rl.settle(a, 100, 0.00025, t0);
  EXPECT_TRUE(rl.reserve(s, 100, t0, b, false, 0.0006).allowed) << "0.00025 used + 0.0006 fit 0.001";
  rate_limiter::ticket c;
  EXPECT_FALSE(rl.reserve(s, 100, t0, c, false, 0.0002).allowed);
}

TEST(rate_limiter, an_estimate_over_the_tpm_limit_itself_is_refused_for_good) {
  rate_limiter rl;
  limits l;
  l.tpm = 100;
  std::vector<rate_limiter::subject_ref> s{{"key:a", &l}};
  rate_limiter::ticket t;
  auto d = rl.reserve(s, 150, t0, t);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, "tpm");
  EXPECT_EQ(d.requested_tokens, 150);
  EXPECT_EQ(d.limit_tokens, 100);
  EXPECT_EQ(d.remaining_tokens, 100) << "nothing was taken";
  EXPECT_TRUE(rl.reserve(s, 100, t0, t).allowed);
}

TEST(rate_limiter, seeded_spending_counts_against_the_budget) {
  rate_limiter rl;
  limits l;
  l.budget_cost = 10;
  l.budget_period = "month";
  rl.seed_budget("team:t", "month", 0, 10.5, t0);
  rate_limiter::ticket t;
  EXPECT_EQ(rl.reserve({{"team:t", &l}}, 0, t0, t).reason, "budget_cost");
}

TEST(rate_limiter, periods_are_utc_calendar_days_and_months) {
  // 2026-11-26T14:00:00Z
  std::int64_t now = 1'795'701'600'000;
  EXPECT_EQ(rate_limiter::period_start("day", now), 1'795'651'200'000);   // 2026-11-26T00:00Z
  EXPECT_EQ(rate_limiter::period_start("month", now), 1'793'491'200'000); // 2026-11-01T00:00Z
  EXPECT_EQ(rate_limiter::period_end("month", now), 1'796'083'200'000);   // 2026-12-01T00:00Z
}
