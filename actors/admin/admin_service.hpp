#pragma once
// The admin API's logic over the database: users, teams, keys, providers, models,
// audit — and the /v1/me views of a plain user. Pure request -> answer; the
// persistence actor owns the instance (and thus the database) and publishes the
// snapshots that an answer says have changed. The HTTP edge has already checked the
// role table (rbac.hpp); finer rules (scoping, role escalation) are checked here.

#include <memory>
#include <string>

namespace lowart {
struct gateway_state;
}
namespace lowart::storage {
class database;
}

namespace lowart::actors {

struct admin_caller {
  std::string key_id; ///< "master" for the master key
  std::string role;
  std::string team_id;
  std::string user_id;
};

struct admin_request {
  std::string method; ///< GET, POST, PUT, PATCH, DELETE
  std::string path;   ///< "/admin/keys/key_1", "/v1/me/keys"
  std::string query;  ///< raw query string without '?'
  std::string body;
  admin_caller who;
};

struct admin_result {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  bool keys_changed = false;    ///< republish the key snapshot
  bool catalog_changed = false; ///< republish providers/models and rebuild routes
  bool prices_changed = false;  ///< republish the price table
  bool mcp_changed = false;     ///< republish the MCP table and sync the MCP servers
  std::string mcp_decided{};    ///< JSON of an approval an admin just approved or denied
};

class admin_service {
public:
  admin_service(storage::database& db, gateway_state& state);
  ~admin_service();

  admin_result handle(const admin_request& req);

  /// Reads every active key (for the key snapshot).
  void publish_keys();
  /// Reads API-made providers and models, opening provider keys (for the catalog).
  /// Throws when a sealed key cannot be opened (wrong or missing encryption key).
  void publish_catalog();

  /// Reads every price (for the price snapshot).
  void publish_prices();
  /// Seeds the limiter with what each key and team spent in its current budget period.
  void seed_budgets();

  /// Number of sealed values in the database (start-up check without a key).
  int sealed_values();
  /// Re-seals every provider key with the keyring's sealing key; returns how many.
  int rotate();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace lowart::actors
