#include "actors/supervisor.hpp"

#include "actors/bus/a2a.hpp"
#include "actors/config_actor.hpp"
#include "actors/jobs/jobs.hpp"
#include "actors/mcp/mcp.hpp"
#include "actors/messages.hpp"
#include "actors/persistence.hpp"
#include "actors/routing/router.hpp"
#include "actors/scripts/scripts.hpp"
#include "actors/state.hpp"
#include "core/log.hpp"

#include <caf/all.hpp>

#include <algorithm>

namespace lowart::actors {
namespace {

struct child {
  caf::actor handle;
  std::chrono::milliseconds backoff{100};
};

struct supervisor_state {
  static inline const char* name = "supervisor";
  gateway_state* gw = nullptr;
  child persistence;
  child router;
  child config;
  child mcp;
  child scripts;
  child jobs;
  child a2a;
};

using supervisor_actor = caf::stateful_actor<supervisor_state>;

void start_persistence(supervisor_actor* self, bool initialize) {
  auto& c = self->state.persistence;
  c.handle = spawn_persistence(self->system(), *self->state.gw, true, caf::actor_cast<caf::actor>(self));
  self->monitor(c.handle);
  self->link_to(c.handle); // the persistence actor must not outlive its supervisor
  if (initialize) {
    // A restarted persistence actor reopens the database on its own.
    self->request(c.handle, std::chrono::seconds(30), init_atom::value)
        .then(
            [](const std::string& error) {
              if (!error.empty()) log::error("persistence restart failed", {{"error", error}});
            },
            [](caf::error& err) {
              log::error("persistence restart failed", {{"error", caf::to_string(err)}});
            });
  }
}

void start_router(supervisor_actor* self) {
  auto& c = self->state.router;
  c.handle = spawn_router(self->system(), *self->state.gw);
  self->monitor(c.handle);
  self->link_to(c.handle);
}

void start_config(supervisor_actor* self) {
  auto& c = self->state.config;
  c.handle = spawn_config(self->system(), *self->state.gw, caf::actor_cast<caf::actor>(self), std::chrono::seconds(1));
  self->monitor(c.handle);
  self->link_to(c.handle);
}

void start_mcp(supervisor_actor* self) {
  auto& c = self->state.mcp;
  if (!self->state.gw->mcp_io) return; // tests without an MCP io thread
  c.handle =
      spawn_mcp_manager(self->system(), *self->state.gw, *self->state.gw->mcp_io, caf::actor_cast<caf::actor>(self));
  self->monitor(c.handle);
  self->link_to(c.handle);
}

void start_scripts(supervisor_actor* self) {
  auto& c = self->state.scripts;
  c.handle = spawn_scripts(self->system(), *self->state.gw);
  self->monitor(c.handle);
  self->link_to(c.handle);
}

void start_jobs(supervisor_actor* self) {
  auto& c = self->state.jobs;
  if (!self->state.gw->mcp_io) return; // tests without the background io thread
  c.handle = spawn_jobs(self->system(), *self->state.gw, *self->state.gw->mcp_io, caf::actor_cast<caf::actor>(self));
  self->monitor(c.handle);
  self->link_to(c.handle);
}

void start_a2a(supervisor_actor* self) {
  auto& c = self->state.a2a;
  if (!self->state.gw->mcp_io) return; // tests without the background io thread
  c.handle = spawn_a2a(self->system(), *self->state.gw, *self->state.gw->mcp_io, caf::actor_cast<caf::actor>(self));
  self->monitor(c.handle);
  self->link_to(c.handle);
}

caf::behavior supervisor(supervisor_actor* self, gateway_state* gw) {
  self->state.gw = gw;
  // The router and config actor start once the database is open (init below), so the
  // first route table already holds the providers and models stored through the API.
  start_persistence(self, false);
  // Linked children that end normally (shutdown) must not take us down with an error;
  // abnormal ends are handled as down messages below.
  self->set_exit_handler([=](caf::exit_msg& msg) {
    auto& st = self->state;
    if (msg.source == st.persistence.handle.address() || msg.source == st.router.handle.address() ||
        msg.source == st.config.handle.address() || msg.source == st.mcp.handle.address() ||
        msg.source == st.scripts.handle.address() || msg.source == st.jobs.handle.address() ||
        msg.source == st.a2a.handle.address())
      return;
    self->quit(msg.reason);
  });
  self->set_down_handler([=](caf::down_msg& msg) {
    auto& st = self->state;
    for (auto* c : {&st.persistence, &st.router, &st.config, &st.mcp, &st.scripts, &st.jobs, &st.a2a}) {
      if (msg.source != c->handle.address()) continue;
      auto which = c == &st.persistence ? "persistence"
                   : c == &st.router    ? "router"
                   : c == &st.config    ? "config"
                   : c == &st.scripts   ? "scripts"
                   : c == &st.jobs      ? "jobs"
                   : c == &st.a2a       ? "a2a"
                                        : "mcp";
      log::error("actor down; restarting",
                 {{"actor", which}, {"reason", caf::to_string(msg.reason)}, {"backoff_ms", c->backoff.count()}});
      self->delayed_send(self, c->backoff, restart_atom::value, std::string(which));
      c->backoff = std::min(c->backoff * 2, std::chrono::milliseconds(5000));
    }
  });
  return {
      [=](restart_atom, const std::string& which) {
        if (which == "persistence")
          start_persistence(self, true);
        else if (which == "router")
          start_router(self);
        else if (which == "config")
          start_config(self);
        else if (which == "mcp")
          start_mcp(self);
        else if (which == "scripts")
          start_scripts(self);
        else if (which == "jobs")
          start_jobs(self);
        else if (which == "a2a")
          start_a2a(self);
      },
      [=](reload_atom a) -> caf::result<bool> {
        if (!self->state.router.handle) return true; // no routes yet: the router's first table reads everything
        auto rp = self->make_response_promise<bool>();
        self->request(self->state.router.handle, std::chrono::seconds(10), a)
            .then([=](bool ok) mutable { rp.deliver(ok); },
                  [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
      [=](init_atom a) -> caf::result<std::string> {
        auto rp = self->make_response_promise<std::string>();
        self->request(self->state.persistence.handle, std::chrono::seconds(60), a)
            .then(
                [=](const std::string& error) mutable {
                  if (error.empty() && !self->state.router.handle) {
                    start_scripts(self);
                    start_router(self);
                    start_config(self);
                    start_mcp(self);
                    start_jobs(self);
                    start_a2a(self);
                  }
                  rp.deliver(error);
                },
                [=](caf::error& err) mutable {
                  rp.deliver(std::string("persistence did not start: ") + caf::to_string(err));
                });
        return rp;
      },
      [=](flush_atom a) { return self->delegate(self->state.persistence.handle, a); },
      // MCP: storage operations go to persistence, notices and requests to the manager.
      [=](mcp_store_atom a, const std::string& op, const std::string& x, const std::string& y, const std::string& z) {
        return self->delegate(self->state.persistence.handle, a, op, x, y, z);
      },
      [=](jobs_store_atom a, const std::string& op, const std::string& x, const std::string& y) {
        return self->delegate(self->state.persistence.handle, a, op, x, y);
      },
      [=](a2a_store_atom a, const std::string& op, const std::string& x) {
        return self->delegate(self->state.persistence.handle, a, op, x);
      },
      [=](responses_store_atom a, const std::string& op, const std::string& x, const std::string& y) {
        return self->delegate(self->state.persistence.handle, a, op, x, y);
      },
      [=](a2a_atom a, const std::string& method, const std::string& path, const std::string& query,
          const std::string& body, const std::string& key_id, const std::string& role, const std::string& team_id,
          const std::string& user_id, const std::string& request_id) -> caf::delegated<caf::message> {
        if (!self->state.a2a.handle) {
          auto rp = self->make_response_promise();
          rp.deliver(std::int32_t{503},
                     std::string(R"({"error":{"message":"the agent bus is not running","type":"unavailable"}})"),
                     std::string("application/json"));
          return {};
        }
        return self->delegate(self->state.a2a.handle, a, method, path, query, body, key_id, role, team_id, user_id,
                              request_id);
      },
      [=](jobs_atom a, const std::string& method, const std::string& path, const std::string& query,
          const std::string& body, const std::string& key_id, const std::string& role, const std::string& team_id,
          const std::string& user_id, const std::string& request_id) -> caf::delegated<caf::message> {
        if (!self->state.jobs.handle) {
          auto rp = self->make_response_promise();
          rp.deliver(std::int32_t{503},
                     std::string(R"({"error":{"message":"jobs are not running","type":"unavailable"}})"),
                     std::string("application/json"));
          return {};
        }
        return self->delegate(self->state.jobs.handle, a, method, path, query, body, key_id, role, team_id, user_id,
                              request_id);
      },
      [=](fleet_atom a, const std::string& topic, const std::string& payload) {
        // Another replica changed something: breakers live with the router, the rest
        // is reloaded from the shared database.
        if (topic == "breaker") {
          if (self->state.router.handle) self->send(self->state.router.handle, a, topic, payload);
        } else if (self->state.persistence.handle) {
          self->send(self->state.persistence.handle, a, topic);
        }
      },
      [=](mcp_sync_atom a) {
        if (self->state.mcp.handle) self->send(self->state.mcp.handle, a);
      },
      [=](mcp_exec_atom a, const std::string& approval) {
        if (self->state.mcp.handle) self->send(self->state.mcp.handle, a, approval);
      },
      [=](mcp_atom a, const std::string& method, const std::string& path, const std::string& query,
          const std::string& body, const std::string& key_id, const std::string& role, const std::string& team_id,
          const std::string& user_id, const std::string& request_id) -> caf::delegated<caf::message> {
        if (!self->state.mcp.handle) {
          auto rp = self->make_response_promise();
          rp.deliver(std::int32_t{503},
                     std::string(R"({"error":{"message":"MCP is not running","type":"unavailable"}})"),
                     std::string("application/json"));
          return {};
        }
        return self->delegate(self->state.mcp.handle, a, method, path, query, body, key_id, role, team_id, user_id,
                              request_id);
      },
      [=](mcp_cancel_atom a, const std::string& request_id) {
        if (self->state.mcp.handle) self->send(self->state.mcp.handle, a, request_id);
      },
      [=](admin_atom a, const std::string& method, const std::string& path, const std::string& query,
          const std::string& body, const std::string& key_id, const std::string& role, const std::string& team_id,
          const std::string& user_id) {
        if ((path == "/admin/jobs" || path.rfind("/admin/jobs/", 0) == 0) && self->state.jobs.handle)
          // Operators see every job: the jobs API with the scope of the master key.
          return self->delegate(self->state.jobs.handle, jobs_atom::value, method, "/v1" + path.substr(6), query, body,
                                std::string("master"), role, team_id, user_id, std::string());
        if ((path == "/admin/agents" || path.rfind("/admin/agents/", 0) == 0) && self->state.a2a.handle)
          return self->delegate(self->state.a2a.handle, a2a_atom::value, method, path, query, body, key_id, role,
                                team_id, user_id, std::string());
        bool scripts = path == "/admin/scripts" || path.rfind("/admin/scripts/", 0) == 0;
        return self->delegate(scripts ? self->state.scripts.handle : self->state.persistence.handle, a, method, path,
                              query, body, key_id, role, team_id, user_id);
      },
  };
}

} // namespace

caf::actor spawn_supervisor(caf::actor_system& sys, gateway_state& state) {
  return sys.spawn(supervisor, &state);
}

} // namespace lowart::actors
