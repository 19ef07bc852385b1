#pragma once
#include <caf/fwd.hpp>

namespace lowart {
struct gateway_state;
}

namespace lowart::actors {

/// Owns the route table: builds it from the configuration, publishes it as a snapshot
/// and supervises one provider actor per deployment (restarted when it dies).
///
/// A provider actor owns its deployment's health view: every second it folds the
/// deployment's live counters (in flight, latency) into an EWMA and the
/// gateway_deployment_* gauges. Requests never message it; they bump the counters.
caf::actor spawn_router(caf::actor_system& sys, gateway_state& state);

} // namespace lowart::actors
