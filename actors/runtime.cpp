#include "actors/runtime.hpp"

#include "actors/mcp/mcp_process.hpp"
#include "actors/messages.hpp"
#include "actors/state.hpp"
#include "actors/supervisor.hpp"
#include "core/log.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <caf/all.hpp>

#include <thread>

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
  // MCP child processes: their pipes, timers and reaping run on this one thread.
  boost::asio::io_context mcp_io;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> mcp_work;
  std::thread mcp_thread;
  caf::actor_system_config cfg;

  void ask(caf::atom_value which, admin_call call, reply_fn done, std::chrono::milliseconds timeout);
  std::unique_ptr<caf::actor_system> system;
  caf::actor root;
};

runtime::runtime(gateway_state& state) : impl_(std::make_unique<impl>(state)) {}

runtime::~runtime() {
  stop();
}

std::string runtime::start() {
  impl_->mcp_work.emplace(impl_->mcp_io.get_executor());
  impl_->mcp_thread = std::thread([this] { impl_->mcp_io.run(); });
  impl_->state.mcp_io = &impl_->mcp_io;
  impl_->system = std::make_unique<caf::actor_system>(impl_->cfg);
  impl_->root = spawn_supervisor(*impl_->system, impl_->state);
  if (auto& fleet = impl_->state.fleet) {
    // What other replicas publish goes to the supervisor, which hands it on.
    fleet->on_message = [root = impl_->root](const std::string& topic, const std::string& payload) {
      caf::anon_send(root, fleet_atom::value, topic, payload);
    };
    fleet->start(impl_->mcp_io);
  }
  caf::scoped_actor self{*impl_->system};
  std::string result;
  self->request(impl_->root, std::chrono::seconds(60), init_atom::value)
      .receive([&](const std::string& error) { result = error; },
               [&](caf::error& err) { result = "persistence did not start: " + caf::to_string(err); });
  if (result.empty()) impl_->state.ready.store(true);
  return result;
}

void runtime::admin(admin_call call, reply_fn done) {
  impl_->ask(admin_atom::value, std::move(call), std::move(done), std::chrono::seconds(10));
}

void runtime::mcp(admin_call call, reply_fn done) {
  const auto& m = impl_->state.config.mcp;
  impl_->ask(mcp_atom::value, std::move(call), std::move(done),
             std::chrono::milliseconds(m.call_timeout_ms + m.max_wait_ms + 5000));
}

void runtime::jobs(admin_call call, reply_fn done) {
  impl_->ask(jobs_atom::value, std::move(call), std::move(done),
             std::chrono::milliseconds(impl_->state.config.jobs.sync_timeout_ms + 10'000));
}

void runtime::a2a(admin_call call, reply_fn done) {
  impl_->ask(a2a_atom::value, std::move(call), std::move(done),
             std::chrono::milliseconds(impl_->state.config.a2a.max_wait_ms + 10'000));
}

void runtime::responses(std::string op, std::string a, std::string b, std::function<void(int, std::string)> done) {
  if (!impl_->system || !impl_->root) {
    done(503, "{}");
    return;
  }
  impl_->system->spawn([root = impl_->root, op = std::move(op), a = std::move(a), b = std::move(b),
                        done = std::move(done)](caf::event_based_actor* self) {
    self->request(root, std::chrono::seconds(10), responses_store_atom::value, op, a, b)
        .then([done](std::int32_t status, std::string body) { done(status, std::move(body)); },
              [done](caf::error& err) { done(err == caf::sec::request_timeout ? 504 : 503, "{}"); });
  });
}

void runtime::responses_save(std::string record) {
  // Sent from this thread into the root's mailbox, which hands it on in order: every
  // responses() asked after this returns finds the record.
  if (impl_->system && impl_->root)
    caf::anon_send(impl_->root, responses_store_atom::value, std::string("save"), std::move(record), std::string());
}

void runtime::mcp_cancel(const std::string& request_id) {
  if (impl_->system && impl_->root) caf::anon_send(impl_->root, mcp_cancel_atom::value, request_id);
}

void runtime::impl::ask(caf::atom_value which, admin_call call, reply_fn done, std::chrono::milliseconds timeout) {
  if (!system || !root) {
    done(503, R"({"error":{"message":"gateway is not running","type":"unavailable"}})", "application/json");
    return;
  }
  system->spawn(
      [root = root, which, timeout, call = std::move(call), done = std::move(done)](caf::event_based_actor* self) {
        auto req = which == mcp_atom::value
                       ? self->request(root, timeout, mcp_atom::value, call.method, call.path, call.query, call.body,
                                       call.key_id, call.role, call.team_id, call.user_id, call.request_id)
                   : which == a2a_atom::value
                       ? self->request(root, timeout, a2a_atom::value, call.method, call.path, call.query, call.body,
                                       call.key_id, call.role, call.team_id, call.user_id, call.request_id)
                   : which == jobs_atom::value
                       ? self->request(root, timeout, jobs_atom::value, call.method, call.path, call.query, call.body,
                                       call.key_id, call.role, call.team_id, call.user_id, call.request_id)
                       : self->request(root, timeout, admin_atom::value, call.method, call.path, call.query, call.body,
                                       call.key_id, call.role, call.team_id, call.user_id);
        req.then([done](std::int32_t status, std::string body,
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
  // No more messages from other replicas into actors that are about to stop.
  if (impl_->state.fleet) impl_->state.fleet->stop();
  if (impl_->root) {
    caf::anon_send_exit(impl_->root, caf::exit_reason::user_shutdown);
    impl_->root = nullptr;
  }
  impl_->system->await_all_actors_done();
  impl_->system.reset();
  // The MCP actors asked their children to stop; give them (and the SIGKILL timers) a
  // bounded time to be reaped, then end the io thread.
  for (int i = 0; i < 60 && actors::mcp_process::live_count() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  impl_->mcp_work.reset();
  impl_->mcp_io.stop();
  if (impl_->mcp_thread.joinable()) impl_->mcp_thread.join();
  if (impl_->state.fleet) impl_->state.fleet->release_background();
  impl_->state.mcp_io = nullptr;
}

} // namespace lowart::actors
