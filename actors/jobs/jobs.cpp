// The jobs manager (spawn_jobs, described in jobs.hpp): the /v1/jobs and
// /v1/images/generations API, building a job's workflow, resuming unfinished jobs and
// sweeping expired ones; and what clients see of a job. One job's actor is in
// job_actor.cpp, its ComfyUI exchange in job_comfyui.cpp; shared parts in jobs_internal.hpp.

#include "actors/jobs/jobs.hpp"

#include "actors/jobs/jobs_internal.hpp"
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
#include "scripting/hooks.hpp"

#include <boost/asio/io_context.hpp>
#include <caf/all.hpp>
#include <simdjson.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace lowart::actors {

// --- what clients see, and what both the manager and a job use ---------------------------------

namespace detail::jobs {

std::string error_json(int status, std::string_view message, std::string_view code, std::string_view param) {
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

} // namespace detail::jobs

namespace {

using namespace detail::jobs;
namespace fs = std::filesystem;

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
