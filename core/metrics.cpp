#include "core/metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <charconv>
#include <map>
#include <mutex>
#include <unordered_map>

namespace lowart::metrics {

void counter::inc(double by) const {
  if (c_) c_->Increment(by);
}
double counter::value() const {
  return c_ ? c_->Value() : 0.0;
}
void gauge::set(double v) const {
  if (g_) g_->Set(v);
}
void gauge::add(double by) const {
  if (g_) g_->Increment(by);
}
void histogram::observe(double v) const {
  if (h_) h_->Observe(v);
}

namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

prometheus::Histogram::BucketBoundaries latency_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
}

/// All families, created once; prometheus-cpp makes Family::Add thread-safe.
struct families {
  prometheus::Registry registry;
  prometheus::Family<prometheus::Counter>& http_requests =
      BuildCounter().Name("http_requests_total").Help("HTTP requests served, by route and status").Register(registry);
  prometheus::Family<prometheus::Histogram>& http_duration =
      BuildHistogram()
          .Name("http_request_duration_seconds")
          .Help("Time from request read to response end, by route")
          .Register(registry);
  prometheus::Family<prometheus::Counter>& tokens =
      BuildCounter()
          .Name("gateway_tokens_total")
          .Help("Tokens metered, by model and type (prompt, completion, cached)")
          .Register(registry);
  prometheus::Family<prometheus::Counter>& upstream_requests =
      BuildCounter()
          .Name("gateway_upstream_requests_total")
          .Help("Upstream attempts, by deployment and status or error class")
          .Register(registry);
  prometheus::Family<prometheus::Histogram>& upstream_duration = BuildHistogram()
                                                                     .Name("gateway_upstream_duration_seconds")
                                                                     .Help("Upstream attempt duration, by deployment")
                                                                     .Register(registry);
  prometheus::Family<prometheus::Gauge>& deployment_inflight = BuildGauge()
                                                                   .Name("gateway_deployment_inflight")
                                                                   .Help("Upstream requests in flight per deployment")
                                                                   .Register(registry);
  prometheus::Family<prometheus::Gauge>& deployment_latency = BuildGauge()
                                                                  .Name("gateway_deployment_latency_ewma_seconds")
                                                                  .Help("Smoothed upstream latency per deployment")
                                                                  .Register(registry);
  prometheus::Family<prometheus::Counter>& usage_records = BuildCounter()
                                                               .Name("gateway_usage_records_total")
                                                               .Help("Usage records persisted (ok) or lost (error)")
                                                               .Register(registry);
  prometheus::Family<prometheus::Gauge>& connections =
      BuildGauge().Name("gateway_connections_open").Help("Downstream connections open").Register(registry);
  prometheus::Family<prometheus::Counter>& fallbacks =
      BuildCounter()
          .Name("gateway_fallbacks_total")
          .Help("Switches to another deployment or fallback model, by requested model")
          .Register(registry);
  prometheus::Family<prometheus::Counter>& mcp_calls =
      BuildCounter()
          .Name("gateway_mcp_tool_calls_total")
          .Help("MCP tool calls, by tool (server__tool) and outcome (ok, tool_error, error, timeout, denied, pending)")
          .Register(registry);
  prometheus::Family<prometheus::Histogram>& mcp_call_duration =
      BuildHistogram()
          .Name("gateway_mcp_tool_call_duration_seconds")
          .Help("Duration of MCP tools/call exchanges, by tool")
          .Register(registry);
  prometheus::Family<prometheus::Gauge>& mcp_server_up = BuildGauge()
                                                             .Name("gateway_mcp_server_up")
                                                             .Help("1 when the MCP server is initialized and ready")
                                                             .Register(registry);
  prometheus::Family<prometheus::Counter>& mcp_restarts =
      BuildCounter().Name("gateway_mcp_server_restarts_total").Help("MCP server process restarts").Register(registry);
  prometheus::Family<prometheus::Counter>& script_calls =
      BuildCounter()
          .Name("gateway_script_calls_total")
          .Help("Lua hook calls, by script, hook and outcome (ok, rejected, error)")
          .Register(registry);
  prometheus::Family<prometheus::Counter>& script_reloads =
      BuildCounter()
          .Name("gateway_script_reloads_total")
          .Help("Script loads, by script and result (ok, refused)")
          .Register(registry);
  prometheus::Family<prometheus::Counter>& jobs =
      BuildCounter()
          .Name("gateway_jobs_total")
          .Help("Background jobs that reached a final state, by model and status")
          .Register(registry);
  prometheus::Family<prometheus::Gauge>& jobs_live =
      BuildGauge().Name("gateway_jobs_live").Help("Jobs queued or running, by model").Register(registry);
  prometheus::Family<prometheus::Counter>& webhooks =
      BuildCounter()
          .Name("gateway_webhook_deliveries_total")
          .Help("Job completion webhooks, by result (delivered, retry, failed)")
          .Register(registry);
  prometheus::Family<prometheus::Counter>& a2a_tasks =
      BuildCounter()
          .Name("gateway_a2a_tasks_total")
          .Help("Agent bus tasks by state reached (submitted, completed, failed, canceled, rejected, dead)")
          .Register(registry);
  prometheus::Family<prometheus::Counter>& a2a_redeliveries =
      BuildCounter().Name("gateway_a2a_redeliveries_total").Help("Agent bus tasks delivered again").Register(registry);
  prometheus::Family<prometheus::Histogram>& a2a_delivery =
      BuildHistogram()
          .Name("gateway_a2a_delivery_seconds")
          .Help("Time from a task's submission to its acknowledgement by an agent")
          .Register(registry);
  prometheus::Family<prometheus::Gauge>& breaker_state =
      BuildGauge()
          .Name("gateway_breaker_state")
          .Help("Circuit breaker state per deployment: 0 closed, 1 open, 2 half-open")
          .Register(registry);
  prometheus::Family<prometheus::Counter>& breaker_transitions =
      BuildCounter()
          .Name("gateway_breaker_transitions_total")
          .Help("Circuit breaker transitions, by deployment and new state")
          .Register(registry);
  prometheus::Family<prometheus::Counter>& ratelimited =
      BuildCounter()
          .Name("gateway_ratelimited_total")
          .Help("Requests refused by a rate limit or budget, by reason")
          .Register(registry);
  prometheus::Family<prometheus::Counter>& cost = BuildCounter()
                                                      .Name("gateway_cost_total")
                                                      .Help("Cost of served requests in price units, by model")
                                                      .Register(registry);
  prometheus::Gauge& connections_gauge = connections.Add({});
  prometheus::Family<prometheus::Gauge>& redis_up =
      BuildGauge()
          .Name("gateway_redis_up")
          .Help("1 while this replica's Redis connections answer (fleet mode)")
          .Register(registry);
  prometheus::Family<prometheus::Counter>& fleet_messages = BuildCounter()
                                                                .Name("gateway_fleet_messages_total")
                                                                .Help("Changes received from other replicas, by topic")
                                                                .Register(registry);
  prometheus::Family<prometheus::Gauge>& usage_spooled =
      BuildGauge()
          .Name("gateway_usage_spooled_records")
          .Help("Usage records waiting in the local spool for the database")
          .Register(registry);
};

