#include "actors/config_actor.hpp"

#include "actors/messages.hpp"
#include "actors/state.hpp"
#include "core/file_watch.hpp"
#include "core/log.hpp"

#include <caf/all.hpp>

#include <filesystem>

namespace lowart::actors {
namespace {

struct config_state {
  static inline const char* name = "config";
  gateway_state* gw = nullptr;
  caf::actor notify;
  std::chrono::milliseconds interval{2000};
  settling_file file; ///< what was loaded, and a change still being written
};

using config_actor = caf::stateful_actor<config_state>;

/// Reloads when the file changed and has stopped changing; true when a new configuration
/// was published.
bool check(config_state& st) {
  const auto& path = st.gw->config_path;
  auto now = stamp_of(path);
  if (!now || !st.file.ready(*now)) return false;
  auto loaded = config::load(path);
  if (!loaded.config) {
    log::error("config reload refused; the running configuration stays", {{"path", path}, {"error", loaded.error}});
    return false;
  }
  st.gw->routing.publish(std::make_shared<const config::gateway_config>(std::move(*loaded.config)));
  log::info("config reloaded", {{"path", path}});
  return true;
}

caf::behavior config_behavior(config_actor* self, gateway_state* gw, caf::actor notify,
                              std::chrono::milliseconds interval) {
  auto& st = self->state;
  st.gw = gw;
  st.notify = std::move(notify);
  st.interval = interval;
  if (!gw->config_path.empty()) {
    if (auto now = stamp_of(gw->config_path)) st.file.taken(*now);
    self->delayed_send(self, interval, tick_atom::value);
  }
  return {
      [=](tick_atom) {
        auto& s = self->state;
        if (check(s) && s.notify)
          self->request(s.notify, std::chrono::seconds(10), reload_atom::value)
              .then([](bool) {},
                    [](caf::error& err) {
                      log::error("route rebuild after a config reload failed", {{"error", caf::to_string(err)}});
                    });
        self->delayed_send(self, s.interval, tick_atom::value);
      },
  };
}

} // namespace

caf::actor spawn_config(caf::actor_system& sys, gateway_state& state, caf::actor notify,
                        std::chrono::milliseconds interval, bool detached) {
  if (detached) return sys.spawn<caf::detached>(config_behavior, &state, std::move(notify), interval);
  return sys.spawn(config_behavior, &state, std::move(notify), interval);
}

} // namespace lowart::actors
