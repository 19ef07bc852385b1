#pragma once
// The MCP part of the admin API over the database: registered stdio servers (env sealed
// like provider keys), tool policies, approvals of confirm-policy calls and the session
// grants they create. Owned by the persistence actor, like admin_service; publishes the
// mcp_table snapshot the MCP actors and the policy checks read.

#include "actors/admin/admin_service.hpp"

#include <memory>
#include <string>
#include <utility>

namespace lowart::actors {

class mcp_store {
public:
  mcp_store(storage::database& db, gateway_state& state);
  ~mcp_store();

  /// True for the paths this store answers: /admin/mcp..., /admin/approvals...
  static bool owns(const std::string& path);
  /// One admin request. `mcp_changed` asks for a republish + server sync;
  /// `mcp_decided` carries the approval an admin just decided.
  admin_result handle(const admin_request& req);

  /// Operations of the MCP manager actor (status, JSON answer):
  ///   approval_create (a: {"tool","arguments","key_id","team_id","session_id"}) -> 201 {"approval_id"}
  ///   approval_result (a: id, b: completed|failed, c: result or error JSON)   -> 200
  ///   approval_get    (a: id, b: caller key id, "" for an admin)              -> {"approval_id","status",...}
  ///   audit           (a: caller key id, b: action, c: {"target","detail"})   -> 200
  std::pair<int, std::string> op(const std::string& name, const std::string& a, const std::string& b,
                                 const std::string& c);

  /// Reads servers (env opened), policies and live grants into gateway_state::mcp.
  void publish();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace lowart::actors