families& all() {
  static auto* f = new families; // lives until exit; handles point into it
  return *f;
}

/// The per-thread caches' key, built in a buffer of the thread's own: a lookup of a
/// label pair the cache has seen allocates nothing.
const std::string& cache_key(std::string_view a, std::string_view b) {
  thread_local std::string k;
  k.assign(a);
  k += '\x1f';
  k += b;
  return k;
}

} // namespace

counter http_requests(std::string_view route, int status) {
  thread_local std::unordered_map<std::string, prometheus::Counter*> cache;
  char digits[12];
  auto end = std::to_chars(digits, digits + sizeof digits, status).ptr;
  const auto& key = cache_key(route, std::string_view(digits, static_cast<std::size_t>(end - digits)));
  auto& slot = cache[key];
  if (!slot) slot = &all().http_requests.Add({{"route", std::string(route)}, {"status", std::to_string(status)}});
  return counter{slot};
}

histogram http_request_duration(std::string_view route) {
  thread_local std::unordered_map<std::string, prometheus::Histogram*> cache;
  auto& slot = cache[std::string(route)];
  if (!slot) slot = &all().http_duration.Add({{"route", std::string(route)}}, latency_buckets());
  return histogram{slot};
}

counter tokens(std::string_view model, std::string_view type) {
  return counter{&all().tokens.Add({{"model", std::string(model)}, {"type", std::string(type)}})};
}

