// lowart-mock's configuration and shared state: fault modes (and how a request chooses one), the
// command line, the request statistics and the prompt cache. Declared in mock_internal.hpp; the
// server is in mock_upstream.cpp, the endpoints that use all this in mock_openai.cpp and its siblings.

#include "core/json_text.hpp"
#include "tools/mock/mock_internal.hpp"

#include <cstdio>
#include <cstdlib>
#include <utility>

namespace lowart::mock::detail {

namespace {

constexpr std::string_view usage_text = R"(usage: lowart-mock [options]
  --listen HOST:PORT        listen address (default 127.0.0.1:18090)
  --threads N               io threads (default 1)
  --tls-cert FILE           PEM certificate chain: serve HTTPS (needs --tls-key)
  --tls-key FILE            PEM private key
  --mode MODE               default fault mode: ok, fail-500, fail-429, fail-529, delay-<ms>, hang,
                            reset, slow-<ms>, no-usage, mid-error (default ok)
  --stream-chunks N         most content chunks per streamed answer (default 18)
  --chunk-delay-ms N        delay between streamed events (default 0)
)";

std::optional<unsigned> parse_unsigned(std::string_view text, unsigned min, unsigned max) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value < min || value > max) {
    return std::nullopt;
  }
  return value;
}

// A request header's value, or nullopt when the request has no such header.
std::optional<std::string_view> header_value(const request& req, std::string_view name) {
  if (auto header = req.find(beast::string_view(name.data(), name.size())); header != req.end()) {
    return to_view(header->value());
  }
  return std::nullopt;
}

} // namespace

// --- fault modes ----------------------------------------------------------------------------------

std::optional<fault> parse_fault(std::string_view text) {
  if (text == "ok") return fault{};
  if (text == "fail-500") return fault{fault_kind::fail_500};
  if (text == "fail-429") return fault{fault_kind::fail_429};
  if (text == "fail-529") return fault{fault_kind::fail_529};
  if (text == "hang") return fault{fault_kind::hang};
  if (text == "reset") return fault{fault_kind::reset};
  if (text == "no-usage") return fault{fault_kind::no_usage};
  if (text == "mid-error") return fault{fault_kind::mid_error};
  for (auto [prefix, kind] : {std::pair{std::string_view{"delay-"}, fault_kind::delay},
                              std::pair{std::string_view{"slow-"}, fault_kind::slow},
                              std::pair{std::string_view{"flood-"}, fault_kind::flood}}) {
    if (text.starts_with(prefix)) {
      if (auto ms = parse_unsigned(text.substr(prefix.size()), 0, max_delay_ms)) return fault{kind, *ms};
      return std::nullopt;
    }
  }
  return std::nullopt;
}

std::optional<fault> resolve_fault(const request& req, std::string_view model, fault fallback) {
  if (auto header = req.find("x-mock-mode"); header != req.end()) return parse_fault(to_view(header->value()));
  if (model.starts_with("mock-")) {
    if (auto from_model = parse_fault(model.substr(5))) return from_model;
  }
  return fallback;
}

// --- command line ---------------------------------------------------------------------------------

