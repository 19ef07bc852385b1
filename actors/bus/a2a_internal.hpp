#pragma once
// What the agent bus's files share (the public face is a2a.hpp): the messages between its
// actors, the agent and task records (a2a_records.cpp), the bus actor's state, and the
// functions one file defines and others call: delivery (a2a_delivery.cpp), JSON-RPC
// (a2a_rpc.cpp), the HTTP side (a2a_http.cpp); the bus actor itself is in a2a.cpp.

#include "actors/bus/a2a.hpp"

#include <caf/all.hpp>
#include <simdjson.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lowart::actors::detail::a2a {

using deliver_atom = caf::atom_constant<caf::atom("a2adeliv")>;   ///< bus -> agent: (task id, delivery JSON)
using retract_atom = caf::atom_constant<caf::atom("a2aretract")>; ///< bus -> agent: (task id)
using pull_atom = caf::atom_constant<caf::atom("a2apull")>;       ///< bus -> agent: (wait ms) -> reply3
using handed_atom = caf::atom_constant<caf::atom("a2ahanded")>;   ///< agent -> bus: (task id, agent, pushed)
using pushfail_atom = caf::atom_constant<caf::atom("a2apushf")>;  ///< agent -> bus: (task id, agent, error)
using expire_atom = caf::atom_constant<caf::atom("a2aexpire")>;   ///< agent: a long poll's time is up (waiter id)
using pushed_atom = caf::atom_constant<caf::atom("a2apushed")>;   ///< agent: (task id, status, error)
using scan_atom = caf::atom_constant<caf::atom("a2ascan")>;       ///< bus: look for expired leases
using remote_atom = caf::atom_constant<caf::atom("a2aremote")>;   ///< bus: (waiter id, status, body, error)

using reply3 = caf::result<std::int32_t, std::string, std::string>;
constexpr auto store_timeout = std::chrono::seconds(10);
const std::string json_type = "application/json";

inline void optional_field(simdjson::error_code) {}

// --- a2a_records.cpp: records, JSON-RPC envelopes, the A2A 1.0 wire form ----------------------------

std::string iso_now();
bool terminal(std::string_view state);
bool known_state(std::string_view state);
std::string rpc_result(std::string_view id_json, std::string_view result);
std::string rpc_error(std::string_view id_json, int code, std::string_view message);
std::string admin_error(std::string_view type, std::string_view message);

struct agent_rec {
  std::string name, description, push_url, url, key_id;
  std::string team_id;             ///< the owning team ("" = none): its keys may send it tasks
  bool shared = false;             ///< any key may send it tasks (an admin's choice)
  std::vector<std::string> skills; ///< skill objects as JSON ({id,name,description,tags})
  std::vector<std::string> skill_ids;

  std::string to_json() const;
  static std::optional<agent_rec> from(simdjson::dom::element o);
  bool has_skill(std::string_view skill) const;
};

struct task_rec {
  std::string id, context_id, agent, skill, sender_key;
  std::string state = "submitted";
  std::string status_message; ///< JSON Message or ""
  std::string status_time;
  std::vector<std::string> history;   ///< Message JSON
  std::vector<std::string> artifacts; ///< Artifact JSON
  /// queued (at `agent`, not yet handed out) | retry (waiting for retry_at_ms) | delivered
  /// | acked | waiting (input-required) | done | dead
  std::string delivery = "queued";
  std::int64_t attempts = 0;
  std::int64_t lease_until_ms = 0;
  std::string last_error;
  std::int64_t created_ms = 0;
  std::int64_t submitted_ms = 0;  ///< sent (or answered after input-required): task_deadline_ms counts from here
  std::int64_t queued_ms = 0;     ///< queued at its agent since: handout_ms counts from here
  std::int64_t retry_at_ms = 0;   ///< delivery "retry": when it is delivered again
  std::vector<std::string> tried; ///< agents it was delivered to

  std::string to_json() const;
  static std::optional<task_rec> from(simdjson::dom::element o);

  std::string status_json() const;
  /// The A2A Task object in the 1.0 form.
  std::string view_v1(std::int64_t history_length = -1) const;
  /// The A2A Task object (0.3 form, or 1.0 for `v1` clients).
  std::string view_for(bool v1, std::int64_t history_length = -1) const {
    return v1 ? view_v1(history_length) : view(history_length);
  }
  /// The A2A Task object.
  std::string view(std::int64_t history_length = -1) const;
};

