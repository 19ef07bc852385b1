#pragma once
// Rate limits and budgets, checked on the hot path without a message.
//
// Subjects are a key, its team and the requested model. Each may carry:
//   rpm           requests per minute   (token bucket: burst rpm, refill rpm/60 per second)
//   tpm           tokens per minute     (token bucket; reserve an estimate, settle the truth)
//   max_parallel  requests in flight
//   budget_tokens / budget_cost per day or month (UTC calendar periods)
// reserve() takes everything or nothing: a request, its token estimate from the TPM
// bucket, a concurrency slot, and its token and cost estimates from the budgets, which
// count what is used plus what requests in flight reserved; an estimate that does not fit
// is refused. settle() returns the slot and replaces the estimates by the real usage.
// State is sharded behind small mutexes (one I/O thread per shard in practice, so
// uncontended).

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lowart {

struct limits {
  std::int64_t rpm = 0;
  std::int64_t tpm = 0;
  std::int64_t max_parallel = 0;
  std::int64_t budget_tokens = 0;
  double budget_cost = 0;
  std::string budget_period; ///< "day" | "month" | "" (month)
  bool any() const { return rpm || tpm || max_parallel || budget_tokens || budget_cost > 0; }
};

/// What reserve() decided, with what the x-ratelimit-* headers report.
struct limit_decision {
  bool allowed = true;
  std::string reason;  ///< rpm | tpm | parallel | budget_tokens | budget_cost
  std::string subject; ///< "key", "team" or "model"
  std::int64_t retry_after_s = 0;
  /// reason "tpm": the request's own estimate is over the limit (it can never fit); 0 else.
  std::int64_t requested_tokens = 0;
  // Tightest request and token limits among the subjects (0 = none).
  std::int64_t limit_requests = 0, remaining_requests = 0, reset_requests_ms = 0;
  std::int64_t limit_tokens = 0, remaining_tokens = 0, reset_tokens_ms = 0;
};

class rate_limiter {
public:
  struct subject_ref {
    std::string_view id; ///< "key:<id>", "team:<id>", "model:<name>"
    const limits* lim = nullptr;
  };

  /// Per-subject state; public only so that a ticket can point at it.
  struct bucket {
    double tokens = 0;
    std::int64_t updated_ms = 0;
    bool primed = false;
  };
  struct state {
    bucket requests;
    bucket tokens;
    std::int64_t inflight = 0;
    std::int64_t period_start = 0;
    std::int64_t period_end = 0;
    std::int64_t used_tokens = 0;
    double used_cost = 0;
    // What requests in flight reserved from the budgets (counted until they settle).
    std::int64_t reserved_tokens = 0;
    double reserved_cost = 0;
    std::int64_t reservations = 0;
  };
  struct shard {
    std::mutex mutex;
    std::unordered_map<std::string, state> subjects; ///< node-based: state addresses are stable
  };

  /// Reserved capacity, handed back to settle(). Holds the subjects' state directly so
  /// that settling does not look anything up again.
  struct ticket {
    struct entry {
      shard* sh = nullptr;
      state* st = nullptr;
      const limits* lim = nullptr;
    };
    std::array<entry, 4> entries{};
    std::size_t count = 0;
    std::int64_t estimate = 0;
    double estimate_cost = 0;
    bool active = false;
    bool parallel_only = false;
  };

  /// At most 4 subjects (key, team, model, and one spare). `now_ms` is wall-clock
  /// milliseconds (periods are calendar days/months in UTC).
  /// `parallel_only`: checks and takes max_parallel alone (a fleet keeps the rest in Redis).
  /// `estimate_cost`: what the estimate would cost (reserved from budget_cost).
  limit_decision reserve(const std::vector<subject_ref>& subjects, std::int64_t estimate_tokens, std::int64_t now_ms,
                         ticket& out, bool parallel_only = false, double estimate_cost = 0);

  /// Returns the concurrency slots, releases the reservation and books the real tokens and cost.
  void settle(ticket& t, std::int64_t real_tokens, double cost, std::int64_t now_ms);

  /// Books spend that no reservation was taken for (a background job's cost when it
  /// finishes): the subjects' budgets count it, nothing else changes.
  void charge(const std::vector<subject_ref>& subjects, std::int64_t tokens, double cost, std::int64_t now_ms);

  /// Seeds a subject's budget use for the current period (at start, from the database).
  void seed_budget(const std::string& subject_id, const std::string& period, std::int64_t tokens, double cost,
                   std::int64_t now_ms);

  /// Start of the period ("day" or "month") that holds `now_ms`, in unix ms (UTC).
  static std::int64_t period_start(std::string_view period, std::int64_t now_ms);
  /// Start of the next period.
  static std::int64_t period_end(std::string_view period, std::int64_t now_ms);

private:
  shard& shard_of(std::string_view id) { return shards_[std::hash<std::string_view>{}(id) % shards_.size()]; }
  static void refill(bucket& b, double capacity, double per_ms, std::int64_t now_ms);
  static void roll_period(state& st, const limits& l, std::int64_t now_ms);

  std::array<shard, 16> shards_;
};

} // namespace lowart
