// The agent bus's records and wire forms: agent and task records (their JSON in the
// database and the A2A Task views), JSON-RPC envelopes, and the A2A 1.0 translation.
// Declared in a2a_internal.hpp; the bus actor is in a2a.cpp.

#include "actors/admin/admin_util.hpp"
#include "actors/bus/a2a_internal.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "core/secrets.hpp"

#include <cctype>
#include <cstdio>
#include <ctime>

namespace lowart::actors::detail::a2a {

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

std::string agent_rec::to_json() const {
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
std::optional<agent_rec> agent_rec::from(simdjson::dom::element o) {
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
            .raw("tags", sk["tags"].get(tags) == simdjson::SUCCESS && tags.is_array() ? simdjson::minify(tags) : "[]");
      } else {
        continue;
      }
      a.skill_ids.emplace_back(id);
      a.skills.push_back(w.done());
    }
  return a;
}
bool agent_rec::has_skill(std::string_view skill) const {
  for (const auto& s : skill_ids)
    if (s == skill) return true;
  return false;
}

std::string task_rec::to_json() const {
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
std::optional<task_rec> task_rec::from(simdjson::dom::element o) {
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

std::string task_rec::status_json() const {
  json::object_writer s;
  s.str("state", state);
  if (!status_message.empty()) s.raw("message", status_message);
  s.str("timestamp", status_time);
  return s.done();
}
/// The A2A Task object.
std::string task_rec::view(std::int64_t history_length) const {
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

namespace {

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

} // namespace

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
} // namespace lowart::actors::detail::a2a
