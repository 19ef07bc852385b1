// The proxy path's entry (start_proxy) and the client's request up to its first attempt:
// the body read and checked, the deployment candidates in order, limits and budgets
// reserved (locally or in the fleet), and the headers that report them. The upstream
// request is built in proxy_request.cpp; the exchange is in proxy_upstream.cpp.
#include "core/clock.hpp"
#include "net/proxy_internal.hpp"
#include "net/validate.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>

namespace lowart::net::proxy_detail {

namespace {

/// Orders one priority group by the model's balancing policy.
void order_group(std::vector<deployment_ptr>& group, model_route::balance policy) {
  if (group.size() < 2) return;
  switch (policy) {
  case model_route::balance::least_inflight: {
    // Random start so ties spread, then fewest in flight first.
    std::rotate(group.begin(), group.begin() + static_cast<long>(next_random() % group.size()), group.end());
    std::stable_sort(group.begin(), group.end(), [](const auto& a, const auto& b) {
      return a->stats->inflight.load(std::memory_order_relaxed) < b->stats->inflight.load(std::memory_order_relaxed);
    });
    return;
  }
  case model_route::balance::latency: {
    // Power of two choices: of two random deployments, the lower EWMA goes first.
    auto i = next_random() % group.size();
    auto j = (i + 1 + next_random() % (group.size() - 1)) % group.size();
    auto ei = group[i]->stats->latency_ewma_us.load(std::memory_order_relaxed);
    auto ej = group[j]->stats->latency_ewma_us.load(std::memory_order_relaxed);
    std::swap(group[0], group[ei <= ej ? i : j]);
    return;
  }
  case model_route::balance::weighted: {
    // Weighted random order without replacement.
    for (std::size_t k = 0; k + 1 < group.size(); ++k) {
      std::uint64_t total = 0;
      for (std::size_t m = k; m < group.size(); ++m)
        total += static_cast<std::uint64_t>(group[m]->weight);
      auto pick = next_random() % total;
      for (std::size_t m = k; m < group.size(); ++m) {
        auto w = static_cast<std::uint64_t>(group[m]->weight);
        if (pick < w) {
          std::swap(group[k], group[m]);
          break;
        }
        pick -= w;
      }
    }
    return;
  }
  }
}

} // namespace

void proxy_call::start() {
  if (!parse_request()) return;
  if (fleet_wait_) return; // the fleet's answer goes on (fleet_answer)
  admitted();
}

void proxy_call::admitted() {
  deadline_ = ctx_.start + std::chrono::milliseconds(total_ms());
  capture_ = route_->log_bodies || (!ctx_.who->master && ctx_.who->key->log_bodies);
  if (stream_) pending_.reserve(2 * 1024); // a few events without regrowing (a burst grows it)
  next_candidate();
}

bool proxy_call::parse_request() {
  simdjson::dom::object obj;
  if (!read_body(obj)) return false;
  routes_ = client_->worker().state.routes.load();
  if (routes_ && routes_->any_script && !model_request_hook(obj)) return false;
  return check_request(obj);
}

bool proxy_call::read_body(simdjson::dom::object& obj) {
  // Parsed from the thread's padded copy: making room in body_ itself reallocated it
  // (a malloc and a copy as large as the body), the copy alone is cheaper.
  simdjson::dom::element doc;
  if (body_.empty() || parse_reused(body_, doc) != simdjson::SUCCESS) {
    client_->respond_error(ctx_, error_kind::bad_request, "the request body is not valid JSON", "invalid_json");
    return false;
  }
  if (doc.get_object().get(obj) != simdjson::SUCCESS) {
    client_->respond_error(ctx_, error_kind::bad_request, "the request body must be a JSON object", "invalid_json");
    return false;
  }
  std::string_view model;
  auto model_field = obj["model"];
  if (model_field.error() == simdjson::NO_SUCH_FIELD) {
    client_->respond_error(ctx_, error_kind::bad_request, "you must provide a model parameter", "missing_model", {},
                           "model");
    return false;
  }
  if (model_field.get_string().get(model) != simdjson::SUCCESS || model.empty()) {
    client_->respond_error(ctx_, error_kind::bad_request, "model must be a non-empty string", "invalid_model", {},
                           "model");
    return false;
  }
  ctx_.model = std::string(model);
  if (kind_ != proxy_kind::embeddings)
    if (auto problem = check_chat_request(obj, kind_ == proxy_kind::messages)) {
      client_->respond_error(ctx_, error_kind::bad_request, problem.message, {}, {}, problem.param);
      return false;
    }
  stream_ = false;
  client_usage_ = false;
  if (kind_ != proxy_kind::embeddings) {
    bool flag = false;
    if (obj["stream"].get_bool().get(flag) == simdjson::SUCCESS) stream_ = flag;
    if (obj.at_pointer("/stream_options/include_usage").get_bool().get(flag) == simdjson::SUCCESS) client_usage_ = flag;
  }
  return true;
}

bool proxy_call::check_request(simdjson::dom::object& obj) {
  auto it = routes_ ? routes_->models.find(ctx_.model) : decltype(routes_->models.end()){};
  if (!routes_ || it == routes_->models.end() || it->second.deployments.empty()) {
    client_->respond_error(ctx_, error_kind::not_found,
                           "The model `" + ctx_.model + "` does not exist or you do not have access to it.",
                           "model_not_found", {}, "model");
    return false;
  }
  if (!ctx_.who->master && !ctx_.who->key->allows_model(ctx_.model)) {
    client_->respond_error(ctx_, error_kind::forbidden, "this key is not allowed to use model `" + ctx_.model + "`",
                           "model_not_allowed", {}, "model");
    return false;
  }
  route_ = &it->second;

  add_candidates(*route_);
  for (const auto& name : route_->fallbacks)
    if (auto f = routes_->models.find(name); f != routes_->models.end()) add_candidates(f->second);
  if (candidates_.empty()) {
    client_->respond_error(ctx_, error_kind::bad_request,
                           "model `" + ctx_.model + "` has no deployment that serves " +
                               (kind_ == proxy_kind::embeddings ? "embeddings" : "chat"),
                           "unsupported_model", {}, "model");
    return false;
  }

  // Limits and budgets of the key, its team and the model: all or nothing, before any
  // upstream is asked. The estimate is the prompt (about 4 bytes a token) plus max_tokens.
  prompt_estimate_ = static_cast<std::int64_t>(body_.size() / 4);
  auto keys = client_->worker().state.keys.load();
  std::optional<key_subjects> of_key; // the subject names, alive for the reservation
  std::vector<rate_limiter::subject_ref> subjects;
  if (!ctx_.who->master) {
    of_key.emplace(keys.get(), *ctx_.who->key);
    subjects.reserve(of_key->list.size() + 1); // + the model's: one allocation, not a copy and a regrowth
    subjects.assign(of_key->list.begin(), of_key->list.end());
  }
  std::string model_id;
  if (route_->lim.any()) {
    model_id = "model:" + route_->name;
    subjects.push_back({model_id, &route_->lim});
  }
  if (stream_ && !client_usage_) {
    // Ask upstreams for their usage chunk so streams are metered exactly, and keep that
    // chunk from a client that did not ask for it. (Per provider: see build_upstream_request.)
    strip_usage_chunk_ = true;
  }
  if (!subjects.empty()) {
    keys_ = std::move(keys); // the limits referenced by the ticket live in these snapshots
    auto& state = client_->worker().state;
    // The completion: max_tokens (or max_completion_tokens) for each of n choices, else
    // the configured default; embeddings have none.
    std::int64_t max_tokens = 0, n = 1;
    if (kind_ != proxy_kind::embeddings) {
      if (obj["max_tokens"].get_int64().get(max_tokens) != simdjson::SUCCESS &&
          obj["max_completion_tokens"].get_int64().get(max_tokens) != simdjson::SUCCESS)
        max_tokens = state.config.limits.default_max_tokens;
      if (obj["n"].get_int64().get(n) != simdjson::SUCCESS || n < 1) n = 1;
    }
    auto completion = std::max<std::int64_t>(0, max_tokens) * n;
    auto estimate = prompt_estimate_ + completion;
    bool cost_budget = false, shared = false;
    for (const auto& sub : subjects) {
      cost_budget = cost_budget || sub.lim->budget_cost > 0;
      shared = shared || sub.lim->rpm || sub.lim->tpm || sub.lim->budget_tokens || sub.lim->budget_cost > 0;
    }
    if (cost_budget) estimate_cost_ = estimated_cost(prompt_estimate_, completion);
    if (state.fleet && shared) return ask_fleet(subjects, estimate);
    limit_ = state.limiter.reserve(subjects, estimate, clock::unix_ms(), ticket_, false, estimate_cost_);
    if (!limit_.allowed) {
      refuse_limited();
      return false;
    }
  }
  return true;
}

double proxy_call::estimated_cost(std::int64_t prompt, std::int64_t completion) const {
  auto prices = client_->worker().state.prices.load();
  auto p = prices ? prices->by_model.find(ctx_.model) : decltype(prices->by_model.end()){};
  if (!prices || p == prices->by_model.end()) return 0;
  auto in = std::max(p->second.input_per_1m, p->second.cached_input_per_1m), out = p->second.output_per_1m;
  for (const auto& t : p->second.tiers) {
    in = std::max({in, t.input_per_1m, t.cached_input_per_1m});
    out = std::max(out, t.output_per_1m);
  }
  return (static_cast<double>(prompt) * in + static_cast<double>(completion) * out) / 1e6 + p->second.per_request;
}

bool proxy_call::ask_fleet(const std::vector<rate_limiter::subject_ref>& subjects, std::int64_t estimate) {
  auto& state = client_->worker().state;
  auto worker = client_->worker().index;
  fleet_subjects_ = fleet_subjects(subjects);
  fleet_estimate_ = estimate;
  if (!state.fleet->up(worker)) return fleet_down();
  // max_parallel stays with this replica: taken here, before Redis is asked.
  limit_ = state.limiter.reserve(subjects, estimate, clock::unix_ms(), ticket_, true);
  if (!limit_.allowed) {
    refuse_limited();
    return false;
  }
  fleet_wait_ = true;
  // Held in Redis past the request's deadline only should this replica die before settling.
  lowart::fleet::estimate e{estimate, estimate_cost_, total_ms() + reservation_margin_ms};
  fleet_reservation_ = state.fleet->reserve(
      worker, fleet_subjects_, e, clock::unix_ms(),
      [self = shared_from_this()](bool reached, const limit_decision& d) { self->fleet_answer(reached, d); });
  return true;
}

void proxy_call::fleet_answer(bool reached, const limit_decision& d) {
  fleet_wait_ = false;
  if (!reached) {
    // The script may have run: its reservation goes when Redis answers again.
    client_->worker().state.fleet->release(client_->worker().index, fleet_subjects_, fleet_reservation_);
    client_->worker().state.limiter.settle(ticket_, 0, 0, clock::unix_ms());
    if (fleet_down()) admitted();
    return;
  }
  if (!d.allowed) {
    client_->worker().state.limiter.settle(ticket_, 0, 0, clock::unix_ms());
    limit_ = d;
    refuse_limited();
    return;
  }
  limit_ = d;
  fleet_ticket_ = true;
  admitted();
}

bool proxy_call::fleet_down() {
  auto& state = client_->worker().state;
  if (!state.fleet->fail_open()) {
    metrics::ratelimited("unavailable").inc();
    client_->respond_error(ctx_, error_kind::unavailable,
                           "rate limits cannot be checked now (the shared limit store does not answer); retry shortly",
                           "limits_unavailable", "retry-after: 1\r\n");
    return false;
  }
  // Fail open: this replica's own limits, from the same subjects.
  limit_ = state.limiter.reserve(subject_refs(fleet_subjects_), fleet_estimate_, clock::unix_ms(), ticket_, false,
                                 estimate_cost_);
  if (!limit_.allowed) {
    refuse_limited();
    return false;
  }
  return true;
}

void proxy_call::refuse_limited() {
  metrics::ratelimited(limit_.reason).inc();
  auto headers = ratelimit_headers() + "retry-after: " + std::to_string(limit_.retry_after_s) + "\r\n";
  if (limit_.requested_tokens) { // waiting will not help: say what to change
    client_->respond_error(ctx_, error_kind::rate_limited,
                           "request too large for this " + limit_.subject + "'s tokens per minute (tpm): it asks for " +
                               std::to_string(limit_.requested_tokens) +
                               " tokens (the prompt, about 4 bytes a token, plus max_tokens), more than the limit; "
                               "lower max_tokens",
                           "rate_limit_exceeded", headers);
    return;
  }
  client_->respond_error(ctx_, error_kind::rate_limited,
                         "rate limit reached for this " + limit_.subject + " (" + limit_.reason + "); retry in " +
                             std::to_string(limit_.retry_after_s) + " s",
                         "rate_limit_exceeded", headers);
}

void proxy_call::add_candidates(const model_route& route) {
  const auto& all = route.deployments;
  for (std::size_t i = 0; i < all.size();) {
    std::size_t j = i;
    std::vector<deployment_ptr> group;
    while (j < all.size() && all[j]->priority == all[i]->priority) {
      bool seen =
          std::any_of(candidates_.begin(), candidates_.end(), [&](const auto& c) { return c->id == all[j]->id; });
      // Embeddings need an OpenAI-compatible upstream; chat works with both protocols.
      const auto& kind = all[j]->settings->kind;
      bool serves = kind == "openai" || (kind == "anthropic" && kind_ != proxy_kind::embeddings);
      if (!seen && serves) group.push_back(all[j]);
      ++j;
    }
    order_group(group, route.balancing);
    candidates_.insert(candidates_.end(), group.begin(), group.end());
    i = j;
  }
}

namespace {

void append_int(std::string& out, std::int64_t n) {
  char buf[24];
  auto end = std::to_chars(buf, buf + sizeof buf, n).ptr;
  out.append(buf, end);
}

/// A reset as OpenAI writes it: a duration like "1.5s".
void append_seconds(std::string& out, std::int64_t ms) {
  char buf[32];
  int n = std::snprintf(buf, sizeof buf, "%.3gs", static_cast<double>(std::max<std::int64_t>(0, ms)) / 1000.0);
  out.append(buf, static_cast<std::size_t>(std::max(0, n)));
}

} // namespace

// Both are built in one reserved string: these headers were 19 allocations per request.
std::string proxy_call::gateway_headers() const {
  std::string h;
  h.reserve(448);
  h += "x-lowart-deployment: ";
  h += dep_->id;
  h += "\r\nx-lowart-fallbacks: ";
  append_int(h, fallbacks_);
  h += "\r\n";
  append_ratelimit_headers(h);
  return h;
}

std::string proxy_call::ratelimit_headers() const {
  std::string h;
  h.reserve(384);
  append_ratelimit_headers(h);
  return h;
}

void proxy_call::append_ratelimit_headers(std::string& h) const {
  // OpenAI's names; resets as durations like "1.5s".
  auto three = [&h](std::string_view what, std::int64_t limit, std::int64_t remaining, std::int64_t reset_ms) {
    h += "x-ratelimit-limit-";
    h += what;
    h += ": ";
    append_int(h, limit);
    h += "\r\nx-ratelimit-remaining-";
    h += what;
    h += ": ";
    append_int(h, remaining);
    h += "\r\nx-ratelimit-reset-";
    h += what;
    h += ": ";
    append_seconds(h, reset_ms);
    h += "\r\n";
  };
  if (limit_.limit_requests)
    three("requests", limit_.limit_requests, limit_.remaining_requests, limit_.reset_requests_ms);
  if (limit_.limit_tokens) three("tokens", limit_.limit_tokens, limit_.remaining_tokens, limit_.reset_tokens_ms);
}

} // namespace lowart::net::proxy_detail

namespace lowart::net {

void start_proxy(session_ptr client, request_context&& ctx, proxy_kind kind, std::string&& body,
                 std::shared_ptr<responses::exchange> responses) {
  std::make_shared<proxy_detail::proxy_call>(std::move(client), std::move(ctx), kind, std::move(body),
                                             std::move(responses))
      ->start();
}

} // namespace lowart::net
