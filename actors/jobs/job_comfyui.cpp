// A job's exchange with its ComfyUI backend: choosing the backend (shortest queue),
// handing the prompt over, the /ws progress feed, polling /queue and /history, reading
// the history entry, and fetching the outputs through /view. The job actor that drives
// it is in job_actor.cpp; what they share is in jobs_internal.hpp.

#include "actors/jobs/jobs_internal.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "core/log.hpp"
#include "net/http_client.hpp"
#include "net/ws_client.hpp"

#include <boost/asio/io_context.hpp>
#include <caf/all.hpp>
#include <simdjson.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>

namespace lowart::actors::detail::jobs {
namespace {

namespace fs = std::filesystem;

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

} // namespace

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

namespace {

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

} // namespace

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

namespace {

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

} // namespace

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

namespace {

void fetch_outputs(job_actor* self);

/// How many of a backend's latest history entries are searched for a prompt by lowart's
/// client id (only for a hand-over whose answer was never stored).
constexpr int history_search_items = 200;

} // namespace

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

namespace {

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

} // namespace

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

} // namespace lowart::actors::detail::jobs
