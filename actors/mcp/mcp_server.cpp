// The actor of one stdio MCP server: starts and restarts its child process, speaks
// JSON-RPC over its pipes (initialize, tools/list, tools/call) and keeps the server's
// entry on the live board. The manager that routes calls to it is in mcp.cpp.
#include "actors/mcp/jsonrpc.hpp"
#include "actors/mcp/mcp_internal.hpp"
#include "actors/mcp/mcp_process.hpp"
#include "actors/messages.hpp"
#include "core/clock.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"

#include <boost/asio/post.hpp>
#include <simdjson.h>

#include <map>

namespace lowart::actors::mcp_detail {

namespace {

// --- one server -------------------------------------------------------------------------

struct pending_request {
  enum class kind { init, list, call } what = kind::call;
  promise rp;
  std::string tool; ///< server__tool, for calls
  std::chrono::steady_clock::time_point start;
  std::string request_id; ///< the HTTP request it serves (for cancellation)
};

struct server_state {
  static inline const char* name = "mcp_server";
  gateway_state* gw = nullptr;
  asio::io_context* ioc = nullptr;
  std::shared_ptr<live_board> board;
  mcp_server_spec spec;
  /// The child of the current generation; read and written only on the io thread.
  std::shared_ptr<std::shared_ptr<mcp_process>> slot;
  std::uint64_t gen = 0;
  std::int64_t next_id = 1;
  std::map<std::int64_t, pending_request> pending;
  std::string mode = "starting";
  int restarts = 0;
  std::chrono::milliseconds backoff{500};
  std::vector<std::pair<std::string, std::string>> listing; ///< tools/list pages so far
  simdjson::dom::parser parser;
  metrics::gauge up;

