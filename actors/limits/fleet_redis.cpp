// The fleet over Redis: one connection per I/O thread for the hot path (limits), one
// background connection (broadcasts, charges, seeds, pings) and one subscriber.
#include "actors/limits/fleet.hpp"

#include "config/config.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"
#include "storage/redis.hpp"

#include <boost/asio/post.hpp>
#include <openssl/evp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <future>
#include <map>

namespace lowart {

namespace {

namespace asio = boost::asio;
using storage::redis_connection;
using storage::redis_reply;

// Per subject one hash: r/rt request bucket and its time, t/tt token bucket and its
// time, ps the budget period's start, ut/uc tokens and cost used in it, qt/qc tokens and
// cost reserved by requests in flight; and one sorted set of those reservations (member
// "<id>|<tokens>|<cost>", score its expiry). Times are the Redis server's clock (TIME),
// so replicas with skewed clocks still share one bucket and one expiry.
// KEYS, 2 per subject: its hash, its reservations. ARGV: estimate tokens, estimate cost,
// the reservation member, how long it is held (ms), then per subject: rpm, tpm,
// budget_tokens, budget_cost, period start, period end (ms). Returns {allowed, reason,
// subject index, wait ms, limit_requests, remaining_requests, reset_requests_ms,
// limit_tokens, remaining_tokens, reset_tokens_ms, requested tokens (an estimate over
// the TPM limit itself)}.
constexpr const char* reserve_lua = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local est, ecost, member, hold = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local n = #KEYS / 2
local st = {}
local deny = nil
for i = 1, n do
  local hk, zk = KEYS[2 * i - 1], KEYS[2 * i]
  local b = 5 + (i - 1) * 6
  local rpm, tpm = tonumber(ARGV[b]), tonumber(ARGV[b + 1])
  local btok, bcost = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local ps, pe = ARGV[b + 4], tonumber(ARGV[b + 5])
  local h = redis.call('HMGET', hk, 'r', 'rt', 't', 'tt', 'ps', 'ut', 'uc', 'qt', 'qc')
  local s = {}
  if rpm > 0 then
    local r, rt = tonumber(h[1]), tonumber(h[2])
    if r == nil or rt == nil then r = rpm else r = math.min(rpm, r + math.max(0, now - rt) * rpm / 60000) end
    s.r = r
    if r < 1 and not deny then deny = {i, 'rpm', math.ceil((1 - r) * 60000 / rpm)} end
  end
  if tpm > 0 then
    local k, kt = tonumber(h[3]), tonumber(h[4])
    if k == nil or kt == nil then k = tpm else k = math.min(tpm, k + math.max(0, now - kt) * tpm / 60000) end
    s.t = k
    if est > tpm and not deny then deny = {i, 'tpm', 60000, est} end
    if k < est and not deny then deny = {i, 'tpm', math.ceil((est - k) * 60000 / tpm)} end
  end
  if btok > 0 or bcost > 0 then
    s.budget = true
    local ut, uc = tonumber(h[6]) or 0, tonumber(h[7]) or 0
    local qt, qc = tonumber(h[8]) or 0, tonumber(h[9]) or 0
    -- Reservations never settled (their replica died) end with their deadline.
    local gone = redis.call('ZRANGEBYSCORE', zk, '-inf', now)
    if #gone > 0 then
      redis.call('ZREMRANGEBYSCORE', zk, '-inf', now)
      if redis.call('ZCARD', zk) == 0 then
        qt = 0; qc = 0
        redis.call('HSET', hk, 'qt', 0, 'qc', 0)
      else
        local dt, dc = 0, 0
        for _, m in ipairs(gone) do
          local a, c = string.match(m, '|([^|]*)|([^|]*)$')
          dt = dt + (tonumber(a) or 0); dc = dc + (tonumber(c) or 0)
        end
        qt = tonumber(redis.call('HINCRBY', hk, 'qt', -dt))
        qc = tonumber(redis.call('HINCRBYFLOAT', hk, 'qc', -dc))
      end
    end
    if h[5] ~= ps then ut = 0; uc = 0; s.reset = true end
    -- The estimate must fit beside what is used and what is reserved. Refused by the
    -- used part alone, it waits for the next period; by reservations, a second.
    local need = math.max(est, 1)
    if btok > 0 and not deny and ut + qt + need > btok then
      deny = {i, 'budget_tokens', (ut + need > btok) and (pe - now) or 1000}
    end
    if bcost > 0 and not deny and (uc + qc >= bcost or uc + qc + ecost > bcost) then
      deny = {i, 'budget_cost', (uc >= bcost or uc + ecost > bcost) and (pe - now) or 1000}
    end
  end
  st[i] = s
end
local lr, rr, rsr, lt, rtk, rst = 0, 0, 0, 0, 0, 0
for i = 1, n do
  local b = 5 + (i - 1) * 6
  local rpm, tpm = tonumber(ARGV[b]), tonumber(ARGV[b + 1])
  local s = st[i]
  local take = deny and 0 or 1
  if s.r and (lr == 0 or s.r - take < rr) then
    lr = rpm; rr = math.floor(s.r) - take; rsr = math.floor((rpm - s.r + take) * 60000 / rpm)
  end
  if s.t then
    local need = deny and 0 or est
    if lt == 0 or s.t - need < rtk then
      lt = tpm; rtk = math.floor(s.t - need); rst = math.floor((tpm - s.t) * 60000 / tpm)
    end
  end
end
if deny then
  return {0, deny[2], deny[1], math.floor(deny[3]), lr, math.max(0, rr), rsr, lt, math.max(0, rtk), rst, deny[4] or 0}
end
for i = 1, n do
  local hk, zk = KEYS[2 * i - 1], KEYS[2 * i]
  local b = 5 + (i - 1) * 6
  local ps, pe = ARGV[b + 4], tonumber(ARGV[b + 5])
  local s = st[i]
  local f = {}
  if s.r then f[#f + 1] = 'r'; f[#f + 1] = tostring(s.r - 1); f[#f + 1] = 'rt'; f[#f + 1] = now end
  if s.t then f[#f + 1] = 't'; f[#f + 1] = tostring(s.t - est); f[#f + 1] = 'tt'; f[#f + 1] = now end
  if s.reset then f[#f + 1] = 'ps'; f[#f + 1] = ps; f[#f + 1] = 'ut'; f[#f + 1] = 0; f[#f + 1] = 'uc'; f[#f + 1] = 0 end
  if #f > 0 then redis.call('HSET', hk, unpack(f)) end
  local ttl = 120000
  if pe > 0 then ttl = math.max(ttl, pe - now + 86400000) end
  if s.budget then
    redis.call('HINCRBY', hk, 'qt', est)
    if ecost ~= 0 then redis.call('HINCRBYFLOAT', hk, 'qc', ARGV[2]) end
    redis.call('ZADD', zk, now + hold, member)
    redis.call('PEXPIRE', zk, math.max(ttl, hold + 60000))
  end
  redis.call('PEXPIRE', hk, ttl)
end
return {1, '', 0, 0, lr, math.max(0, rr), rsr, lt, math.max(0, rtk), rst, 0}
)lua";

// Per subject, what this replica's finished requests of the last few milliseconds add
// up to. KEYS as for reserve_lua; ARGV per subject: tokens back to the bucket (the
// estimates taken minus the tokens really used; negative when more was used), has tpm
// (0/1), has budget (0/1), period start, period end, tokens used, cost, the number of
// reservations ended, then their members. A reservation already expired (and so already
// no longer counted) is just not found.
constexpr const char* settle_lua = R"lua(
local b = 1
for i = 1, #KEYS / 2 do
  local hk, zk = KEYS[2 * i - 1], KEYS[2 * i]
  local back, tpm, budget = tonumber(ARGV[b]), ARGV[b + 1], ARGV[b + 2]
  local ps, pe, used, cost = ARGV[b + 3], tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6])
  local ended = tonumber(ARGV[b + 7])
  if tpm == '1' and back ~= 0 and redis.call('HEXISTS', hk, 't') == 1 then
    redis.call('HINCRBYFLOAT', hk, 't', back)
  end
  if budget == '1' then
    if redis.call('HGET', hk, 'ps') ~= ps then redis.call('HSET', hk, 'ps', ps, 'ut', 0, 'uc', 0) end
    redis.call('HINCRBY', hk, 'ut', used)
    redis.call('HINCRBYFLOAT', hk, 'uc', cost)
    if ended > 0 then
      local dt, dc = 0, 0
      for j = 1, ended do
        local m = ARGV[b + 7 + j]
        if redis.call('ZREM', zk, m) == 1 then
          local a, c = string.match(m, '|([^|]*)|([^|]*)$')
          dt = dt + (tonumber(a) or 0); dc = dc + (tonumber(c) or 0)
        end
      end
      if redis.call('ZCARD', zk) == 0 then
        redis.call('HSET', hk, 'qt', 0, 'qc', 0) -- none in flight: no rounding left behind
      else
        if dt ~= 0 then redis.call('HINCRBY', hk, 'qt', -dt) end
        if dc ~= 0 then redis.call('HINCRBYFLOAT', hk, 'qc', -dc) end
      end
    end
    local t = redis.call('TIME')
    redis.call('PEXPIRE', hk, math.max(120000, pe - tonumber(t[1]) * 1000 + 86400000))
  end
  b = b + 8 + ended
end
return 1
)lua";

// KEYS[1] one subject; ARGV: period start, tokens, cost, period end. The database's
// count of the period is a lower bound of the truth (records still in flight are not in
// it), and so is Redis's after it lost its data: the larger of each wins. Safe to send
// again and again (at start, after every reconnect, after a resync).
constexpr const char* seed_lua = R"lua(
if redis.call('HGET', KEYS[1], 'ps') ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'ps', ARGV[1], 'ut', ARGV[2], 'uc', ARGV[3])
else
  local h = redis.call('HMGET', KEYS[1], 'ut', 'uc')
  if (tonumber(h[1]) or 0) < tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], 'ut', ARGV[2]) end
  if (tonumber(h[2]) or 0) < tonumber(ARGV[3]) then redis.call('HSET', KEYS[1], 'uc', ARGV[3]) end
