#include "actors/bus/a2a.hpp"

#include "actors/admin/admin_util.hpp"
#include "actors/messages.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"
#include "core/secrets.hpp"
#include "net/http_client.hpp"

#include <boost/asio/io_context.hpp>
#include <caf/all.hpp>
#include <simdjson.h>

#include <array>
#include <ctime>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>

namespace lowart::actors {
namespace {

using deliver_atom = caf::atom_constant<caf::atom("a2adeliv")>;   ///< bus -> agent: (task id, delivery JSON)
using retract_atom = caf::atom_constant<caf::atom("a2aretract")>; ///< bus -> agent: (task id)
using pull_atom = caf::atom_constant<caf::atom("a2apull")>;       ///< bus -> agent: (wait ms) -> reply3
using handed_atom = caf::atom_constant<caf::atom("a2ahanded")>;   ///< agent -> bus: (task id, agent, pushed)
using pushfail_atom = caf::atom_constant<caf::atom("a2apushf")>;  ///< agent -> bus: (task id, agent, error)
using expire_atom = caf::atom_constant<caf::atom("a2aexpire")>;   ///< agent: a long poll's time is up (waiter id)
using pushed_atom = caf::atom_constant<caf::atom("a2apushed")>;   ///< agent: (task id, status, error)
using scan_atom = caf::atom_constant<caf::atom("a2ascan")>;       ///< bus: look for expired leases
using remote_atom = caf::atom_constant<caf::atom("a2aremote")>;   ///< bus: (waiter id, status, body, error)

using reply3 = caf::result<std::int32_t, std::string, std::string>;
constexpr auto store_timeout = std::chrono::seconds(10);
const std::string json_type = "application/json";

inline void optional_field(simdjson::error_code) {}

std::string iso_now() {
  auto ms = clock::unix_ms();
  std::time_t s = ms / 1000;
  std::tm tm{};
  ::gmtime_r(&s, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

bool terminal(std::string_view state) {
  return state == "completed" || state == "failed" || state == "canceled" || state == "rejected";
}
bool known_state(std::string_view state) {
  return terminal(state) || state == "submitted" || state == "working" || state == "input-required" ||
         state == "auth-required";
}

std::string rpc_result(std::string_view id_json, std::string_view result) {
  std::string out = R"({"jsonrpc":"2.0","id":)";
  out += id_json.empty() ? std::string_view("null") : id_json;
  out += R"(,"result":)";
  out += result;
  out += '}';
  return out;
}
std::string rpc_error(std::string_view id_json, int code, std::string_view message) {
  json::object_writer e;
  e.num("code", code).str("message", message);
  std::string out = R"({"jsonrpc":"2.0","id":)";
  out += id_json.empty() ? std::string_view("null") : id_json;
  out += R"(,"error":)";
  out += e.done();
  out += '}';
  return out;
}
/// The admin API's error body (admin_util's envelope).
std::string admin_error(std::string_view type, std::string_view message) {
  return admin_util::error(400, type, message).body;
}

// --- records ---------------------------------------------------------------------------------------

struct agent_rec {
  std::string name, description, push_url, url, key_id;
  std::string team_id;             ///< the owning team ("" = none): its keys may send it tasks
  bool shared = false;             ///< any key may send it tasks (an admin's choice)
  std::vector<std::string> skills; ///< skill objects as JSON ({id,name,description,tags})
  std::vector<std::string> skill_ids;

  std::string to_json() const {
    json::object_writer w;
    w.str("name", name)
        .str("description", description)
        .raw("skills", json::array(skills))
        .str("push_url", push_url)
        .str("url", url)
        .str("key_id", key_id)
        .str("team_id", team_id)
        .boolean("shared", shared);
    return w.done();
  }
  static std::optional<agent_rec> from(simdjson::dom::element o) {
    agent_rec a;
    std::string_view s;
    if (o["name"].get_string().get(s) != simdjson::SUCCESS) return std::nullopt;
    a.name = std::string(s);
    if (o["description"].get_string().get(s) == simdjson::SUCCESS) a.description = std::string(s);
    if (o["push_url"].get_string().get(s) == simdjson::SUCCESS) a.push_url = std::string(s);
    if (o["url"].get_string().get(s) == simdjson::SUCCESS) a.url = std::string(s);
    if (o["key_id"].get_string().get(s) == simdjson::SUCCESS) a.key_id = std::string(s);
    if (o["team_id"].get_string().get(s) == simdjson::SUCCESS) a.team_id = std::string(s);
    // Stored before teams owned agents: usable by every key, as it was then.
    bool shared = a.team_id.empty();
    if (o["shared"].get_bool().get(shared) != simdjson::SUCCESS) shared = a.team_id.empty();
    a.shared = shared;
    simdjson::dom::array skills;
    if (o["skills"].get_array().get(skills) == simdjson::SUCCESS)
      for (auto sk : skills) {
        // A skill is a name, or an A2A AgentSkill object.
        json::object_writer w;
        std::string_view id, nm, desc;
        if (sk.get_string().get(id) == simdjson::SUCCESS) {
          w.str("id", id).str("name", id).str("description", id).raw("tags", "[]");
        } else if (sk["id"].get_string().get(id) == simdjson::SUCCESS) {
          if (sk["name"].get_string().get(nm) != simdjson::SUCCESS) nm = id;
          if (sk["description"].get_string().get(desc) != simdjson::SUCCESS) desc = nm;
          simdjson::dom::element tags;
          w.str("id", id)
              .str("name", nm)
              .str("description", desc)
              .raw("tags",
                   sk["tags"].get(tags) == simdjson::SUCCESS && tags.is_array() ? simdjson::minify(tags) : "[]");
        } else {
          continue;
        }
        a.skill_ids.emplace_back(id);
        a.skills.push_back(w.done());
      }
    return a;
  }
  bool has_skill(std::string_view skill) const {
    for (const auto& s : skill_ids)
      if (s == skill) return true;
    return false;
  }
};

struct task_rec {
  std::string id, context_id, agent, skill, sender_key;
  std::string state = "submitted";
  std::string status_message; ///< JSON Message or ""
  std::string status_time;
  std::vector<std::string> history;   ///< Message JSON
  std::vector<std::string> artifacts; ///< Artifact JSON
  /// queued (at `agent`, not yet handed out) | retry (waiting for retry_at_ms) | delivered
  /// | acked | waiting (input-required) | done | dead
  std::string delivery = "queued";
  std::int64_t attempts = 0;
  std::int64_t lease_until_ms = 0;
  std::string last_error;
  std::int64_t created_ms = 0;
  std::int64_t submitted_ms = 0;  ///< sent (or answered after input-required): task_deadline_ms counts from here
  std::int64_t queued_ms = 0;     ///< queued at its agent since: handout_ms counts from here
  std::int64_t retry_at_ms = 0;   ///< delivery "retry": when it is delivered again
  std::vector<std::string> tried; ///< agents it was delivered to

  std::string to_json() const {
    json::object_writer w;
    w.str("id", id)
        .str("context_id", context_id)
        .str("agent", agent)
        .str("skill", skill)
        .str("sender_key", sender_key)
        .str("state", state)
        .raw("status_message", status_message.empty() ? "null" : status_message)
        .str("status_time", status_time)
        .raw("history", json::array(history))
        .raw("artifacts", json::array(artifacts))
        .str("delivery", delivery)
        .num("attempts", attempts)
        .num("lease_until_ms", lease_until_ms)
        .str("last_error", last_error)
        .num("created_ms", created_ms)
        .num("submitted_ms", submitted_ms)
        .num("queued_ms", queued_ms)
        .num("retry_at_ms", retry_at_ms)
        .raw("tried", json::string_array(tried));
    return w.done();
  }
  static std::optional<task_rec> from(simdjson::dom::element o) {
    task_rec t;
    auto str = [&](const char* k, std::string& out) {
      std::string_view s;
      if (o[k].get_string().get(s) == simdjson::SUCCESS) out = std::string(s);
    };
    str("id", t.id);
    if (t.id.empty()) return std::nullopt;
    str("context_id", t.context_id);
    str("agent", t.agent);
    str("skill", t.skill);
    str("sender_key", t.sender_key);
    str("state", t.state);
    str("status_time", t.status_time);
    str("delivery", t.delivery);
    str("last_error", t.last_error);
    simdjson::dom::element e;
    if (o["status_message"].get(e) == simdjson::SUCCESS && !e.is_null()) t.status_message = simdjson::minify(e);
    simdjson::dom::array arr;
    if (o["history"].get_array().get(arr) == simdjson::SUCCESS)
      for (auto m : arr)
        t.history.push_back(simdjson::minify(m));
    if (o["artifacts"].get_array().get(arr) == simdjson::SUCCESS)
      for (auto m : arr)
        t.artifacts.push_back(simdjson::minify(m));
    if (o["tried"].get_array().get(arr) == simdjson::SUCCESS)
      for (auto m : arr) {
        std::string_view s;
        if (m.get_string().get(s) == simdjson::SUCCESS) t.tried.emplace_back(s);
      }
    optional_field(o["attempts"].get_int64().get(t.attempts));
    optional_field(o["lease_until_ms"].get_int64().get(t.lease_until_ms));
    optional_field(o["created_ms"].get_int64().get(t.created_ms));
    t.submitted_ms = t.created_ms;
    optional_field(o["submitted_ms"].get_int64().get(t.submitted_ms));
    optional_field(o["queued_ms"].get_int64().get(t.queued_ms));
    optional_field(o["retry_at_ms"].get_int64().get(t.retry_at_ms));
    return t;
  }

  std::string status_json() const {
    json::object_writer s;
    s.str("state", state);
    if (!status_message.empty()) s.raw("message", status_message);
    s.str("timestamp", status_time);
    return s.done();
  }
  /// The A2A Task object in the 1.0 form.
  std::string view_v1(std::int64_t history_length = -1) const;
  /// The A2A Task object (0.3 form, or 1.0 for `v1` clients).
  std::string view_for(bool v1, std::int64_t history_length = -1) const {
    return v1 ? view_v1(history_length) : view(history_length);
  }
  /// The A2A Task object.
  std::string view(std::int64_t history_length = -1) const {
    std::vector<std::string> h = history;
    if (history_length >= 0 && static_cast<std::size_t>(history_length) < h.size())
      h.erase(h.begin(), h.end() - history_length);
    json::object_writer meta;
    meta.str("agent", agent);
    if (!skill.empty()) meta.str("skill", skill);
    json::object_writer w;
    w.str("kind", "task")
        .str("id", id)
        .str("contextId", context_id)
        .raw("status", status_json())
        .raw("history", json::array(h))
        .raw("artifacts", json::array(artifacts))
        .raw("metadata", meta.done());
    return w.done();
  }
};

/// A message as the task holds it: taskId, contextId and kind filled in.
std::string normalize_message(simdjson::dom::element m, const std::string& task_id, const std::string& context_id) {
  json::object_writer w;
  bool has_id = false;
  simdjson::dom::object obj;
  if (m.get_object().get(obj) == simdjson::SUCCESS)
    for (auto f : obj) {
      if (f.key == "taskId" || f.key == "contextId" || f.key == "kind") continue;
      if (f.key == "messageId") has_id = true;
      w.raw(f.key, simdjson::minify(f.value));
    }
  if (!has_id) w.str("messageId", secrets::random_uuid());
  w.str("taskId", task_id).str("contextId", context_id).str("kind", "message");
  return w.done();
}

/// An agent's message from plain text.
std::string agent_message(std::string_view text, const std::string& task_id, const std::string& context_id) {
  json::object_writer part;
  part.str("kind", "text").str("text", text);
  json::object_writer w;
  w.str("role", "agent")
      .raw("parts", "[" + part.done() + "]")
      .str("messageId", secrets::random_uuid())
      .str("taskId", task_id)
      .str("contextId", context_id)
      .str("kind", "message");
  return w.done();
}

// --- A2A 1.0 wire form ------------------------------------------------------------------------------
// Tasks are kept in the 0.3 form (kind fields, lower-case states, "user"/"agent"); clients
// that speak protocol 1.0 (SendMessage, ...; the current @a2a-js/sdk) get and send the 1.0
// form: no kind fields, TASK_STATE_* and ROLE_* enums, parts keyed by their content.
namespace v1 {

std::string state(std::string_view s) {
  std::string out = "TASK_STATE_";
  for (char c : s)
    out += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string part(simdjson::dom::element p) {
  json::object_writer w;
  std::string_view kind, text;
  optional_field(p["kind"].get_string().get(kind));
  simdjson::dom::element v;
  if (p["text"].get_string().get(text) == simdjson::SUCCESS) {
    w.str("text", text);
  } else if (p["data"].get(v) == simdjson::SUCCESS) {
    w.raw("data", simdjson::minify(v));
  } else if (p["file"].get(v) == simdjson::SUCCESS) {
    std::string_view uri, bytes, mime, name;
    if (v["uri"].get_string().get(uri) == simdjson::SUCCESS)
      w.str("url", uri);
    else if (v["bytes"].get_string().get(bytes) == simdjson::SUCCESS)
      w.str("raw", bytes);
    if (v["mimeType"].get_string().get(mime) == simdjson::SUCCESS) w.str("mediaType", mime);
    if (v["name"].get_string().get(name) == simdjson::SUCCESS) w.str("filename", name);
  }
  if (p["metadata"].get(v) == simdjson::SUCCESS) w.raw("metadata", simdjson::minify(v));
  return w.done();
}

std::string parts(simdjson::dom::element m) {
  std::vector<std::string> out;
  simdjson::dom::array arr;
  if (m["parts"].get_array().get(arr) == simdjson::SUCCESS)
    for (auto p : arr)
      out.push_back(part(p));
  return json::array(out);
}

std::string message(std::string_view text) {
  simdjson::dom::parser parser;
  simdjson::dom::element m;
  if (parser.parse(text).get(m) != simdjson::SUCCESS) return "null";
  json::object_writer w;
  std::string_view s;
  for (const char* k : {"messageId", "contextId", "taskId"})
    if (m[k].get_string().get(s) == simdjson::SUCCESS) w.str(k, s);
  w.str("role", m["role"].get_string().get(s) == simdjson::SUCCESS && s == "agent" ? "ROLE_AGENT" : "ROLE_USER");
  w.raw("parts", parts(m));
  simdjson::dom::element v;
  if (m["metadata"].get(v) == simdjson::SUCCESS) w.raw("metadata", simdjson::minify(v));
  return w.done();
}

std::string artifact(std::string_view text) {
  simdjson::dom::parser parser;
  simdjson::dom::element a;
  if (parser.parse(text).get(a) != simdjson::SUCCESS) return "null";
  json::object_writer w;
  std::string_view s;
  for (const char* k : {"artifactId", "name", "description"})
    if (a[k].get_string().get(s) == simdjson::SUCCESS) w.str(k, s);
  w.raw("parts", parts(a));
  return w.done();
}

std::string status(std::string_view state_name, const std::string& status_message, const std::string& time) {
  json::object_writer w;
  w.str("state", state(state_name));
  if (!status_message.empty()) w.raw("message", message(status_message));
  w.str("timestamp", time);
  return w.done();
}

/// A 1.0 message from a client -> the 0.3 form the bus keeps (kind fields, roles, parts).
std::string message_to_v03(simdjson::dom::element m) {
  json::object_writer w;
  std::string_view s;
  for (const char* k : {"messageId", "contextId", "taskId"})
    if (m[k].get_string().get(s) == simdjson::SUCCESS) w.str(k, s);
  w.str("role", m["role"].get_string().get(s) == simdjson::SUCCESS && s == "ROLE_AGENT" ? "agent" : "user");
  std::vector<std::string> out;
  simdjson::dom::array arr;
  if (m["parts"].get_array().get(arr) == simdjson::SUCCESS)
    for (auto p : arr) {
      json::object_writer pw;
      simdjson::dom::element v;
      std::string_view text;
      if (p["text"].get_string().get(text) == simdjson::SUCCESS) {
        pw.str("kind", "text").str("text", text);
      } else if (p["data"].get(v) == simdjson::SUCCESS) {
        pw.str("kind", "data").raw("data", simdjson::minify(v));
      } else {
        json::object_writer file;
        std::string_view x;
        if (p["url"].get_string().get(x) == simdjson::SUCCESS) file.str("uri", x);
        if (p["raw"].get_string().get(x) == simdjson::SUCCESS) file.str("bytes", x);
        if (p["mediaType"].get_string().get(x) == simdjson::SUCCESS) file.str("mimeType", x);
        if (p["filename"].get_string().get(x) == simdjson::SUCCESS) file.str("name", x);
        pw.str("kind", "file").raw("file", file.done());
      }
      if (p["metadata"].get(v) == simdjson::SUCCESS) pw.raw("metadata", simdjson::minify(v));
      out.push_back(pw.done());
    }
  w.raw("parts", json::array(out));
  simdjson::dom::element v;
  if (m["metadata"].get(v) == simdjson::SUCCESS) w.raw("metadata", simdjson::minify(v));
  w.str("kind", "message");
  return w.done();
}

} // namespace v1

std::string task_rec::view_v1(std::int64_t history_length) const {
  std::vector<std::string> h;
  auto first = history_length >= 0 && static_cast<std::size_t>(history_length) < history.size()
                   ? history.size() - static_cast<std::size_t>(history_length)
                   : 0;
  for (std::size_t i = first; i < history.size(); ++i)
    h.push_back(v1::message(history[i]));
  std::vector<std::string> a;
  for (const auto& art : artifacts)
    a.push_back(v1::artifact(art));
  json::object_writer meta;
  meta.str("agent", agent);
  if (!skill.empty()) meta.str("skill", skill);
  json::object_writer w;
  w.str("id", id)
      .str("contextId", context_id)
      .raw("status", v1::status(state, status_message, status_time))
      .raw("artifacts", json::array(a))
      .raw("history", json::array(h))
      .raw("metadata", meta.done());
  return w.done();
}

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

// --- the bus ---------------------------------------------------------------------------------------

struct agent_entry {
  agent_rec rec;
  caf::actor actor;
  std::int64_t last_seen_ms = 0;
  int push_failures = 0;
  int polling = 0; ///< long polls open now: an agent waiting for work is live
};

struct stream_sub {
  std::string stream_id;
  std::string rpc_id;
  bool v1 = false; ///< the subscriber speaks A2A 1.0
};

/// A blocking message/send waiting for its task to settle.
struct send_waiter {
  caf::response_promise rp;
  std::string rpc_id;
  bool v1 = false;
};

struct bus_state {
  static inline const char* name = "a2a";
  gateway_state* gw = nullptr;
  boost::asio::io_context* io = nullptr;
  caf::actor store;
  std::map<std::string, agent_entry> agents;
  std::map<std::string, task_rec> tasks;           ///< not yet done (and done ones until saved)
  std::multimap<std::string, send_waiter> waiters; ///< blocking sends
  std::multimap<std::string, stream_sub> streams;  ///< message/stream senders
  std::map<std::int64_t, std::pair<caf::response_promise, std::string>> remote_calls;
  std::int64_t next_remote = 0;
  bool loaded = false;
  /// Requests that came while agents and tasks were being read: (promise, the a2a_atom strings).
  std::vector<std::pair<caf::response_promise, std::array<std::string, 9>>> held;
  std::mt19937_64 rng{std::random_device{}()};
};
using bus_actor = caf::stateful_actor<bus_state>;

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
                      std::string body, std::string failure, std::function<void()> then = {}) {
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

void notify(bus_actor* self, task_rec& t, bool status_changed, const std::vector<std::string>& new_artifacts = {});

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

void set_state(task_rec& t, std::string state, std::string message = {}) {
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

struct caller {
  std::string key_id, role, request_id;
  bool admin() const { return key_id == "master" || role == "admin" || role == "operator"; }
};

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

std::string base_url(const std::string& query) {
  // The session passes the URL clients reach lowart at first, as "base=<url>" ([server]
  // public_url, or the Host header, or a trusted proxy's forwarded host).
  if (!query.starts_with("base=")) return "http://127.0.0.1";
  return query.substr(5, query.find('&') == std::string::npos ? std::string::npos : query.find('&') - 5);
}

/// How a client authenticates, in both protocols' terms: a lowart API key as bearer
/// token. 0.3 reads `type`/`scheme` and `security`; 1.0 reads `httpAuthSecurityScheme`
/// and `securityRequirements`.
constexpr std::string_view security_schemes =
    R"({"bearer":{"type":"http","scheme":"bearer","description":"a lowart API key: Authorization: Bearer <key>",)"
    R"("httpAuthSecurityScheme":{"scheme":"Bearer","description":"a lowart API key: Authorization: Bearer <key>"}}})";
constexpr std::string_view security_03 = R"([{"bearer":[]}])";
constexpr std::string_view security_requirements_10 = R"([{"schemes":{"bearer":{"list":[]}}}])";

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

std::string agent_listing(const bus_state& st, const agent_entry& e, bool full = true) {
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

caf::actor spawn_a2a(caf::actor_system& sys, gateway_state& state, boost::asio::io_context& io, caf::actor store) {
  return sys.spawn(bus, &state, &io, std::move(store));
}

} // namespace lowart::actors
