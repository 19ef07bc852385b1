// A2A JSON-RPC on the agent bus: the calls senders make at /a2a and /a2a/{name}
// (message/send, message/stream, tasks/get, tasks/cancel, tasks/resubscribe, in the 0.3
// and 1.0 names), remote agents' calls forwarded, metering and limits. Declared in
// a2a_internal.hpp; routed to from the bus actor in a2a.cpp.

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

namespace lowart::actors::detail::a2a {
namespace {

/// Meters one call: a usage record under route a2a, model "agent:<name>".
void meter(gateway_state& gw, const caller& who, const std::string& agent, int status, std::int64_t started_ms,
           std::string error_code = {}) {
  usage_record rec;
  rec.error_code = std::move(error_code);
  rec.request_id = who.request_id;
  rec.ts_ms = clock::unix_ms();
  rec.key_id = who.key_id;
  rec.route = "a2a";
  rec.model = "agent:" + agent;
  rec.status = status;
  rec.latency_ms = static_cast<double>(rec.ts_ms - started_ms);
  gw.usage.push(std::move(rec));
}

/// The caller's limits (rpm etc.): false (and the refusal text) when over.
bool within_limits(gateway_state& gw, const caller& who, std::string& refusal) {
  if (who.key_id == "master") return true;
  auto keys = gw.keys.load();
  if (!keys) return true;
  auto key = keys->find_id(who.key_id);
  if (!key) return true;
  key_subjects of_key(keys.get(), *key);
  const auto& subjects = of_key.list;
  if (subjects.empty()) return true;
  rate_limiter::ticket ticket;
  auto d = gw.limiter.reserve(subjects, 0, clock::unix_ms(), ticket);
  if (!d.allowed) {
    refusal = "rate limit reached for this " + d.subject + " (" + d.reason + "); retry in " +
              std::to_string(d.retry_after_s) + " s";
    return false;
  }
  gw.limiter.settle(ticket, 0, 0, clock::unix_ms());
  return true;
}
} // namespace

/// Handles one JSON-RPC call to agent `name` ("" = the gateway: dispatch by skill).
void rpc(bus_actor* self, const caller& who, const std::string& name, const std::string& body,
         caf::response_promise rp) {
  auto& st = self->state;
  auto started = clock::unix_ms();
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(body).get(doc) != simdjson::SUCCESS) {
    rp.deliver(std::int32_t{200}, rpc_error("null", -32700, "parse error: the body is not JSON"), json_type);
    return;
  }
  if (!doc.is_object()) { // a batch (or a bare value): refused as a whole, as JSON-RPC 2.0 allows
    rp.deliver(std::int32_t{200},
               rpc_error("null", -32600,
                         doc.is_array() ? "invalid request: batches are not supported; send one request per call"
                                        : "invalid request: not a JSON-RPC request object"),
               json_type);
    return;
  }
  simdjson::dom::element id_el;
  std::string rpc_id = doc["id"].get(id_el) == simdjson::SUCCESS ? simdjson::minify(id_el) : "null";
  std::string_view method, version;
  if (doc["jsonrpc"].get_string().get(version) != simdjson::SUCCESS || version != "2.0") {
    rp.deliver(std::int32_t{200}, rpc_error(rpc_id, -32600, "invalid request: jsonrpc must be \"2.0\""), json_type);
    return;
  }
  if (doc["method"].get_string().get(method) != simdjson::SUCCESS) {
    rp.deliver(std::int32_t{200}, rpc_error(rpc_id, -32600, "invalid request: method is required"), json_type);
    return;
  }
  // Protocol 1.0 names the same calls differently (and shapes their JSON differently).
  bool v1 = true;
  if (method == "SendMessage")
    method = "message/send";
  else if (method == "SendStreamingMessage")
    method = "message/stream";
  else if (method == "GetTask")
    method = "tasks/get";
  else if (method == "CancelTask")
    method = "tasks/cancel";
  else if (method == "SubscribeToTask")
    method = "tasks/resubscribe";
  else
    v1 = false;
  auto answer = [&](std::string text) mutable { rp.deliver(std::int32_t{200}, std::move(text), json_type); };
  auto params = doc["params"];
  const agent_entry* target = nullptr;
  if (!name.empty()) {
    auto it = st.agents.find(name);
    if (it == st.agents.end()) {
      rp.deliver(std::int32_t{404}, rpc_error(rpc_id, -32001, "no agent named " + name), json_type);
      return;
    }
    target = &it->second;
    if (!may_use(st, who.key_id, *target)) {
      meter(*st.gw, who, name, 403, started, "agent_not_allowed");
      rp.deliver(std::int32_t{403}, rpc_error(rpc_id, -32003, "this key may not send tasks to agent " + name),
                 json_type);
      return;
    }
  }
  std::string refusal;
  if (!within_limits(*st.gw, who, refusal)) {
    meter(*st.gw, who, name, 429, started, "rate_limit_exceeded");
    rp.deliver(std::int32_t{429}, rpc_error(rpc_id, -32000, refusal), json_type);
    return;
  }
  bool stream = method == "message/stream";
  // A remote A2A agent: lowart forwards the call (auth, limits and metering are its own).
  if (target && !target->rec.url.empty()) {
    net::http_exchange ex;
    ex.method = "POST";
    ex.body = body;
    ex.timeout =
        std::chrono::milliseconds(stream ? st.gw->config.a2a.max_wait_ms : st.gw->config.a2a.request_timeout_ms);
    if (stream) ex.headers = {{"accept", "text/event-stream"}};
    if (!net::parse_url(target->rec.url, ex.target)) {
      answer(rpc_error(rpc_id, -32603, "the remote agent's url is not valid"));
      return;
    }
    auto waiter = st.next_remote++;
    st.remote_calls.emplace(waiter, std::make_pair(rp, stream ? who.request_id : std::string()));
    auto handle = caf::actor_cast<caf::actor>(self);
    auto agent = target->rec.name;
    auto gw = st.gw;
    net::http_fetch(*st.io, std::move(ex), [handle, waiter, gw, who, agent, started](net::http_reply r) {
      meter(*gw, who, agent, r.ok ? r.status : 502, started);
      caf::anon_send(handle, remote_atom::value, waiter, static_cast<std::int32_t>(r.ok ? r.status : 0),
                     std::move(r.body), r.ok ? std::string() : r.error);
    });
    return;
  }

