#pragma once
#include <caf/fwd.hpp>

namespace boost::asio {
class io_context;
}
namespace lowart {
struct gateway_state;
}

namespace lowart::actors {

/// The jobs manager: serves /v1/jobs and /v1/images/generations for comfyui models,
/// builds each job's ComfyUI workflow (template + the model's Lua on_request), persists
/// the job, and spawns one job actor per live job. At start it asks `store` (the
/// supervisor, which delegates to persistence) for unfinished jobs and resumes them; a
/// timer deletes finished jobs and their files after jobs.ttl_s.
///
/// A job actor hands its prompt to the backend with the shortest queue (the backend and
/// the attempt stored first; sent under lowart's own prompt id and client id, then known by
/// the id the backend answers with, stored before anything else; so a restart never queues
/// it twice, and a job is handed over at most submit_attempts times), polls /queue and
/// /history, fetches the outputs through /view into jobs.dir/<job id>/, meters the job,
/// and calls its webhook (HMAC-SHA256 signed). Every state change is saved.
///
/// Protocol: (jobs_atom, method, path, query, body, key id, role, team id, user id,
/// request id) -> (int32 status, std::string body, std::string content type).
/// Detached: it reads and deletes files.
caf::actor spawn_jobs(caf::actor_system& sys, gateway_state& state, boost::asio::io_context& io, caf::actor store);

} // namespace lowart::actors
