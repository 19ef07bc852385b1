#pragma once
#include <caf/fwd.hpp>

namespace boost::asio {
class io_context;
}
namespace lowart {
struct gateway_state;
}

namespace lowart::actors {

/// The MCP manager: one MCP server actor per registered stdio server (each owning its
/// child process through mcp_process on `ioc`, JSON-RPC 2.0 over newline-delimited stdio,
/// restart with backoff), kept in step with the mcp_table snapshot. It answers the
/// /v1/mcp/... and /mcp requests of the HTTP edge — tool listings, calls under policy
/// (auto, confirm -> approval, deny), the Streamable HTTP MCP endpoint — and runs calls
/// an admin approved. Storage goes through `store` (the supervisor, which delegates to
/// persistence).
///
/// Protocol: (mcp_atom, method, path, query, body, key id, role, team id, user id)
///   -> (int32 status, std::string body, std::string content type);
/// (mcp_sync_atom): re-read the mcp_table snapshot; (mcp_exec_atom, approval JSON): an
/// admin's decision, to run (approved) or to refuse (denied).
caf::actor spawn_mcp_manager(caf::actor_system& sys, gateway_state& state, boost::asio::io_context& ioc,
                             caf::actor store);

} // namespace lowart::actors
