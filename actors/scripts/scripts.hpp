#pragma once
#include <caf/fwd.hpp>

namespace lowart {
struct gateway_state;
}

namespace lowart::actors {

/// Owns the operator scripts directory ([scripts] dir). Loads every *.lua (compiled in a
/// throw-away sandbox first: a script that does not compile is refused, its previous
/// version stays active and the error is logged and kept for GET /admin/scripts) and
/// every *.json data file (workflow templates), publishes gateway_state::scripts, and
/// checks the directory every poll_ms for changes. Serves /admin/scripts:
///   GET    /admin/scripts            every script with its version, hooks and last error
///   GET    /admin/scripts/{name}     one, with its source
///   PUT    /admin/scripts/{name}     upload (raw body): checked, written atomically, live
///   DELETE /admin/scripts/{name}     remove the file and unload it
/// The first load happens inside spawn_scripts, so the first request sees the scripts.
/// Protocol: (admin_atom, method, path, query, body, key, role, team, user) ->
/// (int32 status, std::string body, std::string content type). Detached (file I/O).
caf::actor spawn_scripts(caf::actor_system& sys, gateway_state& state, bool detached = true);

} // namespace lowart::actors
