#include "actors/limits/limiter.hpp"

#include <algorithm>
#include <cmath>
#include <ctime>

namespace lowart {

namespace {

std::tm utc(std::int64_t now_ms) {
  std::time_t t = static_cast<std::time_t>(now_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return tm;
}

std::int64_t to_ms(std::tm tm) {
  return static_cast<std::int64_t>(timegm(&tm)) * 1000;
}

} // namespace

std::int64_t rate_limiter::period_start(std::string_view period, std::int64_t now_ms) {
  auto tm = utc(now_ms);
  tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
  if (period != "day") tm.tm_mday = 1;
  return to_ms(tm);
}

std::int64_t rate_limiter::period_end(std::string_view period, std::int64_t now_ms) {
  auto tm = utc(period_start(period, now_ms));
  if (period == "day")
    tm.tm_mday += 1;
  else
    tm.tm_mon += 1;
  return to_ms(tm); // timegm normalises day 32 and month 12
}

void rate_limiter::roll_period(state& st, const limits& l, std::int64_t now_ms) {
  // Calendar arithmetic (timegm) only when a period boundary is crossed.
  if (now_ms >= st.period_start && now_ms < st.period_end) return;
  st.period_start = period_start(l.budget_period, now_ms);
  st.period_end = period_end(l.budget_period, now_ms);
  st.used_tokens = 0;
  st.used_cost = 0;
}

void rate_limiter::refill(bucket& b, double capacity, double per_ms, std::int64_t now_ms) {
  if (!b.primed) {
    b.tokens = capacity;
    b.updated_ms = now_ms;
    b.primed = true;
    return;
  }
  if (now_ms > b.updated_ms) {
    b.tokens = std::min(capacity, b.tokens + per_ms * static_cast<double>(now_ms - b.updated_ms));
    b.updated_ms = now_ms;
  }
}

limit_decision rate_limiter::reserve(const std::vector<subject_ref>& subjects, std::int64_t estimate,
                                     std::int64_t now_ms, ticket& out, bool parallel_only, double estimate_cost) {
  limit_decision d;
  out = {};
  ticket::entry found[4];
  std::string_view ids[4];
  std::size_t n = 0;
  for (const auto& s : subjects)
    if (s.lim && (parallel_only ? s.lim->max_parallel > 0 : s.lim->any()) && n < 4) {
      found[n] = {&shard_of(s.id), nullptr, s.lim};
      ids[n++] = s.id;
    }
  if (n == 0) return d;
  // Lock every shard involved in one fixed (address) order, so a reservation over
  // several subjects is all-or-nothing without deadlock.
  shard* locks[4];
  std::size_t nlocks = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (std::find(locks, locks + nlocks, found[i].sh) == locks + nlocks) locks[nlocks++] = found[i].sh;
  for (std::size_t i = 1; i < nlocks; ++i) // insertion sort: at most four entries
    for (std::size_t j = i; j > 0 && std::less<shard*>{}(locks[j], locks[j - 1]); --j)
      std::swap(locks[j], locks[j - 1]);
  for (std::size_t i = 0; i < nlocks; ++i)
    locks[i]->mutex.lock();
  for (std::size_t i = 0; i < n; ++i) {
    auto& map = found[i].sh->subjects;
    auto it = map.find(std::string(ids[i]));
    if (it == map.end()) it = map.emplace(std::string(ids[i]), state{}).first;
    found[i].st = &it->second;
  }

  auto refuse = [&](std::size_t i, const char* reason, std::int64_t wait_ms) {
    d.allowed = false;
    d.reason = reason;
    d.subject = std::string(ids[i].substr(0, ids[i].find(':')));
    d.retry_after_s = std::max<std::int64_t>(1, (wait_ms + 999) / 1000);
  };

  // First pass: check every subject; nothing is taken unless all agree.
  for (std::size_t i = 0; i < n && d.allowed; ++i) {
    auto& st = *found[i].st;
    const auto& l = *found[i].lim;
    if (l.rpm && !parallel_only) {
      refill(st.requests, static_cast<double>(l.rpm), static_cast<double>(l.rpm) / 60000.0, now_ms);
      if (st.requests.tokens < 1.0) {
        refuse(i, "rpm", static_cast<std::int64_t>((1.0 - st.requests.tokens) * 60000.0 / static_cast<double>(l.rpm)));
        break;
      }
    }
    if (l.tpm && !parallel_only) {
      refill(st.tokens, static_cast<double>(l.tpm), static_cast<double>(l.tpm) / 60000.0, now_ms);
      if (estimate > l.tpm) { // more than a full minute's worth: it can never fit
        d.requested_tokens = estimate;
        refuse(i, "tpm", 60000);
        break;
      }
      auto need = static_cast<double>(estimate);
      if (st.tokens.tokens < need) {
        refuse(i, "tpm", static_cast<std::int64_t>((need - st.tokens.tokens) * 60000.0 / static_cast<double>(l.tpm)));
        break;
      }
    }
    if (l.max_parallel && st.inflight >= l.max_parallel) {
      refuse(i, "parallel", 1000);
      break;
    }
    if ((l.budget_tokens || l.budget_cost > 0) && !parallel_only) {
      // The estimate must fit beside what is used and what requests in flight reserved.
      // Refused by the used part alone, it waits for the next period; by reservations,
      // a second (they settle, usually for less).
      roll_period(st, l, now_ms);
      auto until_reset = st.period_end - now_ms;
      auto need = std::max<std::int64_t>(estimate, 1);
      if (l.budget_tokens && st.used_tokens + st.reserved_tokens + need > l.budget_tokens) {
        refuse(i, "budget_tokens", st.used_tokens + need > l.budget_tokens ? until_reset : 1000);
        break;
      }
      auto over = [&](double reserved) {
        auto sum = st.used_cost + reserved;
        return sum >= l.budget_cost || sum + estimate_cost > l.budget_cost;
      };
      if (l.budget_cost > 0 && over(st.reserved_cost)) {
        refuse(i, "budget_cost", over(0) ? until_reset : 1000);
        break;
      }
    }
  }
  // Report the tightest limits either way (for the x-ratelimit-* headers).
  for (std::size_t i = 0; i < n && !parallel_only; ++i) {
    auto& st = *found[i].st;
    const auto& l = *found[i].lim;
    if (l.rpm && (!d.limit_requests || st.requests.tokens < static_cast<double>(d.remaining_requests))) {
      d.limit_requests = l.rpm;
      d.remaining_requests = static_cast<std::int64_t>(st.requests.tokens) - (d.allowed ? 1 : 0);
      d.reset_requests_ms =
          static_cast<std::int64_t>((static_cast<double>(l.rpm) - st.requests.tokens + (d.allowed ? 1 : 0)) * 60000.0 /
                                    static_cast<double>(l.rpm));
    }
    if (l.tpm && (!d.limit_tokens || st.tokens.tokens < static_cast<double>(d.remaining_tokens))) {
      d.limit_tokens = l.tpm;
      d.remaining_tokens = static_cast<std::int64_t>(st.tokens.tokens) - (d.allowed ? estimate : 0);
      d.reset_tokens_ms = static_cast<std::int64_t>((static_cast<double>(l.tpm) - st.tokens.tokens) * 60000.0 /
                                                    static_cast<double>(l.tpm));
    }
  }
  if (d.allowed) {
    for (std::size_t i = 0; i < n; ++i) {
      auto& st = *found[i].st;
      const auto& l = *found[i].lim;
      if (l.rpm && !parallel_only) st.requests.tokens -= 1.0;
      if (l.tpm && !parallel_only) st.tokens.tokens -= static_cast<double>(estimate);
      if ((l.budget_tokens || l.budget_cost > 0) && !parallel_only) {
        st.reserved_tokens += estimate;
        st.reserved_cost += estimate_cost;
        ++st.reservations;
      }
      ++st.inflight;
      out.entries[i] = found[i];
    }
    out.count = n;
    out.estimate = estimate;
    out.estimate_cost = estimate_cost;
    out.active = true;
    out.parallel_only = parallel_only;
  }
  for (std::size_t i = nlocks; i-- > 0;)
    locks[i]->mutex.unlock();
  d.remaining_requests = std::max<std::int64_t>(0, d.remaining_requests);
  d.remaining_tokens = std::max<std::int64_t>(0, d.remaining_tokens);
  return d;
}

void rate_limiter::settle(ticket& t, std::int64_t real_tokens, double cost, std::int64_t now_ms) {
  if (!t.active) return;
  t.active = false;
  for (std::size_t i = 0; i < t.count; ++i) {
    auto& e = t.entries[i];
    std::lock_guard guard{e.sh->mutex};
    auto& st = *e.st;
    const auto& l = *e.lim;
    if (st.inflight > 0) --st.inflight;
    if (t.parallel_only) continue;
    if (l.tpm) // the estimate was taken: correct it by what was really used
      st.tokens.tokens -= static_cast<double>(real_tokens - t.estimate);
    if (l.budget_tokens || l.budget_cost > 0) {
      st.reserved_tokens -= t.estimate;
      st.reserved_cost -= t.estimate_cost;
      if (--st.reservations <= 0) { // none in flight: no rounding left behind either
        st.reservations = st.reserved_tokens = 0;
        st.reserved_cost = 0;
      }
      roll_period(st, l, now_ms);
      st.used_tokens += real_tokens;
      st.used_cost += cost;
    }
  }
}

void rate_limiter::charge(const std::vector<subject_ref>& subjects, std::int64_t tokens, double cost,
                          std::int64_t now_ms) {
  for (const auto& s : subjects) {
    if (!s.lim || !(s.lim->budget_tokens || s.lim->budget_cost > 0)) continue;
    auto& sh = shard_of(s.id);
    std::lock_guard guard{sh.mutex};
    auto& st = sh.subjects[std::string(s.id)];
    roll_period(st, *s.lim, now_ms);
    st.used_tokens += tokens;
    st.used_cost += cost;
  }
}

void rate_limiter::seed_budget(const std::string& subject_id, const std::string& period, std::int64_t tokens,
                               double cost, std::int64_t now_ms) {
  auto& sh = shard_of(subject_id);
  std::lock_guard guard{sh.mutex};
  auto& st = sh.subjects[subject_id];
  st.period_start = period_start(period, now_ms);
  st.period_end = period_end(period, now_ms);
  st.used_tokens = tokens;
  st.used_cost = cost;
}

} // namespace lowart
