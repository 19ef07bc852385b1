#pragma once
#include <caf/fwd.hpp>

#include <functional>
#include <memory>
#include <string>

namespace lowart {
class breaker_control;
}
namespace lowart::config {
struct breaker_config;
}

namespace lowart::actors {

/// One circuit breaker per deployment. Requests record outcomes in `control` and
/// report failures and probe results here; this actor owns the transitions:
///   closed -> open      failure rate over the window >= threshold with enough requests
///   open -> half-open   after open_ms (timer)
///   half-open -> closed a probe succeeded;  half-open -> open  a probe failed
/// A probe that got no answer (the request's deadline, the client gone) is neither: it
/// gives its place back (breaker_control::return_probe) and the next request probes.
/// Every transition is logged and reflected in gateway_breaker_state{deployment}.
///
/// In a fleet, `announce` tells the other replicas when this breaker opens or closes on
/// its own evidence ("open" / "closed"); (fleet_atom, std::string mode, int64 since_ms) is
/// such a transition from another replica (opened at since_ms, unix ms; 0 = now), taken
/// for what is left of open_ms and without announcing it again.
caf::actor spawn_breaker(caf::actor_system& sys, std::string deployment_id, std::shared_ptr<breaker_control> control,
                         const config::breaker_config& settings,
                         std::function<void(const std::string& mode)> announce = {});

} // namespace lowart::actors
