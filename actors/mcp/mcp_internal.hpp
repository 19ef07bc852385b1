#pragma once
// What the MCP manager (mcp.cpp) and the actor of one server (mcp_server.cpp) share:
// message atoms, answer types, the error body and the live board of every server.
// Internal to lowart_actors_mcp.

#include "actors/state.hpp"
#include "core/json_text.hpp"

#include <boost/asio/io_context.hpp>
#include <caf/all.hpp>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace lowart::actors::mcp_detail {

namespace asio = boost::asio;

using line_atom = caf::atom_constant<caf::atom("mcpline")>;
using errline_atom = caf::atom_constant<caf::atom("mcperr")>;
using exited_atom = caf::atom_constant<caf::atom("mcpexit")>;
using started_atom = caf::atom_constant<caf::atom("mcpstart")>;
using timeout_atom = caf::atom_constant<caf::atom("mcptmo")>;
using call_atom = caf::atom_constant<caf::atom("mcpcall")>;
using waited_atom = caf::atom_constant<caf::atom("mcpwaited")>;

using reply = caf::result<std::int32_t, std::string, std::string>;
using promise = caf::typed_response_promise<std::int32_t, std::string, std::string>;

inline constexpr const char* json_type = "application/json";
inline constexpr std::string_view separator = "__"; // server__tool

inline constexpr const char* supported_versions[] = {"2025-06-18", "2025-03-26", "2024-11-05"};

inline std::string error_json(std::string_view message, std::string_view type, std::string_view code = {}) {
  json::object_writer inner;
  inner.str("message", message).str("type", type);
  if (!code.empty()) inner.str("code", code);
  json::object_writer outer;
  outer.raw("error", inner.done());
  return outer.done();
}

/// The live view of every server, shared by the server actors (each updates its own
/// entry) and published as gateway_state::mcp_live after each change.
struct live_board {
  explicit live_board(gateway_state& g) : gw(g) {}
  gateway_state& gw;
  std::mutex mutex;
  mcp_live_table table;

  template <class F> void update(const std::string& name, F&& f) {
    std::lock_guard lock(mutex);
    f(table.servers[name]);
    gw.mcp_live.publish(std::make_shared<const mcp_live_table>(table));
  }
  void erase(const std::string& name) {
    std::lock_guard lock(mutex);
    table.servers.erase(name);
    gw.mcp_live.publish(std::make_shared<const mcp_live_table>(table));
  }
};

/// Spawns the actor of one MCP server (and, through it, its child process) from `parent`.
caf::actor spawn_server(caf::event_based_actor* parent, gateway_state* gw, asio::io_context* ioc,
                        std::shared_ptr<live_board> board, mcp_server_spec spec);

} // namespace lowart::actors::mcp_detail