end
local t = redis.call('TIME')
redis.call('PEXPIRE', KEYS[1], math.max(120000, tonumber(ARGV[4]) - tonumber(t[1]) * 1000 + 86400000))
return 1
)lua";

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

class redis_fleet final : public fleet, public std::enable_shared_from_this<redis_fleet> {
  struct worker_link; // one I/O thread's connection and batched settles (defined below)

public:
  explicit redis_fleet(const config::cluster_config& cfg)
      : replica_(cfg.replica_id), prefix_(cfg.prefix), open_(cfg.on_redis_down == "open"), timeout_(cfg.timeout_ms) {
    if (!storage::parse_redis_url(cfg.redis_url, endpoint_))
      throw std::runtime_error("cluster.redis_url is not a redis://[user:password@]host:port URL");
    channel_ = prefix_ + ":events";
  }

  void attach(std::size_t worker, asio::io_context& ioc) override {
    if (workers_.size() <= worker) workers_.resize(worker + 1);
    auto link = std::make_shared<worker_link>(ioc);
    link->conn = make_connection(ioc, "worker-" + std::to_string(worker));
    workers_[worker] = link;
    link->conn->start();
  }

  void start(asio::io_context& background) override {
    background_io_ = &background;
    background_ = make_connection(background, "background");
    std::weak_ptr<redis_fleet> weak = shared_from_this();
    background_->on_down = [](const std::string&) { metrics::redis_up().set(0); };
    background_->on_up = [weak](redis_connection& c) {
      metrics::redis_up().set(1);
      load_scripts(c);
      auto self = weak.lock();
      if (!self) return;
      // The budgets the database held (a lower bound: the larger count wins in Redis).
      self->reseed(c);
      // What could not be published while Redis was away goes now, then what was asked for.
      auto records = std::move(self->unsent_records_);
      self->unsent_records_.clear();
      for (auto& record : records)
        c.send(record, logged("breaker record"));
      auto unsent = std::move(self->unsent_);
      self->unsent_.clear();
      for (auto& message : unsent)
        c.send({"PUBLISH", self->channel_, message}, logged("publish"));
      if (self->replay_wanted_) self->replay_breakers_now();
    };
    background_->start();
    subscriber_ = std::make_shared<redis_connection>(background, endpoint_, timeout_, "subscriber");
    subscriber_->subscriber = true;
    subscriber_->on_up = [weak](redis_connection& c) {
      auto self = weak.lock();
      if (!self) return;
      c.send({"SUBSCRIBE", self->channel_}, [weak](const redis_reply* r) {
        auto s = weak.lock();
        if (!s || !r || r->type == redis_reply::error) return;
        // Messages sent while we were away are lost: whoever listens reloads everything.
        if (s->subscribed_once_.exchange(true) && s->on_message && !s->stopping_) {
          s->on_message("resync", "");
          s->replay_breakers();
        }
      });
    };
    subscriber_->on_push = [weak](const redis_reply& r) {
      auto self = weak.lock();
      if (!self || r.items.size() < 3) return;
      self->deliver(r.items[2].text);
    };
    subscriber_->start();
    // A quiet connection learns that Redis is gone only when it asks: ping every second.
    ping_timer_ = std::make_unique<asio::steady_timer>(background);
    schedule_ping();
  }