std::optional<options> parse_options(int argc, char** argv) {
  options opts;
  auto fail = [](std::string_view message, std::string_view arg) {
    std::fprintf(stderr, "lowart-mock: %.*s: %.*s\n%.*s", static_cast<int>(message.size()), message.data(),
                 static_cast<int>(arg.size()), arg.data(), static_cast<int>(usage_text.size()), usage_text.data());
    return std::nullopt;
  };
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fwrite(usage_text.data(), 1, usage_text.size(), stdout);
      std::exit(0);
    }
    std::string_view name = arg;
    std::string_view value;
    if (auto eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return fail("missing value for", arg);
    }

    if (name == "--listen") {
      auto colon = value.rfind(':');
      if (colon == std::string_view::npos || !parse_unsigned(value.substr(colon + 1), 0, 65535)) {
        return fail("expected HOST:PORT", value);
      }
      std::string_view host = value.substr(0, colon);
      if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
      opts.host = host;
      opts.port = value.substr(colon + 1);
    } else if (name == "--threads") {
      auto threads = parse_unsigned(value, 1, 256);
      if (!threads) return fail("bad thread count", value);
      opts.threads = *threads;
    } else if (name == "--tls-cert") {
      opts.tls_cert = value;
    } else if (name == "--tls-key") {
      opts.tls_key = value;
    } else if (name == "--mode") {
      auto mode = parse_fault(value);
      if (!mode) return fail("unknown mode", value);
      opts.default_fault = *mode;
    } else if (name == "--stream-chunks") {
      auto chunks = parse_unsigned(value, 1, 1'000'000);
      if (!chunks) return fail("bad chunk count", value);
      opts.stream_chunks = *chunks;
    } else if (name == "--chunk-delay-ms") {
      auto delay = parse_unsigned(value, 0, max_delay_ms);
      if (!delay) return fail("bad delay", value);
      opts.chunk_delay_ms = *delay;
    } else {
      return fail("unknown option", name);
    }
  }
  if (opts.tls_cert.empty() != opts.tls_key.empty()) return fail("TLS needs both", "--tls-cert and --tls-key");
  return opts;
}

// --- statistics -------------------------------------------------------------------------------------

void request_stats::record(std::string_view path, const request& req, std::string_view model) {
  std::lock_guard lock(mutex_);
  ++requests_;
  if (!model.empty()) {
    if (auto it = by_model_.find(model); it != by_model_.end()) {
      ++it->second;
    } else {
      by_model_.emplace(model, 1);
    }
  }
  assign_optional(last_authorization_, header_value(req, "authorization"));
  assign_optional(last_x_api_key_, header_value(req, "x-api-key"));
  assign_optional(last_anthropic_version_, header_value(req, "anthropic-version"));
  assign_optional(last_anthropic_beta_, header_value(req, "anthropic-beta"));
  assign(last_body_, req.body());
  assign(last_path_, path);
}

void request_stats::reset() {
  std::lock_guard lock(mutex_);
  requests_ = 0;
  by_model_.clear();
  last_authorization_.reset();
  last_body_.reset();
  last_path_.reset();
  last_x_api_key_.reset();
  last_anthropic_version_.reset();
  last_anthropic_beta_.reset();
}

void request_stats::append_json(std::string& out) const {
  std::lock_guard lock(mutex_);
  out += R"({"requests":)";
  append_uint(out, requests_);
  out += R"(,"by_model":{)";
  bool first = true;
  for (const auto& [model, count] : by_model_) {
    if (!first) out += ',';
    first = false;
    lowart::json::append_quoted(out, model);
    out += ':';
    append_uint(out, count);
  }
  out += R"(},"last_authorization":)";
  append_optional(out, last_authorization_);
  out += R"(,"last_body":)";
  append_optional(out, last_body_);
  out += R"(,"last_path":)";
  append_optional(out, last_path_);
  out += R"(,"last_x_api_key":)";
  append_optional(out, last_x_api_key_);
  out += R"(,"last_anthropic_version":)";
  append_optional(out, last_anthropic_version_);
  out += R"(,"last_anthropic_beta":)";
  append_optional(out, last_anthropic_beta_);
  out += '}';
}

void request_stats::assign(std::optional<std::string>& slot, std::string_view value) {
  if (slot) {
    slot->assign(value);
  } else {
    slot.emplace(value);
  }
}

void request_stats::assign_optional(std::optional<std::string>& slot, std::optional<std::string_view> value) {
  if (value) {
    assign(slot, *value);
  } else {
    slot.reset();
  }
}

void request_stats::append_optional(std::string& out, const std::optional<std::string>& value) {
  if (value) {
    lowart::json::append_quoted(out, *value);
  } else {
    out += "null";
  }
}

// --- prompt cache -----------------------------------------------------------------------------------

bool prompt_cache::seen_before(std::string_view text) {
  std::lock_guard lock(mutex_);
  return !hashes_.insert(fnv1a(text)).second;
}

void prompt_cache::clear() {
  std::lock_guard lock(mutex_);
  hashes_.clear();
}

} // namespace lowart::mock::detail
