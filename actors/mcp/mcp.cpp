// The MCP manager: one actor over every configured MCP server (mcp_server.cpp), tool
// policies and approvals, the /mcp endpoint and /v1/mcp/*.
#include "actors/mcp/mcp.hpp"

#include "actors/mcp/jsonrpc.hpp"
#include "actors/mcp/mcp_internal.hpp"
#include "actors/mcp/mcp_process.hpp"
#include "actors/messages.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <caf/all.hpp>
#include <simdjson.h>

#include <map>
#include <mutex>

namespace lowart::actors {

namespace {

using namespace mcp_detail;

// --- the manager ------------------------------------------------------------------------

/// The answer to one call: (HTTP status, JSON body).
using done_fn = std::function<void(std::int32_t, std::string)>;

struct manager_state {
  static inline const char* name = "mcp";
  gateway_state* gw = nullptr;
  asio::io_context* ioc = nullptr;
  caf::actor store;
  std::shared_ptr<live_board> board;
  struct running {
    caf::actor handle;
    mcp_server_spec spec;
  };
  std::map<std::string, running> servers;
  std::map<std::string, std::vector<done_fn>> waiters; ///< approval id -> callers still waiting
  simdjson::dom::parser parser;

  // The server actors end with the manager (and take their children along).
  ~manager_state() {
    for (auto& [name, r] : servers)
      caf::anon_send_exit(r.handle, caf::exit_reason::user_shutdown);
  }
};

using manager_actor = caf::stateful_actor<manager_state>;

void sync(manager_actor* self) {
  auto& st = self->state;
  auto table = st.gw->mcp.load();
  std::map<std::string, const mcp_server_spec*> wanted;
  for (const auto& s : table->servers)
    wanted[s.name] = &s;
  for (auto it = st.servers.begin(); it != st.servers.end();) {
    auto w = wanted.find(it->first);
    if (w == wanted.end() || !(*w->second == it->second.spec)) {
      log::info("stopping MCP server", {{"server", it->first}});
      self->demonitor(it->second.handle);
      self->send_exit(it->second.handle, caf::exit_reason::user_shutdown);
      st.board->erase(it->first);
      it = st.servers.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [name, spec] : wanted) {
    if (st.servers.count(name)) continue;
    auto h = spawn_server(self, st.gw, st.ioc, st.board, *spec);
    self->monitor(h);
    st.servers[name] = {h, *spec};
  }
}

void store_op(manager_actor* self, std::string op, std::string a, std::string b, std::string c) {
  // No answer is awaited, but a timeout and an error handler make a lost write visible.
  self->request(self->state.store, std::chrono::seconds(10), mcp_store_atom::value, op, a, b, c)
      .then([](std::int32_t, const std::string&) {},
            [op](caf::error& err) {
              log::error("MCP storage operation failed", {{"op", op}, {"error", caf::to_string(err)}});
            });
}

void audit(manager_actor* self, const std::string& key_id, const std::string& action, const std::string& tool,
           const std::string& detail = "{}") {
  json::object_writer w;
  w.str("target", tool).raw("detail", detail);
  store_op(self, "audit", key_id, action, w.done());
}

/// Splits "server__tool"; false when there is no separator.
bool split_tool(std::string_view qualified, std::string& server, std::string& tool) {
  auto at = qualified.find(separator);
  if (at == std::string_view::npos || at == 0 || at + separator.size() >= qualified.size()) return false;
  server = std::string(qualified.substr(0, at));
  tool = std::string(qualified.substr(at + separator.size()));
  return true;
}

struct caller {
  std::string key_id;
  std::string role;
  std::string team_id;
  std::string request_id;
  bool admin() const { return key_id == "master" || role == "admin" || role == "operator"; }
};

/// Is `qualified` within the calling key's and its team's tool allow lists?
bool tool_allowed(const manager_actor* self, const caller& who, const std::string& qualified) {
  if (who.key_id == "master") return true;
  auto keys = self->state.gw->keys.load();
  auto key = keys ? keys->find_id(who.key_id) : nullptr;
  return key && keys->allows_tool(*key, qualified);
}

/// Runs a tool on its server actor.
void run_tool(manager_actor* self, const std::string& qualified, const std::string& arguments, done_fn done,
              const std::string& request_id = {}) {
  auto& st = self->state;
  std::string server, tool;
  split_tool(qualified, server, tool);
  auto it = st.servers.find(server);
  if (it == st.servers.end()) {
    done(std::int32_t{404}, error_json("no MCP server '" + server + "'", "not_found_error", "tool_not_found"));
    return;
  }
  auto timeout_ms = st.gw->config.mcp.call_timeout_ms;
  self->request(it->second.handle, std::chrono::milliseconds(timeout_ms + 2000), call_atom::value, tool, qualified,
                arguments, static_cast<std::int32_t>(timeout_ms), request_id)
      .then([done](std::int32_t status, std::string body, std::string) { done(status, std::move(body)); },
            [done](caf::error& err) {
              done(std::int32_t{502}, error_json("the MCP server actor failed: " + caf::to_string(err), "mcp_error"));
            });
}

/// Policy first, then run, ask for an approval, or refuse. With `wait_ms` > 0 a call
/// that needs approval waits that long for the decision before answering 202.
void call_under_policy(manager_actor* self, const caller& who, const std::string& qualified,
                       const std::string& arguments, const std::string& session_id, int wait_ms, done_fn done) {
  auto& st = self->state;
  std::string server, tool;
  auto live = st.gw->mcp_live.load();
  bool found = split_tool(qualified, server, tool) && live->servers.count(server) > 0;
  if (found) {
    const auto& tools = live->servers.at(server).tools;
    found = std::any_of(tools.begin(), tools.end(), [&](const auto& t) { return t.first == tool; });
  }
  if (!found) {
    done(std::int32_t{404},
         error_json("no tool '" + qualified + "' (tools are named server__tool)", "not_found_error", "tool_not_found"));
    return;
  }
  if (!tool_allowed(self, who, qualified)) {
    metrics::mcp_calls(qualified, "denied").inc();
    audit(self, who.key_id, "mcp.call_denied", qualified, R"({"reason":"not in the allow list"})");
    done(std::int32_t{403}, error_json("tool '" + qualified + "' is not in this key's or its team's tool allow list",
                                       "permission_error", "tool_not_allowed"));
    return;
  }
  auto table = st.gw->mcp.load();
  auto policy = who.key_id == "master"
                    ? std::string("auto")
                    : table->policy_for(qualified, who.key_id, who.team_id, st.gw->config.mcp.default_policy);
  if (policy == "deny") {
    metrics::mcp_calls(qualified, "denied").inc();
    audit(self, who.key_id, "mcp.call_denied", qualified);
    done(std::int32_t{403},
         error_json("tool '" + qualified + "' is denied for this key", "permission_error", "tool_denied"));
    return;
  }
  if (policy == "confirm" && !table->granted(qualified, who.key_id, session_id, clock::unix_seconds())) {
    json::object_writer a;
    a.str("tool", qualified)
        .raw("arguments", arguments.empty() ? "{}" : arguments)
        .str("key_id", who.key_id)
        .str("team_id", who.team_id)
        .str("session_id", session_id);
    self->request(st.store, std::chrono::seconds(10), mcp_store_atom::value, std::string("approval_create"), a.done(),
                  std::string(), std::string())
        .then(
            [=](std::int32_t status, const std::string& body) {
              if (status != 201) {
                done(std::int32_t{500}, error_json("cannot record the approval", "storage_error"));
                return;
              }
              metrics::mcp_calls(qualified, "pending").inc();
              if (wait_ms <= 0) {
                done(std::int32_t{202}, body);
                return;
              }
              simdjson::dom::parser p;
              std::string_view id;
              if (p.parse(body)["approval_id"].get_string().get(id) != simdjson::SUCCESS) id = "";
              auto approval = std::string(id);
              self->state.waiters[approval].push_back(done);
              self->delayed_send(self, std::chrono::milliseconds(wait_ms), waited_atom::value, approval, body);
            },
            [=](caf::error& err) {
              done(std::int32_t{503}, error_json("storage unavailable: " + caf::to_string(err), "unavailable"));
            });
    return;
  }
  audit(self, who.key_id, "mcp.call", qualified, policy == "confirm" ? R"({"via":"session_grant"})" : "{}");
  run_tool(self, qualified, arguments, std::move(done), who.request_id);
}

/// Runs (or refuses) a call an admin decided, answers whoever still waits for it, and
/// stores the result for GET /v1/mcp/calls/{id}.
void execute_decision(manager_actor* self, const std::string& approval_json) {
  simdjson::dom::parser p;
  simdjson::dom::element a;
  if (p.parse(approval_json).get(a) != simdjson::SUCCESS) return;
  auto text = [&](const char* k) {
    std::string_view v;
    return a[k].get_string().get(v) == simdjson::SUCCESS ? std::string(v) : std::string();
  };
  simdjson::dom::element args_el;
  auto id = text("approval_id"), status = text("status"), tool = text("tool"), key_id = text("key_id");
  auto arguments = a["arguments"].get(args_el) == simdjson::SUCCESS ? simdjson::minify(args_el) : std::string("{}");
  auto answer_waiters = [self, id](std::int32_t code, const std::string& body) {
    auto it = self->state.waiters.find(id);
    if (it == self->state.waiters.end()) return;
    for (auto& w : it->second)
      w(code, body);
    self->state.waiters.erase(it);
  };
  if (status != "approved") {
    metrics::mcp_calls(tool, "denied").inc();
    answer_waiters(403, error_json("the call was denied by an administrator", "permission_error", "approval_denied"));
    return;
  }
  json::object_writer d;
  d.str("approval_id", id);
  audit(self, key_id, "mcp.call", tool, R"({"via":"approval"})");
  run_tool(self, tool, arguments, [self, id, answer_waiters](std::int32_t code, std::string body) {
    store_op(self, "approval_result", id, code == 200 ? "completed" : "failed", body);
    answer_waiters(code, body);
  });
}

/// The tools a caller may use: every tool of every ready server unless its policy denies.
std::vector<std::pair<std::string, std::string>> visible_tools(manager_actor* self, const caller& who,
                                                               std::vector<std::string>* policies = nullptr) {
  auto& st = self->state;
  auto live = st.gw->mcp_live.load();
  auto table = st.gw->mcp.load();
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [server, l] : live->servers) {
    if (l.state != "ready") continue;
    for (const auto& [tool, text] : l.tools) {
      auto qualified = server + std::string(separator) + tool;
      if (!tool_allowed(self, who, qualified)) continue;
      auto policy = who.key_id == "master"
                        ? std::string("auto")
                        : table->policy_for(qualified, who.key_id, who.team_id, st.gw->config.mcp.default_policy);
      if (policy == "deny") continue;
      out.emplace_back(qualified, text);
      if (policies) policies->push_back(policy);
    }
  }
  return out;
}

/// The tool object a server listed, renamed server__tool.
std::string renamed(const std::string& tool_json, const std::string& qualified) {
  std::string t = tool_json;
  json::set_member(t, "name", json::quoted(qualified));
  return t;
}

/// The Streamable HTTP MCP endpoint: lowart as one MCP server fronting every permitted
/// tool. Answers are JSON (no SSE stream is offered; GET answers 405, as the spec allows).
void serve_mcp_endpoint(manager_actor* self, const caller& who, const std::string& method, const std::string& body,
                        promise rp) {
  auto& st = self->state;
  auto deliver = [rp](std::int32_t status, std::string text) mutable {
    rp.deliver(status, std::move(text), std::string(json_type));
  };
  if (method == "GET") return deliver(405, error_json("POST JSON-RPC messages to /mcp", "invalid_request_error"));
  if (method == "DELETE") return deliver(200, "{}");
  simdjson::dom::element msg;
  if (st.parser.parse(body).get(msg) != simdjson::SUCCESS)
    return deliver(400, R"({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}})");
  if (msg.is_array()) // MCP 2025-06-18 has no batches; JSON-RPC refuses what it does not serve with -32600
    return deliver(
        400,
        R"({"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: batches are not supported; send one message per request"}})");
  if (!msg.is_object())
    return deliver(
        400,
        R"({"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: not a JSON-RPC object"}})");
  std::string_view m, version;
  simdjson::dom::element id_el;
  std::string id = msg["id"].get(id_el) == simdjson::SUCCESS ? simdjson::minify(id_el) : std::string();
  if (msg["jsonrpc"].get_string().get(version) != simdjson::SUCCESS || version != "2.0")
    return deliver(400, "{\"jsonrpc\":\"2.0\",\"id\":" + (id.empty() ? std::string("null") : id) +
                            R"(,"error":{"code":-32600,"message":"invalid request: jsonrpc must be \"2.0\""}})");
  // Notifications and responses from the client need no answer.
  if (msg["method"].get_string().get(m) != simdjson::SUCCESS || id.empty()) return deliver(202, "");
  auto result = [id](const std::string& r) {
    json::object_writer w;
    w.str("jsonrpc", "2.0").raw("id", id).raw("result", r);
    return w.done();
  };
  auto rpc_error = [id](int code, std::string_view message) {
    json::object_writer e;
    e.num("code", code).str("message", message);
    json::object_writer w;
    w.str("jsonrpc", "2.0").raw("id", id).raw("error", e.done());
    return w.done();
  };
  if (m == "initialize") {
    std::string_view asked;
    std::string version = supported_versions[0];
    if (msg.at_pointer("/params/protocolVersion").get_string().get(asked) == simdjson::SUCCESS)
      for (auto* v : supported_versions)
        if (asked == v) version = v;
    json::object_writer r;
    r.str("protocolVersion", version)
        .raw("capabilities", R"({"tools":{"listChanged":false}})")
        .raw("serverInfo", R"({"name":"lowart","version":"0.1"})")
        .str("instructions", "The tools of every MCP server registered with this lowart gateway, named server__tool.");
    return deliver(200, result(r.done()));
  }
  if (m == "ping") return deliver(200, result("{}"));
  if (m == "tools/list") {
    std::vector<std::string> items;
    for (auto& [qualified, text] : visible_tools(self, who))
      items.push_back(renamed(text, qualified));
    return deliver(200, result("{\"tools\":" + json::array(items) + "}"));
  }
  if (m == "tools/call") {
    std::string_view name;
    if (msg.at_pointer("/params/name").get_string().get(name) != simdjson::SUCCESS)
      return deliver(200, rpc_error(-32602, "params.name is required"));
    simdjson::dom::element args;
    std::string arguments =
        msg.at_pointer("/params/arguments").get(args) == simdjson::SUCCESS ? simdjson::minify(args) : std::string("{}");
    std::string_view session;
    if (msg.at_pointer("/params/_meta/session_id").get_string().get(session) != simdjson::SUCCESS) session = "";
    call_under_policy(self, who, std::string(name), arguments, std::string(session), 0,
                      [deliver, result, rpc_error](std::int32_t status, std::string answer) mutable {
                        if (status == 200) return deliver(200, result(answer));
                        if (status == 404) return deliver(200, rpc_error(-32602, "unknown tool"));
                        // Refusals and pending approvals are tool results the model can read.
                        std::string text;
                        if (status == 202)
                          text = "This call needs a human's approval; it is pending as " + answer +
                                 ". Poll GET /v1/mcp/calls/{approval_id} for its result.";
                        else
                          text = answer;
                        json::object_writer part;
                        part.str("type", "text").str("text", text);
                        json::object_writer r;
                        r.raw("content", "[" + part.done() + "]").boolean("isError", true);
                        deliver(200, result(r.done()));
                      });
    return;
  }
  deliver(200, rpc_error(-32601, "method not found: " + std::string(m)));
}

