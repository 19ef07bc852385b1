#include "actors/runtime.hpp"

#include "actors/messages.hpp"
#include "actors/state.hpp"
#include "actors/supervisor.hpp"
#include "core/log.hpp"

#include <caf/all.hpp>

namespace lowart::actors {

struct runtime::impl {
  explicit impl(gateway_state& s) : state(s) {
    cfg.set("scheduler.max-threads", static_cast<std::size_t>(state.config.server.actor_threads));
    // One worker (the default on 2 cores) does best with the sharing policy; several
    // workers keep the work-stealing default.
    if (state.config.server.actor_threads == 1) cfg.set("scheduler.policy", caf::atom("sharing"));
    cfg.set("logger.verbosity", caf::atom("quiet"));
  }

  gateway_state& state;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> system;
  caf::actor root;
};

runtime::runtime(gateway_state& state) : impl_(std::make_unique<impl>(state)) {}

runtime::~runtime() {
  stop();
}

std::string runtime::start() {
  impl_->system = std::make_unique<caf::actor_system>(impl_->cfg);
  impl_->root = spawn_supervisor(*impl_->system, impl_->state);
  caf::scoped_actor self{*impl_->system};
  std::string result;
  self->request(impl_->root, std::chrono::seconds(60), init_atom::value)
      .receive([&](const std::string& error) { result = error; },
               [&](caf::error& err) { result = "persistence did not start: " + caf::to_string(err); });
  if (result.empty()) impl_->state.ready.store(true);
  return result;
}

void runtime::admin(admin_call call, reply_fn done) {
  if (!impl_->system || !impl_->root) {
    done(503, R"({"error":{"message":"gateway is not running","type":"unavailable"}})", "application/json");
    return;
  }
  impl_->system->spawn(
      [root = impl_->root, call = std::move(call), done = std::move(done)](caf::event_based_actor* self) {
        self->request(root, std::chrono::seconds(10), admin_atom::value, call.method, call.path, call.query, call.body,
                      call.key_id, call.role, call.team_id, call.user_id)
            .then([done](std::int32_t status, std::string body,
                         std::string type) { done(status, std::move(body), std::move(type)); },
                  [done](caf::error& err) {
                    bool timeout = err == caf::sec::request_timeout;
                    done(timeout ? 504 : 503,
                         std::string(R"({"error":{"message":")") +
                             (timeout ? "the owning actor did not answer in time" : "the owning actor is unavailable") +
                             R"(","type":"unavailable"}})",
                         "application/json");
                  });
      });
}

void runtime::flush_usage() {
  if (!impl_->system || !impl_->root) return;
  caf::scoped_actor self{*impl_->system};
  self->request(impl_->root, std::chrono::seconds(30), flush_atom::value)
      .receive([](std::int64_t) {},
               [](caf::error& err) {
                 log::error("usage flush failed", {{"error", caf::to_string(err)}});
               });
}

void runtime::stop() {
  if (!impl_->system) return;
  if (impl_->root) {
    caf::anon_send_exit(impl_->root, caf::exit_reason::user_shutdown);
    impl_->root = nullptr;
  }
  impl_->system->await_all_actors_done();
  impl_->system.reset();
}

} // namespace lowart::actors