  void flush() override {
    // Shutdown: the settles still waiting for their 10 ms go now, on their own threads
    // (which still run), with a bound on the wait.
    std::vector<std::future<void>> done;
    for (auto& w : workers_) {
      if (!w) continue;
      auto p = std::make_shared<std::promise<void>>();
      done.push_back(p->get_future());
      asio::post(w->timer.get_executor(), [self = shared_from_this(), link = w, p] {
        self->send_settles(link);
        p->set_value();
      });
    }
    for (auto& f : done)
      f.wait_for(std::chrono::milliseconds(500));
  }

  void stop() override {
    stopping_ = true;
    for (auto& w : workers_)
      if (w) w->conn->stop();
    if (background_) background_->stop();
    if (subscriber_) subscriber_->stop();
    if (!background_io_) return;
    // The message handler (it holds the actors' root) goes on the thread that calls it;
    // wait for that, bounded, so that no message reaches an actor system being stopped.
    auto done = std::make_shared<std::promise<void>>();
    auto cleared = done->get_future();
    asio::post(*background_io_, [self = shared_from_this(), done] {
      if (self->ping_timer_) self->ping_timer_->cancel();
      self->on_message = nullptr;
      done->set_value();
    });
    cleared.wait_for(std::chrono::seconds(1));
  }

