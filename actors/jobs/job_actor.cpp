// One job's actor: its life from resume to the end (saving every state change, the HTTP
// calls it makes, failing and finishing, metering, the webhook) and its behaviour. The
// exchange with its ComfyUI backend is in job_comfyui.cpp; the manager that spawns it is
// in jobs.cpp; what they share is in jobs_internal.hpp.

#include "actors/jobs/jobs_internal.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"
#include "core/secrets.hpp"
#include "net/http_client.hpp"

#include <boost/asio/io_context.hpp>
#include <caf/all.hpp>

#include <optional>

namespace lowart::actors::detail::jobs {

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

/// One HTTP exchange on the background io thread; its answer comes back as http_atom
/// with `tag`. `on_io` may look at (and shrink) the reply on the io thread first.
void call(job_actor* self, std::string method, const std::string& url, std::string body, std::string tag,
          std::function<void(net::http_reply&)> on_io, std::vector<std::pair<std::string, std::string>> headers) {
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

void fail(job_actor* self, std::string message) {
  auto& r = self->state.rec;
  log::warn("job failed", {{"job", r.id}, {"model", r.model}, {"error", message}});
  r.status = "failed";
  r.error = std::move(message);
  finish(self);
}

namespace {

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

} // namespace

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

namespace {

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

} // namespace

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

} // namespace lowart::actors::detail::jobs
