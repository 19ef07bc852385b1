// The HTTP side of the agent bus (the routing by path is in a2a.cpp): agent cards,
// agent listings and registration (/admin/agents, /v1/agents), and the agent-side API
// (the long poll for tasks, ack, status reports). Declared in a2a_internal.hpp.

#include "actors/bus/a2a_internal.hpp"
#include "actors/messages.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"
#include "core/secrets.hpp"
#include "net/http_client.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace lowart::actors::detail::a2a {

std::string base_url(const std::string& query) {
  // The session passes the URL clients reach lowart at first, as "base=<url>" ([server]
  // public_url, or the Host header, or a trusted proxy's forwarded host).
  if (!query.starts_with("base=")) return "http://127.0.0.1";
  return query.substr(5, query.find('&') == std::string::npos ? std::string::npos : query.find('&') - 5);
}

namespace {

/// How a client authenticates, in both protocols' terms: a lowart API key as bearer
/// token. 0.3 reads `type`/`scheme` and `security`; 1.0 reads `httpAuthSecurityScheme`
/// and `securityRequirements`.
constexpr std::string_view security_schemes =
    R"({"bearer":{"type":"http","scheme":"bearer","description":"a lowart API key: Authorization: Bearer <key>",)"
    R"("httpAuthSecurityScheme":{"scheme":"Bearer","description":"a lowart API key: Authorization: Bearer <key>"}}})";
constexpr std::string_view security_03 = R"([{"bearer":[]}])";
constexpr std::string_view security_requirements_10 = R"([{"schemes":{"bearer":{"list":[]}}}])";
} // namespace

/// The card's 1.0 interface entry (clients of protocol 1.0 read this; 0.3 ones read `url`).
std::string interface_json(const std::string& url) {
  json::object_writer w;
  w.str("url", url).str("protocolBinding", "JSONRPC").str("protocolVersion", "1.0");
  return w.done();
}

std::string agent_card(const agent_rec& a, const std::string& base) {
  json::object_writer caps;
  caps.boolean("streaming", true).boolean("pushNotifications", false).boolean("stateTransitionHistory", false);
  json::object_writer w;
  w.str("protocolVersion", "0.3.0")
      .str("name", a.name)
      .str("description", a.description.empty() ? a.name : a.description)
      .str("url", base + "/a2a/" + a.name)
      .str("preferredTransport", "JSONRPC")
      .raw("supportedInterfaces", "[" + interface_json(base + "/a2a/" + a.name) + "]")
      .str("version", "1.0.0")
      .raw("securitySchemes", security_schemes)
      .raw("security", security_03)
      .raw("securityRequirements", security_requirements_10)
      .raw("capabilities", caps.done())
      .raw("defaultInputModes", R"(["text/plain","application/json"])")
      .raw("defaultOutputModes", R"(["text/plain","application/json"])")
      .raw("skills", json::array(a.skills));
  return w.done();
}
/// May `who` act as agent `name` (pull, acknowledge, report)?
bool acts_as(const caller& who, const agent_entry& e) {
  return who.admin() || (!e.rec.key_id.empty() && e.rec.key_id == who.key_id);
}