  void release_workers() override { workers_.clear(); }
  void release_background() override {
    stopping_ = true;
    background_.reset();
    subscriber_.reset();
    ping_timer_.reset();
    background_io_ = nullptr;
  }

  bool up(std::size_t worker) const override {
    return worker < workers_.size() && workers_[worker] && workers_[worker]->conn->up();
  }
  bool fail_open() const override { return open_; }

  std::string reserve(std::size_t worker, const std::vector<fleet_subject>& subjects, const estimate& e,
                      std::int64_t now_ms, reserve_done done) override {
    // The member names the reservation and carries its amounts, so that whoever ends it
    // (its settle, or the expiry in a later script call) takes back exactly those.
    auto member = reservation_prefix_ + std::to_string(next_reservation_.fetch_add(1, std::memory_order_relaxed)) +
                  '|' + std::to_string(e.tokens) + '|' + num(e.cost);
    std::vector<std::string> args;
    args.reserve(7 + subjects.size() * 8);
    args.emplace_back("EVALSHA");
    args.push_back(reserve_sha());
    args.push_back(std::to_string(subjects.size() * 2));
    for (const auto& s : subjects) {
      args.push_back(key_of(s.id));
      args.push_back(held_of(s.id));
    }
    args.push_back(std::to_string(e.tokens));
    args.push_back(num(e.cost));
    args.push_back(member);
    args.push_back(std::to_string(std::max<std::int64_t>(1, e.hold_ms)));
    for (const auto& s : subjects) {
      bool budget = s.lim.budget_tokens || s.lim.budget_cost > 0;
      args.push_back(std::to_string(s.lim.rpm));
      args.push_back(std::to_string(s.lim.tpm));
      args.push_back(std::to_string(s.lim.budget_tokens));
      args.push_back(num(s.lim.budget_cost));
      args.push_back(budget ? std::to_string(rate_limiter::period_start(s.lim.budget_period, now_ms)) : "0");
      args.push_back(budget ? std::to_string(rate_limiter::period_end(s.lim.budget_period, now_ms)) : "0");
    }
    workers_[worker]->conn->send(args, [done = std::move(done), subjects](const redis_reply* r) {
      limit_decision d;
      if (!r || r->type != redis_reply::array || r->items.size() < 11) {
        if (r && r->type == redis_reply::error) log::error("redis limit script failed", {{"error", r->text}});
        done(false, d);
        return;
      }
      const auto& v = r->items;
      d.allowed = v[0].number == 1;
      if (!d.allowed) {
        d.reason = v[1].text;
        auto i = static_cast<std::size_t>(std::max<long long>(1, v[2].number) - 1);
        if (i < subjects.size()) d.subject = subjects[i].id.substr(0, subjects[i].id.find(':'));
        d.retry_after_s = std::max<std::int64_t>(1, (v[3].number + 999) / 1000);
        d.requested_tokens = v[10].number;
      }
      d.limit_requests = v[4].number;
      d.remaining_requests = v[5].number;
      d.reset_requests_ms = v[6].number;
      d.limit_tokens = v[7].number;
      d.remaining_tokens = v[8].number;
      d.reset_tokens_ms = v[9].number;
      done(true, d);
    });
    return member;
  }