  if (method == "message/send" || stream) {
    simdjson::dom::element message;
    if (params["message"].get(message) != simdjson::SUCCESS || !message.is_object()) {
      answer(rpc_error(rpc_id, -32602, "invalid params: params.message is required"));
      return;
    }
    simdjson::dom::parser v03_parser; // keeps a 1.0 message, translated, alive
    std::string v03_text;
    if (v1) {
      v03_text = v1::message_to_v03(message);
      if (v03_parser.parse(v03_text).get(message) != simdjson::SUCCESS) {
        answer(rpc_error(rpc_id, -32602, "invalid params: params.message"));
        return;
      }
    }
    simdjson::dom::array parts;
    if (message["parts"].get_array().get(parts) != simdjson::SUCCESS) {
      answer(rpc_error(rpc_id, -32602, "invalid params: message.parts must be an array"));
      return;
    }
    bool blocking = true;
    optional_field(params["configuration"]["blocking"].get_bool().get(blocking));
    bool immediately = false;
    if (params["configuration"]["returnImmediately"].get_bool().get(immediately) == simdjson::SUCCESS && immediately)
      blocking = false;
    std::string_view task_id, context_id, skill;
    optional_field(message["taskId"].get_string().get(task_id));
    optional_field(message["contextId"].get_string().get(context_id));
    if (message["metadata"]["skill"].get_string().get(skill) != simdjson::SUCCESS)
      optional_field(params["metadata"]["skill"].get_string().get(skill));
    task_rec* t = nullptr;
    std::optional<task_rec> before; // a reply to input-required: the task as it was
    if (!task_id.empty()) {
      // A reply to a task that asked for input: the same agent carries on.
      auto it = st.tasks.find(std::string(task_id));
      if (it == st.tasks.end() || it->second.sender_key != who.key_id) {
        answer(rpc_error(rpc_id, -32001, "task not found (or not waiting for input): " + std::string(task_id)));
        return;
      }
      t = &it->second;
      if (t->state != "input-required") {
        answer(rpc_error(rpc_id, -32002, "task " + t->id + " is " + t->state + ", not waiting for input"));
        return;
      }
      before = *t;
      t->history.push_back(normalize_message(message, t->id, t->context_id));
      set_state(*t, "submitted");
      t->attempts = 0;
      t->tried.clear();
      t->submitted_ms = clock::unix_ms();
    } else {
      task_rec fresh;
      fresh.id = secrets::random_uuid();
      fresh.context_id = context_id.empty() ? secrets::random_uuid() : std::string(context_id);
      fresh.sender_key = who.key_id;
      fresh.created_ms = clock::unix_ms();
      fresh.submitted_ms = fresh.created_ms;
      if (target) {
        fresh.agent = target->rec.name;
      } else {
        if (skill.empty()) {
          answer(rpc_error(rpc_id, -32602, "the gateway dispatches by skill: set message.metadata.skill"));
          return;
        }
        fresh.skill = std::string(skill);
        fresh.agent = pick_agent(st, fresh.skill, {}, who.key_id);
        if (fresh.agent.empty()) {
          answer(rpc_error(rpc_id, -32602, "no agent has skill " + fresh.skill));
          return;
        }
      }
      set_state(fresh, "submitted");
      fresh.history.push_back(normalize_message(message, fresh.id, fresh.context_id));
      t = &st.tasks.emplace(fresh.id, std::move(fresh)).first->second;
      metrics::a2a_tasks("submitted").inc();
    }
    auto id_of_task = t->id;
    meter(*st.gw, who, t->agent, 200, started);
    log::info("a2a task submitted",
              {{"task", t->id}, {"agent", t->agent}, {"skill", t->skill}, {"request_id", who.request_id}});
    // Stored before an agent sees it or the sender hears of it: no agent runs a task a crash
    // then loses, and a task id a sender got is never lost. Until then it is "storing" (the
    // sweep leaves it alone); the database gets it as queued.
    t->delivery = "queued";
    t->queued_ms = clock::unix_ms();
    auto row = t->to_json();
    t->delivery = "storing";
    auto stored = [=](bool ok) mutable {
      auto& s = self->state;
      auto it = s.tasks.find(id_of_task);
      if (it == s.tasks.end() || !ok) {
        if (it != s.tasks.end() && before)
          it->second = *before; // the reply is not taken: the task waits for input as it did
        else if (it != s.tasks.end())
          s.tasks.erase(it);
        rp.deliver(std::int32_t{200}, rpc_error(rpc_id, -32603, "storage: the task could not be stored"), json_type);
        return;
      }
      auto& task = it->second;
      if (task.delivery == "storing") deliver(self, task);
      if (stream) {
        s.streams.emplace(task.id, stream_sub{who.request_id, rpc_id, v1});
        if (!s.gw->streams.emit(who.request_id, "data: " + rpc_result(rpc_id, send_result(task, v1)) + "\n\n"))
          s.streams.erase(task.id);
        rp.deliver(std::int32_t{0}, std::string(), json_type);
        return;
      }
      if (!blocking) {
        rp.deliver(std::int32_t{200}, rpc_result(rpc_id, send_result(task, v1)), json_type);
        return;
      }
      s.waiters.emplace(task.id, send_waiter{rp, rpc_id, v1});
      // Bounded: past max_wait_ms the sender gets the task as it is then.
      self->delayed_send(self, std::chrono::milliseconds(s.gw->config.a2a.max_wait_ms), scan_atom::value, task.id);
    };
    self->request(st.store, store_timeout, a2a_store_atom::value, std::string("task_put"), row)
        .then(
            [=](std::int32_t status, const std::string&) mutable {
              if (status != 200) log::error("a2a task not saved", {{"task", id_of_task}, {"status", status}});
              stored(status == 200);
            },
            [=](caf::error& err) mutable {
              log::error("a2a task not saved", {{"task", id_of_task}, {"error", caf::to_string(err)}});
              stored(false);
            });
    return;
  }
  if (method == "tasks/get" || method == "tasks/cancel" || method == "tasks/resubscribe") {
    std::string_view id;
    if (params["id"].get_string().get(id) != simdjson::SUCCESS) {
      answer(rpc_error(rpc_id, -32602, "invalid params: params.id is required"));
      return;
    }
    std::int64_t history_length = -1;
    optional_field(params["historyLength"].get_int64().get(history_length));
    auto it = st.tasks.find(std::string(id));
    if (it != st.tasks.end()) {
      auto& t = it->second;
      if (t.sender_key != who.key_id && !who.admin()) {
        answer(rpc_error(rpc_id, -32001, "task not found: " + std::string(id)));
        return;
      }
      if (method == "tasks/get") {
        answer(rpc_result(rpc_id, t.view_for(v1, history_length)));
        return;
      }
      if (method == "tasks/resubscribe") {
        st.streams.emplace(t.id, stream_sub{who.request_id, rpc_id, v1});
        st.gw->streams.emit(who.request_id, "data: " + rpc_result(rpc_id, send_result(t, v1)) + "\n\n");
        rp.deliver(std::int32_t{0}, std::string(), json_type);
        return;
      }
      if (terminal(t.state)) {
        answer(rpc_error(rpc_id, -32002, "task " + t.id + " is " + t.state + " and cannot be canceled"));
        return;
      }
      if (auto a = st.agents.find(t.agent); a != st.agents.end())
        self->send(a->second.actor, retract_atom::value, t.id);
      set_state(t, "canceled");
      t.delivery = "done";
      save_then_answer(self, t, rp, 200, rpc_result(rpc_id, t.view_for(v1)),
                       rpc_error(rpc_id, -32603, "storage: the task could not be stored"),
                       [self, copy = t]() mutable { notify(self, copy, true); });
      return;
    }
    // Finished tasks are read from the database.
    auto method_s = std::string(method);
    self->request(st.store, store_timeout, a2a_store_atom::value, std::string("task_get"), std::string(id))
        .then(
            [=](std::int32_t status, const std::string& text) mutable {
              simdjson::dom::parser p;
              simdjson::dom::element d;
              std::optional<task_rec> t;
              if (status == 200 && p.parse(text).get(d) == simdjson::SUCCESS) t = task_rec::from(d);
              if (!t || (t->sender_key != who.key_id && !who.admin())) {
                rp.deliver(std::int32_t{200}, rpc_error(rpc_id, -32001, "task not found"), json_type);
                return;
              }
              if (method_s == "tasks/cancel")
                rp.deliver(std::int32_t{200},
                           rpc_error(rpc_id, -32002, "task " + t->id + " is " + t->state + " and cannot be canceled"),
                           json_type);
              else if (method_s == "tasks/resubscribe") {
                self->state.gw->streams.emit(who.request_id,
                                             "data: " + rpc_result(rpc_id, send_result(*t, v1)) + "\n\n", true);
                rp.deliver(std::int32_t{0}, std::string(), json_type);
              } else
                rp.deliver(std::int32_t{200}, rpc_result(rpc_id, t->view_for(v1, history_length)), json_type);
            },
            [=](caf::error& err) mutable {
              rp.deliver(std::int32_t{200}, rpc_error(rpc_id, -32603, "storage: " + caf::to_string(err)), json_type);
            });
    return;
  }
  answer(rpc_error(rpc_id, -32601, "method not found: " + std::string(method)));
}
} // namespace lowart::actors::detail::a2a
