#pragma once
#include <caf/fwd.hpp>

namespace lowart {
struct gateway_state;
}

namespace lowart::actors {

/// The one actor that owns SQLite (WAL, embedded migrations). It answers admin key
/// operations, publishes the key snapshot after every change, and drains the usage
/// queue into the database every `storage.usage_flush_ms` (and on exit).
///
/// Protocol: (init_atom) -> std::string error ("" when the database is open);
/// (flush_atom) -> int64 rows written; key_create/key_list/key_revoke (messages.hpp).
/// Blocking: yes (SQLite), hence detached unless a test asks otherwise.
caf::actor spawn_persistence(caf::actor_system& sys, gateway_state& state, bool detached = true);

} // namespace lowart::actors
