#pragma once
#include <caf/fwd.hpp>

#include <chrono>

namespace lowart {
struct gateway_state;
}

namespace lowart::actors {

/// Owns lowart.toml at run time. Every `interval` it checks the file's modification
/// time and size; once a change has stopped changing (two checks alike) it loads and
/// validates the file (with the environment, as at start). A valid file becomes the new
/// `routing` snapshot and `reload_atom` goes to `notify` (the supervisor, which passes it
/// to the router); an invalid one is logged and the running configuration stays. Server
/// and storage settings need a restart. Detached (it reads a file) unless a test asks
/// otherwise.
caf::actor spawn_config(caf::actor_system& sys, gateway_state& state, caf::actor notify,
                        std::chrono::milliseconds interval, bool detached = true);

} // namespace lowart::actors
