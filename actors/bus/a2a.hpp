#pragma once
#include <caf/fwd.hpp>

namespace boost::asio {
class io_context;
}
namespace lowart {
struct gateway_state;
}

namespace lowart::actors {

/// The agent bus. One `bus` actor owns the tasks (persisted through `store`, the
/// supervisor, at every change) and spawns one `agent` actor per registered agent, whose
/// mailbox holds the tasks waiting for it: handed out on a long poll
/// (GET /v1/agents/{name}/tasks) or pushed to the agent's URL (signed). A delivered task
/// must be acknowledged within a2a.ack_timeout_ms and then reported on within
/// a2a.lease_ms, or it is delivered again (by skill: to another live agent with that
/// skill); after a2a.max_attempts deliveries it goes to the dead letters.
///
/// Senders speak A2A JSON-RPC at /a2a/{name} (and /a2a, which dispatches by the
/// message's metadata.skill): message/send (blocking or not), message/stream (SSE through
/// gateway_state::streams), tasks/get, tasks/cancel. An agent registered with a `url` is
/// a remote A2A agent: lowart forwards its JSON-RPC calls, with the caller's limits and
/// metering applied.
///
/// Protocol: (a2a_atom, method, path, query, body, key id, role, team id, user id,
/// request id) -> (int32 status, std::string body, std::string content type), where
/// status 0 means the answer went out on the stream registered under the request id.
caf::actor spawn_a2a(caf::actor_system& sys, gateway_state& state, boost::asio::io_context& io, caf::actor store);

} // namespace lowart::actors
