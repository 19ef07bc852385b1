#pragma once
// The actor world as the rest of lowart sees it: start, ask, stop. No CAF types in
// this header, so the network code never includes CAF.

#include <functional>
#include <memory>
#include <string>

namespace lowart {
struct gateway_state;
}

namespace lowart::actors {

/// One admin or /v1/me request as the HTTP edge hands it over.
struct admin_call {
  std::string method;
  std::string path;
  std::string query;
  std::string body;
  std::string key_id; ///< "master" for the master key
  std::string role;
  std::string team_id;
  std::string user_id;
  std::string request_id; ///< MCP: names the call, should its client go away
};

class runtime {
public:
  /// Called on a CAF thread with the HTTP status, body and content type of the answer.
  using reply_fn = std::function<void(int status, std::string body, std::string content_type)>;

  explicit runtime(gateway_state& state);
  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  /// Starts the scheduler (server.actor_threads workers), the actor tree, and opens the
  /// database. Blocks (main thread only); returns an error text or "".
  std::string start();

  /// Asks the owner of `call` through a short-lived bridge actor. Never blocks; `done`
  /// runs exactly once, with 504 after 10 s or 503 when the owner is gone.
  void admin(admin_call call, reply_fn done);

  /// Asks the MCP manager (/v1/mcp/..., /mcp); like admin(), with a bound of
  /// mcp.call_timeout_ms + mcp.max_wait_ms + 5 s (a call may wait for an approval).
  void mcp(admin_call call, reply_fn done);
  /// Asks the jobs manager (/v1/jobs..., /v1/images/generations); bounded by
  /// jobs.sync_timeout_ms + 10 s (an image request without async waits for its job).
  void jobs(admin_call call, reply_fn done);
  /// Asks the agent bus (/a2a..., /v1/agents..., agent cards); bounded by
  /// a2a.max_wait_ms + 10 s (a blocking message/send or a long poll waits there). A
  /// status of 0 means the answer went out on the stream registered under the request id.
  void a2a(admin_call call, reply_fn done);
  /// A stored-responses operation (responses_store.hpp); `done` runs on a CAF thread with
  /// its status and JSON (503 when the database is not open, 504 after 10 s).
  void responses(std::string op, std::string a, std::string b, std::function<void(int, std::string)> done);
  /// Stores a response record, without waiting: a later responses() call sees it.
  void responses_save(std::string record);
  /// The client of MCP request `request_id` went away: cancel its tool call, if any.
  void mcp_cancel(const std::string& request_id);

  /// Writes the queued usage records now and waits (main thread only).
  void flush_usage();

  /// Stops every actor (persistence flushes on exit) and joins the scheduler.
  void stop();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace lowart::actors
