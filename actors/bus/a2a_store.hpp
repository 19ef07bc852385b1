#pragma once
// The agent bus in the database: agents and tasks (each a JSON body plus the columns the
// bus looks them up by). Owned by the persistence actor; the bus actor reaches it with
// (a2a_store_atom, op, a) -> (int32 status, std::string JSON).

#include <memory>
#include <string>
#include <utility>

namespace lowart::storage {
class database;
}

namespace lowart::actors {

class a2a_store {
public:
  /// `owner`: this replica in a fleet ("" on its own), stamped on the tasks it takes.
  explicit a2a_store(storage::database& db, std::string owner = {});
  ~a2a_store();

  /// agent_put (a: agent JSON with "name")   -> 201 created | 200 replaced
  /// agent_delete (a: name)                  -> 200 | 404
  /// agents ()                               -> [agent JSON]
  /// task_put (a: task JSON: id, agent, state, delivery, sender_key) -> 200
  /// task_get (a: id)                        -> task JSON | 404
  /// tasks_live ()                           -> [task JSON] not yet done (queued, delivered, acked, waiting)
  /// dead_letters ()                         -> [task JSON] given up on
  std::pair<int, std::string> op(const std::string& name, const std::string& a);

private:
  storage::database& db_;
  std::string owner_;
};

} // namespace lowart::actors