  /// One subject's share of settles not yet sent to Redis.
  struct settle_delta {
    std::int64_t back = 0; ///< tokens back to the bucket
    bool tpm = false;
    bool budget = false;
    std::int64_t period_start = 0, period_end = 0;
    std::int64_t used = 0;
    double cost = 0;
    std::vector<std::string> ended; ///< reservations these settles end
  };
  using settle_batch = std::map<std::string, settle_delta>; ///< by subject id

  /// `reservation`: the member reserve() named ("" for a charge without one); `tokens`
  /// false: no estimate was taken from the token bucket.
  static void add(settle_batch& batch, const std::string& subject, const limits& lim, const std::string& reservation,
                  std::int64_t estimate, std::int64_t real, double cost, std::int64_t now_ms, bool tokens) {
    bool budget = lim.budget_tokens || lim.budget_cost > 0;
    if (!(tokens && lim.tpm) && !budget) return;
    auto& d = batch[subject];
    if (tokens && lim.tpm) {
      d.tpm = true;
      d.back += estimate - real;
    }
    if (budget) {
      d.budget = true;
      d.period_start = rate_limiter::period_start(lim.budget_period, now_ms);
      d.period_end = rate_limiter::period_end(lim.budget_period, now_ms);
      d.used += real;
      d.cost += cost;
      if (!reservation.empty()) d.ended.push_back(reservation);
    }
  }

  std::vector<std::string> settle_args(const settle_batch& batch) const {
    std::vector<std::string> args{"EVALSHA", settle_sha(), std::to_string(batch.size() * 2)};
    for (const auto& [subject, _] : batch) {
      args.push_back(key_of(subject));
      args.push_back(held_of(subject));
    }
    for (const auto& [_, d] : batch) {
      args.push_back(std::to_string(d.back));
      args.push_back(d.tpm ? "1" : "0");
      args.push_back(d.budget ? "1" : "0");
      args.push_back(std::to_string(d.period_start));
      args.push_back(std::to_string(d.period_end));
      args.push_back(std::to_string(d.used));
      args.push_back(num(d.cost));
      args.push_back(std::to_string(d.ended.size()));
      args.insert(args.end(), d.ended.begin(), d.ended.end());
    }
    return args;
  }

