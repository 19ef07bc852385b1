#pragma once
#include <caf/fwd.hpp>

namespace lowart {
struct gateway_state;
}

namespace lowart::actors {

/// Root of the actor tree. Spawns persistence and router, monitors them, restarts a
/// child that dies abnormally (with exponential backoff, capped at 5 s), and is the
/// one address the HTTP edge talks to: admin messages are delegated to their owner.
caf::actor spawn_supervisor(caf::actor_system& sys, gateway_state& state);

} // namespace lowart::actors
