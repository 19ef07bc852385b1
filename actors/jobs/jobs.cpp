#include "actors/jobs/jobs.hpp"

#include "actors/jobs/jobs_store.hpp"
#include "actors/messages.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "core/json_text.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"
#include "core/secrets.hpp"
#include "net/errors.hpp"
#include "net/http_client.hpp"
#include "net/ws_client.hpp"
#include "scripting/hooks.hpp"

#include <boost/asio/io_context.hpp>
#include <caf/all.hpp>
#include <simdjson.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>

namespace lowart::actors {
namespace {

namespace fs = std::filesystem;

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

std::string error_json(int status, std::string_view message, std::string_view code = {}, std::string_view param = {}) {
  return net::error_body(net::api_format::openai, net::kind_of_status(status), message, code, param);
}

std::string url_encode(std::string_view s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

/// A file name safe to create in a job's directory (no separators, not hidden).
std::string safe_name(std::string_view name) {
  std::string out;
  for (char c : name)
    out += std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' ? c : '_';
  while (!out.empty() && out.front() == '.')
    out.erase(0, 1);
  if (out.empty()) out = "output";
  return out.substr(0, 120);
}

std::string content_type_of(std::string_view name) {
  auto dot = name.rfind('.');
  auto ext = dot == std::string_view::npos ? std::string{} : std::string(name.substr(dot + 1));
  for (auto& c : ext)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (ext == "png") return "image/png";
  if (ext == "jpg" || ext == "jpeg") return "image/jpeg";
  if (ext == "webp") return "image/webp";
  if (ext == "gif") return "image/gif";
  if (ext == "mp4") return "video/mp4";
  if (ext == "webm") return "video/webm";
  if (ext == "wav") return "audio/wav";
  if (ext == "mp3") return "audio/mpeg";
  if (ext == "json") return "application/json";
  if (ext == "txt") return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

/// What clients see of a job.
std::string public_view(const job_record& r) {
  json::object_writer w;
  w.str("id", r.id).str("object", "job").str("model", r.model).str("status", r.status);
  if (r.progress >= 0)
    w.real("progress", r.progress);
  else
    w.raw("progress", "null");
  if (r.error.empty())
    w.raw("error", "null");
  else
    w.str("error", r.error);
  std::vector<std::string> files;
  simdjson::dom::parser parser;
  simdjson::dom::array arr;
  if (parser.parse(r.files).get_array().get(arr) == simdjson::SUCCESS)
    for (auto f : arr) {
      std::string_view name, type;
      std::int64_t bytes = 0;
      if (f["name"].get_string().get(name) != simdjson::SUCCESS) continue;
      optional_field(f["content_type"].get_string().get(type));
      optional_field(f["bytes"].get_int64().get(bytes));
      json::object_writer fw;
      fw.str("name", name)
          .str("url", "/v1/jobs/" + r.id + "/files/" + url_encode(name))
          .num("bytes", bytes)
          .str("content_type", type);
      files.push_back(fw.done());
    }
  w.raw("files", json::array(files)).num("created_at", r.created_ms / 1000);
  if (r.finished_ms)
    w.num("finished_at", r.finished_ms / 1000);
  else
    w.raw("finished_at", "null");
  if (!r.webhook.empty()) w.str("webhook_state", r.webhook_state);
  if (r.cost > 0) w.real("cost", r.cost);
  return w.done();
}

/// The comfyui deployments of `model`: (provider/model id, base URL).
std::vector<std::pair<std::string, std::string>> backends_of(const gateway_state& gw, const std::string& model) {
  std::vector<std::pair<std::string, std::string>> out;
  auto routes = gw.routes.load();
  if (!routes) return out;
  auto it = routes->models.find(model);
  if (it == routes->models.end()) return out;
  for (const auto& d : it->second.deployments)
    if (d->settings->kind == "comfyui") out.emplace_back(d->id, d->settings->base_url);
  return out;
}

/// lowart's own prompt id of a job: the UUID its id is made of (build_job makes both from
/// one UUID). Every hand-over sends it as prompt_id and client_id; `rec.prompt_id` is the
/// id the backend answered with, which is the same id unless the backend names prompts
/// itself (ComfyUI before client ids were honoured, proxies in front of ComfyUI). The
/// client id stays in the backend's queue and history entries (extra_data.client_id), so
/// a prompt whose answer was never stored is still found by it.
std::string own_prompt_id(const job_record& r) {
  std::string_view hex = r.id;
  if (hex.size() != 36 || hex.substr(0, 4) != "job_") return r.prompt_id;
  hex.remove_prefix(4);
  std::string out;
  out.reserve(36);
  for (std::size_t i = 0; i < hex.size(); ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) out += '-';
    out += hex[i];
  }
  return out;
}

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

void save(job_actor* self) {
  auto& st = self->state;
  st.rec.updated_ms = clock::unix_ms();
  self->request(st.store, store_timeout, jobs_store_atom::value, std::string("save"), st.rec.to_json(), std::string())
      .then(
          [id = st.rec.id](std::int32_t status, const std::string&) {
            if (status != 200) log::error("job not saved", {{"job", id}, {"status", status}});
          },
          [id = st.rec.id](caf::error& err) {
            log::error("job not saved", {{"job", id}, {"error", caf::to_string(err)}});
          });
}

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

/// One HTTP exchange on the background io thread; its answer comes back as http_atom
/// with `tag`. `on_io` may look at (and shrink) the reply on the io thread first.
void call(job_actor* self, std::string method, const std::string& url, std::string body, std::string tag,
          std::function<void(net::http_reply&)> on_io = {},
          std::vector<std::pair<std::string, std::string>> headers = {}) {
  net::http_exchange ex;
  ex.method = std::move(method);
  ex.body = std::move(body);
  ex.headers = std::move(headers);
  ex.timeout = std::chrono::milliseconds(self->state.gw->config.jobs.request_timeout_ms);
  auto handle = caf::actor_cast<caf::actor>(self);
  if (!net::parse_url(url, ex.target)) {
    self->send(self, http_atom::value, tag, std::int32_t{0}, std::string(), "bad URL " + url, std::string());
    return;
  }
  net::http_fetch(*self->state.io, std::move(ex), [handle, tag, on_io](net::http_reply r) {
    if (on_io) on_io(r);
    caf::anon_send(handle, http_atom::value, tag, static_cast<std::int32_t>(r.ok ? r.status : 0), std::move(r.body),
                   std::move(r.error), std::move(r.content_type));
  });
}

void finish(job_actor* self);
void choose_backend(job_actor* self);
void poll_later(job_actor* self);

void fail(job_actor* self, std::string message) {
  auto& r = self->state.rec;
  log::warn("job failed", {{"job", r.id}, {"model", r.model}, {"error", message}});
  r.status = "failed";
  r.error = std::move(message);
  finish(self);
}

/// An attempt to hand the job over failed (it is counted in rec.attempts already): try
/// again later (maybe elsewhere), or give up.
void hand_over_failed(job_actor* self, const std::string& why) {
  auto& st = self->state;
  auto& cfg = st.gw->config.jobs;
  if (st.rec.attempts >= cfg.submit_attempts) {
    fail(self, "no ComfyUI backend took the job after " + std::to_string(st.rec.attempts) + " attempt(s): " + why);
    return;
  }
  st.rec.backend.clear();
  st.rec.deployment.clear();
  st.rec.submitted = false;
  save(self);
  auto wait = std::chrono::milliseconds(cfg.retry_backoff_ms) * (1 << std::min<std::int64_t>(st.rec.attempts - 1, 6));
  log::info("job hand-over failed; retrying", {{"job", st.rec.id}, {"error", why}, {"attempt", st.rec.attempts}});
  self->delayed_send(self, wait, retry_atom::value);
}

/// Listens to the backend's /ws for this job's progress (polling stays the source of
/// truth; the feed only fills in `progress` while the job runs).
void watch_progress(job_actor* self) {
  auto& st = self->state;
  if (st.progress_feed) st.progress_feed->close();
  st.progress_feed.reset();
  net::http_target target;
  if (!net::parse_url(st.rec.backend, target)) return;
  if (!target.path.empty() && target.path.back() == '/') target.path.pop_back();
  target.path += "/ws?clientId=" + st.rec.prompt_id;
  auto handle = caf::actor_cast<caf::actor>(self);
  st.progress_feed = net::ws_listen(
      *st.io, target, std::chrono::milliseconds(st.gw->config.jobs.request_timeout_ms),
      [handle](std::string text) { caf::anon_send(handle, progress_atom::value, std::move(text)); },
      [id = st.rec.id](std::string why) {
        log::debug("job progress feed ended", {{"job", id}, {"reason", why}});
      });
}

void on_progress(job_actor* self, const std::string& text) {
  auto& st = self->state;
  if (st.cancelled || st.rec.finished()) return;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view type, prompt;
  if (parser.parse(text).get(doc) != simdjson::SUCCESS || doc["type"].get_string().get(type) != simdjson::SUCCESS)
    return;
  auto data = doc["data"];
  if (data["prompt_id"].get_string().get(prompt) != simdjson::SUCCESS || prompt != st.rec.prompt_id) return;
  bool changed = false;
  if ((type == "execution_start" || type == "executing") && st.rec.status == "queued") {
    st.rec.status = "running";
    if (st.rec.progress < 0) st.rec.progress = 0;
    changed = true;
  }
  if (type == "progress") {
    double value = 0, max = 0;
    if (data["value"].get_double().get(value) == simdjson::SUCCESS &&
        data["max"].get_double().get(max) == simdjson::SUCCESS && max > 0) {
      // 1 is kept for "outputs fetched".
      st.rec.progress = std::min(0.99, value / max);
      if (st.rec.status == "queued") st.rec.status = "running";
      auto now = clock::unix_ms();
      changed = st.rec.progress - st.saved_progress >= 0.05 || now - st.saved_progress_ms >= 1000;
    }
  }
  if (changed) {
    st.saved_progress = st.rec.progress;
    st.saved_progress_ms = clock::unix_ms();
    save(self);
  }
}

void submit(job_actor* self) {
  auto& r = self->state.rec;
  watch_progress(self);
  auto own = own_prompt_id(r);
  json::object_writer body;
  body.raw("prompt", r.workflow).str("client_id", own).str("prompt_id", own);
  call(self, "POST", r.backend + "/prompt", body.done(), "submit");
}

/// Hands the job to its chosen backend: the attempt is counted and stored first, so a job
/// is handed over at most submit_attempts times in all, restarts included (a backend that
/// keeps losing it cannot make it run without end).
void hand_over(job_actor* self, const std::string& why_again = {}) {
  auto& st = self->state;
  if (st.rec.attempts >= st.gw->config.jobs.submit_attempts) {
    if (st.handing_over) {
      handovers::all().add(st.rec.deployment, -1);
      st.handing_over = false;
    }
    fail(self,
         "no ComfyUI backend took the job after " + std::to_string(st.rec.attempts) + " attempt(s): " + why_again);
    return;
  }
  ++st.rec.attempts;
  st.rec.submitted = false;
  save_then(self, [self] {
    if (!self->state.cancelled) submit(self);
  });
}

void choose_backend(job_actor* self) {
  auto& st = self->state;
  st.candidates = backends_of(*st.gw, st.rec.model);
  if (st.candidates.empty()) {
    fail(self, "model " + st.rec.model + " has no comfyui deployment any more");
    return;
  }
  // Ask every backend for its queue; the shortest takes the job.
  st.queue_length.assign(st.candidates.size(), -1);
  st.probe_errors.clear();
  st.answers = 0;
  for (std::size_t i = 0; i < st.candidates.size(); ++i)
    call(self, "GET", st.candidates[i].second + "/queue", {}, "probe:" + std::to_string(i));
}

/// A backend's /queue: its length (-1 when unreadable) and where the job is in it.
struct queue_view {
  std::int64_t length = -1;
  bool running = false, pending = false;
  std::string prompt_id; ///< the job's id there (found by its prompt id or by lowart's client id)
};

/// Entries are ComfyUI's queue items [number, prompt_id, prompt, extra_data, outputs], the
/// running ones included (queue_running); `r` null only measures the queue.
queue_view read_queue(std::string_view body, const job_record* r) {
  queue_view out;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(body).get(doc) != simdjson::SUCCESS) return out;
  auto own = r ? own_prompt_id(*r) : std::string();
  std::int64_t n = 0;
  for (const char* which : {"queue_running", "queue_pending"}) {
    simdjson::dom::array arr;
    if (doc[which].get_array().get(arr) != simdjson::SUCCESS) return out;
    for (auto item : arr) {
      ++n;
      std::string_view id, client;
      if (!r || item.at(1).get_string().get(id) != simdjson::SUCCESS) continue;
      optional_field(item.at(3)["client_id"].get_string().get(client));
      if (id == r->prompt_id || client == own) {
        (which[6] == 'r' ? out.running : out.pending) = true;
        out.prompt_id = std::string(id);
      }
    }
  }
  out.length = n;
  return out;
}

void on_probe(job_actor* self, std::size_t index, int status, const std::string& body, const std::string& error) {
  auto& st = self->state;
  if (index >= st.candidates.size()) return;
  auto n = status == 200 ? read_queue(body, nullptr).length : -1;
  st.queue_length[index] = n;
  if (n < 0)
    st.probe_errors += (st.probe_errors.empty() ? "" : "; ") + st.candidates[index].second + ": " +
                       (error.empty() ? "answered " + std::to_string(status) : error);
  if (++st.answers < st.candidates.size()) return;
  // Shortest queue (counting hand-overs in flight); ties broken at random.
  std::size_t best = st.candidates.size();
  std::int64_t best_load = 0;
  std::size_t ties = 0;
  thread_local std::minstd_rand random{std::random_device{}()};
  for (std::size_t i = 0; i < st.candidates.size(); ++i) {
    if (st.queue_length[i] < 0) continue;
    auto load = st.queue_length[i] + handovers::all().pending(st.candidates[i].first);
    if (best == st.candidates.size() || load < best_load) {
      best = i;
      best_load = load;
      ties = 1;
    } else if (load == best_load && random() % ++ties == 0) {
      best = i;
    }
  }
  if (best == st.candidates.size()) {
    ++st.rec.attempts;
    hand_over_failed(self, "unreachable: " + st.probe_errors);
    return;
  }
  // The backend is stored before the prompt is sent: after a crash the job is looked up
  // there instead of being queued again.
  st.rec.deployment = st.candidates[best].first;
  st.rec.backend = st.candidates[best].second;
  handovers::all().add(st.rec.deployment, 1);
  st.handing_over = true;
  hand_over(self);
}

void on_submit(job_actor* self, int status, const std::string& body, const std::string& error) {
  auto& st = self->state;
  if (st.handing_over) {
    handovers::all().add(st.rec.deployment, -1);
    st.handing_over = false;
  }
  if (status == 200) {
    // From now on the prompt is known by the id the backend answered with (lowart's own
    // unless the backend names prompts itself), stored before anything else happens.
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    std::string_view id;
    if (parser.parse(body).get(doc) == simdjson::SUCCESS &&
        doc["prompt_id"].get_string().get(id) == simdjson::SUCCESS && !id.empty())
      st.rec.prompt_id = std::string(id);
    else
      st.rec.prompt_id = own_prompt_id(st.rec);
    st.rec.submitted = true;
    st.unreachable_since = 0;
    log::info("job handed to ComfyUI",
              {{"job", st.rec.id}, {"backend", st.rec.deployment}, {"prompt_id", st.rec.prompt_id}});
    save_then(self, [self] { poll_later(self); });
    return;
  }
  if (status >= 400 && status < 500) {
    // The backend refused the workflow: no retry helps.
    std::string message = "ComfyUI refused the workflow";
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    std::string_view text;
    if (parser.parse(body).get(doc) == simdjson::SUCCESS) {
      if (doc["error"]["message"].get_string().get(text) == simdjson::SUCCESS) message += ": " + std::string(text);
      if (doc["error"]["details"].get_string().get(text) == simdjson::SUCCESS && !text.empty())
        message += " (" + std::string(text) + ")";
      simdjson::dom::object nodes;
      if (doc["node_errors"].get_object().get(nodes) == simdjson::SUCCESS && nodes.size() > 0)
        message += "; node errors: " + simdjson::minify(doc["node_errors"]).substr(0, 500);
    }
    fail(self, message);
    return;
  }
  hand_over_failed(self, st.rec.backend + (error.empty() ? " answered " + std::to_string(status) : ": " + error));
}

void poll_later(job_actor* self) {
  self->delayed_send(self, std::chrono::milliseconds(self->state.gw->config.jobs.poll_ms), poll_atom::value);
}

/// The backend did not answer a poll: fine for a while, then the job fails.
void poll_failed(job_actor* self, const std::string& why) {
  auto& st = self->state;
  auto now = clock::unix_ms();
  if (!st.unreachable_since) st.unreachable_since = now;
  st.last_error = why;
  auto limit = st.gw->config.jobs.unreachable_ms;
  if (now - st.unreachable_since >= limit) {
    fail(self, "ComfyUI backend " + st.rec.deployment + " unreachable for " +
                   std::to_string((now - st.unreachable_since) / 1000) + " s: " + why);
    return;
  }
  poll_later(self);
}

void on_poll_queue(job_actor* self, int status, const std::string& body, const std::string& error) {
  auto& st = self->state;
  auto q = status == 200 ? read_queue(body, &st.rec) : queue_view{};
  if (q.length < 0) {
    poll_failed(self, error.empty() ? "/queue answered " + std::to_string(status) : error);
    return;
  }
  st.unreachable_since = 0;
  st.in_queue = q.running || q.pending;
  bool changed = false;
  if (st.in_queue && (q.prompt_id != st.rec.prompt_id || !st.rec.submitted)) {
    // Found by lowart's client id: a hand-over whose answer was never stored.
    st.rec.prompt_id = q.prompt_id;
    st.rec.submitted = true;
    changed = true;
  }
  if (q.running && st.rec.status != "running") {
    st.rec.status = "running";
    if (st.rec.progress < 0) st.rec.progress = 0;
    changed = true;
  }
  if (changed) save(self);
  // Queue first, then history: a prompt that left the queue before this answer is in
  // the history by the time it is asked.
  call(self, "GET", st.rec.backend + "/history/" + url_encode(st.rec.prompt_id), {}, "history");
}

void fetch_outputs(job_actor* self);

/// How many of a backend's latest history entries are searched for a prompt by lowart's
/// client id (only for a hand-over whose answer was never stored).
constexpr int history_search_items = 200;

/// `by_client`: `body` is the backend's latest history (GET /history?max_items=...), searched
/// for the entry of lowart's client id; else GET /history/{prompt id}.
void on_history(job_actor* self, int status, const std::string& body, const std::string& error, bool by_client) {
  auto& st = self->state;
  if (status != 200) {
    poll_failed(self, error.empty() ? "/history answered " + std::to_string(status) : error);
    return;
  }
  simdjson::dom::parser parser;
  simdjson::dom::element doc, entry;
  if (parser.parse(body).get(doc) != simdjson::SUCCESS) {
    poll_failed(self, "/history answered something that is not JSON");
    return;
  }
  bool found = false;
  if (by_client) {
    simdjson::dom::object all;
    auto own = own_prompt_id(st.rec);
    if (doc.get_object().get(all) == simdjson::SUCCESS)
      for (auto item : all) {
        std::string_view client;
        // An entry's "prompt" is the queue item [number, prompt_id, prompt, extra_data, outputs].
        if (item.value["prompt"].at(3)["client_id"].get_string().get(client) != simdjson::SUCCESS || client != own)
          continue;
        st.rec.prompt_id = std::string(item.key); // the latest, should there be several
        entry = item.value;
        found = true;
      }
    if (found) {
      st.rec.submitted = true;
      save(self);
    }
  } else {
    found = doc[st.rec.prompt_id].get(entry) == simdjson::SUCCESS;
  }
  if (!found) {
    if (st.in_queue) return poll_later(self);
    if (!by_client && !st.rec.submitted) {
      // Handed over, but the backend's answer was never stored (lowart stopped meanwhile):
      // the backend may know the prompt under an id of its own.
      call(self, "GET", st.rec.backend + "/history?max_items=" + std::to_string(history_search_items), {},
           "history:find");
      return;
    }
    // Neither queued nor finished: the backend lost it (restarted, or never got it).
    log::warn("job unknown to its backend; handing it over again",
              {{"job", st.rec.id}, {"backend", st.rec.deployment}, {"attempts", st.rec.attempts}});
    hand_over(self, st.rec.deployment + " does not know the prompt it was handed");
    return;
  }
  std::string_view status_str;
  bool completed = false;
  optional_field(entry["status"]["status_str"].get_string().get(status_str));
  optional_field(entry["status"]["completed"].get_bool().get(completed));
  if (status_str == "error" || (!completed && status_str.empty() == false && status_str != "success")) {
    std::string message = "ComfyUI failed the job";
    simdjson::dom::array messages;
    if (entry["status"]["messages"].get_array().get(messages) == simdjson::SUCCESS)
      for (auto m : messages) {
        std::string_view kind, text;
        if (m.at(0).get_string().get(kind) != simdjson::SUCCESS) continue;
        if (kind == "execution_interrupted") message = "interrupted on the ComfyUI backend";
        if (kind == "execution_error") {
          auto d = m.at(1);
          std::string_view type, node_type;
          optional_field(d["exception_type"].get_string().get(type));
          optional_field(d["node_type"].get_string().get(node_type));
          optional_field(d["exception_message"].get_string().get(text));
          message = "ComfyUI: " + std::string(type) + ": " + std::string(text);
          if (!node_type.empty()) message += " (node " + std::string(node_type) + ")";
        }
      }
    fail(self, message);
    return;
  }
  if (!completed && status_str != "success") return poll_later(self);
  st.outputs.clear();
  simdjson::dom::object outputs;
  if (entry["outputs"].get_object().get(outputs) == simdjson::SUCCESS)
    for (auto node : outputs) {
      simdjson::dom::object kinds;
      if (node.value.get_object().get(kinds) != simdjson::SUCCESS) continue;
      for (auto kind : kinds) {
        simdjson::dom::array items;
        if (kind.value.get_array().get(items) != simdjson::SUCCESS) continue;
        for (auto item : items) {
          output_file f;
          std::string_view s;
          if (item["filename"].get_string().get(s) != simdjson::SUCCESS) continue;
          f.filename = std::string(s);
          if (item["subfolder"].get_string().get(s) == simdjson::SUCCESS) f.subfolder = std::string(s);
          f.type = item["type"].get_string().get(s) == simdjson::SUCCESS ? std::string(s) : "output";
          st.outputs.push_back(std::move(f));
        }
      }
    }
  fetch_outputs(self);
}

void fetch_outputs(job_actor* self) {
  auto& st = self->state;
  st.fetched = 0;
  st.files.clear();
  if (st.outputs.empty()) {
    fail(self, "ComfyUI finished the job without any output file");
    return;
  }
  auto dir = fs::path(st.gw->config.jobs.dir) / st.rec.id;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    fail(self, "cannot create " + dir.string() + ": " + ec.message());
    return;
  }
  std::set<std::string> taken;
  for (std::size_t i = 0; i < st.outputs.size(); ++i) {
    const auto& f = st.outputs[i];
    auto name = safe_name(f.filename);
    while (!taken.insert(name).second)
      name = std::to_string(i) + "_" + name;
    auto url = st.rec.backend + "/view?filename=" + url_encode(f.filename) + "&subfolder=" + url_encode(f.subfolder) +
               "&type=" + url_encode(f.type);
    auto path = (dir / name).string();
    // Written on the io thread (not a CAF worker); the actor gets the name and size.
    call(self, "GET", url, {}, "view:" + name, [path](net::http_reply& r) {
      if (!r.ok || r.status != 200) return;
      auto temp = path + ".part";
      std::ofstream out(temp, std::ios::binary | std::ios::trunc);
      out.write(r.body.data(), static_cast<std::streamsize>(r.body.size()));
      out.close();
      std::error_code ec;
      if (out) fs::rename(temp, path, ec);
      if (!out || ec) {
        r.ok = false;
        r.error = "cannot write " + path;
        return;
      }
      r.body = std::to_string(r.body.size());
    });
  }
}

void on_view(job_actor* self, const std::string& name, int status, const std::string& body, const std::string& error,
             const std::string& type) {
  auto& st = self->state;
  if (status != 200) {
    // Outputs exist on the backend: a failed download is retried with the next poll.
    poll_failed(self, "fetching " + name + ": " + (error.empty() ? "answered " + std::to_string(status) : error));
    return;
  }
  json::object_writer w;
  w.str("name", name)
      .num("bytes", std::atoll(body.c_str()))
      .str("content_type", type.empty() || type == "application/octet-stream" ? content_type_of(name) : type);
  st.files.push_back(w.done());
  if (++st.fetched < st.outputs.size()) return;
  st.rec.files = json::array(st.files);
  st.rec.images = static_cast<std::int64_t>(st.files.size());
  st.rec.status = "succeeded";
  st.rec.progress = 1;
  finish(self);
}

void deliver_webhook(job_actor* self) {
  auto& st = self->state;
  const auto& secret = st.gw->config.jobs.webhook_secret;
  json::object_writer w;
  w.str("event", "job." + st.rec.status).raw("job", public_view(st.rec));
  auto body = w.done();
  auto ts = std::to_string(clock::unix_seconds());
  std::vector<std::pair<std::string, std::string>> headers = {
      {"x-lowart-event", "job." + st.rec.status},
      {"x-lowart-job-id", st.rec.id},
      {"x-lowart-timestamp", ts},
      {"x-lowart-signature", "sha256=" + secrets::hmac_sha256_hex(secret, ts + "." + body)}};
  ++st.webhook_tries;
  call(self, "POST", st.rec.webhook, body, "webhook", {}, std::move(headers));
}

void on_webhook(job_actor* self, int status, const std::string& error) {
  auto& st = self->state;
  if (status >= 200 && status < 300) {
    st.rec.webhook_state = "delivered";
    metrics::webhooks("delivered").inc();
    log::info("job webhook delivered", {{"job", st.rec.id}, {"status", status}});
    save_then(self, [self] { self->quit(); });
    return;
  }
  auto why = error.empty() ? "answered " + std::to_string(status) : error;
  if (st.webhook_tries >= st.gw->config.jobs.webhook_attempts) {
    st.rec.webhook_state = "failed";
    metrics::webhooks("failed").inc();
    log::warn("job webhook failed; giving up", {{"job", st.rec.id}, {"error", why}, {"attempts", st.webhook_tries}});
    save_then(self, [self] { self->quit(); });
    return;
  }
  metrics::webhooks("retry").inc();
  auto wait = std::chrono::milliseconds(st.gw->config.jobs.retry_backoff_ms) * (1 << std::min(st.webhook_tries - 1, 6));
  self->delayed_send(self, wait, hook_atom::value);
}

/// Meters a finished job (per request + per image) and books it against budgets.
void meter(job_actor* self) {
  auto& st = self->state;
  auto& gw = *st.gw;
  auto& r = st.rec;
  double cost = 0;
  std::int64_t version = 0;
  if (r.status == "succeeded")
    if (auto prices = gw.prices.load()) {
      if (auto p = prices->by_model.find(r.model); p != prices->by_model.end()) {
        cost = p->second.per_request + p->second.per_image * static_cast<double>(r.images);
        version = p->second.version;
        metrics::cost(r.model).inc(cost);
      }
    }
  r.cost = cost;
  usage_record rec;
  rec.request_id = r.id;
  rec.ts_ms = clock::unix_ms();
  rec.key_id = r.key_id;
  rec.route = "jobs";
  rec.model = r.model;
  rec.deployment = r.deployment;
  rec.status = r.status == "succeeded" ? 200 : r.status == "cancelled" ? 499 : 502;
  rec.latency_ms = static_cast<double>(rec.ts_ms - r.created_ms);
  rec.cost = cost;
  rec.price_version = version;
  gw.usage.push(std::move(rec));
  if (cost > 0) {
    auto keys = gw.keys.load();
    std::vector<rate_limiter::subject_ref> subjects;
    std::string team_id = "team:" + r.team_id;
    auto k = keys ? keys->find_id(r.key_id) : nullptr;
    std::optional<key_subjects> of_key;
    if (k) {
      of_key.emplace(keys.get(), *k);
      subjects = of_key->list;
    } else if (keys && !r.team_id.empty()) {
      // The key is gone (revoked): its team still pays.
      if (auto t = keys->teams.find(r.team_id); t != keys->teams.end()) subjects.push_back({team_id, &t->second});
    }
    gw.limiter.charge(subjects, 0, cost, clock::unix_ms());
    if (gw.fleet && !subjects.empty()) gw.fleet->charge(fleet_subjects(subjects), 0, cost, clock::unix_ms());
  }
}

void finish(job_actor* self) {
  auto& st = self->state;
  auto& r = st.rec;
  if (st.progress_feed) {
    st.progress_feed->close();
    st.progress_feed.reset();
  }
  r.finished_ms = clock::unix_ms();
  meter(self);
  if (!r.webhook.empty()) r.webhook_state = "pending";
  metrics::jobs(r.model, r.status).inc();
  log::info("job finished", {{"job", r.id},
                             {"model", r.model},
                             {"status", r.status},
                             {"files", r.images},
                             {"duration_ms", r.finished_ms - r.created_ms}});
  save_then(self, [self] {
    auto& s = self->state;
    self->send(s.manager, done_atom::value, s.rec.id, s.rec.to_json());
    if (s.rec.webhook.empty())
      self->quit();
    else
      deliver_webhook(self);
  });
}

void resume(job_actor* self) {
  auto& r = self->state.rec;
  if (r.finished()) {
    if (r.webhook_state == "pending")
      deliver_webhook(self);
    else
      self->quit();
    return;
  }
  if (r.backend.empty()) return choose_backend(self);
  // Handed over (or about to be, when the gateway stopped): the poll finds out which,
  // and hands it over again only if the backend does not know it.
  watch_progress(self);
  poll_later(self);
}

caf::behavior job(job_actor* self, gateway_state* gw, boost::asio::io_context* io, caf::actor manager, caf::actor store,
                  std::string record) {
  auto& st = self->state;
  st.gw = gw;
  st.io = io;
  st.manager = std::move(manager);
  st.store = std::move(store);
  st.rec = *job_record::from_json(record);
  resume(self);
  return {
      [=](http_atom, const std::string& tag, std::int32_t status, const std::string& body, const std::string& error,
          const std::string& type) {
        auto& s = self->state;
        if (tag == "webhook") return on_webhook(self, status, error);
        if (tag == "cancel:queue") {
          auto q = read_queue(body, &s.rec);
          if (q.running || q.pending) {
            json::object_writer w;
            if (q.running)
              w.str("prompt_id", q.prompt_id);
            else
              w.raw("delete", json::string_array({q.prompt_id}));
            call(self, "POST", s.rec.backend + (q.running ? "/interrupt" : "/queue"), w.done(), "cancel:done");
            return;
          }
          return finish(self);
        }
        if (tag == "cancel:done") {
          if (status != 200) log::warn("backend did not take the cancel", {{"job", s.rec.id}, {"error", error}});
          return finish(self);
        }
        if (s.cancelled || s.rec.finished()) return;
        if (tag.rfind("probe:", 0) == 0) return on_probe(self, std::stoul(tag.substr(6)), status, body, error);
        if (tag == "submit") return on_submit(self, status, body, error);
        if (tag == "queue") return on_poll_queue(self, status, body, error);
        if (tag == "history") return on_history(self, status, body, error, false);
        if (tag == "history:find") return on_history(self, status, body, error, true);
        if (tag.rfind("view:", 0) == 0) return on_view(self, tag.substr(5), status, body, error, type);
      },
      [=](poll_atom) {
        auto& s = self->state;
        if (s.cancelled || s.rec.finished()) return;
        call(self, "GET", s.rec.backend + "/queue", {}, "queue");
      },
      [=](retry_atom) {
        if (!self->state.cancelled && !self->state.rec.finished()) choose_backend(self);
      },
      [=](hook_atom) { deliver_webhook(self); },
      [=](progress_atom, const std::string& text) { on_progress(self, text); },
      [=](cancel_atom) -> reply3 {
        auto& s = self->state;
        if (s.rec.finished())
          return {std::int32_t{409}, error_json(409, "job " + s.rec.id + " already " + s.rec.status, "job_finished"),
                  std::string("application/json")};
        s.cancelled = true;
        s.rec.status = "cancelled";
        s.rec.error = "cancelled by the client";
        save(self);
        if (s.rec.backend.empty()) {
          finish(self);
        } else {
          // Where is it now? Waiting: taken off the queue; running: interrupted by id
          // (another job on the same backend is left alone). Then the job ends.
          call(self, "GET", s.rec.backend + "/queue", {}, "cancel:queue");
        }
        return {std::int32_t{200}, public_view(s.rec), std::string("application/json")};
      },
  };
}

// --- the manager ---------------------------------------------------------------------------------

struct caller {
  std::string key_id, role, team_id, user_id, request_id;
  bool master() const { return key_id == "master"; }
};

struct manager_state {
  static inline const char* name = "jobs";
  gateway_state* gw = nullptr;
  boost::asio::io_context* io = nullptr;
  caf::actor store;
  std::map<std::string, caf::actor> live;      ///< job id -> its actor
  std::map<std::string, std::string> model_of; ///< job id -> model (for the live gauge)
  /// Synchronous image requests waiting for their job: id -> (promise, response_format).
  std::multimap<std::string, std::pair<caf::response_promise, std::string>> waiters;
};

using manager_actor = caf::stateful_actor<manager_state>;

void spawn_job(manager_actor* self, const job_record& r) {
  auto& st = self->state;
  auto handle = self->spawn(job, st.gw, st.io, caf::actor_cast<caf::actor>(self), st.store, r.to_json());
  self->monitor(handle);
  st.live[r.id] = handle;
  st.model_of[r.id] = r.model;
  metrics::jobs_live(r.model).add(1);
}

/// The caller's key entry (null for the master key or a key revoked meanwhile).
std::shared_ptr<const key_entry> key_of(const gateway_state& gw, const std::string& key_id) {
  auto keys = gw.keys.load();
  return keys ? keys->find_id(key_id) : nullptr;
}

struct created {
  int status = 0;
  std::string body; ///< an error when status != 0
  job_record rec;
};

/// Validates a job request and builds its workflow. status 0 means `rec` is ready.
created build_job(manager_actor* self, const caller& who, std::string_view model, std::string input_json,
                  const std::string& webhook) {
  auto& gw = *self->state.gw;
  created out;
  auto bad = [&](int status, std::string message, std::string code, std::string param = {}) {
    out.status = status;
    out.body = error_json(status, message, code, param);
    return out;
  };
  auto routes = gw.routes.load();
  auto route = routes ? routes->models.find(std::string(model)) : decltype(routes->models.end()){};
  if (!routes || route == routes->models.end())
    return bad(404, "The model `" + std::string(model) + "` does not exist or you do not have access to it.",
               "model_not_found", "model");
  std::shared_ptr<const key_entry> key;
  if (!who.master()) {
    key = key_of(gw, who.key_id);
    if (!key) return bad(401, "invalid API key", "invalid_api_key");
    if (!key->allows_model(model))
      return bad(403, "this key is not allowed to use model `" + std::string(model) + "`", "model_not_allowed",
                 "model");
  }
  if (backends_of(gw, std::string(model)).empty())
    return bad(400, "model `" + std::string(model) + "` is not served by a comfyui provider; jobs need one",
               "unsupported_model", "model");
  if (!webhook.empty()) {
    net::http_target t;
    if (!net::parse_url(webhook, t))
      return bad(400, "webhook must be an http:// or https:// URL", "invalid_webhook", "webhook");
    if (gw.config.jobs.webhook_secret.empty())
      return bad(400, "webhooks are signed: set [jobs] webhook_secret (or LOWART_WEBHOOK_SECRET) first",
                 "webhooks_disabled", "webhook");
  }
  // Limits: the job counts as a request now; its cost is booked when it finishes.
  std::vector<rate_limiter::subject_ref> subjects;
  auto keys = gw.keys.load();
  std::optional<key_subjects> of_key;
  if (key) {
    of_key.emplace(keys.get(), *key);
    subjects = of_key->list;
  }
  std::string model_id;
  if (route->second.lim.any()) subjects.push_back({model_id = "model:" + route->second.name, &route->second.lim});
  if (!subjects.empty()) {
    rate_limiter::ticket ticket;
    auto d = gw.limiter.reserve(subjects, 0, clock::unix_ms(), ticket);
    if (!d.allowed)
      return bad(429,
                 "rate limit reached for this " + d.subject + " (" + d.reason + "); retry in " +
                     std::to_string(d.retry_after_s) + " s",
                 "rate_limit_exceeded");
    gw.limiter.settle(ticket, 0, 0, clock::unix_ms());
  }

  auto& rec = out.rec;
  auto uuid = secrets::random_uuid();
  rec.prompt_id = uuid;
  rec.id = "job_" + uuid.substr(0, 8) + uuid.substr(9, 4) + uuid.substr(14, 4) + uuid.substr(19, 4) + uuid.substr(24);
  rec.key_id = who.key_id;
  rec.team_id = key ? key->team_id : std::string{};
  rec.model = std::string(model);
  rec.input = std::move(input_json);
  rec.webhook = webhook;
  rec.request_id = who.request_id;
  rec.created_ms = rec.updated_ms = clock::unix_ms();

  // The workflow: the model's template, changed by its script's on_request; or, with
  // neither, a workflow the client sent as input.workflow.
  auto scripts = gw.scripts.load();
  const auto& r = route->second;
  std::string workflow = "null";
  if (!r.workflow.empty()) {
    auto f = scripts->files.find(r.workflow);
    if (f == scripts->files.end())
      return bad(500, "the workflow template " + r.workflow + " of model " + rec.model + " is not loaded",
                 "workflow_missing");
    workflow = *f->second;
  }
  if (!r.script.empty() && scripts->with_hook(r.script, "on_request")) {
    json::object_writer body;
    body.str("model", rec.model).raw("input", rec.input);
    json::object_writer key_json;
    key_json.str("id", rec.key_id).str("team_id", rec.team_id);
    json::object_writer arg;
    arg.raw("body", body.done())
        .raw("workflow", workflow)
        .str("model", rec.model)
        .str("route", "jobs")
        .str("job_id", rec.id)
        .str("request_id", who.request_id)
        .raw("key", key_json.done());
    auto result = scripting::run_hook(*scripts, r.script, "on_request", arg.done(), who.request_id);
    if (result.kind == scripting::hook_result::outcome::rejected)
      return bad(result.status, result.message, "rejected_by_script");
    if (result.kind == scripting::hook_result::outcome::failed) return bad(500, result.message, "script_error");
    simdjson::dom::parser parser;
    simdjson::dom::element doc, w;
    if (parser.parse(result.json).get(doc) != simdjson::SUCCESS || doc["workflow"].get(w) != simdjson::SUCCESS)
      return bad(500, "script " + r.script + ": on_request must return the request with req.workflow set",
                 "script_error");
    workflow = simdjson::minify(w);
  } else if (workflow == "null") {
    simdjson::dom::parser parser;
    simdjson::dom::element doc, w;
    if (parser.parse(rec.input).get(doc) == simdjson::SUCCESS && doc["workflow"].get(w) == simdjson::SUCCESS)
      workflow = simdjson::minify(w);
  }
  simdjson::dom::parser check;
  simdjson::dom::object graph;
  if (check.parse(workflow).get_object().get(graph) != simdjson::SUCCESS || graph.size() == 0)
    return bad(400,
               "no workflow for model `" + rec.model +
                   "`: configure a workflow template or script for it, or send input.workflow (a ComfyUI API graph)",
               "missing_workflow", "input");
  rec.workflow = std::move(workflow);
  return out;
}

/// Answers an OpenAI images request from a finished job.
std::string images_answer(const job_record& r, const std::string& format, const std::string& dir) {
  std::vector<std::string> data;
  simdjson::dom::parser parser;
  simdjson::dom::array arr;
  if (parser.parse(r.files).get_array().get(arr) == simdjson::SUCCESS)
    for (auto f : arr) {
      std::string_view name;
      if (f["name"].get_string().get(name) != simdjson::SUCCESS) continue;
      json::object_writer w;
      if (format == "b64_json") {
        std::ifstream in(fs::path(dir) / r.id / std::string(name), std::ios::binary);
        std::ostringstream bytes;
        bytes << in.rdbuf();
        w.str("b64_json", crypto::base64_encode(bytes.str()));
      } else {
        w.str("url", "/v1/jobs/" + r.id + "/files/" + url_encode(name));
      }
      data.push_back(w.done());
    }
  json::object_writer out;
  out.num("created", r.created_ms / 1000).raw("data", json::array(data));
  return out.done();
}

void answer_waiters(manager_actor* self, const job_record& r) {
  auto& st = self->state;
  auto range = st.waiters.equal_range(r.id);
  for (auto it = range.first; it != range.second; ++it) {
    auto& [rp, format] = it->second;
    if (r.status == "succeeded")
      rp.deliver(std::int32_t{200}, images_answer(r, format, st.gw->config.jobs.dir), std::string("application/json"));
    else
      rp.deliver(std::int32_t{502},
                 error_json(502, "the image job " + r.id + " " + r.status + ": " + r.error, "job_" + r.status),
                 std::string("application/json"));
  }
  st.waiters.erase(range.first, range.second);
}

std::string query_value(const std::string& query, std::string_view key) {
  std::string_view q = query;
  while (!q.empty()) {
    auto amp = q.find('&');
    auto pair = q.substr(0, amp);
    if (pair.substr(0, pair.find('=')) == key && pair.find('=') != std::string_view::npos)
      return std::string(pair.substr(pair.find('=') + 1));
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return {};
}

std::string url_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

caf::behavior manager(manager_actor* self, gateway_state* gw, boost::asio::io_context* io, caf::actor store) {
  auto& st = self->state;
  st.gw = gw;
  st.io = io;
  st.store = std::move(store);
  self->set_down_handler([=](caf::down_msg& msg) {
    auto& s = self->state;
    for (auto it = s.live.begin(); it != s.live.end(); ++it)
      if (it->second.address() == msg.source) {
        // A synchronous image request still waiting here gets an answer (the job's own
        // done message, sent before it ended, normally answered it already).
        auto range = s.waiters.equal_range(it->first);
        for (auto w = range.first; w != range.second; ++w)
          w->second.first.deliver(std::int32_t{502},
                                  error_json(502, "the job " + it->first + " ended without a result", "job_failed"),
                                  std::string("application/json"));
        s.waiters.erase(range.first, range.second);
        metrics::jobs_live(s.model_of[it->first]).add(-1);
        s.model_of.erase(it->first);
        s.live.erase(it);
        break;
      }
  });
  // Pick up what a previous run left unfinished.
  self->request(st.store, std::chrono::seconds(30), jobs_store_atom::value, std::string("live"), std::string(),
                std::string())
      .then(
          [=](std::int32_t status, const std::string& body) {
            if (status != 200) return;
            simdjson::dom::parser parser;
            simdjson::dom::array arr;
            if (parser.parse(body).get_array().get(arr) != simdjson::SUCCESS) return;
            std::size_t n = 0;
            for (auto item : arr)
              if (auto r = job_record::from_json(simdjson::minify(item)); r && !self->state.live.count(r->id)) {
                spawn_job(self, *r);
                ++n;
              }
            if (n) log::info("jobs resumed after a restart", {{"jobs", n}});
          },
          [](caf::error& err) {
            log::error("cannot load unfinished jobs", {{"error", caf::to_string(err)}});
          });
  self->delayed_send(self, std::chrono::seconds(1), sweep_atom::value);

  auto respond_job = [=](const caller& who, const std::string& id, std::function<void(job_record)> on_found,
                         caf::response_promise rp) {
    self->request(self->state.store, store_timeout, jobs_store_atom::value, std::string("get"), id,
                  who.master() ? std::string() : who.key_id)
        .then(
            [=](std::int32_t status, const std::string& body) mutable {
              auto r = status == 200 ? job_record::from_json(body) : std::nullopt;
              if (!r) {
                rp.deliver(std::int32_t{404}, error_json(404, "no job " + id, "job_not_found"),
                           std::string("application/json"));
                return;
              }
              on_found(std::move(*r));
            },
            [=](caf::error& err) mutable {
              rp.deliver(std::int32_t{503}, error_json(503, "storage did not answer: " + caf::to_string(err)),
                         std::string("application/json"));
            });
  };

  return {
      [=](jobs_atom, const std::string& method, const std::string& path, const std::string& query,
          const std::string& body, const std::string& key_id, const std::string& role, const std::string& team_id,
          const std::string& user_id, const std::string& request_id) -> caf::delegated<caf::message> {
        auto rp = self->make_response_promise();
        caller who{key_id, role, team_id, user_id, request_id};
        auto answer = [rp](int status, std::string text, std::string type = "application/json") mutable {
          rp.deliver(static_cast<std::int32_t>(status), std::move(text), std::move(type));
        };
        bool images = path == "/v1/images/generations" || path == "/images/generations";
        std::string_view rest = path;
        if (rest.rfind("/v1", 0) == 0) rest.remove_prefix(3);
        // POST /v1/jobs and POST /v1/images/generations: a new job.
        if ((rest == "/jobs" && method == "POST") || images) {
          if (method != "POST") {
            answer(405, error_json(405, "use POST for " + path));
            return {};
          }
          simdjson::dom::parser parser;
          simdjson::dom::element doc;
          simdjson::dom::object obj;
          if (parser.parse(body).get(doc) != simdjson::SUCCESS || doc.get_object().get(obj) != simdjson::SUCCESS) {
            answer(400, error_json(400, "the request body must be a JSON object", "invalid_json"));
            return {};
          }
          std::string_view model, webhook, format;
          if (obj["model"].get_string().get(model) != simdjson::SUCCESS || model.empty()) {
            answer(400, error_json(400, "you must provide a model parameter", "missing_model", "model"));
            return {};
          }
          if (obj["webhook"].error() != simdjson::NO_SUCH_FIELD &&
              obj["webhook"].get_string().get(webhook) != simdjson::SUCCESS) {
            answer(400, error_json(400, "webhook must be a URL string", "invalid_webhook", "webhook"));
            return {};
          }
          std::string input;
          bool wait = false;
          if (images) {
            // The image request itself is the input (prompt, n, size, ...).
            json::object_writer in;
            for (auto field : obj)
              if (field.key != "model" && field.key != "webhook" && field.key != "async")
                in.raw(field.key, simdjson::minify(field.value));
            input = in.done();
            bool async = false;
            optional_field(obj["async"].get_bool().get(async));
            wait = !async;
            if (obj["response_format"].get_string().get(format) != simdjson::SUCCESS) format = "url";
            if (format != "url" && format != "b64_json") {
              answer(400,
                     error_json(400, "response_format must be url or b64_json", "invalid_value", "response_format"));
              return {};
            }
          } else {
            simdjson::dom::element in;
            if (obj["input"].get(in) != simdjson::SUCCESS || !in.is_object()) {
              answer(400, error_json(400, "input must be a JSON object", "missing_input", "input"));
              return {};
            }
            input = simdjson::minify(in);
          }
          auto made = build_job(self, who, model, std::move(input), std::string(webhook));
          if (made.status) {
            answer(made.status, made.body);
            return {};
          }
          auto rec = std::move(made.rec);
          auto fmt = std::string(format);
          self->request(self->state.store, store_timeout, jobs_store_atom::value, std::string("save"), rec.to_json(),
                        std::string())
              .then(
                  [=](std::int32_t status, const std::string&) mutable {
                    if (status != 200) {
                      answer(500, error_json(500, "the job could not be stored", "storage_error"));
                      return;
                    }
                    spawn_job(self, rec);
                    log::info("job created",
                              {{"job", rec.id}, {"model", rec.model}, {"request_id", rec.request_id}, {"sync", wait}});
                    if (wait)
                      self->state.waiters.emplace(rec.id, std::make_pair(rp, fmt));
                    else
                      answer(202, public_view(rec));
                  },
                  [=](caf::error& err) mutable {
                    answer(503, error_json(503, "storage did not answer: " + caf::to_string(err), "storage_error"));
                  });
          return {};
        }
        if (rest == "/jobs") {
          if (method != "GET") {
            answer(405, error_json(405, "use GET or POST for /v1/jobs"));
            return {};
          }
          auto limit = query_value(query, "limit");
          self->request(self->state.store, store_timeout, jobs_store_atom::value, std::string("list"),
                        who.master() ? std::string() : who.key_id, limit.empty() ? std::string("100") : limit)
              .then(
                  [=](std::int32_t, const std::string& records) mutable {
                    std::vector<std::string> items;
                    simdjson::dom::parser parser;
                    simdjson::dom::array arr;
                    if (parser.parse(records).get_array().get(arr) == simdjson::SUCCESS)
                      for (auto item : arr)
                        if (auto r = job_record::from_json(simdjson::minify(item))) items.push_back(public_view(*r));
                    answer(200, "{\"object\":\"list\",\"data\":" + json::array(items) + "}");
                  },
                  [=](caf::error& err) mutable { answer(503, error_json(503, caf::to_string(err))); });
          return {};
        }
        if (rest.rfind("/jobs/", 0) != 0) {
          answer(404, error_json(404, "unknown endpoint " + method + " " + path, "unknown_url"));
          return {};
        }
        rest.remove_prefix(6);
        auto slash = rest.find('/');
        auto id = std::string(rest.substr(0, slash));
        std::string file;
        if (slash != std::string_view::npos) {
          auto tail = rest.substr(slash + 1);
          if (tail.rfind("files/", 0) != 0 || tail.size() == 6) {
            answer(404, error_json(404, "unknown endpoint " + method + " " + path, "unknown_url"));
            return {};
          }
          file = url_decode(tail.substr(6));
        }
        if (!file.empty()) {
          if (method != "GET") {
            answer(405, error_json(405, "use GET for job files"));
            return {};
          }
          respond_job(
              who, id,
              [=](job_record r) mutable {
                simdjson::dom::parser parser;
                simdjson::dom::array arr;
                std::string type;
                if (parser.parse(r.files).get_array().get(arr) == simdjson::SUCCESS)
                  for (auto f : arr) {
                    std::string_view name, t;
                    if (f["name"].get_string().get(name) == simdjson::SUCCESS && name == file) {
                      optional_field(f["content_type"].get_string().get(t));
                      type = std::string(t.empty() ? "application/octet-stream" : t);
                    }
                  }
                if (type.empty()) {
                  answer(404, error_json(404, "job " + id + " has no file " + file, "file_not_found"));
                  return;
                }
                std::ifstream in(fs::path(self->state.gw->config.jobs.dir) / id / file, std::ios::binary);
                if (!in) {
                  answer(404, error_json(404, "the file " + file + " of job " + id + " is gone (expired?)",
                                         "file_not_found"));
                  return;
                }
                std::ostringstream bytes;
                bytes << in.rdbuf();
                answer(200, bytes.str(), type);
              },
              rp);
          return {};
        }
        if (method == "GET") {
          respond_job(
              who, id, [=](job_record r) mutable { answer(200, public_view(r)); }, rp);
          return {};
        }
        if (method == "DELETE") {
          respond_job(
              who, id,
              [=](job_record r) mutable {
                auto live = self->state.live.find(r.id);
                if (live == self->state.live.end()) {
                  answer(409, error_json(409, "job " + r.id + " already " + r.status, "job_finished"));
                  return;
                }
                self->request(live->second, store_timeout, cancel_atom::value)
                    .then([=](std::int32_t status, const std::string& text,
                              const std::string& type) mutable { answer(status, text, type); },
                          [=](caf::error& err) mutable {
                            answer(409, error_json(409, "job " + r.id + " finished meanwhile: " + caf::to_string(err),
                                                   "job_finished"));
                          });
              },
              rp);
          return {};
        }
        answer(405, error_json(405, "use GET or DELETE for /v1/jobs/{id}"));
        return {};
      },
      [=](done_atom, const std::string&, const std::string& record) {
        if (auto r = job_record::from_json(record)) answer_waiters(self, *r);
      },
      [=](sweep_atom) {
        auto cutoff = clock::unix_ms() - static_cast<std::int64_t>(self->state.gw->config.jobs.ttl_s) * 1000;
        self->request(self->state.store, store_timeout, jobs_store_atom::value, std::string("expire"),
                      std::to_string(cutoff), std::string())
            .then(
                [=](std::int32_t, const std::string& ids) {
                  simdjson::dom::parser parser;
                  simdjson::dom::array arr;
                  if (parser.parse(ids).get_array().get(arr) != simdjson::SUCCESS) return;
                  std::size_t n = 0;
                  for (auto id : arr) {
                    std::string_view s;
                    if (id.get_string().get(s) != simdjson::SUCCESS || s.empty()) continue;
                    std::error_code ec;
                    fs::remove_all(fs::path(self->state.gw->config.jobs.dir) / safe_name(s), ec);
                    ++n;
                  }
                  if (n) log::info("expired jobs deleted", {{"jobs", n}});
                },
                [](caf::error&) {});
        self->delayed_send(self, std::chrono::seconds(self->state.gw->config.jobs.sweep_s), sweep_atom::value);
      },
  };
}

} // namespace

caf::actor spawn_jobs(caf::actor_system& sys, gateway_state& state, boost::asio::io_context& io, caf::actor store) {
  return sys.spawn<caf::detached>(manager, &state, &io, std::move(store));
}

} // namespace lowart::actors
