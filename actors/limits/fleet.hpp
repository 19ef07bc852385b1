#pragma once
// Several lowart replicas as one: what they share through Redis. Light header (no Asio,
// no CAF, no hiredis); the implementation is actors/limits/fleet_redis.cpp.
//
//   limits     RPM/TPM buckets and budgets of keys, teams and models live in Redis and
//              are checked and taken by one server-side Lua script per request, so a
//              limit of 100 RPM is 100 for the fleet. Budgets count what is used plus
//              what requests in flight reserved; a reservation ends when its request
//              settles, or at its deadline when its replica died. max_parallel stays per
//              replica (a replica that dies would otherwise hold fleet-wide slots for ever).
//   broadcast  admin changes (keys, providers and models, prices, MCP) and breaker
//              transitions go out on one pub/sub channel; every replica reloads.
//   Redis down the configured policy: "open" keeps serving with each replica's own
//              limits, "closed" refuses limited requests; reconnects with backoff.

#include "actors/limits/limiter.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace boost::asio {
class io_context;
}
namespace lowart::config {
struct cluster_config;
}

namespace lowart {

/// One subject as the fleet checks it: its id and a copy of its limits.
struct fleet_subject {
  std::string id; ///< "key:<id>", "team:<id>", "model:<name>"
  limits lim;
};

/// The subjects as the fleet takes them (copies: they outlive the request's snapshots
/// while Redis answers), and back as the local limiter takes them (pointing into `s`).
inline std::vector<fleet_subject> fleet_subjects(const std::vector<rate_limiter::subject_ref>& refs) {
  std::vector<fleet_subject> out;
  out.reserve(refs.size());
  for (const auto& r : refs)
    out.push_back({std::string(r.id), *r.lim});
  return out;
}
inline std::vector<rate_limiter::subject_ref> subject_refs(const std::vector<fleet_subject>& s) {
  std::vector<rate_limiter::subject_ref> out;
  out.reserve(s.size());
  for (const auto& f : s)
    out.push_back({f.id, &f.lim});
  return out;
}

/// What replicas tell each other about the shared database (reload that part of it).
inline bool is_change_topic(std::string_view topic) {
  return topic == "keys" || topic == "catalog" || topic == "prices" || topic == "mcp";
}

class fleet {
public:
  virtual ~fleet() = default;

  /// Gives I/O thread `worker` its own connection (before that thread runs).
  virtual void attach(std::size_t worker, boost::asio::io_context& ioc) = 0;
  /// Starts the broadcast and background connections on `background`.
  virtual void start(boost::asio::io_context& background) = 0;
  /// Sends what the I/O threads batched (settles) now and waits for that, bounded
  /// (shutdown, while those threads still run).
  virtual void flush() = 0;
  /// Closes every connection and stops delivering messages (before the actors stop).
  virtual void stop() = 0;
  /// Drops what lives on the I/O threads' io_contexts (after those threads ended,
  /// before the io_contexts go).
  virtual void release_workers() = 0;
  /// Drops what lives on the background io_context (after its thread ended).
  virtual void release_background() = 0;

  /// Whether worker `worker`'s connection is up now (a request then asks Redis).
  virtual bool up(std::size_t worker) const = 0;
  /// "open" or "closed".
  virtual bool fail_open() const = 0;

  /// What one request reserves: its token estimate (from TPM buckets and token budgets)
  /// and that estimate's cost (from cost budgets), held in Redis until the request
  /// settles or, should its replica die, for `hold_ms` (its deadline and a margin).
  struct estimate {
    std::int64_t tokens = 0;
    double cost = 0;
    std::int64_t hold_ms = 0;
  };
  /// Checks and takes one request and the estimate from every subject, all or nothing.
  /// `done` runs on worker `worker`'s thread: `reached` false when Redis did not answer
  /// in time (the policy then applies). Returns the reservation's name for settle().
  using reserve_done = std::function<void(bool reached, const limit_decision& decision)>;
  virtual std::string reserve(std::size_t worker, const std::vector<fleet_subject>& subjects, const estimate& e,
                              std::int64_t now_ms, reserve_done done) = 0;
  /// Ends the reservation: corrects the token bucket by what was really used and books
  /// the budgets (batched per I/O thread; the reservation counts until the batch lands).
  virtual void settle(std::size_t worker, const std::vector<fleet_subject>& subjects, const std::string& reservation,
                      std::int64_t estimate, std::int64_t real_tokens, double cost, std::int64_t now_ms) = 0;
  /// Drops a reservation whose answer never came (Redis timed out): it may have been
  /// taken. Nothing is booked; the token bucket keeps what it may have lost.
  virtual void release(std::size_t worker, const std::vector<fleet_subject>& subjects,
                       const std::string& reservation) = 0;
  /// Books spend without a reservation (a finished background job); any thread.
  virtual void charge(const std::vector<fleet_subject>& subjects, std::int64_t tokens, double cost,
                      std::int64_t now_ms) = 0;
  /// The database's budget use for the current period, written to Redis unless Redis
  /// already counts this period (at start, and again after Redis lost its data).
  virtual void seed_budget(const std::string& subject_id, const std::string& period, std::int64_t tokens, double cost,
                           std::int64_t now_ms) = 0;

  /// Tells every other replica; any thread. `topic` is "keys", "catalog", "prices",
  /// "mcp" or "breaker" ("<deployment>\n<open|closed>"; the fleet adds the time and keeps
  /// open breakers in Redis for replicas that start later); `payload` is topic-specific.
  virtual void publish(const std::string& topic, const std::string& payload) = 0;
  /// Set before start(): runs on the background thread for each message another
  /// replica published, and with topic "resync" after a reconnect (messages may have
  /// been missed: reload everything).
  std::function<void(const std::string& topic, const std::string& payload)> on_message;

  /// Breakers open in the fleet now (kept in Redis as they open and close): each comes to
  /// on_message as ("breaker", "<deployment>\nopen\n<opened at, unix ms>"). The router
  /// asks when it starts; a resync replays them too.
  virtual void replay_breakers() = 0;

  /// For /readyz: "" when Redis answers, else why not.
  virtual std::string problem() const = 0;
  /// This replica's id.
  virtual const std::string& replica() const = 0;
};

/// A fleet over the Redis at `cfg.redis_url`.
std::shared_ptr<fleet> make_redis_fleet(const config::cluster_config& cfg);

} // namespace lowart
