// Delivery on the agent bus: the agent actor (its mailbox, long polls, signed pushes) and
// the bus's side of it: routing by skill, saving tasks, leases, retries with backoff,
// dead letters, and telling senders and streams of changes. Declared in a2a_internal.hpp;
// the bus actor that calls it is in a2a.cpp.

#include "actors/bus/a2a_internal.hpp"
#include "actors/messages.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"
#include "core/secrets.hpp"
#include "net/http_client.hpp"

#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <deque>
#include <tuple>

namespace lowart::actors::detail::a2a {
namespace {

// --- the agent actor (its mailbox) -----------------------------------------------------------------

struct agent_state {
  static inline const char* name = "agent";
  gateway_state* gw = nullptr;
  boost::asio::io_context* io = nullptr;
  caf::actor bus;
  std::string agent;
  std::string push_url;
  std::deque<std::pair<std::string, std::string>> mailbox; ///< (task id, task JSON to hand out)
  std::map<std::int64_t, caf::response_promise> waiters;   ///< long polls, oldest first
  std::int64_t next_waiter = 0;
  bool pushing = false;
};
using agent_actor = caf::stateful_actor<agent_state>;

std::string delivery_body(const std::string& agent, const std::string& task_view, std::int64_t ack_ms) {
  json::object_writer w;
  w.str("agent", agent).raw("task", task_view).num("ack_timeout_ms", ack_ms);
  return w.done();
}

void dispatch(agent_actor* self) {
  auto& st = self->state;
  while (!st.mailbox.empty() && !st.waiters.empty()) {
    auto [task_id, body] = std::move(st.mailbox.front());
    st.mailbox.pop_front();
    auto w = st.waiters.begin();
    w->second.deliver(std::int32_t{200}, std::move(body), json_type);
    st.waiters.erase(w);
    self->send(st.bus, handed_atom::value, task_id, st.agent, false);
  }
  if (st.mailbox.empty() || st.push_url.empty() || st.pushing) return;
  // Push: one delivery at a time, in order; a 2xx is the agent's acknowledgement.
  st.pushing = true;
  const auto& [task_id, body] = st.mailbox.front();
  net::http_exchange ex;
  ex.method = "POST";
  ex.body = body;
  ex.timeout = std::chrono::milliseconds(st.gw->config.a2a.request_timeout_ms);
  auto ts = std::to_string(clock::unix_seconds());
  ex.headers = {
      {"x-lowart-event", "a2a.task"},
      {"x-lowart-task-id", task_id},
      {"x-lowart-timestamp", ts},
      {"x-lowart-signature", "sha256=" + secrets::hmac_sha256_hex(st.gw->config.a2a.push_secret, ts + "." + body)}};
  auto handle = caf::actor_cast<caf::actor>(self);
  auto id = task_id;
  if (!net::parse_url(st.push_url, ex.target)) {
    self->send(self, pushed_atom::value, id, std::int32_t{0}, std::string("bad push URL"));
    return;
  }
  net::http_fetch(*st.io, std::move(ex), [handle, id](net::http_reply r) {
    caf::anon_send(handle, pushed_atom::value, id, static_cast<std::int32_t>(r.ok ? r.status : 0),
                   r.ok ? std::string() : r.error);
  });
}

caf::behavior agent_behavior(agent_actor* self, gateway_state* gw, boost::asio::io_context* io, caf::actor bus,
                             std::string name, std::string push_url) {
  auto& st = self->state;
  st.gw = gw;
  st.io = io;
  st.bus = std::move(bus);
  st.agent = std::move(name);
  st.push_url = std::move(push_url);
  return {
      [=](deliver_atom, const std::string& task_id, const std::string& body) {
        auto& s = self->state;
        for (auto& m : s.mailbox)
          if (m.first == task_id) {
            m.second = body;
            return dispatch(self);
          }
        s.mailbox.emplace_back(task_id, body);
        dispatch(self);
      },
      [=](retract_atom, const std::string& task_id) {
        auto& mb = self->state.mailbox;
        for (auto it = mb.begin(); it != mb.end(); ++it)
          if (it->first == task_id && !(self->state.pushing && it == mb.begin())) {
            mb.erase(it);
            break;
          }
      },
      [=](pull_atom, std::int64_t wait_ms) -> caf::delegated<caf::message> {
        auto& s = self->state;
        auto rp = self->make_response_promise();
        auto id = s.next_waiter++;
        s.waiters.emplace(id, rp);
        dispatch(self);
        if (s.waiters.count(id)) self->delayed_send(self, std::chrono::milliseconds(wait_ms), expire_atom::value, id);
        return {};
      },
      [=](expire_atom, std::int64_t id) {
        auto& s = self->state;
        if (auto it = s.waiters.find(id); it != s.waiters.end()) {
          it->second.deliver(std::int32_t{204}, std::string(), json_type);
          s.waiters.erase(it);
        }
      },
      [=](pushed_atom, const std::string& task_id, std::int32_t status, const std::string& error) {
        auto& s = self->state;
        s.pushing = false;
        if (!s.mailbox.empty() && s.mailbox.front().first == task_id) s.mailbox.pop_front();
        if (status >= 200 && status < 300)
          self->send(s.bus, handed_atom::value, task_id, s.agent, true);
        else
          self->send(s.bus, pushfail_atom::value, task_id, s.agent,
                     error.empty() ? "push answered " + std::to_string(status) : error);
        dispatch(self);
      },
  };
}

} // namespace

// --- the bus ---------------------------------------------------------------------------------------

void save_task(bus_actor* self, const task_rec& t) {
  self->request(self->state.store, store_timeout, a2a_store_atom::value, std::string("task_put"), t.to_json())
      .then(
          [id = t.id](std::int32_t status, const std::string&) {
            if (status != 200) log::error("a2a task not saved", {{"task", id}, {"status", status}});
          },
          [id = t.id](caf::error& err) {
            log::error("a2a task not saved", {{"task", id}, {"error", caf::to_string(err)}});
          });
}

/// Saves a task and answers `rp` only once the database has it, so that a 2xx an agent or
/// sender gets is durable (answering first lost completions to a SIGKILL right after the
/// answer, and the task ran again). `then` runs first (notifications); on a storage error
/// the answer is `failure` with status 503.
void save_then_answer(bus_actor* self, const task_rec& t, caf::response_promise rp, std::int32_t status,
                      std::string body, std::string failure, std::function<void()> then) {
  self->request(self->state.store, store_timeout, a2a_store_atom::value, std::string("task_put"), t.to_json())
      .then(
          [rp, status, body = std::move(body), failure, then, id = t.id](std::int32_t stored,
                                                                         const std::string&) mutable {
            if (stored != 200) {
              log::error("a2a task not saved", {{"task", id}, {"status", stored}});
              rp.deliver(std::int32_t{503}, failure, json_type);
              return;
            }
            if (then) then();
            rp.deliver(status, body, json_type);
          },
          [rp, failure, id = t.id](caf::error& err) mutable {
            log::error("a2a task not saved", {{"task", id}, {"error", caf::to_string(err)}});
            rp.deliver(std::int32_t{503}, failure, json_type);
          });
}

void spawn_agent(bus_actor* self, const agent_rec& rec) {
  auto& st = self->state;
  auto& e = st.agents[rec.name];
  if (e.actor) self->send_exit(e.actor, caf::exit_reason::user_shutdown);
  e.rec = rec;
  e.actor = self->spawn(agent_behavior, st.gw, st.io, caf::actor_cast<caf::actor>(self), rec.name, rec.push_url);
}

bool live(const bus_state& st, const agent_entry& e) {
  if (!e.rec.push_url.empty()) return e.push_failures < 3;
  return e.polling > 0 || clock::unix_ms() - e.last_seen_ms <= st.gw->config.a2a.live_ms;
}

std::int64_t load_of(const bus_state& st, const std::string& agent) {
  std::int64_t n = 0;
  for (const auto& [_, t] : st.tasks)
    if (t.agent == agent && !terminal(t.state) && t.delivery != "waiting") ++n;
  return n;
}

/// May the key `key_id` send tasks to agent `e`? Admins and operators may use every
/// agent; another key one that is shared, of its team, or registered by itself, and
/// only within its own and its team's agent allow lists.
bool may_use(const bus_state& st, const std::string& key_id, const agent_entry& e) {
  if (key_id == "master") return true;
  auto keys = st.gw->keys.load();
  auto key = keys ? keys->find_id(key_id) : nullptr;
  if (!key) return false;
  if (key->role == "admin" || key->role == "operator") return true;
  if (!keys->allows_agent(*key, e.rec.name)) return false;
  return e.rec.shared || (!e.rec.team_id.empty() && e.rec.team_id == key->team_id) || e.rec.key_id == key->id;
}

/// The agent a skill's task goes to: the least-loaded live agent with the skill that the
/// sender may use, preferring ones it was not delivered to yet; "" when there is none.
std::string pick_agent(const bus_state& st, const std::string& skill, const std::vector<std::string>& tried,
                       const std::string& sender_key) {
  std::string best;
  std::tuple<bool, bool, std::int64_t> best_key{};
  for (const auto& [name, e] : st.agents) {
    if (!e.rec.url.empty() || !e.rec.has_skill(skill) || !may_use(st, sender_key, e)) continue;
    bool fresh = std::find(tried.begin(), tried.end(), name) == tried.end();
    // Lower is better: not live, then already tried, then load.
    std::tuple<bool, bool, std::int64_t> key{!live(st, e), !fresh, load_of(st, name)};
    if (best.empty() || key < best_key) {
      best = name;
      best_key = key;
    }
  }
  return best;
}

void deliver(bus_actor* self, task_rec& t) {
  auto& st = self->state;
  auto it = st.agents.find(t.agent);
  if (it == st.agents.end()) return;
  t.delivery = "queued";
  t.lease_until_ms = 0;
  t.retry_at_ms = 0;
  t.queued_ms = clock::unix_ms();
  self->send(it->second.actor, deliver_atom::value, t.id,
             delivery_body(t.agent, t.view(), st.gw->config.a2a.ack_timeout_ms));
}

void set_state(task_rec& t, std::string state, std::string message) {
  t.state = std::move(state);
  t.status_message = std::move(message);
  t.status_time = iso_now();
}

void redeliver(bus_actor* self, task_rec& t, const std::string& why) {
  auto& st = self->state;
  auto& cfg = st.gw->config.a2a;
  if (auto a = st.agents.find(t.agent); a != st.agents.end()) self->send(a->second.actor, retract_atom::value, t.id);
  t.last_error = why;
  metrics::a2a_redeliveries().inc();
  if (t.attempts >= cfg.max_attempts) {
    t.delivery = "dead";
    set_state(t, "failed",
              agent_message("lowart gave up after " + std::to_string(t.attempts) + " deliveries: " + why, t.id,
                            t.context_id));
    log::warn("a2a task to the dead letters", {{"task", t.id}, {"agent", t.agent}, {"error", why}});
    metrics::a2a_tasks("dead").inc();
    save_task(self, t);
    notify(self, t, true);
    return;
  }
  // The next delivery waits: retry_backoff_ms doubling per attempt, up to
  // retry_max_backoff_ms, +-50 % jitter (an agent that is down for a moment does not
  // burn every attempt at once).
  auto backoff = static_cast<double>(cfg.retry_backoff_ms);
  for (std::int64_t i = 1; i < t.attempts && backoff < cfg.retry_max_backoff_ms; ++i)
    backoff *= 2;
  backoff = std::min<double>(backoff, cfg.retry_max_backoff_ms);
  std::uniform_real_distribution<double> jitter(0.5, 1.5);
  t.delivery = "retry";
  t.retry_at_ms = clock::unix_ms() + static_cast<std::int64_t>(backoff * jitter(st.rng));
  t.lease_until_ms = 0;
  log::info("a2a task to be delivered again", {{"task", t.id},
                                               {"agent", t.agent},
                                               {"reason", why},
                                               {"attempt", t.attempts},
                                               {"in_ms", t.retry_at_ms - clock::unix_ms()}});
  if (t.state != "submitted") set_state(t, "submitted");
  save_task(self, t);
  notify(self, t, true);
}

namespace {

/// Ends a task no agent took: failed, with the reason as its status message.
void fail_untaken(bus_actor* self, task_rec& t, const std::string& why) {
  auto& st = self->state;
  if (auto a = st.agents.find(t.agent); a != st.agents.end()) self->send(a->second.actor, retract_atom::value, t.id);
  t.last_error = why;
  t.delivery = "done";
  set_state(t, "failed", agent_message(why, t.id, t.context_id));
  log::warn("a2a task failed: no agent took it", {{"task", t.id}, {"agent", t.agent}, {"reason", why}});
  save_task(self, t);
  notify(self, t, true);
}

/// Hands a task to `agent` instead of the one it waits at (it was never handed out: no
/// attempt is spent).
void move_task(bus_actor* self, task_rec& t, const std::string& agent, const std::string& why) {
  auto& st = self->state;
  if (auto a = st.agents.find(t.agent); a != st.agents.end()) self->send(a->second.actor, retract_atom::value, t.id);
  log::info("a2a task moved to another agent", {{"task", t.id}, {"from", t.agent}, {"to", agent}, {"reason", why}});
  t.agent = agent;
  deliver(self, t);
  save_task(self, t);
  notify(self, t, true);
}

} // namespace

/// Tasks not handed out: due retries go out (by skill to the best agent then); a task
/// queued at an agent that is gone, not live, or has not taken it within handout_ms goes
/// to another live agent with its skill; past task_deadline_ms an untaken task fails.
void sweep_untaken(bus_actor* self, std::int64_t now) {
  auto& st = self->state;
  const auto& cfg = st.gw->config.a2a;
  std::vector<std::string> ids;
  for (const auto& [id, t] : st.tasks)
    if (t.delivery == "queued" || t.delivery == "retry") ids.push_back(id);
  for (const auto& id : ids) {
    auto& t = st.tasks.at(id);
    auto agent = st.agents.find(t.agent);
    bool gone = agent == st.agents.end();
    if (now - t.submitted_ms > cfg.task_deadline_ms) {
      fail_untaken(self, t,
                   "no agent took the task within " + std::to_string(cfg.task_deadline_ms / 1000) + " s" +
                       (t.last_error.empty() ? std::string() : " (last: " + t.last_error + ")"));
      continue;
    }
    if (t.delivery == "retry") {
      if (now < t.retry_at_ms) continue;
      if (!t.skill.empty())
        if (auto next = pick_agent(st, t.skill, t.tried, t.sender_key); !next.empty()) t.agent = next;
      if (st.agents.find(t.agent) == st.agents.end()) {
        if (t.skill.empty()) fail_untaken(self, t, "agent " + t.agent + " no longer exists");
        continue; // by skill, no agent now: it waits (up to the deadline) for one
      }
      log::info("a2a task delivered again", {{"task", t.id}, {"agent", t.agent}, {"attempt", t.attempts}});
      deliver(self, t);
      save_task(self, t);
      notify(self, t, true);
      continue;
    }
    // Queued. A pushing agent hands out by itself (failures come back as retries).
    if (!gone && !agent->second.rec.push_url.empty()) continue;
    bool stale = gone || !live(st, agent->second) || now - t.queued_ms > cfg.handout_ms;
    if (!stale) continue;
    if (t.skill.empty()) {
      if (gone) fail_untaken(self, t, "agent " + t.agent + " no longer exists");
      continue; // sent by name: it waits for that agent, up to the deadline
    }
    auto tried = t.tried;
    tried.push_back(t.agent);
    auto next = pick_agent(st, t.skill, tried, t.sender_key);
    if (next.empty() || next == t.agent) {
      if (gone) {
        t.delivery = "retry"; // waits for an agent with the skill, up to the deadline
        t.retry_at_ms = now + cfg.retry_backoff_ms;
        save_task(self, t);
      }
      continue;
    }
    auto& other = st.agents.at(next);
    if (!live(st, other) && !gone) continue; // nowhere better to go
    move_task(self, t, next,
              gone ? "agent " + t.agent + " was deleted"
                   : (!live(st, agent->second) ? t.agent + " is not live" : t.agent + " did not take it in time"));
  }
}

/// message/send's result: the Task (0.3), or {"task": Task} (1.0).
std::string send_result(const task_rec& t, bool v1) {
  return v1 ? "{\"task\":" + t.view_v1() + "}" : t.view();
}

/// Tells blocking senders and stream subscribers about a change.
void notify(bus_actor* self, task_rec& t, bool status_changed, const std::vector<std::string>& new_artifacts) {
  auto& st = self->state;
  bool final = terminal(t.state) || t.state == "input-required";
  auto range = st.streams.equal_range(t.id);
  for (auto it = range.first; it != range.second;) {
    const auto& sub = it->second;
    bool ok = true;
    for (const auto& a : new_artifacts) {
      json::object_writer ev;
      ev.str("taskId", t.id).str("contextId", t.context_id);
      std::string event;
      if (sub.v1) {
        ev.raw("artifact", v1::artifact(a)).boolean("lastChunk", true);
        event = "{\"artifactUpdate\":" + ev.done() + "}";
      } else {
        ev.str("kind", "artifact-update").raw("artifact", a);
        event = ev.done();
      }
      ok = ok && st.gw->streams.emit(sub.stream_id, "data: " + rpc_result(sub.rpc_id, event) + "\n\n");
    }
    if (status_changed && ok) {
      json::object_writer ev;
      ev.str("taskId", t.id).str("contextId", t.context_id);
      std::string event;
      if (sub.v1) {
        ev.raw("status", v1::status(t.state, t.status_message, t.status_time));
        event = "{\"statusUpdate\":" + ev.done() + "}";
      } else {
        ev.str("kind", "status-update").raw("status", t.status_json()).boolean("final", final);
        event = ev.done();
      }
      ok = st.gw->streams.emit(sub.stream_id, "data: " + rpc_result(sub.rpc_id, event) + "\n\n", final);
    }
    if (!ok || final)
      it = st.streams.erase(it);
    else
      ++it;
  }
  if (final) {
    auto w = st.waiters.equal_range(t.id);
    for (auto it = w.first; it != w.second; ++it)
      it->second.rp.deliver(std::int32_t{200}, rpc_result(it->second.rpc_id, send_result(t, it->second.v1)), json_type);
    st.waiters.erase(w.first, w.second);
  }
  if (terminal(t.state)) metrics::a2a_tasks(t.state).inc();
}
} // namespace lowart::actors::detail::a2a