counter upstream_requests(std::string_view deployment, std::string_view status) {
  thread_local std::unordered_map<std::string, prometheus::Counter*> cache;
  const auto& key = cache_key(deployment, status);
  auto& slot = cache[key];
  if (!slot)
    slot = &all().upstream_requests.Add({{"deployment", std::string(deployment)}, {"status", std::string(status)}});
  return counter{slot};
}

histogram upstream_duration(std::string_view deployment) {
  return histogram{&all().upstream_duration.Add({{"deployment", std::string(deployment)}}, latency_buckets())};
}

gauge deployment_inflight(std::string_view deployment) {
  return gauge{&all().deployment_inflight.Add({{"deployment", std::string(deployment)}})};
}

gauge deployment_latency_ewma(std::string_view deployment) {
  return gauge{&all().deployment_latency.Add({{"deployment", std::string(deployment)}})};
}

counter usage_records(std::string_view result) {
  return counter{&all().usage_records.Add({{"result", std::string(result)}})};
}

gauge connections_open() {
  return gauge{&all().connections_gauge};
}

counter ratelimited(std::string_view reason) {
  return counter{&all().ratelimited.Add({{"reason", std::string(reason)}})};
}

counter cost(std::string_view model) {
  return counter{&all().cost.Add({{"model", std::string(model)}})};
}

counter fallbacks(std::string_view model) {
  return counter{&all().fallbacks.Add({{"model", std::string(model)}})};
}

counter mcp_calls(std::string_view tool, std::string_view outcome) {
  return counter{&all().mcp_calls.Add({{"tool", std::string(tool)}, {"outcome", std::string(outcome)}})};
}

histogram mcp_call_duration(std::string_view tool) {
  return histogram{&all().mcp_call_duration.Add({{"tool", std::string(tool)}}, latency_buckets())};
}

gauge mcp_server_up(std::string_view server) {
  return gauge{&all().mcp_server_up.Add({{"server", std::string(server)}})};
}

counter mcp_restarts(std::string_view server) {
  return counter{&all().mcp_restarts.Add({{"server", std::string(server)}})};
}

counter script_calls(std::string_view script, std::string_view hook, std::string_view outcome) {
  return counter{&all().script_calls.Add(
      {{"script", std::string(script)}, {"hook", std::string(hook)}, {"outcome", std::string(outcome)}})};
}

counter script_reloads(std::string_view script, std::string_view result) {
  return counter{&all().script_reloads.Add({{"script", std::string(script)}, {"result", std::string(result)}})};
}

counter jobs(std::string_view model, std::string_view status) {
  return counter{&all().jobs.Add({{"model", std::string(model)}, {"status", std::string(status)}})};
}

gauge jobs_live(std::string_view model) {
  return gauge{&all().jobs_live.Add({{"model", std::string(model)}})};
}

counter webhooks(std::string_view result) {
  return counter{&all().webhooks.Add({{"result", std::string(result)}})};
}

counter a2a_tasks(std::string_view state) {
  return counter{&all().a2a_tasks.Add({{"state", std::string(state)}})};
}

counter a2a_redeliveries() {
  return counter{&all().a2a_redeliveries.Add({})};
}

histogram a2a_delivery_seconds() {
  return histogram{&all().a2a_delivery.Add({}, latency_buckets())};
}

gauge breaker_state(std::string_view deployment) {
  return gauge{&all().breaker_state.Add({{"deployment", std::string(deployment)}})};
}

counter breaker_transitions(std::string_view deployment, std::string_view to) {
  return counter{&all().breaker_transitions.Add({{"deployment", std::string(deployment)}, {"to", std::string(to)}})};
}

gauge redis_up() {
  return gauge{&all().redis_up.Add({})};
}

counter fleet_messages(std::string_view topic) {
  return counter{&all().fleet_messages.Add({{"topic", std::string(topic)}})};
}

gauge usage_spooled() {
  return gauge{&all().usage_spooled.Add({})};
}

std::string render() {
  prometheus::TextSerializer serializer;
  return serializer.Serialize(all().registry.Collect());
}

} // namespace lowart::metrics
