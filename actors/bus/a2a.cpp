// The agent bus actor: it reads agents and open tasks back at start, routes each HTTP
// request by path (agent cards, JSON-RPC, /admin/agents, /v1/agents) and handles the
// agents' hand-outs, push failures, remote replies and the lease scan. The rest is in
// a2a_records.cpp, a2a_delivery.cpp, a2a_rpc.cpp and a2a_http.cpp (see a2a_internal.hpp).

#include "actors/bus/a2a.hpp"

#include "actors/admin/admin_util.hpp"
#include "actors/bus/a2a_internal.hpp"
#include "actors/messages.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"

#include <boost/asio/io_context.hpp>
#include <caf/all.hpp>
#include <simdjson.h>

#include <algorithm>
#include <set>

namespace lowart::actors {
namespace detail::a2a {
namespace {

/// Agents and tasks are read: the requests that waited for that are served now, in order.
void loaded(bus_actor* self) {
  auto& st = self->state;
  st.loaded = true;
  for (auto& [rp, a] : std::exchange(st.held, {}))
    self->request(caf::actor_cast<caf::actor>(self), caf::infinite, a2a_atom::value, a[0], a[1], a[2], a[3], a[4], a[5],
                  a[6], a[7], a[8])
        .then([rp](std::int32_t status, const std::string& text,
                   const std::string& type) mutable { rp.deliver(status, text, type); },
              [rp](caf::error& err) mutable {
                rp.deliver(std::int32_t{503}, admin_error("unavailable", caf::to_string(err)), json_type);
              });
}

caf::behavior bus(bus_actor* self, gateway_state* gw, boost::asio::io_context* io, caf::actor store) {
  auto& st = self->state;
  st.gw = gw;
  st.io = io;
  st.store = std::move(store);
  // Agents, then their open tasks, back from the database.
  self->request(st.store, std::chrono::seconds(30), a2a_store_atom::value, std::string("agents"), std::string())
      .then(
          [=](std::int32_t, const std::string& agents) {
            simdjson::dom::parser parser;
            simdjson::dom::array arr;
            if (parser.parse(agents).get_array().get(arr) == simdjson::SUCCESS)
              for (auto a : arr)
                if (auto rec = agent_rec::from(a)) spawn_agent(self, *rec);
            self->request(self->state.store, std::chrono::seconds(30), a2a_store_atom::value, std::string("tasks_live"),
                          std::string())
                .then(
                    [=](std::int32_t, const std::string& tasks) {
                      simdjson::dom::parser p;
                      simdjson::dom::array list;
                      std::size_t n = 0;
                      if (p.parse(tasks).get_array().get(list) == simdjson::SUCCESS)
                        for (auto item : list)
                          if (auto t = task_rec::from(item)) {
                            auto& task = self->state.tasks[t->id] = std::move(*t);
                            // A task an agent holds keeps its lease: the agent may still be
                            // working on it and report, and the scan hands it out again only
                            // once the lease runs out (handing it out at once ran it twice).
                            // Queued tasks are queued again; retries wait for their time.
                            bool leased =
                                (task.delivery == "delivered" || task.delivery == "acked") && task.lease_until_ms > 0;
                            if (task.delivery != "waiting" && task.delivery != "retry" && !leased) deliver(self, task);
                            ++n;
                          }
                      loaded(self);
                      if (n) log::info("a2a tasks resumed after a restart", {{"tasks", n}});
                    },
                    [=](caf::error& err) {
                      loaded(self); // serve without them rather than not at all
                      log::error("cannot load a2a tasks", {{"error", caf::to_string(err)}});
                    });
          },
          [=](caf::error& err) {
            loaded(self);
            log::error("cannot load a2a agents", {{"error", caf::to_string(err)}});
          });
  self->delayed_send(self, std::chrono::milliseconds(250), scan_atom::value, std::string());

  return {
      [=](a2a_atom, const std::string& method, const std::string& path, const std::string& query,
          const std::string& body, const std::string& key_id, const std::string& role, const std::string& team_id,
          const std::string& user_id, const std::string& request_id) -> caf::delegated<caf::message> {
        auto rp = self->make_response_promise();
        auto& s = self->state;
        if (!s.loaded) {
          // Just started: agents and tasks are still being read. The request waits for them
          // (an answer "no agent named ..." for an agent that exists makes a client give up).
          s.held.push_back({rp, {method, path, query, body, key_id, role, team_id, user_id, request_id}});
          return {};
        }
        caller who{key_id, role, request_id};
        // Agent cards: public.
        const std::string card_suffix = "/.well-known/agent-card.json";
        // A card shows a shared agent to anyone; a team's agent only to a key that may use it.
        auto card_visible = [&](const agent_entry& e) {
          return e.rec.shared || (!key_id.empty() && may_use(s, key_id, e));
        };
        if (path.size() >= card_suffix.size() &&
            path.compare(path.size() - card_suffix.size(), card_suffix.size(), card_suffix) == 0) {
          auto base = base_url(query);
          if (path == card_suffix) {
            agent_rec gateway;
            gateway.name = "lowart";
            gateway.description = "lowart agent bus: tasks go to registered agents by skill (message.metadata.skill)";
            std::set<std::string> seen;
            for (const auto& [_, e] : s.agents)
              for (std::size_t i = 0; card_visible(e) && i < e.rec.skills.size(); ++i)
                if (seen.insert(e.rec.skill_ids[i]).second) gateway.skills.push_back(e.rec.skills[i]);
            auto card = agent_card(gateway, base);
            json::set_member(card, "url", json::quoted(base + "/a2a"));
            json::set_member(card, "supportedInterfaces", "[" + interface_json(base + "/a2a") + "]");
            rp.deliver(std::int32_t{200}, card, json_type);
            return {};
          }
          auto name = path.substr(5, path.size() - 5 - card_suffix.size());
          auto it = s.agents.find(name);
          if (path.rfind("/a2a/", 0) != 0 || it == s.agents.end() || !card_visible(it->second)) {
            rp.deliver(std::int32_t{404}, admin_error("not_found_error", "no agent card here"), json_type);
            return {};
          }
          rp.deliver(std::int32_t{200}, agent_card(it->second.rec, base), json_type);
          return {};
        }
        if (key_id.empty()) {
          rp.deliver(std::int32_t{401}, admin_error("authentication_error", "missing API key"), json_type);
          return {};
        }
        if (path == "/a2a" || path.rfind("/a2a/", 0) == 0) {
          if (method != "POST") {
            rp.deliver(std::int32_t{405}, rpc_error("null", -32600, "use POST for JSON-RPC"), json_type);
            return {};
          }
          rpc(self, who, path == "/a2a" ? std::string() : path.substr(5), body, rp);
          return {};
        }
        // /admin/agents... (the supervisor maps it here) and /v1/agents...
        bool admin_path = path.rfind("/admin/agents", 0) == 0;
        std::string rest = admin_path ? path.substr(13) : path.substr(10); // after /admin/agents or /v1/agents
        if (!rest.empty() && rest.front() == '/') rest.erase(0, 1);
        if (rest.empty()) {
          if (method == "POST") {
            register_agent(self, who, body, !admin_path, rp);
            return {};
          }
          if (method == "GET") {
            // A key sees the agents it may send tasks to and those it runs itself.
            std::vector<std::string> items;
            for (const auto& [_, e] : s.agents)
              if (admin_path || who.admin() || may_use(s, who.key_id, e) || acts_as(who, e))
                items.push_back(agent_listing(s, e, admin_path || who.admin()));
            rp.deliver(std::int32_t{200}, "{\"object\":\"list\",\"data\":" + json::array(items) + "}", json_type);
            return {};
          }
          rp.deliver(std::int32_t{405}, admin_error("invalid_request_error", "use GET or POST"), json_type);
          return {};
        }
        if (admin_path && rest == "tasks") {
          // Open tasks (finished ones are read through tasks/get or the dead letters).
          std::vector<std::string> items;
          for (const auto& [_, t] : s.tasks) {
            if (t.delivery == "done" || t.delivery == "dead") continue;
            json::object_writer w;
            w.raw("task", t.view())
                .str("agent", t.agent)
                .str("skill", t.skill)
                .str("delivery", t.delivery)
                .num("attempts", t.attempts)
                .num("lease_until_ms", t.lease_until_ms)
                .str("last_error", t.last_error);
            items.push_back(w.done());
          }
          rp.deliver(std::int32_t{200}, "{\"object\":\"list\",\"data\":" + json::array(items) + "}", json_type);
          return {};
        }
        if (admin_path && rest.rfind("dead-letters/", 0) == 0 && rest.size() > 20 &&
            rest.compare(rest.size() - 7, 7, "/replay") == 0) {
          // A dead letter sent once more: attempts start again, by skill to the best agent.
          if (method != "POST") {
            rp.deliver(std::int32_t{405}, admin_error("invalid_request_error", "use POST"), json_type);
            return {};
          }
          auto task_id = rest.substr(13, rest.size() - 13 - 7);
          self->request(s.store, store_timeout, a2a_store_atom::value, std::string("task_get"), task_id)
              .then(
                  [=](std::int32_t status, const std::string& row) mutable {
                    simdjson::dom::parser p;
                    simdjson::dom::element doc;
                    std::optional<task_rec> t;
                    if (status == 200 && p.parse(row).get(doc) == simdjson::SUCCESS) t = task_rec::from(doc);
                    if (!t || t->delivery != "dead") {
                      rp.deliver(std::int32_t{404}, admin_error("not_found_error", "no dead letter " + task_id),
                                 json_type);
                      return;
                    }
                    auto& bus_st = self->state;
                    if (t->skill.empty() && !bus_st.agents.count(t->agent)) {
                      rp.deliver(std::int32_t{409}, admin_error("conflict", "agent " + t->agent + " no longer exists"),
                                 json_type);
                      return;
                    }
                    t->attempts = 0;
                    t->tried.clear();
                    t->submitted_ms = clock::unix_ms();
                    set_state(*t, "submitted");
                    if (!t->skill.empty())
                      if (auto next = pick_agent(bus_st, t->skill, {}, t->sender_key); !next.empty()) t->agent = next;
                    auto& task = bus_st.tasks[t->id] = std::move(*t);
                    deliver(self, task);
                    save_task(self, task);
                    notify(self, task, true);
                    log::info("a2a dead letter replayed",
                              {{"task", task.id}, {"agent", task.agent}, {"by", who.key_id}});
                    rp.deliver(std::int32_t{200}, task.view(), json_type);
                  },
                  [=](caf::error& err) mutable {
                    rp.deliver(std::int32_t{503}, admin_error("storage_error", caf::to_string(err)), json_type);
                  });
          return {};
        }
        if (admin_path && rest == "dead-letters") {
          self->request(s.store, store_timeout, a2a_store_atom::value, std::string("dead_letters"), std::string())
              .then(
                  [=](std::int32_t, const std::string& rows) mutable {
                    std::vector<std::string> items;
                    simdjson::dom::parser p;
                    simdjson::dom::array arr;
                    if (p.parse(rows).get_array().get(arr) == simdjson::SUCCESS)
                      for (auto item : arr)
                        if (auto t = task_rec::from(item)) {
                          json::object_writer w;
                          w.raw("task", t->view())
                              .str("agent", t->agent)
                              .num("attempts", t->attempts)
                              .str("last_error", t->last_error);
                          items.push_back(w.done());
                        }
                    rp.deliver(std::int32_t{200}, "{\"object\":\"list\",\"data\":" + json::array(items) + "}",
                               json_type);
                  },
                  [=](caf::error& err) mutable {
                    rp.deliver(std::int32_t{503}, admin_error("storage_error", caf::to_string(err)), json_type);
                  });
          return {};
        }
        auto slash = rest.find('/');
        auto name = rest.substr(0, slash);
        auto sub = slash == std::string::npos ? std::string() : rest.substr(slash + 1);
        if (sub.empty()) {
          auto it = s.agents.find(name);
          if (it == s.agents.end() ||
              !(admin_path || who.admin() || may_use(s, who.key_id, it->second) || acts_as(who, it->second))) {
            rp.deliver(std::int32_t{404}, admin_error("not_found_error", "no agent named " + name), json_type);
            return {};
          }
          if (method == "GET") {
            rp.deliver(std::int32_t{200}, agent_listing(s, it->second, admin_path || who.admin()), json_type);
            return {};
          }
          if (method == "DELETE" && (admin_path || acts_as(who, it->second))) {
            self->request(s.store, store_timeout, a2a_store_atom::value, std::string("agent_delete"), name)
                .then(
                    [=](std::int32_t, const std::string&) mutable {
                      auto& agents = self->state.agents;
                      if (auto a = agents.find(name); a != agents.end()) {
                        self->send_exit(a->second.actor, caf::exit_reason::user_shutdown);
                        agents.erase(a);
                      }
                      rp.deliver(std::int32_t{200}, std::string(R"({"deleted":true})"), json_type);
                    },
                    [=](caf::error& err) mutable {
                      rp.deliver(std::int32_t{503}, admin_error("storage_error", caf::to_string(err)), json_type);
                    });
            return {};
          }
          if (method == "DELETE") {
            rp.deliver(std::int32_t{403},
                       admin_error("permission_error", "only the agent's own key or an admin deletes it"), json_type);
            return {};
          }
          rp.deliver(std::int32_t{405}, admin_error("invalid_request_error", "use GET or DELETE"), json_type);
          return {};
        }
        if (admin_path) {
          rp.deliver(std::int32_t{404}, admin_error("not_found_error", "unknown admin endpoint"), json_type);
          return {};
        }
        agent_api(self, who, method, name, sub, query, body, rp);
        return {};
      },
      [=](handed_atom, const std::string& task_id, const std::string& agent, bool pushed) {
        auto& s = self->state;
        auto it = s.tasks.find(task_id);
        if (it == s.tasks.end() || it->second.agent != agent || it->second.delivery != "queued") return;
        auto& t = it->second;
        ++t.attempts;
        if (std::find(t.tried.begin(), t.tried.end(), agent) == t.tried.end()) t.tried.push_back(agent);
        auto now = clock::unix_ms();
        if (pushed) {
          // A 2xx from the agent's URL is its acknowledgement.
          t.delivery = "acked";
          t.lease_until_ms = now + s.gw->config.a2a.lease_ms;
          metrics::a2a_delivery_seconds().observe(static_cast<double>(now - t.created_ms) / 1000.0);
          if (auto a = s.agents.find(agent); a != s.agents.end()) a->second.push_failures = 0;
        } else {
          t.delivery = "delivered";
          t.lease_until_ms = now + s.gw->config.a2a.ack_timeout_ms;
        }
        save_task(self, t);
      },
      [=](pushfail_atom, const std::string& task_id, const std::string& agent, const std::string& error) {
        auto& s = self->state;
        if (auto a = s.agents.find(agent); a != s.agents.end()) ++a->second.push_failures;
        auto it = s.tasks.find(task_id);
        if (it == s.tasks.end() || it->second.agent != agent) return;
        ++it->second.attempts;
        if (std::find(it->second.tried.begin(), it->second.tried.end(), agent) == it->second.tried.end())
          it->second.tried.push_back(agent);
        redeliver(self, it->second, "push to " + agent + " failed: " + error);
      },
      [=](remote_atom, std::int64_t waiter, std::int32_t status, const std::string& body, const std::string& error) {
        auto& s = self->state;
        auto it = s.remote_calls.find(waiter);
        if (it == s.remote_calls.end()) return;
        auto [rp, stream_id] = it->second;
        s.remote_calls.erase(it);
        if (status == 0) {
          auto text = rpc_error("null", -32603, "the remote agent is unreachable: " + error);
          if (!stream_id.empty()) s.gw->streams.remove(stream_id);
          rp.deliver(std::int32_t{502}, text, json_type);
          return;
        }
        if (!stream_id.empty() && status == 200) {
          // The remote's event stream, relayed once it ended.
          s.gw->streams.emit(stream_id, body, true);
          rp.deliver(std::int32_t{0}, std::string(), json_type);
          return;
        }
        if (!stream_id.empty()) s.gw->streams.remove(stream_id);
        rp.deliver(status, body, json_type);
      },
      [=](scan_atom, const std::string& task_id) {
        auto& s = self->state;
        if (!task_id.empty()) {
          // A blocking send's wait is over: it gets the task as it is.
          auto w = s.waiters.equal_range(task_id);
          auto t = s.tasks.find(task_id);
          for (auto it = w.first; it != w.second; ++it)
            it->second.rp.deliver(std::int32_t{200},
                                  t != s.tasks.end()
                                      ? rpc_result(it->second.rpc_id, send_result(t->second, it->second.v1))
                                      : rpc_error(it->second.rpc_id, -32001, "task not found"),
                                  json_type);
          s.waiters.erase(w.first, w.second);
          return;
        }
        // Leases: an unacknowledged delivery, or an acknowledged task without a report.
        auto now = clock::unix_ms();
        std::vector<std::string> due;
        for (auto& [id, t] : s.tasks)
          if ((t.delivery == "delivered" || t.delivery == "acked") && t.lease_until_ms && now > t.lease_until_ms)
            due.push_back(id);
        for (const auto& id : due) {
          auto& t = s.tasks.at(id);
          redeliver(self, t,
                    t.delivery == "delivered" ? "not acknowledged by " + t.agent + " in time"
                                              : "no report from " + t.agent + " within the lease");
        }
        sweep_untaken(self, now);
        // Finished tasks leave memory (the database has them).
        for (auto it = s.tasks.begin(); it != s.tasks.end();)
          if (it->second.delivery == "done" || it->second.delivery == "dead")
            it = s.tasks.erase(it);
          else
            ++it;
        self->delayed_send(self, std::chrono::milliseconds(250), scan_atom::value, std::string());
      },
  };
}
} // namespace
} // namespace detail::a2a

caf::actor spawn_a2a(caf::actor_system& sys, gateway_state& state, boost::asio::io_context& io, caf::actor store) {
  return sys.spawn(detail::a2a::bus, &state, &io, std::move(store));
}

} // namespace lowart::actors