/// The agent side: GET /v1/agents/{name}/tasks, POST .../tasks/{id}/ack|status.
void agent_api(bus_actor* self, const caller& who, const std::string& method, const std::string& name,
               const std::string& rest, const std::string& query, const std::string& body, caf::response_promise rp) {
  auto& st = self->state;
  auto it = st.agents.find(name);
  if (it == st.agents.end()) {
    rp.deliver(std::int32_t{404}, admin_error("not_found_error", "no agent named " + name), json_type);
    return;
  }
  auto& agent = it->second;
  if (!acts_as(who, agent)) {
    rp.deliver(std::int32_t{403}, admin_error("permission_error", "this key may not act as agent " + name), json_type);
    return;
  }
  agent.last_seen_ms = clock::unix_ms();
  if (rest == "tasks" && method == "GET") {
    std::int64_t wait = 0;
    if (auto p = query.find("wait_ms="); p != std::string::npos) wait = std::atoll(query.c_str() + p + 8);
    wait = std::clamp<std::int64_t>(wait, 0, st.gw->config.a2a.max_wait_ms);
    // An agent waiting in a long poll is live for as long as it waits, and seen when it ends.
    ++agent.polling;
    auto poll_done = [self, name] {
      if (auto a = self->state.agents.find(name); a != self->state.agents.end()) {
        a->second.polling = std::max(0, a->second.polling - 1);
        a->second.last_seen_ms = clock::unix_ms();
      }
    };
    self->request(agent.actor, std::chrono::milliseconds(wait + 5000), pull_atom::value, wait)
        .then(
            [=](std::int32_t status, const std::string& text, const std::string& type) mutable {
              poll_done();
              rp.deliver(status, text, type);
            },
            [=](caf::error& err) mutable {
              poll_done();
              rp.deliver(std::int32_t{503}, admin_error("unavailable", caf::to_string(err)), json_type);
            });
    return;
  }
  // tasks/{id}/ack | tasks/{id}/status
  if (rest.rfind("tasks/", 0) != 0 || method != "POST") {
    rp.deliver(std::int32_t{404}, admin_error("not_found_error", "unknown agent endpoint " + rest), json_type);
    return;
  }
  auto tail = rest.substr(6);
  auto slash = tail.find('/');
  auto task_id = tail.substr(0, slash);
  auto action = slash == std::string::npos ? std::string() : tail.substr(slash + 1);
  auto t_it = st.tasks.find(task_id);
  if (t_it == st.tasks.end()) {
    rp.deliver(std::int32_t{404}, admin_error("not_found_error", "no open task " + task_id), json_type);
    return;
  }
  auto& t = t_it->second;
  if (t.agent != name) {
    rp.deliver(std::int32_t{409}, admin_error("conflict", "task " + task_id + " was given to another agent"),
               json_type);
    return;
  }
  if (terminal(t.state)) {
    rp.deliver(std::int32_t{409}, admin_error("conflict", "task " + task_id + " is " + t.state), json_type);
    return;
  }
  auto now = clock::unix_ms();
  if (action == "ack") {
    if (t.delivery == "delivered" || t.delivery == "queued") {
      t.delivery = "acked";
      metrics::a2a_delivery_seconds().observe(static_cast<double>(now - t.created_ms) / 1000.0);
    }
    t.lease_until_ms = now + st.gw->config.a2a.lease_ms;
    save_then_answer(self, t, rp, 200, t.view(), admin_error("storage_error", "the task could not be stored"));
    return;
  }
  if (action != "status") {
    rp.deliver(std::int32_t{404}, admin_error("not_found_error", "unknown task action " + action), json_type);
    return;
  }
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view state;
  if (parser.parse(body).get(doc) != simdjson::SUCCESS || doc["state"].get_string().get(state) != simdjson::SUCCESS ||
      !known_state(state) || state == "submitted") {
    rp.deliver(std::int32_t{400},
               admin_error("invalid_request_error",
                           "send {\"state\": working | input-required | completed | failed | rejected | canceled, "
                           "\"message\"?, \"artifacts\"?}"),
               json_type);
    return;
  }
  std::string message;
  simdjson::dom::element m;
  std::string_view text;
  if (doc["message"].get_string().get(text) == simdjson::SUCCESS)
    message = agent_message(text, t.id, t.context_id);
  else if (doc["message"].get(m) == simdjson::SUCCESS && m.is_object())
    message = normalize_message(m, t.id, t.context_id);
  std::vector<std::string> new_artifacts;
  simdjson::dom::array arts;
  if (doc["artifacts"].get_array().get(arts) == simdjson::SUCCESS)
    for (auto a : arts) {
      if (!a.is_object()) continue;
      std::string_view aid;
      std::string art = simdjson::minify(a);
      if (a["artifactId"].get_string().get(aid) != simdjson::SUCCESS)
        json::set_member(art, "artifactId", json::quoted(secrets::random_uuid()));
      new_artifacts.push_back(art);
      t.artifacts.push_back(art);
    }
  bool changed = t.state != state || !message.empty();
  if (!message.empty()) t.history.push_back(message);
  if (t.delivery != "acked") {
    if (t.delivery != "waiting")
      metrics::a2a_delivery_seconds().observe(static_cast<double>(now - t.created_ms) / 1000.0);
    t.delivery = "acked";
  }
  set_state(t, std::string(state), message);
  t.lease_until_ms = now + st.gw->config.a2a.lease_ms;
  if (terminal(t.state)) t.delivery = "done";
  if (t.state == "input-required") t.delivery = "waiting";
  (void)changed;
  // Senders hear of the report, and the agent gets its 200, once it is stored.
  save_then_answer(self, t, rp, 200, t.view(), admin_error("storage_error", "the report could not be stored"),
                   [self, copy = t, new_artifacts]() mutable { notify(self, copy, true, new_artifacts); });
  if (t.delivery == "done") st.tasks.erase(t_it);
}

std::string agent_listing(const bus_state& st, const agent_entry& e, bool full) {
  json::object_writer w;
  std::int64_t queued = 0;
  for (const auto& [_, t] : st.tasks)
    if (t.agent == e.rec.name && t.delivery == "queued") ++queued;
  w.str("name", e.rec.name)
      .str("description", e.rec.description)
      .raw("skills", json::array(e.rec.skills))
      .str("delivery", !e.rec.url.empty()       ? "remote"
                       : e.rec.push_url.empty() ? "pull"
                                                : "push")
      .str("url", e.rec.url)
      .str("team_id", e.rec.team_id)
      .boolean("shared", e.rec.shared);
  if (full) w.str("push_url", e.rec.push_url).str("key_id", e.rec.key_id); // who runs it: admins only
  w.boolean("live", live(st, e))
      .num("last_seen_ms", e.last_seen_ms)
      .num("load", load_of(st, e.rec.name))
      .num("queued", queued);
  return w.done();
}