  void settle(std::size_t worker, const std::vector<fleet_subject>& subjects, const std::string& reservation,
              std::int64_t estimate, std::int64_t real_tokens, double cost, std::int64_t now_ms) override {
    // Settles are batched per I/O thread for settle_ms: one script call for many requests
    // instead of one each. The cap does not move meanwhile: the reservation (usually
    // larger than what was used) counts until the batch ends it; the database has every
    // record at once.
    auto& w = *workers_[worker];
    for (const auto& s : subjects)
      add(w.pending, s.id, s.lim, reservation, estimate, real_tokens, cost, now_ms, true);
    arm_settles(workers_[worker], settle_interval);
  }

  void release(std::size_t worker, const std::vector<fleet_subject>& subjects,
               const std::string& reservation) override {
    auto& w = *workers_[worker];
    auto now_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    for (const auto& s : subjects)
      add(w.pending, s.id, s.lim, reservation, 0, 0, 0, now_ms, false);
    arm_settles(workers_[worker], settle_interval);
  }

  void arm_settles(const std::shared_ptr<worker_link>& link, std::chrono::milliseconds after) {
    if (link->pending.empty() || link->armed) return;
    link->armed = true;
    link->timer.expires_after(after);
    link->timer.async_wait([self = shared_from_this(), link](boost::system::error_code ec) {
      link->armed = false;
      if (!ec) self->send_settles(link);
    });
  }

  /// Sends a worker's batched settles; a batch Redis did not take is merged back and
  /// tried again (every second while Redis is away), so no spend is dropped.
  void send_settles(const std::shared_ptr<worker_link>& link) {
    if (link->pending.empty()) return;
    auto batch = std::make_shared<settle_batch>(std::move(link->pending));
    link->pending.clear();
    std::weak_ptr<worker_link> weak_link = link;
    link->conn->send(settle_args(*batch), [self = shared_from_this(), batch, weak_link](const redis_reply* r) {
      if (r && r->type != redis_reply::error) return;
      if (r) log::error("redis settle failed", {{"error", r->text}});
      auto l = weak_link.lock();
      if (!l || self->stopping_) return;
      for (auto& [key, d] : *batch)
        merge(l->pending[key], d);
      self->arm_settles(l, std::chrono::milliseconds(1000));
    });
  }

  static void merge(settle_delta& into, const settle_delta& d) {
    into.back += d.back;
    into.tpm = into.tpm || d.tpm;
    into.budget = into.budget || d.budget;
    into.ended.insert(into.ended.end(), d.ended.begin(), d.ended.end());
    if (d.period_start >= into.period_start) {
      if (d.period_start > into.period_start) into.used = 0, into.cost = 0; // a new period
      into.period_start = d.period_start;
      into.period_end = d.period_end;
      into.used += d.used;
      into.cost += d.cost;
    }
  }

  void charge(const std::vector<fleet_subject>& subjects, std::int64_t tokens, double cost,
              std::int64_t now_ms) override {
    if (!background_io_) return;
    settle_batch batch;
    for (const auto& s : subjects)
      add(batch, s.id, s.lim, {}, 0, tokens, cost, now_ms, false);
    if (batch.empty()) return;
    auto args = settle_args(batch);
    asio::post(*background_io_, [self = shared_from_this(), args = std::move(args)] {
      self->background_->send(args, logged("charge"));
    });
  }

  void seed_budget(const std::string& subject_id, const std::string& period, std::int64_t tokens, double cost,
                   std::int64_t now_ms) override {
    std::vector<std::string> args{"EVALSHA",
                                  seed_sha(),
                                  "1",
                                  key_of(subject_id),
                                  std::to_string(rate_limiter::period_start(period, now_ms)),
                                  std::to_string(tokens),
                                  num(cost),
                                  std::to_string(rate_limiter::period_end(period, now_ms))};
    {
      std::lock_guard guard{seeds_mutex_};
      seeds_[subject_id] = args;
    }
    if (!background_io_) return; // sent once the background connection is up
    asio::post(*background_io_, [self = shared_from_this(), args = std::move(args)] {
      if (self->background_->up()) self->background_->send(args, logged("seed"));
    });
  }

