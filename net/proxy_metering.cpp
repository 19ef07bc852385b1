// Metering of the proxy path: lowart's own counts of prompt and completion, and the
// request's close (usage settled, priced, charged to limits and the fleet, and the usage
// record written); also count_tokens_body. Usage read from upstream answers happens
// where they are relayed (proxy_upstream.cpp, proxy_stream.cpp).
#include "core/clock.hpp"
#include "net/proxy_internal.hpp"

namespace lowart::net::proxy_detail {

void proxy_call::count_usage() {
  if (!tokenizer() || usage_.present) return;
  usage_.prompt = prompt_count();
  usage_.completion = count_completion();
  usage_.cached = 0;
  usage_.present = true;
  estimated_ = estimated_ || prompt_count_.estimated;
}

std::int64_t proxy_call::count_completion() {
  // Every choice's (block's) text across all relayed events, counted once.
  auto tok = tokenizer();
  if (!tok) return 0;
  auto n = completion_.count(*tok);
  counted_ = true;
  estimated_ = estimated_ || n.estimated || encoding().empty();
  return n.tokens;
}

void proxy_call::capture(std::string_view piece) {
  auto cap = static_cast<std::size_t>(std::max(0, client_->worker().state.config.storage.body_capture_bytes));
  if (captured_.size() < cap) captured_.append(piece.substr(0, cap - captured_.size()));
}

void proxy_call::finish_request(int status) {
  if (finished_) return;
  finished_ = true;
  if (xlate_ && !usage_.present) usage_ = xlate_->usage();
  if (stream_ && usage_.present && !usage_final_)
    usage_.completion = count_completion(); // interrupted: bill what was delivered
  if (!usage_.present && dep_ && (status < 400 || head_sent_))
    count_usage(); // the upstream reported nothing: bill what lowart counts
  // Price by the model the client asked for; bill the prompt estimate when the upstream
  // reported nothing and lowart has no tokenizer to count with.
  auto prices = client_->worker().state.prices.load();
  double cost = 0;
  std::int64_t price_version = 0;
  auto real_tokens = usage_.present ? usage_.prompt + usage_.completion : (status < 400 ? prompt_estimate_ : 0);
  // A failed request with usage (a stream cut off, a client gone) is priced for what was
  // relayed, as its tokens are.
  if (prices && (status < 400 || usage_.present)) {
    if (auto p = prices->by_model.find(ctx_.model); p != prices->by_model.end()) {
      // Volume tiers go by the team's tokens for this model this month, before this request.
      std::int64_t volume = 0;
      if (!ctx_.who->master && !ctx_.who->key->team_id.empty())
        volume =
            client_->worker().state.volumes.take(ctx_.who->key->team_id, ctx_.model, real_tokens, clock::unix_ms());
      cost = usage_.present ? p->second.cost(usage_.prompt, usage_.completion, usage_.cached, volume)
                            : p->second.cost(prompt_estimate_, 0, 0, volume);
      price_version = p->second.version;
      route_->cost.inc(cost);
    }
  }
  client_->worker().state.limiter.settle(ticket_, real_tokens, cost, clock::unix_ms());
  if (fleet_ticket_) {
    fleet_ticket_ = false;
    auto& state = client_->worker().state;
    state.fleet->settle(client_->worker().index, fleet_subjects_, fleet_reservation_, fleet_estimate_, real_tokens,
                        cost, clock::unix_ms());
    // This replica's own budget counters follow too: they decide while Redis is away
    // (on_redis_down = open), and must not start from zero then.
    state.limiter.charge(subject_refs(fleet_subjects_), real_tokens, cost, clock::unix_ms());
  }
  if (usage_.present) {
    route_->prompt_tokens.inc(static_cast<double>(usage_.prompt));
    route_->completion_tokens.inc(static_cast<double>(usage_.completion));
    if (usage_.cached) route_->cached_tokens.inc(static_cast<double>(usage_.cached));
  }
  usage_record rec;
  rec.request_id = ctx_.request_id;
  rec.ts_ms = clock::unix_ms();
  rec.key_id = std::string(ctx_.who->key_id());
  rec.route = std::string(ctx_.route);
  rec.model = ctx_.model;
  rec.deployment = dep_ ? dep_->id : std::string{};
  rec.status = status;
  rec.stream = stream_;
  rec.prompt_tokens = usage_.prompt;
  rec.completion_tokens = usage_.completion;
  rec.cached_tokens = usage_.cached;
  rec.latency_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - ctx_.start).count();
  rec.cost = cost;
  rec.price_version = price_version;
  rec.usage_source = !usage_.present ? "" : !counted_ ? "upstream" : estimated_ ? "estimated" : "counted";
  // A failure's code: the refusal's, else the upstream's own answer, else why none answered.
  if (status >= 400)
    rec.error_code = !ctx_.error_code.empty()             ? ctx_.error_code
                     : dep_ && upstream_status_ == status ? std::string("upstream_error")
                                                          : last_code_;
  if (!ctx_.who->master) rec.key = ctx_.who->key;
  rec.attempts = attempts_json(status);
  rec.ttfb_ms = head_sent_ && first_byte_ != std::chrono::steady_clock::time_point{}
                    ? std::chrono::duration<double, std::milli>(first_byte_ - ctx_.start).count()
                    : rec.latency_ms;
  rec.client_ip = ctx_.client_ip;
  rec.user_agent = std::move(ctx_.user_agent);
  if (capture_) {
    auto cap = static_cast<std::size_t>(std::max(0, client_->worker().state.config.storage.body_capture_bytes));
    const std::string& sent =
        responses_ && !responses_->client_request().empty() ? responses_->client_request() : body_;
    rec.captured = true;
    rec.request_body = sent.substr(0, cap);
    // A stream's answer is still going out when the request is settled mid-way (the
    // client gone, a break): what was relayed until then.
    rec.response_body = std::move(captured_);
  }
  client_->worker().state.usage.push(std::move(rec));
  ctx_.usage_recorded = true; // the session writes no refusal record besides
}

} // namespace lowart::net::proxy_detail

namespace lowart::net {

std::string count_tokens_body(const bpe_tokenizer* tok, std::string_view body) {
  simdjson::dom::element doc;
  if (body.empty() || proxy_detail::parse_reused(body, doc) != simdjson::SUCCESS || !doc.is_object()) return {};
  json::object_writer w;
  w.num("input_tokens", tok ? count_prompt(*tok, prompt_shape::anthropic_messages, doc, {}).tokens
                            : static_cast<long long>(body.size() / 4));
  return w.done();
}

} // namespace lowart::net