/// POST /admin/agents or /v1/agents: registers (or replaces) an agent.
void register_agent(bus_actor* self, const caller& who, const std::string& body, bool self_service,
                    caf::response_promise rp) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(body).get(doc) != simdjson::SUCCESS || !doc.is_object()) {
    rp.deliver(std::int32_t{400}, admin_error("invalid_request_error", "the body must be a JSON object"), json_type);
    return;
  }
  auto rec = agent_rec::from(doc);
  auto valid_name = [](const std::string& n) {
    if (n.empty() || n.size() > 64) return false;
    for (char c : n)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return false;
    return true;
  };
  if (!rec || !valid_name(rec->name)) {
    rp.deliver(std::int32_t{400},
               admin_error("invalid_request_error", "name is required: letters, digits, '-' and '_', at most 64"),
               json_type);
    return;
  }
  net::http_target t;
  for (const auto* u : {&rec->push_url, &rec->url})
    if (!u->empty() && !net::parse_url(*u, t)) {
      rp.deliver(std::int32_t{400}, admin_error("invalid_request_error", "push_url and url must be http(s) URLs"),
                 json_type);
      return;
    }
  if (rec->url.empty() && rec->skills.empty()) {
    rp.deliver(std::int32_t{400}, admin_error("invalid_request_error", "a local agent needs at least one skill"),
               json_type);
    return;
  }
  if (!rec->push_url.empty() && self->state.gw->config.a2a.push_secret.empty()) {
    rp.deliver(std::int32_t{400},
               admin_error("invalid_request_error", "push deliveries are signed: set [a2a] push_secret first"),
               json_type);
    return;
  }
  auto& st = self->state;
  auto refuse = [&](int status, const char* type, const std::string& message) {
    rp.deliver(std::int32_t{status}, admin_error(type, message), json_type);
  };
  auto keys = st.gw->keys.load();
  if (self_service) {
    // A key registers an agent only with the permission to; the agent is that key's and
    // its team's (never shared), and it may not take another key's name.
    auto key = keys ? keys->find_id(who.key_id) : nullptr;
    if (!who.admin() && !(key && key->has_permission("register_agents"))) {
      refuse(403, "permission_error",
             "this key may not register agents (it needs the permission register_agents, or use "
             "/admin/agents)");
      return;
    }
    if (auto it = st.agents.find(rec->name);
        it != st.agents.end() && it->second.rec.key_id != who.key_id && !who.admin()) {
      refuse(409, "conflict", "agent " + rec->name + " belongs to another key");
      return;
    }
    if (key && !keys->allows_agent(*key, rec->name)) {
      refuse(403, "permission_error", "agent name " + rec->name + " is not in this key's agent allow list");
      return;
    }
    rec->key_id = who.key_id;
    rec->team_id = key ? key->team_id : std::string();
    rec->shared = false;
  } else {
    // /admin/agents: `team` (id or name) owns it; `shared` lets every key use it (the
    // default for an agent of no team).
    simdjson::dom::element team_el;
    std::string_view team;
    if (doc["team"].get(team_el) == simdjson::SUCCESS && !team_el.is_null()) {
      if (team_el.get_string().get(team) != simdjson::SUCCESS) {
        refuse(400, "invalid_request_error", "team must be a team id or name");
        return;
      }
      const team_entry* found = keys ? keys->team(team) : nullptr;
      if (!found && keys)
        for (const auto& [_, t] : keys->team_info)
          if (t.name == team) found = &t;
      if (!found) {
        refuse(400, "invalid_request_error", "team '" + std::string(team) + "' does not exist");
        return;
      }
      rec->team_id = found->id;
    } else {
      rec->team_id.clear();
    }
    bool shared = rec->team_id.empty();
    simdjson::dom::element shared_el;
    if (doc["shared"].get(shared_el) == simdjson::SUCCESS && shared_el.get_bool().get(shared) != simdjson::SUCCESS) {
      refuse(400, "invalid_request_error", "shared must be true or false");
      return;
    }
    rec->shared = shared;
  }
  auto r = *rec;
  self->request(st.store, store_timeout, a2a_store_atom::value, std::string("agent_put"), r.to_json())
      .then(
          [=](std::int32_t status, const std::string&) mutable {
            if (status != 200 && status != 201) {
              rp.deliver(std::int32_t{500}, admin_error("storage_error", "the agent could not be stored"), json_type);
              return;
            }
            spawn_agent(self, r);
            log::info("a2a agent registered", {{"agent", r.name}, {"by", who.key_id}});
            rp.deliver(status, agent_listing(self->state, self->state.agents.at(r.name)), json_type);
          },
          [=](caf::error& err) mutable {
            rp.deliver(std::int32_t{503}, admin_error("storage_error", caf::to_string(err)), json_type);
          });
}
} // namespace lowart::actors::detail::a2a