void serve_request(manager_actor* self, const caller& who, const std::string& method, const std::string& path,
                   const std::string& body, promise rp) {
  auto& st = self->state;
  auto deliver = [rp](std::int32_t status, std::string text) mutable {
    rp.deliver(status, std::move(text), std::string(json_type));
  };
  if (path == "/mcp") return serve_mcp_endpoint(self, who, method, body, rp);
  if (path == "/v1/mcp/tools") {
    if (method != "GET") return deliver(405, error_json("use GET /v1/mcp/tools", "invalid_request_error"));
    std::vector<std::string> policies;
    auto tools = visible_tools(self, who, &policies);
    std::vector<std::string> items;
    for (std::size_t i = 0; i < tools.size(); ++i) {
      auto t = renamed(tools[i].second, tools[i].first);
      json::set_member(t, "policy", json::quoted(policies[i]));
      items.push_back(std::move(t));
    }
    return deliver(200, "{\"object\":\"list\",\"data\":" + json::array(items) + "}");
  }
  if (path == "/v1/mcp/tools/call") {
    if (method != "POST") return deliver(405, error_json("use POST /v1/mcp/tools/call", "invalid_request_error"));
    simdjson::dom::element req;
    std::string_view name, session;
    if (st.parser.parse(body).get(req) != simdjson::SUCCESS || !req.is_object())
      return deliver(400, error_json("the request body must be a JSON object", "invalid_request_error"));
    if (req["name"].get_string().get(name) != simdjson::SUCCESS || name.empty())
      return deliver(400, error_json("name is required (server__tool)", "invalid_request_error", "missing_name"));
    simdjson::dom::element args;
    std::string arguments = "{}";
    if (req["arguments"].get(args) == simdjson::SUCCESS) {
      if (!args.is_object())
        return deliver(400, error_json("arguments must be an object", "invalid_request_error", "invalid_arguments"));
      arguments = simdjson::minify(args);
    }
    if (req["session_id"].get_string().get(session) != simdjson::SUCCESS) session = "";
    std::int64_t wait_ms = 0;
    if (req["wait_ms"].get_int64().get(wait_ms) != simdjson::SUCCESS) wait_ms = 0;
    wait_ms = std::clamp<std::int64_t>(wait_ms, 0, st.gw->config.mcp.max_wait_ms);
    call_under_policy(self, who, std::string(name), arguments, std::string(session), static_cast<int>(wait_ms),
                      deliver);
    return;
  }
  if (path.rfind("/v1/mcp/calls/", 0) == 0 && path.size() > 14) {
    if (method != "GET") return deliver(405, error_json("use GET", "invalid_request_error"));
    auto id = path.substr(14);
    self->request(st.store, std::chrono::seconds(10), mcp_store_atom::value, std::string("approval_get"), id,
                  who.admin() ? std::string() : who.key_id, std::string())
        .then(
            [deliver, id](std::int32_t status, const std::string& text) mutable {
              if (status != 200) return deliver(404, error_json("no call '" + id + "'", "not_found_error"));
              // {"status", "result"?} plus what the call was.
              simdjson::dom::parser p;
              simdjson::dom::element a;
              if (p.parse(text).get(a) != simdjson::SUCCESS)
                return deliver(500, error_json("bad record", "storage_error"));
              json::object_writer w;
              std::string_view s;
              w.str("approval_id", id);
              for (const char* k : {"status", "tool", "scope"})
                if (a[k].get_string().get(s) == simdjson::SUCCESS) w.str(k, s);
              simdjson::dom::element r;
              if (a["result"].get(r) == simdjson::SUCCESS && !r.is_null()) w.raw("result", simdjson::minify(r));
              if (a["error"].get(r) == simdjson::SUCCESS && !r.is_null()) w.raw("error", simdjson::minify(r));
              deliver(200, w.done());
            },
            [deliver](caf::error& err) mutable {
              deliver(503, error_json("storage unavailable: " + caf::to_string(err), "unavailable"));
            });
    return;
  }
  deliver(404, error_json("unknown MCP endpoint " + method + " " + path, "invalid_request_error", "unknown_url"));
}