  void publish(const std::string& topic, const std::string& payload) override {
    if (!background_io_) return;
    std::vector<std::string> record;
    std::string body = payload;
    if (topic == "breaker") {
      auto nl = payload.find('\n');
      if (nl == std::string::npos) return;
      auto id = payload.substr(0, nl);
      auto now = std::to_string(
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
              .count());
      if (payload.compare(nl + 1, std::string::npos, "open") == 0)
        record = {"HSET", breakers_key(), id, now};
      else
        record = {"HDEL", breakers_key(), id};
      body += '\n' + now;
    }
    auto message = replica_ + '\n' + topic + '\n' + body;
    asio::post(*background_io_, [self = shared_from_this(), message = std::move(message), record = std::move(record)] {
      if (!self->background_) return;
      if (!self->background_->up()) {
        // Sent when Redis answers again (bounded: the oldest go first, and every replica
        // reloads everything after a reconnect of its own anyway).
        if (self->unsent_.size() >= 1000) self->unsent_.erase(self->unsent_.begin());
        if (!record.empty() && self->unsent_records_.size() < 1000) self->unsent_records_.push_back(record);
        self->unsent_.push_back(message);
        return;
      }
      if (!record.empty()) self->background_->send(record, logged("breaker record"));
      self->background_->send({"PUBLISH", self->channel_, message}, logged("publish"));
    });
  }

  void replay_breakers() override {
    if (!background_io_) return;
    asio::post(*background_io_, [self = shared_from_this()] { self->replay_breakers_now(); });
  }

  /// On the background thread: asks Redis now, or once it answers.
  void replay_breakers_now() {
    if (!background_ || !background_->up()) {
      replay_wanted_ = true;
      return;
    }
    replay_wanted_ = false;
    std::weak_ptr<redis_fleet> weak = shared_from_this();
    background_->send({"HGETALL", breakers_key()}, [weak](const redis_reply* r) {
      auto s = weak.lock();
      if (!s || s->stopping_) return;
      if (!r || r->type != redis_reply::array) {
        s->replay_wanted_ = true; // not answered: again on the next connect
        return;
      }
      if (!s->on_message) return;
      for (std::size_t i = 0; i + 1 < r->items.size(); i += 2)
        s->on_message("breaker", r->items[i].text + "\nopen\n" + r->items[i + 1].text);
    });
  }

  std::string problem() const override {
    std::string p = background_ ? background_->problem() : std::string("not started");
    if (p.empty() && subscriber_) p = subscriber_->problem();
    return p;
  }
  const std::string& replica() const override { return replica_; }

private:
  std::shared_ptr<redis_connection> make_connection(asio::io_context& ioc, std::string name) {
    auto c = std::make_shared<redis_connection>(ioc, endpoint_, timeout_, std::move(name));
    c->on_up = [](redis_connection& conn) { load_scripts(conn); };
    return c;
  }

  static void load_scripts(redis_connection& c) {
    // Queued first on every new connection, so EVALSHA after them always finds the
    // scripts, also after Redis restarted empty.
    for (const char* script : {reserve_lua, settle_lua, seed_lua})
      c.send({"SCRIPT", "LOAD", script}, [](const redis_reply* r) {
        if (r && r->type == redis_reply::error) log::error("redis refused a script", {{"error", r->text}});
      });
  }

