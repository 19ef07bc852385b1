#pragma once
// Background jobs in the database: the job record, its JSON form (how job actors and
// the persistence actor pass it), and the operations the persistence actor runs for the
// job actors. Owned by the persistence actor, like admin_service.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace lowart {
struct gateway_state;
}
namespace lowart::storage {
class database;
}

namespace lowart::actors {

struct job_record {
  std::string id;        ///< "job_..." (what clients see)
  std::string prompt_id; ///< the prompt's id at the backend: lowart's own until the backend answers with its own
  std::string key_id;
  std::string team_id;
  std::string model;
  std::string status = "queued"; ///< queued | running | succeeded | failed | cancelled
  double progress = -1;          ///< 0..1; < 0 when unknown
  std::string error;
  std::string input = "{}";    ///< JSON
  std::string workflow = "{}"; ///< JSON
  std::string deployment;
  std::string backend;
  bool submitted = false;
  std::string files = "[]"; ///< JSON [{"name","bytes","content_type"}]
  std::int64_t images = 0;
  std::string webhook;
  std::string webhook_state;
  double cost = 0;
  std::int64_t attempts = 0; ///< attempts to hand the job over (counted before each; <= submit_attempts)
  std::string request_id;
  std::int64_t created_ms = 0;
  std::int64_t updated_ms = 0;
  std::int64_t finished_ms = 0;

  bool finished() const { return status == "succeeded" || status == "failed" || status == "cancelled"; }
  std::string to_json() const;
  static std::optional<job_record> from_json(std::string_view json);
};

class jobs_store {
public:
  jobs_store(storage::database& db, gateway_state& state);
  ~jobs_store();

  /// Operations (status, JSON answer):
  ///   save    (a: record JSON)                      -> 200 {}: insert or replace the row
  ///   get     (a: id, b: caller key id, "" = any)   -> the record JSON | 404
  ///   list    (a: caller key id, "" = any; b: limit) -> [records], newest first
  ///   live    ()                                    -> [records] unfinished, or with a webhook to deliver
  ///   expire  (a: cutoff unix ms)                   -> [ids] of finished jobs deleted
  std::pair<int, std::string> op(const std::string& name, const std::string& a, const std::string& b);

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace lowart::actors
