#include "actors/routing/router.hpp"

#include "actors/messages.hpp"
#include "actors/routing/breaker.hpp"
#include "actors/state.hpp"
#include "core/log.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <map>
#include <mutex>
#include <set>

namespace lowart::actors {
namespace {

constexpr auto provider_tick = std::chrono::seconds(1);

struct provider_state {
  static inline const char* name = "provider";
  std::shared_ptr<const deployment> dep;
  std::int64_t last_requests = 0;
  std::int64_t last_latency_us = 0;
  double ewma_seconds = 0;
  metrics::gauge inflight;
  metrics::gauge latency;
};

caf::behavior provider(caf::stateful_actor<provider_state>* self, std::shared_ptr<const deployment> dep) {
  auto& st = self->state;
  st.dep = dep;
  st.inflight = metrics::deployment_inflight(dep->id);
  st.latency = metrics::deployment_latency_ewma(dep->id);
  st.last_requests = dep->stats->requests.load(std::memory_order_relaxed);
  st.last_latency_us = dep->stats->latency_us_total.load(std::memory_order_relaxed);
  self->delayed_send(self, provider_tick, tick_atom::value);
  return {
      [=](tick_atom) {
        auto& s = self->state;
        auto& stats = *s.dep->stats;
        auto requests = stats.requests.load(std::memory_order_relaxed);
        auto latency_us = stats.latency_us_total.load(std::memory_order_relaxed);
        if (auto n = requests - s.last_requests; n > 0) {
          double mean = static_cast<double>(latency_us - s.last_latency_us) / static_cast<double>(n) / 1e6;
          s.ewma_seconds = s.ewma_seconds == 0 ? mean : 0.7 * s.ewma_seconds + 0.3 * mean;
        }
        s.last_requests = requests;
        s.last_latency_us = latency_us;
        s.inflight.set(static_cast<double>(stats.inflight.load(std::memory_order_relaxed)));
        s.latency.set(s.ewma_seconds);
        stats.latency_ewma_us.store(static_cast<std::int64_t>(s.ewma_seconds * 1e6), std::memory_order_relaxed);
        self->delayed_send(self, provider_tick, tick_atom::value);
      },
  };
}

/// Where a deployment's breaker_control sends reports: the current breaker actor,
/// replaced under the mutex when the router restarts it.
struct breaker_link {
  std::mutex mutex;
  caf::actor actor;
};

struct router_state {
  static inline const char* name = "router";
  std::map<std::string, caf::actor> breaker_by_id;            ///< deployment id -> breaker
  std::map<caf::actor_addr, std::string> breaker_of;          ///< breaker -> deployment id
  std::map<std::string, std::shared_ptr<breaker_link>> links; ///< deployment id -> link
  config::breaker_config breaker_settings;
  gateway_state* gw = nullptr;
  std::map<std::string, std::shared_ptr<const deployment>> deployments;  ///< by id
  std::map<caf::actor_addr, std::string> provider_of;                    ///< actor -> deployment id
  std::map<std::string, caf::actor> provider_by_id;                      ///< deployment id -> actor
  std::set<caf::actor_addr> children;                                    ///< every provider ever spawned
  std::map<std::string, std::shared_ptr<const deployment>> provider_dep; ///< what each provider watches
};

using router_actor = caf::stateful_actor<router_state>;

void spawn_breaker_for(router_actor* self, const std::shared_ptr<const deployment>& dep) {
  auto& st = self->state;
  std::function<void(const std::string&)> announce;
  if (auto fleet = st.gw->fleet)
    announce = [fleet, id = dep->id](const std::string& mode) { fleet->publish("breaker", id + '\n' + mode); };
  auto child = spawn_breaker(self->system(), dep->id, dep->breaker, st.breaker_settings, std::move(announce));
  self->link_to(child);
  self->monitor(child);
  st.breaker_by_id[dep->id] = child;
  st.breaker_of[child.address()] = dep->id;
  st.children.insert(child.address());
  auto& link = st.links[dep->id];
  if (!link) {
    link = std::make_shared<breaker_link>();
    dep->breaker->report = [link](bool probe, bool success) {
      std::lock_guard guard{link->mutex};
      if (link->actor) caf::anon_send(link->actor, report_atom::value, probe, success);
    };
  }
  std::lock_guard guard{link->mutex};
  link->actor = child;
}

void spawn_provider(router_actor* self, const std::shared_ptr<const deployment>& dep) {
  // Linked: providers end with their router. Monitored: the router restarts one that
  // dies alone (its exit message is absorbed by the router's exit handler).
  auto child = self->spawn<caf::monitored + caf::linked>(provider, dep);
  self->state.provider_of[child.address()] = dep->id;
  self->state.provider_by_id[dep->id] = child;
  self->state.provider_dep[dep->id] = dep;
  self->state.children.insert(child.address());
}

/// Builds the table from the routing snapshot. Deployments with the same provider and
/// upstream model are one deployment (one set of counters, one provider actor); a
/// deployment whose provider settings did not change keeps its counters across reloads.
std::shared_ptr<route_table> build_table(router_state& st) {
  // lowart.toml first; what the admin API created or changed wins by name.
  auto file = st.gw->routing.load();
  auto api = st.gw->catalog.load();
  st.breaker_settings = file->breaker;
  std::map<std::string, std::shared_ptr<const config::provider_config>> providers;
  for (const auto* source : {file.get(), api.get()})
    for (const auto& p : source->providers)
      providers[p.name] = std::make_shared<config::provider_config>(p);
  std::map<std::string, const config::model_config*> model_by_name;
  for (const auto* source : {file.get(), api.get()})
    for (const auto& m : source->models)
      model_by_name[m.name] = &m;
  auto previous = std::move(st.deployments);
  st.deployments.clear();
  auto table = std::make_shared<route_table>();
  for (const auto& [_, model] : model_by_name) {
    const auto& m = *model;
    model_route route;
    route.name = m.name;
    route.fallbacks = m.fallbacks;
    route.balancing = m.balancing == "least_inflight" ? model_route::balance::least_inflight
                      : m.balancing == "latency"      ? model_route::balance::latency
                                                      : model_route::balance::weighted;
    route.retries = m.retries;
    route.retry_backoff_ms = m.retry_backoff_ms;
    route.max_retry_wait_ms = m.max_retry_wait_ms;
    route.timeout_ms = m.timeout_ms;
    route.connect_timeout_ms = m.connect_timeout_ms;
    route.first_byte_timeout_ms = m.first_byte_timeout_ms;
    route.idle_timeout_ms = m.idle_timeout_ms;
    route.fallbacks_used = metrics::fallbacks(m.name);
    route.lim.rpm = m.rpm;
    route.lim.tpm = m.tpm;
    route.lim.max_parallel = m.max_parallel;
    route.script = m.script;
    route.workflow = m.workflow;
    route.log_bodies = m.log_bodies;
    if (!m.script.empty()) table->any_script = true;
    route.prompt_tokens = metrics::tokens(m.name, "prompt");
    route.completion_tokens = metrics::tokens(m.name, "completion");
    route.cached_tokens = metrics::tokens(m.name, "cached");
    route.cost = metrics::cost(m.name);
    for (const auto& d : m.deployments) {
      auto found = providers.find(d.provider);
      if (found == providers.end()) {
        log::warn("deployment names an unknown provider; skipped", {{"model", m.name}, {"provider", d.provider}});
        continue;
      }
      auto settings = found->second;
      if (!settings->script.empty()) table->any_script = true;
      auto id = d.provider + "/" + d.model;
      auto& slot = st.deployments[id];
      if (!slot) {
        if (auto old = previous.find(id); old != previous.end() && *old->second->settings == *settings) {
          slot = old->second;
        } else {
          auto dep = std::make_shared<deployment>();
          dep->id = id;
          dep->provider = d.provider;
          dep->upstream_model = d.model;
          dep->settings = settings;
          if (!parse_upstream(settings->base_url, dep->target))
            throw std::runtime_error("provider '" + d.provider + "' has an invalid base_url");
          if (dep->target.tls) {
            // A TLS connection carries the trust decision made at its handshake: only
            // providers with the same verification settings may share it.
            dep->target.pool_key += settings->verify_tls ? "|verify" : "|no-verify";
            dep->target.pool_key += "|ca=" + settings->ca_file;
          }
          dep->stats = std::make_shared<deployment_stats>();
          dep->breaker = std::make_shared<breaker_control>();
          dep->upstream_duration = metrics::upstream_duration(id);
          slot = dep;
        }
      }
      // Priority and weight belong to the model's use of a deployment.
      auto use = std::make_shared<deployment>(*slot);
      use->priority = d.priority;
      use->weight = d.weight;
      route.deployments.push_back(std::move(use));
    }
    if (route.deployments.empty()) continue;
    std::stable_sort(route.deployments.begin(), route.deployments.end(),
                     [](const auto& a, const auto& b) { return a->priority < b->priority; });
    table->names.push_back(m.name);
    table->models.emplace(m.name, std::move(route));
  }
  std::sort(table->names.begin(), table->names.end());
  auto has = [&](const char* cls) {
    const auto& on = file->breaker.failure_on;
    return std::find(on.begin(), on.end(), cls) != on.end();
  };
  table->fail_on_connect = has("connect_error");
  table->fail_on_timeout = has("timeout");
  table->fail_on_5xx = has("5xx");
  table->fail_on_429 = has("429");
  table->fail_on_mid_stream = has("mid_stream");
  for (const auto& [_, dep] : st.deployments)
    table->all_deployments.push_back(dep);
  return table;
}

/// Publishes a new table and makes the provider actors match its deployments: new
/// ones are spawned, replaced and removed ones are stopped (without a restart).
void rebuild(router_actor* self) {
  auto& st = self->state;
  auto table = build_table(st);
  st.gw->routes.publish(table);
  for (auto it = st.provider_by_id.begin(); it != st.provider_by_id.end();) {
    auto dep = st.deployments.find(it->first);
    bool keep = dep != st.deployments.end() && self->state.provider_dep[it->first] == dep->second;
    if (keep) {
      ++it;
      continue;
    }
    st.provider_of.erase(it->second.address()); // its down message is then ignored
    self->send_exit(it->second, caf::exit_reason::user_shutdown);
    st.provider_dep.erase(it->first);
    it = st.provider_by_id.erase(it);
  }
  for (const auto& [id, dep] : st.deployments)
    if (!st.provider_by_id.count(id)) spawn_provider(self, dep);
  // Breakers follow the same rule: a replaced or removed deployment's breaker stops.
  for (auto it = st.breaker_by_id.begin(); it != st.breaker_by_id.end();) {
    auto dep = st.deployments.find(it->first);
    if (dep != st.deployments.end() && st.provider_dep[it->first] == dep->second) {
      ++it;
      continue;
    }
    st.breaker_of.erase(it->second.address());
    self->send_exit(it->second, caf::exit_reason::user_shutdown);
    st.links.erase(it->first);
    it = st.breaker_by_id.erase(it);
  }
  for (const auto& [id, dep] : st.deployments)
    if (!st.breaker_by_id.count(id)) spawn_breaker_for(self, dep);
  log::info("routes published", {{"models", table->names.size()}, {"deployments", st.deployments.size()}});
}

caf::behavior router(router_actor* self, gateway_state* gw) {
  self->state.gw = gw;
  rebuild(self);
  // Breakers another replica opened before this one started (or restarted the router).
  if (gw->fleet) gw->fleet->replay_breakers();
  self->set_exit_handler([=](caf::exit_msg& msg) {
    if (self->state.children.count(msg.source)) return; // one of our providers ended; the down handler restarts it
    self->quit(msg.reason);
  });
  self->set_down_handler([=](caf::down_msg& msg) {
    if (auto b = self->state.breaker_of.find(msg.source); b != self->state.breaker_of.end()) {
      auto id = b->second;
      self->state.breaker_of.erase(b);
      self->state.breaker_by_id.erase(id);
      log::warn("breaker actor down; restarting", {{"deployment", id}, {"reason", caf::to_string(msg.reason)}});
      if (auto d = self->state.deployments.find(id); d != self->state.deployments.end())
        spawn_breaker_for(self, d->second);
      return;
    }
    auto it = self->state.provider_of.find(msg.source);
    if (it == self->state.provider_of.end()) return;
    auto id = it->second;
    self->state.provider_of.erase(it);
    self->state.provider_by_id.erase(id);
    self->state.provider_dep.erase(id);
    log::warn("provider actor down; restarting", {{"deployment", id}, {"reason", caf::to_string(msg.reason)}});
    self->delayed_send(self, std::chrono::milliseconds(100), restart_atom::value, id);
  });
  return {
      [=](restart_atom, const std::string& id) {
        auto& st = self->state;
        if (auto it = st.deployments.find(id); it != st.deployments.end() && !st.provider_by_id.count(id))
          spawn_provider(self, it->second);
      },
      [=](reload_atom) -> bool {
        try {
          rebuild(self);
          return true;
        } catch (const std::exception& e) {
          log::error("route rebuild failed; the previous routes stay", {{"error", e.what()}});
          return false;
        }
      },
      [=](fleet_atom, const std::string& /*topic*/, const std::string& payload) {
        // "deployment id\nmode\nsince (unix ms)" from another replica's breaker.
        auto nl = payload.find('\n');
        if (nl == std::string::npos) return;
        auto rest = payload.substr(nl + 1);
        auto nl2 = rest.find('\n');
        auto mode = rest.substr(0, nl2);
        std::int64_t since = nl2 == std::string::npos ? 0 : std::atoll(rest.c_str() + nl2 + 1);
        if (auto it = self->state.breaker_by_id.find(payload.substr(0, nl)); it != self->state.breaker_by_id.end())
          self->send(it->second, fleet_atom::value, mode, since);
      },
      [=](status_atom, const std::string& id) -> caf::actor {
        auto it = self->state.provider_by_id.find(id);
        return it == self->state.provider_by_id.end() ? caf::actor{} : it->second;
      },
  };
}

} // namespace

caf::actor spawn_router(caf::actor_system& sys, gateway_state& state) {
  return sys.spawn(router, &state);
}

} // namespace lowart::actors