  /// The SHA-1 Redis names a script by (SCRIPT LOAD answers the same).
  static std::string sha1_hex(std::string_view text) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(text.data(), text.size(), digest, &len, EVP_sha1(), nullptr);
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < len; ++i) {
      out += hex[digest[i] >> 4];
      out += hex[digest[i] & 15];
    }
    return out;
  }
  const std::string& reserve_sha() const { return reserve_sha_; }
  const std::string& settle_sha() const { return settle_sha_; }
  const std::string& seed_sha() const { return seed_sha_; }

  static storage::redis_connection::handler logged(const char* what) {
    return [what](const redis_reply* r) {
      if (r && r->type == redis_reply::error)
        log::error("redis command failed", {{"command", what}, {"error", r->text}});
    };
  }

  std::string key_of(const std::string& subject) const { return prefix_ + ":lim:" + subject; }
  /// The subject's reservations in flight (a sorted set by expiry).
  std::string held_of(const std::string& subject) const { return prefix_ + ":held:" + subject; }
  std::string breakers_key() const { return prefix_ + ":breakers"; }

  void deliver(const std::string& message) {
    auto a = message.find('\n');
    if (a == std::string::npos) return;
    auto b = message.find('\n', a + 1);
    if (b == std::string::npos) return;
    if (message.compare(0, a, replica_) == 0 || stopping_) return; // our own, or shutting down
    auto topic = message.substr(a + 1, b - a - 1);
    bool known = is_change_topic(topic) || topic == "breaker";
    metrics::fleet_messages(known ? topic : "other").inc(); // no label from arbitrary text
    if (on_message) on_message(topic, message.substr(b + 1));
  }

  void reseed(redis_connection& c) {
    std::vector<std::vector<std::string>> all;
    {
      std::lock_guard guard{seeds_mutex_};
      for (const auto& [_, args] : seeds_)
        all.push_back(args);
    }
    for (auto& args : all)
      c.send(args, logged("seed"));
  }

  void schedule_ping() {
    ping_timer_->expires_after(std::chrono::seconds(1));
    ping_timer_->async_wait([weak = std::weak_ptr<redis_fleet>(shared_from_this())](boost::system::error_code ec) {
      auto self = weak.lock();
      if (ec || !self || self->stopping_) return;
      if (self->background_->up()) self->background_->send({"PING"}, nullptr);
      // The subscriber sends nothing else: without this a half-open connection would
      // stay "up", deaf to every broadcast (in subscribed mode PING answers ["pong", ""]).
      if (self->subscriber_->up()) self->subscriber_->send({"PING"}, nullptr);
      self->schedule_ping();
    });
  }

  std::string reserve_sha_ = sha1_hex(reserve_lua);
  std::string settle_sha_ = sha1_hex(settle_lua);
  std::string seed_sha_ = sha1_hex(seed_lua);
  std::string replica_;
  /// Reservation names: the replica and its start (a restarted replica never reuses a
  /// name its previous run may have left in Redis), then a counter.
  std::string reservation_prefix_ = replica_ + ':' +
                                    std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                       std::chrono::system_clock::now().time_since_epoch())
                                                       .count()) +
                                    ':';
  std::atomic<std::uint64_t> next_reservation_{0};
  std::string prefix_;
  std::string channel_;
  bool open_;
  std::chrono::milliseconds timeout_;
  storage::redis_endpoint endpoint_;
  /// One I/O thread's connection and the settles it has not sent yet (its thread only).
  struct worker_link {
    explicit worker_link(asio::io_context& ioc) : timer(ioc) {}
    std::shared_ptr<redis_connection> conn;
    asio::steady_timer timer;
    settle_batch pending;
    bool armed = false;
  };
  static constexpr std::chrono::milliseconds settle_interval{10};
  std::vector<std::shared_ptr<worker_link>> workers_;
  std::shared_ptr<redis_connection> background_;
  std::shared_ptr<redis_connection> subscriber_;
  asio::io_context* background_io_ = nullptr;
  std::unique_ptr<asio::steady_timer> ping_timer_;
  std::atomic<bool> subscribed_once_{false};
  // Background thread only: publishes waiting for Redis, and a breaker replay asked for.
  std::vector<std::string> unsent_;
  std::vector<std::vector<std::string>> unsent_records_;
  bool replay_wanted_ = false;
  std::atomic<bool> stopping_{false};
  std::mutex seeds_mutex_;
  std::map<std::string, std::vector<std::string>> seeds_;
};

} // namespace

std::shared_ptr<fleet> make_redis_fleet(const config::cluster_config& cfg) {
  return std::make_shared<redis_fleet>(cfg);
}

} // namespace lowart