  // Whatever ends the actor (unregister, shutdown, a crash) ends its child and process
  // group. Done here rather than in an attached functor: CAF 0.17 runs those after the
  // state is gone.
  ~server_state() {
    up.set(0);
    if (slot && ioc)
      asio::post(*ioc, [slot = slot] {
        if (*slot) (*slot)->stop(2000);
      });
  }
};

using server_actor = caf::stateful_actor<server_state>;

void publish_live(server_actor* self, std::string last_error = {}) {
  auto& st = self->state;
  st.up.set(st.mode == "ready" ? 1 : 0);
  st.board->update(st.spec.name, [&](mcp_server_live& l) {
    l.state = st.mode;
    l.restarts = st.restarts;
    if (!last_error.empty()) l.last_error = std::move(last_error);
  });
}

void write_line(server_actor* self, std::string line) {
  asio::post(*self->state.ioc, [slot = self->state.slot, line = std::move(line)]() mutable {
    if (*slot) (*slot)->write(std::move(line));
  });
}

void stop_child(server_actor* self) {
  if (!self->state.slot) return;
  asio::post(*self->state.ioc, [slot = self->state.slot] {
    if (*slot) (*slot)->stop(2000);
  });
}

std::int64_t send_request(server_actor* self, std::string_view method, std::string_view params,
                          pending_request::kind what, int timeout_ms, promise rp = {}, std::string tool = {},
                          std::string request_id = {}) {
  auto& st = self->state;
  auto id = st.next_id++;
  json::object_writer w;
  w.str("jsonrpc", "2.0").num("id", id).str("method", method);
  if (!params.empty()) w.raw("params", params);
  write_line(self, w.done());
  st.pending[id] =
      pending_request{what, std::move(rp), std::move(tool), std::chrono::steady_clock::now(), std::move(request_id)};
  self->delayed_send(self, std::chrono::milliseconds(timeout_ms), timeout_atom::value, id);
  return id;
}

void launch(server_actor* self) {
  auto& st = self->state;
  auto gen = ++st.gen;
  st.slot = std::make_shared<std::shared_ptr<mcp_process>>();
  st.mode = "starting";
  st.listing.clear();
  publish_live(self);
  mcp_process::spec spec{st.spec.command, st.spec.args, st.spec.env, st.spec.inherit_env, st.spec.cwd};
  auto me = caf::actor_cast<caf::actor>(self);
  asio::post(*st.ioc, [me, gen, spec, slot = st.slot, ioc = st.ioc] {
    mcp_process::callbacks cb;
    cb.on_stdout = [me, gen](std::string l) { caf::anon_send(me, line_atom::value, gen, std::move(l)); };
    cb.on_stderr = [me, gen](std::string l) { caf::anon_send(me, errline_atom::value, gen, std::move(l)); };
    cb.on_exit = [me, gen](int code) { caf::anon_send(me, exited_atom::value, gen, static_cast<std::int32_t>(code)); };
    std::string error;
    *slot = mcp_process::start(*ioc, spec, std::move(cb), error);
    caf::anon_send(me, started_atom::value, gen, static_cast<std::int32_t>(*slot ? (*slot)->pid() : 0), error);
  });
}

void schedule_restart(server_actor* self, const std::string& why) {
  auto& st = self->state;
  st.mode = "restarting";
  publish_live(self, why);
  log::warn("MCP server down; restarting",
            {{"server", st.spec.name}, {"reason", why}, {"backoff_ms", st.backoff.count()}});
  self->delayed_send(self, st.backoff, restart_atom::value, st.gen);
  st.backoff = std::min(st.backoff * 2, std::chrono::milliseconds(st.gw->config.mcp.restart_max_backoff_ms));
}

void fail_pending(server_actor* self, std::string_view why) {
  for (auto& [id, p] : self->state.pending) {
    if (p.what != pending_request::kind::call) continue;
    metrics::mcp_calls(p.tool, "error").inc();
    p.rp.deliver(std::int32_t{502}, error_json(why, "mcp_error", "server_unavailable"), std::string(json_type));
  }
  self->state.pending.clear();
}

void list_tools(server_actor* self, std::string_view cursor) {
  std::string params = "{}";
  if (!cursor.empty()) {
    json::object_writer w;
    w.str("cursor", cursor);
    params = w.done();
  }
  send_request(self, "tools/list", params, pending_request::kind::list, self->state.gw->config.mcp.init_timeout_ms);
}

void on_response(server_actor* self, std::int64_t id, simdjson::dom::element msg) {
  auto& st = self->state;
  auto it = st.pending.find(id);
  if (it == st.pending.end()) return; // timed out already
  auto p = std::move(it->second);
  st.pending.erase(it);
  simdjson::dom::element result, error;
  bool ok = msg["result"].get(result) == simdjson::SUCCESS;
  bool failed = msg["error"].get(error) == simdjson::SUCCESS;
  switch (p.what) {
  case pending_request::kind::init: {
    std::string_view version;
    if (!ok || result["protocolVersion"].get_string().get(version) != simdjson::SUCCESS) {
      stop_child(self);
      publish_live(self, "initialize failed: " + (failed ? simdjson::minify(error) : std::string("no result")));
      return;
    }
    bool known = false;
    for (auto* v : supported_versions)
      known = known || version == v;
    if (!known) {
      stop_child(self);
      publish_live(self, "unsupported MCP protocol version " + std::string(version));
      return;
    }
    st.board->update(st.spec.name, [&](mcp_server_live& l) { l.protocol_version = std::string(version); });
    write_line(self, R"({"jsonrpc":"2.0","method":"notifications/initialized"})");
    st.listing.clear();
    list_tools(self, {});
    return;
  }
  case pending_request::kind::list: {
    simdjson::dom::array tools;
    if (ok && result["tools"].get_array().get(tools) == simdjson::SUCCESS)
      for (auto t : tools) {
        std::string_view name;
        if (t["name"].get_string().get(name) == simdjson::SUCCESS)
          st.listing.emplace_back(std::string(name), simdjson::minify(t));
      }
    std::string_view cursor;
    if (ok && result["nextCursor"].get_string().get(cursor) == simdjson::SUCCESS && !cursor.empty()) {
      list_tools(self, cursor);
      return;
    }
    auto tools_now = std::move(st.listing);
    st.listing.clear();
    auto count = static_cast<std::int64_t>(tools_now.size());
    st.mode = "ready";
    st.backoff = std::chrono::milliseconds(500);
    st.board->update(st.spec.name, [&](mcp_server_live& l) {
      l.tools = std::move(tools_now);
      l.last_error.clear();
    });
    publish_live(self);
    log::info("MCP server ready", {{"server", st.spec.name}, {"tools", count}});
    return;
  }
  case pending_request::kind::call: {
    auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - p.start).count();
    metrics::mcp_call_duration(p.tool).observe(seconds);
    if (ok) {
      bool tool_error = false;
      if (result["isError"].get_bool().get(tool_error) != simdjson::SUCCESS) tool_error = false;
      metrics::mcp_calls(p.tool, tool_error ? "tool_error" : "ok").inc();
      p.rp.deliver(std::int32_t{200}, simdjson::minify(result), std::string(json_type));
      return;
    }
    std::int64_t code = 0;
    std::string_view message = "the MCP server answered with an error";
    if (failed) {
      if (error["code"].get_int64().get(code) != simdjson::SUCCESS) code = 0;
      if (error["message"].get_string().get(message) != simdjson::SUCCESS)
        message = "the MCP server answered with an error";
    }
    metrics::mcp_calls(p.tool, "error").inc();
    p.rp.deliver(std::int32_t{code == -32602 || code == -32601 ? 400 : 502},
                 error_json(message, "mcp_error", std::to_string(code)), std::string(json_type));
    return;
  }
  }
}

void on_line(server_actor* self, const std::string& line) {
  auto& st = self->state;
  if (line.empty()) return;
  auto msg = read_jsonrpc(st.parser, line);
  switch (msg.what) {
  case jsonrpc_message::kind::invalid:
    log::warn("MCP server wrote a line that is not JSON-RPC",
              {{"server", st.spec.name}, {"line", line.substr(0, 200)}});
    return;
  case jsonrpc_message::kind::response:
    if (msg.numeric_id) on_response(self, msg.id, msg.doc);
    return;
  case jsonrpc_message::kind::request: {
    // A request from the server: answer what a gateway can, refuse the rest.
    json::object_writer w;
    w.str("jsonrpc", "2.0").raw("id", msg.raw_id);
    if (msg.method == "ping")
      w.raw("result", "{}");
    else if (msg.method == "roots/list")
      w.raw("result", R"({"roots":[]})");
    else
      w.raw("error", R"({"code":-32601,"message":"not supported by lowart"})");
    write_line(self, w.done());
    return;
  }
  case jsonrpc_message::kind::notification:
    if (msg.method == "notifications/tools/list_changed" && st.mode == "ready") {
      st.listing.clear();
      list_tools(self, {});
    } else if (msg.method == "notifications/message") {
      simdjson::dom::element params;
      log::info(
          "MCP server message",
          {{"server", st.spec.name},
           {"params", msg.doc["params"].get(params) == simdjson::SUCCESS ? simdjson::minify(params) : std::string()}});
    }
    return;
  }
}

caf::behavior mcp_server(server_actor* self, gateway_state* gw, asio::io_context* ioc,
                         std::shared_ptr<live_board> board, mcp_server_spec spec) {
  auto& st = self->state;
  st.gw = gw;
  st.ioc = ioc;
  st.board = std::move(board);
  st.spec = std::move(spec);
  st.up = metrics::mcp_server_up(st.spec.name);
  launch(self);
  return {
      [=](started_atom, std::uint64_t gen, std::int32_t pid, const std::string& error) {
        auto& st = self->state;
        if (gen != st.gen) return;
        if (pid == 0) {
          log::error("MCP server did not start", {{"server", st.spec.name}, {"error", error}});
          schedule_restart(self, error);
          return;
        }
        st.board->update(st.spec.name, [&](mcp_server_live& l) { l.pid = pid; });
        log::info("MCP server started", {{"server", st.spec.name}, {"pid", static_cast<std::int64_t>(pid)}});
        json::object_writer params;
        params.str("protocolVersion", supported_versions[0])
            .raw("capabilities", "{}")
            .raw("clientInfo", R"({"name":"lowart","version":"0.1"})");
        send_request(self, "initialize", params.done(), pending_request::kind::init, st.gw->config.mcp.init_timeout_ms);
      },
      [=](line_atom, std::uint64_t gen, const std::string& line) {
        if (gen == self->state.gen) on_line(self, line);
      },
      [=](errline_atom, std::uint64_t gen, const std::string& line) {
        if (gen == self->state.gen) log::info("MCP server stderr", {{"server", self->state.spec.name}, {"line", line}});
      },
      [=](exited_atom, std::uint64_t gen, std::int32_t code) {
        auto& st = self->state;
        if (gen != st.gen) return;
        st.board->update(st.spec.name, [&](mcp_server_live& l) { l.pid = 0; });
        fail_pending(self, "the MCP server exited (code " + std::to_string(code) + ")");
        ++st.restarts;
        metrics::mcp_restarts(st.spec.name).inc();
        schedule_restart(self, "exited with code " + std::to_string(code));
      },
      [=](restart_atom, std::uint64_t gen) {
        if (gen == self->state.gen) launch(self);
      },
      [=](timeout_atom, std::int64_t id) {
        auto& st = self->state;
        auto it = st.pending.find(id);
        if (it == st.pending.end()) return;
        auto p = std::move(it->second);
        st.pending.erase(it);
        if (p.what == pending_request::kind::call) {
          // Tell the server to stop working on it, and the caller that it took too long.
          json::object_writer params;
          params.num("requestId", id).str("reason", "timeout");
          json::object_writer note;
          note.str("jsonrpc", "2.0").str("method", "notifications/cancelled").raw("params", params.done());
          write_line(self, note.done());
          metrics::mcp_calls(p.tool, "timeout").inc();
          p.rp.deliver(std::int32_t{504}, error_json("the tool call timed out", "timeout_error"),
                       std::string(json_type));
          return;
        }
        // The handshake or listing hung: start over.
        stop_child(self);
        publish_live(self, "the server did not answer " +
                               std::string(p.what == pending_request::kind::init ? "initialize" : "tools/list") +
                               " in time");
      },
      [=](mcp_cancel_atom, const std::string& request_id) {
        // The caller went away: tell the server to stop, and free the call.
        auto& st = self->state;
        for (auto it = st.pending.begin(); it != st.pending.end(); ++it) {
          if (it->second.what != pending_request::kind::call || it->second.request_id != request_id) continue;
          json::object_writer params;
          params.num("requestId", it->first).str("reason", "the client disconnected");
          json::object_writer note;
          note.str("jsonrpc", "2.0").str("method", "notifications/cancelled").raw("params", params.done());
          write_line(self, note.done());
          metrics::mcp_calls(it->second.tool, "cancelled").inc();
          log::info("MCP call cancelled: its client went away",
                    {{"server", st.spec.name}, {"tool", it->second.tool}, {"request_id", request_id}});
          it->second.rp.deliver(std::int32_t{499}, error_json("the client went away", "cancelled"),
                                std::string(json_type));
          st.pending.erase(it);
          return;
        }
      },
      [=](call_atom, const std::string& tool, const std::string& qualified, const std::string& arguments,
          std::int32_t timeout_ms, const std::string& request_id) -> reply {
        auto& st = self->state;
        if (st.mode != "ready") {
          metrics::mcp_calls(qualified, "error").inc();
          return {std::int32_t{503},
                  error_json("MCP server '" + st.spec.name + "' is " + st.mode + "; try again shortly", "unavailable",
                             "server_unavailable"),
                  std::string(json_type)};
        }
        auto rp = self->make_response_promise<std::int32_t, std::string, std::string>();
        json::object_writer params;
        params.str("name", tool).raw("arguments", arguments.empty() ? "{}" : arguments);
        send_request(self, "tools/call", params.done(), pending_request::kind::call, timeout_ms, rp, qualified,
                     request_id);
        return rp;
      },
  };
}

} // namespace

caf::actor spawn_server(caf::event_based_actor* parent, gateway_state* gw, asio::io_context* ioc,
                        std::shared_ptr<live_board> board, mcp_server_spec spec) {
  return parent->spawn(mcp_server, gw, ioc, std::move(board), std::move(spec));
}

} // namespace lowart::actors::mcp_detail
