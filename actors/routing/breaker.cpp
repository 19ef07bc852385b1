#include "actors/routing/breaker.hpp"

#include "actors/messages.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/log.hpp"

#include <caf/all.hpp>

#include <optional>

namespace lowart::actors {
namespace {

using half_open_atom = caf::atom_constant<caf::atom("halfopen")>;

struct breaker_state {
  static inline const char* name = "breaker";
  std::string id;
  std::shared_ptr<breaker_control> control;
  config::breaker_config settings;
  metrics::gauge gauge;
  std::uint64_t generation = 0; ///< ignores half-open timers of an earlier opening
  std::function<void(const std::string&)> announce;
};

using breaker_actor = caf::stateful_actor<breaker_state>;

void transition(breaker_actor* self, breaker_mode to, std::string_view why, bool remote = false,
                std::optional<std::chrono::milliseconds> open_for = std::nullopt) {
  auto& st = self->state;
  auto from = st.control->mode();
  if (from == to) return;
  static constexpr const char* names[] = {"closed", "open", "half_open"};
  st.control->set_mode(to);
  st.gauge.set(static_cast<double>(static_cast<int>(to)));
  metrics::breaker_transitions(st.id, names[static_cast<int>(to)]).inc();
  log::warn("breaker transition", {{"deployment", st.id},
                                   {"from", names[static_cast<int>(from)]},
                                   {"to", names[static_cast<int>(to)]},
                                   {"reason", why}});
  if (!remote && st.announce && to != breaker_mode::half_open) st.announce(names[static_cast<int>(to)]);
  if (to == breaker_mode::open) {
    ++st.generation;
    self->delayed_send(self, open_for.value_or(std::chrono::milliseconds(st.settings.open_ms)), half_open_atom::value,
                       st.generation);
  } else if (to == breaker_mode::half_open) {
    st.control->allow_probes(st.settings.half_open_probes);
  } else {
    st.control->clear();
  }
}

caf::behavior breaker(breaker_actor* self, std::string id, std::shared_ptr<breaker_control> control,
                      config::breaker_config settings, std::function<void(const std::string&)> announce) {
  auto& st = self->state;
  st.announce = std::move(announce);
  st.id = std::move(id);
  st.control = std::move(control);
  st.settings = std::move(settings);
  st.gauge = metrics::breaker_state(st.id);
  st.gauge.set(static_cast<double>(static_cast<int>(st.control->mode())));
  if (st.control->mode() == breaker_mode::open) // restarted while open: re-arm the timer
    self->delayed_send(self, std::chrono::milliseconds(st.settings.open_ms), half_open_atom::value, st.generation);
  return {
      [=](report_atom, bool probe, bool success) {
        auto& s = self->state;
        auto mode = s.control->mode();
        if (probe && mode == breaker_mode::half_open) {
          transition(self, success ? breaker_mode::closed : breaker_mode::open,
                     success ? "probe succeeded" : "probe failed");
          return;
        }
        if (mode != breaker_mode::closed || success) return;
        std::int64_t ok = 0, failed = 0;
        s.control->totals(clock::steady_seconds(), s.settings.window_s, ok, failed);
        auto total = ok + failed;
        if (total >= s.settings.min_requests &&
            static_cast<double>(failed) >= s.settings.failure_rate * static_cast<double>(total)) {
          transition(self, breaker_mode::open,
                     std::to_string(failed) + " of " + std::to_string(total) + " requests failed in " +
                         std::to_string(s.settings.window_s) + " s");
        }
      },
      [=](fleet_atom, const std::string& mode, std::int64_t since_ms) {
        // Another replica's breaker for this deployment opened (at since_ms) or closed: so
        // does ours, for what is left of open_ms; then it probes for itself.
        auto& s = self->state;
        if (mode == "open") {
          auto left = static_cast<std::int64_t>(s.settings.open_ms);
          if (since_ms > 0) left -= clock::unix_ms() - since_ms;
          if (left <= 0 || s.control->mode() == breaker_mode::open) return;
          transition(self, breaker_mode::open, "opened on another replica", true, std::chrono::milliseconds(left));
        } else if (mode == "closed" && s.control->mode() != breaker_mode::closed) {
          transition(self, breaker_mode::closed, "closed on another replica", true);
        }
      },
      [=](half_open_atom, std::uint64_t generation) {
        if (generation == self->state.generation && self->state.control->mode() == breaker_mode::open)
          transition(self, breaker_mode::half_open, "open period over");
      },
  };
}

} // namespace

caf::actor spawn_breaker(caf::actor_system& sys, std::string deployment_id, std::shared_ptr<breaker_control> control,
                         const config::breaker_config& settings,
                         std::function<void(const std::string& mode)> announce) {
  return sys.spawn(breaker, std::move(deployment_id), std::move(control), settings, std::move(announce));
}

} // namespace lowart::actors