caf::behavior mcp_manager(manager_actor* self, gateway_state* gw, asio::io_context* ioc, caf::actor store) {
  auto& st = self->state;
  st.gw = gw;
  st.ioc = ioc;
  st.store = std::move(store);
  st.board = std::make_shared<live_board>(*gw);
  self->set_down_handler([=](caf::down_msg& msg) {
    // A server actor that died on its own (not stopped by sync) comes back.
    for (auto it = self->state.servers.begin(); it != self->state.servers.end(); ++it)
      if (it->second.handle.address() == msg.source) {
        log::error("MCP server actor died; restarting it",
                   {{"server", it->first}, {"reason", caf::to_string(msg.reason)}});
        self->state.servers.erase(it);
        self->delayed_send(self, std::chrono::seconds(1), mcp_sync_atom::value);
        return;
      }
  });
  sync(self);
  return {
      [=](mcp_sync_atom) { sync(self); },
      [=](mcp_exec_atom, const std::string& approval) { execute_decision(self, approval); },
      [=](waited_atom, const std::string& approval, const std::string& pending_body) {
        auto it = self->state.waiters.find(approval);
        if (it == self->state.waiters.end()) return;
        for (auto& w : it->second)
          w(std::int32_t{202}, pending_body);
        self->state.waiters.erase(it);
      },
      [=](mcp_cancel_atom a, const std::string& request_id) {
        for (auto& [name, r] : self->state.servers)
          self->send(r.handle, a, request_id);
      },
      [=](mcp_atom, const std::string& method, const std::string& path, const std::string&, const std::string& body,
          const std::string& key_id, const std::string& role, const std::string& team_id, const std::string&,
          const std::string& request_id) -> reply {
        auto rp = self->make_response_promise<std::int32_t, std::string, std::string>();
        serve_request(self, caller{key_id, role, team_id, request_id}, method, path, body, rp);
        return rp;
      },
  };
}

} // namespace

caf::actor spawn_mcp_manager(caf::actor_system& sys, gateway_state& state, asio::io_context& ioc, caf::actor store) {
  return sys.spawn(mcp_manager, &state, &ioc, std::move(store));
}

} // namespace lowart::actors