std::string normalize_message(simdjson::dom::element m, const std::string& task_id, const std::string& context_id);
std::string agent_message(std::string_view text, const std::string& task_id, const std::string& context_id);

namespace v1 {
std::string artifact(std::string_view text);
std::string status(std::string_view state_name, const std::string& status_message, const std::string& time);
std::string message_to_v03(simdjson::dom::element m);
} // namespace v1

// --- the bus actor's state ---------------------------------------------------------------------------

struct agent_entry {
  agent_rec rec;
  caf::actor actor;
  std::int64_t last_seen_ms = 0;
  int push_failures = 0;
  int polling = 0; ///< long polls open now: an agent waiting for work is live
};

struct stream_sub {
  std::string stream_id;
  std::string rpc_id;
  bool v1 = false; ///< the subscriber speaks A2A 1.0
};

/// A blocking message/send waiting for its task to settle.
struct send_waiter {
  caf::response_promise rp;
  std::string rpc_id;
  bool v1 = false;
};

struct bus_state {
  static inline const char* name = "a2a";
  gateway_state* gw = nullptr;
  boost::asio::io_context* io = nullptr;
  caf::actor store;
  std::map<std::string, agent_entry> agents;
  std::map<std::string, task_rec> tasks;           ///< not yet done (and done ones until saved)
  std::multimap<std::string, send_waiter> waiters; ///< blocking sends
  std::multimap<std::string, stream_sub> streams;  ///< message/stream senders
  std::map<std::int64_t, std::pair<caf::response_promise, std::string>> remote_calls;
  std::int64_t next_remote = 0;
  bool loaded = false;
  /// Requests that came while agents and tasks were being read: (promise, the a2a_atom strings).
  std::vector<std::pair<caf::response_promise, std::array<std::string, 9>>> held;
  std::mt19937_64 rng{std::random_device{}()};
};
using bus_actor = caf::stateful_actor<bus_state>;

struct caller {
  std::string key_id, role, request_id;
  bool admin() const { return key_id == "master" || role == "admin" || role == "operator"; }
};

// --- a2a_delivery.cpp: the agent actor, routing by skill, leases, retries, dead letters -------------

void save_task(bus_actor* self, const task_rec& t);
void save_then_answer(bus_actor* self, const task_rec& t, caf::response_promise rp, std::int32_t status,
                      std::string body, std::string failure, std::function<void()> then = {});
void spawn_agent(bus_actor* self, const agent_rec& rec);
bool live(const bus_state& st, const agent_entry& e);
std::int64_t load_of(const bus_state& st, const std::string& agent);
bool may_use(const bus_state& st, const std::string& key_id, const agent_entry& e);
std::string pick_agent(const bus_state& st, const std::string& skill, const std::vector<std::string>& tried,
                       const std::string& sender_key);
void notify(bus_actor* self, task_rec& t, bool status_changed, const std::vector<std::string>& new_artifacts = {});
void deliver(bus_actor* self, task_rec& t);
void set_state(task_rec& t, std::string state, std::string message = {});
void redeliver(bus_actor* self, task_rec& t, const std::string& why);
void sweep_untaken(bus_actor* self, std::int64_t now);
std::string send_result(const task_rec& t, bool v1);

// --- a2a_rpc.cpp: A2A JSON-RPC (message/send, message/stream, tasks/*; remote agents) ---------------

void rpc(bus_actor* self, const caller& who, const std::string& name, const std::string& body,
         caf::response_promise rp);

// --- a2a_http.cpp: agent cards, listings, registration, the agent-side API -------------------------

std::string base_url(const std::string& query);
std::string interface_json(const std::string& url);
std::string agent_card(const agent_rec& a, const std::string& base);
bool acts_as(const caller& who, const agent_entry& e);
void agent_api(bus_actor* self, const caller& who, const std::string& method, const std::string& name,
               const std::string& rest, const std::string& query, const std::string& body, caf::response_promise rp);
std::string agent_listing(const bus_state& st, const agent_entry& e, bool full = true);
void register_agent(bus_actor* self, const caller& who, const std::string& body, bool self_service,
                    caf::response_promise rp);

} // namespace lowart::actors::detail::a2a
