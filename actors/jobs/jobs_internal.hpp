#pragma once
// What the jobs domain's files share (the public face is jobs.hpp): message atoms, the
// job actor's state, and the functions one file defines and others call: the manager and
// the views of a job (jobs.cpp), one job's life (job_actor.cpp), its exchange with a
// ComfyUI backend (job_comfyui.cpp). Internal to lowart_actors_jobs.

#include "actors/jobs/jobs_store.hpp"
#include "actors/messages.hpp"
#include "core/clock.hpp"
#include "core/log.hpp"
#include "net/http_client.hpp"
#include "net/ws_client.hpp"

#include <caf/all.hpp>
#include <simdjson.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boost::asio {
class io_context;
}
namespace lowart {
struct gateway_state;
}

namespace lowart::actors::detail::jobs {

using http_atom = caf::atom_constant<caf::atom("jobhttp")>;     ///< (tag, status, body, error, content type)
using poll_atom = caf::atom_constant<caf::atom("jobpoll")>;     ///< time to ask the backend again
using retry_atom = caf::atom_constant<caf::atom("jobretry")>;   ///< time to try handing the job over again
using cancel_atom = caf::atom_constant<caf::atom("jobcancel")>; ///< manager -> job: (cancel) -> (status, view)
using done_atom = caf::atom_constant<caf::atom("jobdone")>;     ///< job -> manager: (id, record JSON)
using hook_atom = caf::atom_constant<caf::atom("jobhook")>;     ///< time to (re)try the webhook
using sweep_atom = caf::atom_constant<caf::atom("jobsweep")>;   ///< manager: delete expired jobs
using progress_atom = caf::atom_constant<caf::atom("jobprog")>; ///< (ComfyUI /ws message text)

using reply3 = caf::result<std::int32_t, std::string, std::string>;

/// For optional fields: a missing one leaves the target as it was.
inline void optional_field(simdjson::error_code) {}
constexpr auto store_timeout = std::chrono::seconds(10);

// --- jobs.cpp: what clients see, and what both the manager and a job use ----------------------

std::string error_json(int status, std::string_view message, std::string_view code = {}, std::string_view param = {});
std::string url_encode(std::string_view s);
std::string safe_name(std::string_view name);
std::string public_view(const job_record& r);
std::vector<std::pair<std::string, std::string>> backends_of(const gateway_state& gw, const std::string& model);

// --- one job -------------------------------------------------------------------------------------

/// Jobs that chose a backend but whose POST /prompt has not been answered yet: the
/// backend's /queue does not show them, so concurrent choices count them here (else a
/// burst of jobs all see the same queue lengths and pile onto one backend).
class handovers {
public:
  static handovers& all() {
    static handovers h;
    return h;
  }
  std::int64_t pending(const std::string& backend) {
    std::lock_guard guard{mutex_};
    auto it = counts_.find(backend);
    return it == counts_.end() ? 0 : it->second;
  }
  void add(const std::string& backend, std::int64_t n) {
    std::lock_guard guard{mutex_};
    if ((counts_[backend] += n) <= 0) counts_.erase(backend);
  }

private:
  std::mutex mutex_;
  std::map<std::string, std::int64_t> counts_;
};

struct output_file {
  std::string filename, subfolder, type;
};

struct job_state {
  static inline const char* name = "job";
  gateway_state* gw = nullptr;
  boost::asio::io_context* io = nullptr;
  caf::actor manager;
  caf::actor store;
  job_record rec;
  bool cancelled = false; ///< the client cancelled: late answers are ignored
  std::vector<std::pair<std::string, std::string>> candidates;
  std::vector<std::int64_t> queue_length;
  std::string probe_errors;
  std::size_t answers = 0;
  std::int64_t unreachable_since = 0;
  std::string last_error;
  bool in_queue = false;
  std::vector<output_file> outputs;
  std::size_t fetched = 0;
  std::vector<std::string> files;
  int webhook_tries = 0;
  /// ComfyUI's /ws for this job's progress events (the job's client id is its prompt id).
  std::shared_ptr<net::ws_listener> progress_feed;
  double saved_progress = -1;
  std::int64_t saved_progress_ms = 0;
  bool handing_over = false; ///< counted in handovers until POST /prompt is answered

  ~job_state() {
    // Here, not in an attached functor: CAF 0.17 destroys the state before those run.
    if (progress_feed) progress_feed->close();
    if (handing_over) handovers::all().add(rec.deployment, -1);
  }
};

using job_actor = caf::stateful_actor<job_state>;

// job_actor.cpp: the job's life (saving, HTTP calls, the end).

void save(job_actor* self);

/// Saves, and runs `next` once the row is written (the step after must not happen
/// before the database knows about it).
template <class F> void save_then(job_actor* self, F next) {
  auto& st = self->state;
  st.rec.updated_ms = clock::unix_ms();
  self->request(st.store, store_timeout, jobs_store_atom::value, std::string("save"), st.rec.to_json(), std::string())
      .then([self, next](std::int32_t, const std::string&) mutable { next(); },
            [self, next](caf::error& err) mutable {
              log::error("job not saved; going on", {{"job", self->state.rec.id}, {"error", caf::to_string(err)}});
              next();
            });
}

void call(job_actor* self, std::string method, const std::string& url, std::string body, std::string tag,
          std::function<void(net::http_reply&)> on_io = {},
          std::vector<std::pair<std::string, std::string>> headers = {});
void fail(job_actor* self, std::string message);
void finish(job_actor* self);
caf::behavior job(job_actor* self, gateway_state* gw, boost::asio::io_context* io, caf::actor manager, caf::actor store,
                  std::string record);

// job_comfyui.cpp: the exchange with the job's ComfyUI backend.

void watch_progress(job_actor* self);
void on_progress(job_actor* self, const std::string& text);
void choose_backend(job_actor* self);

/// A backend's /queue: its length (-1 when unreadable) and where the job is in it.
struct queue_view {
  std::int64_t length = -1;
  bool running = false, pending = false;
  std::string prompt_id; ///< the job's id there (found by its prompt id or by lowart's client id)
};

queue_view read_queue(std::string_view body, const job_record* r);
void on_probe(job_actor* self, std::size_t index, int status, const std::string& body, const std::string& error);
void on_submit(job_actor* self, int status, const std::string& body, const std::string& error);
void poll_later(job_actor* self);
void on_poll_queue(job_actor* self, int status, const std::string& body, const std::string& error);
void on_history(job_actor* self, int status, const std::string& body, const std::string& error, bool by_client);
void on_view(job_actor* self, const std::string& name, int status, const std::string& body, const std::string& error,
             const std::string& type);

} // namespace lowart::actors::detail::jobs
