#pragma once
// Atoms of lowart's actors (CAF 0.17: at most 10 characters). Admin operations are
// answered with (int32 status, std::string json) so the HTTP edge can pass them on.

#include <caf/atom.hpp>

namespace lowart::actors {

using init_atom = caf::atom_constant<caf::atom("init")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using restart_atom = caf::atom_constant<caf::atom("restart")>;
using status_atom = caf::atom_constant<caf::atom("status")>;
/// (report_atom, bool probe, bool success): a deployment's failure or probe outcome.
using report_atom = caf::atom_constant<caf::atom("report")>;
/// The routing configuration changed: rebuild the route table from the snapshot.
using reload_atom = caf::atom_constant<caf::atom("reload")>;

/// (admin_atom, method, path, query, body, caller key id, role, team id, user id)
///   -> (int32 status, std::string body, std::string content type): the admin API and
///   /v1/me (admin_service.hpp).
using admin_atom = caf::atom_constant<caf::atom("admin")>;

/// (mcp_atom, method, path, query, body, key id, role, team id, user id, request id)
///   -> (int32 status, std::string body, std::string content type): /v1/mcp/... and /mcp.
using mcp_atom = caf::atom_constant<caf::atom("mcp")>;
/// (mcp_cancel_atom, request id): the HTTP client of an MCP call went away.
using mcp_cancel_atom = caf::atom_constant<caf::atom("mcpcancel")>;
/// The MCP table changed (servers, policies, grants): sync the server actors.
using mcp_sync_atom = caf::atom_constant<caf::atom("mcpsync")>;
/// (mcp_exec_atom, std::string approval JSON): an admin approved or denied a call.
using mcp_exec_atom = caf::atom_constant<caf::atom("mcpexec")>;
/// (mcp_store_atom, op, a, b, c) -> (int32 status, std::string JSON): mcp_store::op.
using mcp_store_atom = caf::atom_constant<caf::atom("mcpstore")>;

/// (jobs_atom, method, path, query, body, key id, role, team id, user id, request id)
///   -> (int32 status, std::string body, std::string content type): /v1/jobs...
using jobs_atom = caf::atom_constant<caf::atom("jobs")>;
/// (jobs_store_atom, op, a, b) -> (int32 status, std::string JSON): jobs_store::op.
using jobs_store_atom = caf::atom_constant<caf::atom("jobsstore")>;

/// (a2a_atom, method, path, query, body, key id, role, team id, user id, request id)
///   -> (int32 status, std::string body, std::string content type): /a2a..., /v1/agents...,
///   /admin/agents...; status 0 means "answered on the stream named by the request id".
using a2a_atom = caf::atom_constant<caf::atom("a2a")>;
/// (a2a_store_atom, op, a) -> (int32 status, std::string JSON): a2a_store::op.
using a2a_store_atom = caf::atom_constant<caf::atom("a2astore")>;
/// (responses_store_atom, op, a, b) -> (int32 status, std::string JSON): responses_store::op.
using responses_store_atom = caf::atom_constant<caf::atom("respstore")>;
/// (topic, payload): what another replica published through the fleet (actors/limits/fleet.hpp).
using fleet_atom = caf::atom_constant<caf::atom("fleet")>;

} // namespace lowart::actors
