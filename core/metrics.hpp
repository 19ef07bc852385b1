#pragma once
// Prometheus metrics of the gateway. The registry and text serializer come from
// prometheus-cpp (core only); lowart's own listener serves `render()` at /metrics.
//
// Hot-path rule: label lookups happen once. Callers keep `counter`, `gauge` and
// `histogram` handles (in route snapshots, per-thread caches) and only increment.
// Handles are plain pointers into families that live for the whole process.

#include <string>
#include <string_view>

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
} // namespace prometheus

namespace lowart::metrics {

class counter {
public:
  counter() = default;
  explicit counter(prometheus::Counter* c) : c_(c) {}
  void inc(double by = 1.0) const;
  double value() const;

private:
  prometheus::Counter* c_ = nullptr;
};

class gauge {
public:
  gauge() = default;
  explicit gauge(prometheus::Gauge* g) : g_(g) {}
  void set(double v) const;
  void add(double by) const;

private:
  prometheus::Gauge* g_ = nullptr;
};

class histogram {
public:
  histogram() = default;
  explicit histogram(prometheus::Histogram* h) : h_(h) {}
  void observe(double v) const;

private:
  prometheus::Histogram* h_ = nullptr;
};

/// http_requests_total{route,status}; cached per thread, so cheap after the first call.
counter http_requests(std::string_view route, int status);
/// http_request_duration_seconds{route}
histogram http_request_duration(std::string_view route);
/// gateway_tokens_total{model,type} with type prompt | completion | cached.
counter tokens(std::string_view model, std::string_view type);
/// gateway_upstream_requests_total{deployment,status}; status is the HTTP status or an
/// error class (connect_error, timeout, reset). Cached per thread.
counter upstream_requests(std::string_view deployment, std::string_view status);
/// gateway_upstream_duration_seconds{deployment}: time to the end of the upstream answer.
histogram upstream_duration(std::string_view deployment);
/// gateway_deployment_inflight{deployment} / gateway_deployment_latency_ewma_seconds{deployment}:
/// published by each provider actor from its deployment's counters.
gauge deployment_inflight(std::string_view deployment);
gauge deployment_latency_ewma(std::string_view deployment);
/// gateway_usage_records_total{result}: usage records written (ok) or dropped (error).
counter usage_records(std::string_view result);
/// gateway_connections_open: downstream connections currently open.
gauge connections_open();
/// gateway_fallbacks_total{model}: switches to another deployment or fallback model.
counter fallbacks(std::string_view model);
/// gateway_mcp_tool_calls_total{tool,outcome} and gateway_mcp_tool_call_duration_seconds{tool}
/// (not the hot path: looked up per call).
counter mcp_calls(std::string_view tool, std::string_view outcome);
histogram mcp_call_duration(std::string_view tool);
/// gateway_mcp_server_up{server} (1 ready, 0 otherwise), gateway_mcp_server_restarts_total{server}.
gauge mcp_server_up(std::string_view server);
counter mcp_restarts(std::string_view server);
/// gateway_breaker_state{deployment}: 0 closed, 1 open, 2 half-open.
/// gateway_script_calls_total{script,hook,outcome}, gateway_script_reloads_total{script,result}
counter script_calls(std::string_view script, std::string_view hook, std::string_view outcome);
counter script_reloads(std::string_view script, std::string_view result);
/// gateway_jobs_total{model,status}, gateway_jobs_live{model}, gateway_webhook_deliveries_total{result}
counter jobs(std::string_view model, std::string_view status);
gauge jobs_live(std::string_view model);
counter webhooks(std::string_view result);
/// gateway_a2a_tasks_total{state}, gateway_a2a_redeliveries_total, gateway_a2a_delivery_seconds
counter a2a_tasks(std::string_view state);
counter a2a_redeliveries();
histogram a2a_delivery_seconds();
gauge breaker_state(std::string_view deployment);
/// gateway_ratelimited_total{reason}: requests refused by a limit (rpm, tpm, parallel, budget_*).
counter ratelimited(std::string_view reason);
/// gateway_cost_total{model}: cost of the requests served, in price units.
counter cost(std::string_view model);
/// gateway_breaker_transitions_total{deployment,to}
counter breaker_transitions(std::string_view deployment, std::string_view to);

/// gateway_redis_up: 1 while the fleet's Redis answers (only in fleet mode).
gauge redis_up();
/// gateway_fleet_messages_total{topic}: changes received from other replicas.
counter fleet_messages(std::string_view topic);
/// gateway_usage_spooled_records: usage records waiting for the database in the spool file.
gauge usage_spooled();

/// The whole registry in the Prometheus text exposition format.
std::string render();

} // namespace lowart::metrics
