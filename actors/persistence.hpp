#pragma once
#include <caf/actor.hpp>

namespace lowart {
struct gateway_state;
}

namespace lowart::actors {

/// The one actor that owns SQLite (WAL, embedded migrations). It serves the admin API
/// (admin_service), publishes the key and catalog snapshots after every change (and
/// tells `notify` to rebuild routes when providers or models changed), and drains the
/// usage queue into the database every `storage.usage_flush_ms` (and on exit).
///
/// Protocol: (init_atom) -> std::string error ("" when the database is open);
/// (flush_atom) -> int64 rows written; (admin_atom, ...) -> (status, JSON).
/// Blocking: yes (SQLite), hence detached unless a test asks otherwise.
caf::actor spawn_persistence(caf::actor_system& sys, gateway_state& state, bool detached = true,
                             caf::actor notify = {});

} // namespace lowart::actors
