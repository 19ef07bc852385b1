#include "config/config.hpp"

#include <toml++/toml.h>

#include <arpa/inet.h>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fnmatch.h>
#include <fstream>
#include <netinet/in.h>
#include <set>
#include <sstream>
#include <unistd.h>

namespace lowart::config {
namespace {

/// Reads one table into a struct, remembering the first error with its field path.
class reader {
public:
  explicit reader(std::string& error) : error_(error) {}

  template <class T> void get(const toml::table& t, const std::string& where, const char* key, T& out) {
    auto node = t.get(key);
    if (!node) return;
    if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      auto* arr = node->as_array();
      if (!arr) {
        fail(where + "." + key + " must be an array of strings");
        return;
      }
      out.clear();
      for (auto& item : *arr) {
        if (auto v = item.value<std::string>())
          out.push_back(*v);
        else
          fail(where + "." + key + " must be an array of strings");
      }
    } else if constexpr (std::is_same_v<T, double>) {
      if (auto v = node->value<double>(); v && *v >= 0)
        out = *v;
      else
        fail(where + "." + key + " must be a non-negative number");
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (auto v = node->value<std::string>())
        out = *v;
      else
        fail(where + "." + key + " must be a string");
    } else if constexpr (std::is_same_v<T, bool>) {
      if (auto v = node->value<bool>())
        out = *v;
      else
        fail(where + "." + key + " must be true or false");
    } else {
      auto v = node->value<int64_t>();
      if (!v || *v < 0 || static_cast<uint64_t>(*v) > static_cast<uint64_t>(std::numeric_limits<T>::max()))
        fail(where + "." + key + " must be a non-negative integer");
      else
        out = static_cast<T>(*v);
    }
  }

  void fail(std::string text) {
    if (error_.empty()) error_ = std::move(text);
  }

private:
  std::string& error_;
};

listen_mode parse_mode(const std::string& text, std::string& error) {
  std::string up;
  for (char c : text)
    up += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (up == "TCP") return listen_mode::tcp;
  if (up == "UDS") return listen_mode::uds;
  if (up == "BOTH") return listen_mode::both;
  error = "listen mode must be TCP, UDS or BOTH, not '" + text + "'";
  return listen_mode::tcp;
}

/// One key of a table and the member it is read into.
template <class S, class M> struct key_ref {
  const char* name;
  M S::*member;
};
template <class S, class M> constexpr key_ref<S, M> key(const char* name, M S::*member) {
  return {name, member};
}

/// Reads the named keys of `t` (at `where`) into the members of `obj`.
template <class S, class... M>
void read_keys(reader& r, const toml::table& t, const std::string& where, S& obj, key_ref<S, M>... keys) {
  (r.get(t, where, keys.name, obj.*(keys.member)), ...);
}

/// Reads the keys of the table `root[name]`, when there is one, into `obj`.
template <class S, class... M>
void read_section(reader& r, const toml::table& root, const char* name, S& obj, key_ref<S, M>... keys) {
  if (auto* t = root[name].as_table()) read_keys(r, *t, name, obj, keys...);
}

/// Calls `item(table, where)` for each element of an array of tables (`node`, named
/// `name`; absent or not an array: nothing); an element that is not a table ends it
/// with an error.
template <class F> void each_table(reader& r, const toml::node* node, const std::string& name, F&& item) {
  auto* arr = node ? node->as_array() : nullptr;
  for (std::size_t i = 0; arr && i < arr->size(); ++i) {
    auto where = name + "[" + std::to_string(i) + "]";
    auto* t = arr->get(i)->as_table();
    if (!t) {
      r.fail(where + " must be a table");
      break;
    }
    item(*t, where);
  }
}

load_result from_table(const toml::table& root) {
  load_result result;
  std::string error;
  reader r{error};
  gateway_config cfg;

  read_section(
      r, root, "server", cfg.server, key("listen", &server_config::listen), key("uds_path", &server_config::uds_path),
      key("io_threads", &server_config::io_threads), key("actor_threads", &server_config::actor_threads),
      key("max_body_bytes", &server_config::max_body_bytes), key("max_header_bytes", &server_config::max_header_bytes),
      key("header_timeout_ms", &server_config::header_timeout_ms),
      key("idle_timeout_ms", &server_config::idle_timeout_ms),
      key("drain_timeout_ms", &server_config::drain_timeout_ms),
      key("max_connections", &server_config::max_connections), key("master_key", &server_config::master_key),
      key("send_buffer_bytes", &server_config::send_buffer_bytes), key("log_level", &server_config::log_level),
      key("ui_dir", &server_config::ui_dir), key("public_url", &server_config::public_url),
      key("trusted_proxies", &server_config::trusted_proxies));
  if (auto* s = root["server"].as_table()) {
    std::string mode;
    r.get(*s, "server", "listen_mode", mode);
    if (!mode.empty()) {
      std::string mode_error;
      cfg.server.mode = parse_mode(mode, mode_error);
      if (!mode_error.empty()) r.fail("server.listen_mode: " + mode_error);
    }
  }
  read_section(r, root, "storage", cfg.storage, key("sqlite_path", &storage_config::sqlite_path),
               key("usage_flush_ms", &storage_config::usage_flush_ms), key("url", &storage_config::url),
               key("spool_path", &storage_config::spool_path), key("responses_ttl_s", &storage_config::responses_ttl_s),
               key("usage_ttl_s", &storage_config::usage_ttl_s),
               key("body_capture_bytes", &storage_config::body_capture_bytes),
               key("redact_fields", &storage_config::redact_fields), key("body_ttl_s", &storage_config::body_ttl_s));
  read_section(r, root, "cluster", cfg.cluster, key("redis_url", &cluster_config::redis_url),
               key("on_redis_down", &cluster_config::on_redis_down), key("timeout_ms", &cluster_config::timeout_ms),
               key("replica_id", &cluster_config::replica_id), key("prefix", &cluster_config::prefix));
  read_section(r, root, "limits", cfg.limits, key("default_max_tokens", &limits_config::default_max_tokens));
  each_table(r, root.get("providers"), "providers", [&](const toml::table& t, const std::string& where) {
    provider_config p;
    read_keys(
        r, t, where, p, key("name", &provider_config::name), key("kind", &provider_config::kind),
        key("base_url", &provider_config::base_url), key("api_key", &provider_config::api_key),
        key("api_key_env", &provider_config::api_key_env), key("ca_file", &provider_config::ca_file),
        key("verify_tls", &provider_config::verify_tls), key("include_usage", &provider_config::include_usage),
        key("responses", &provider_config::responses), key("connect_timeout_ms", &provider_config::connect_timeout_ms),
        key("first_byte_timeout_ms", &provider_config::first_byte_timeout_ms),
        key("idle_timeout_ms", &provider_config::idle_timeout_ms),
        key("total_timeout_ms", &provider_config::total_timeout_ms),
        key("max_idle_connections", &provider_config::max_idle_connections), key("script", &provider_config::script));
    cfg.providers.push_back(std::move(p));
  });
  each_table(r, root.get("models"), "models", [&](const toml::table& t, const std::string& where) {
    model_config m;
    read_keys(r, t, where, m, key("name", &model_config::name), key("fallbacks", &model_config::fallbacks),
              key("balancing", &model_config::balancing), key("retries", &model_config::retries),
              key("retry_backoff_ms", &model_config::retry_backoff_ms),
              key("max_retry_wait_ms", &model_config::max_retry_wait_ms), key("timeout_ms", &model_config::timeout_ms),
              key("connect_timeout_ms", &model_config::connect_timeout_ms),
              key("first_byte_timeout_ms", &model_config::first_byte_timeout_ms),
              key("idle_timeout_ms", &model_config::idle_timeout_ms), key("rpm", &model_config::rpm),
              key("tpm", &model_config::tpm), key("max_parallel", &model_config::max_parallel),
              key("script", &model_config::script), key("workflow", &model_config::workflow),
              key("log_bodies", &model_config::log_bodies));
    each_table(r, t.get("deployments"), where + ".deployments", [&](const toml::table& dt, const std::string& dwhere) {
      deployment_config d;
      read_keys(r, dt, dwhere, d, key("provider", &deployment_config::provider),
                key("model", &deployment_config::model), key("priority", &deployment_config::priority),
                key("weight", &deployment_config::weight));
      m.deployments.push_back(std::move(d));
    });
    cfg.models.push_back(std::move(m));
  });
  if (auto* m = root["mcp"].as_table()) {
    if (auto* list = m->get("allowed_commands")) {
      auto* arr = list->as_array();
      if (!arr) r.fail("mcp.allowed_commands must be an array of commands or {command, args} tables");
      cfg.mcp.allowed_commands.clear();
      for (std::size_t i = 0; arr && i < arr->size(); ++i) {
        auto where = "mcp.allowed_commands[" + std::to_string(i) + "]";
        auto& item = *arr->get(i);
        mcp_command_rule rule;
        if (auto v = item.value<std::string>()) {
          rule.command = *v;
        } else if (auto* t = item.as_table()) {
          r.get(*t, where, "command", rule.command);
          r.get(*t, where, "args", rule.args);
          rule.plain = false;
        } else {
          r.fail(where + " must be a command name or a {command, args} table");
          continue;
        }
        cfg.mcp.allowed_commands.push_back(std::move(rule));
      }
    }
  }
  read_section(r, root, "mcp", cfg.mcp, key("default_policy", &mcp_config::default_policy),
               key("init_timeout_ms", &mcp_config::init_timeout_ms),
               key("call_timeout_ms", &mcp_config::call_timeout_ms), key("max_wait_ms", &mcp_config::max_wait_ms),
               key("session_grant_s", &mcp_config::session_grant_s),
               key("restart_max_backoff_ms", &mcp_config::restart_max_backoff_ms));
  read_section(r, root, "scripts", cfg.scripts, key("dir", &scripts_config::dir),
               key("instructions", &scripts_config::instructions), key("memory_bytes", &scripts_config::memory_bytes),
               key("poll_ms", &scripts_config::poll_ms));
  read_section(
      r, root, "jobs", cfg.jobs, key("dir", &jobs_config::dir), key("poll_ms", &jobs_config::poll_ms),
      key("submit_attempts", &jobs_config::submit_attempts), key("retry_backoff_ms", &jobs_config::retry_backoff_ms),
      key("unreachable_ms", &jobs_config::unreachable_ms), key("request_timeout_ms", &jobs_config::request_timeout_ms),
      key("ttl_s", &jobs_config::ttl_s), key("sweep_s", &jobs_config::sweep_s),
      key("webhook_attempts", &jobs_config::webhook_attempts), key("webhook_secret", &jobs_config::webhook_secret),
      key("sync_timeout_ms", &jobs_config::sync_timeout_ms));
  read_section(r, root, "a2a", cfg.a2a, key("ack_timeout_ms", &a2a_config::ack_timeout_ms),
               key("lease_ms", &a2a_config::lease_ms), key("max_attempts", &a2a_config::max_attempts),
               key("max_wait_ms", &a2a_config::max_wait_ms), key("live_ms", &a2a_config::live_ms),
               key("request_timeout_ms", &a2a_config::request_timeout_ms), key("push_secret", &a2a_config::push_secret),
               key("handout_ms", &a2a_config::handout_ms), key("task_deadline_ms", &a2a_config::task_deadline_ms),
               key("retry_backoff_ms", &a2a_config::retry_backoff_ms),
               key("retry_max_backoff_ms", &a2a_config::retry_max_backoff_ms));
  read_section(r, root, "breaker", cfg.breaker, key("window_s", &breaker_config::window_s),
               key("failure_rate", &breaker_config::failure_rate), key("min_requests", &breaker_config::min_requests),
               key("open_ms", &breaker_config::open_ms), key("half_open_probes", &breaker_config::half_open_probes),
               key("failure_on", &breaker_config::failure_on));
  if (!error.empty()) {
    result.error = error;
    return result;
  }
  result.config = std::move(cfg);
  return result;
}

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return (v && *v) ? v : nullptr;
}

std::string base_name(std::string_view command) {
  auto slash = command.rfind('/');
  return std::string(slash == std::string_view::npos ? command : command.substr(slash + 1));
}

bool glob_match(const std::string& pattern, const std::string& text) {
  return ::fnmatch(pattern.c_str(), text.c_str(), 0) == 0;
}

/// Does a {command, args} rule's pattern list take `args`?
bool args_match(const std::vector<std::string>& patterns, const std::vector<std::string>& args) {
  for (std::size_t i = 0; i < patterns.size(); ++i) {
    if (patterns[i] == "**") return true;
    if (i >= args.size() || !glob_match(patterns[i], args[i])) return false;
  }
  return args.size() == patterns.size();
}

} // namespace

bool package_runner(std::string_view command) {
  static const std::set<std::string, std::less<>> runners = {"npx", "uvx",  "pipx", "bunx", "pnpx",   "pnpm",
                                                             "npm", "yarn", "uv",   "bun",  "docker", "podman"};
  return runners.count(base_name(command)) > 0;
}

bool interpreter(std::string_view command) {
  static const std::set<std::string, std::less<>> names = {
      "node",   "nodejs", "deno",    "python", "python3", "pypy", "pypy3", "perl", "ruby", "php",  "lua", "lua5.4",
      "luajit", "tclsh",  "Rscript", "sh",     "bash",    "dash", "zsh",   "ksh",  "fish", "pwsh", "env", "busybox"};
  auto name = base_name(command);
  // python3.11 and the like
  return names.count(name) > 0 ||
         (name.rfind("python", 0) == 0 && name.find_first_not_of("python0123456789.") == std::string::npos);
}

std::string check_mcp_command(const mcp_config& mcp, const std::string& command, const std::vector<std::string>& args,
                              const std::string& cwd, std::string& field) {
  auto base = base_name(command);
  bool named = false;
  std::string plain_refusal;
  for (const auto& rule : mcp.allowed_commands) {
    if (rule.command != command && rule.command != base) continue;
    named = true;
    if (!rule.plain) {
      if (args_match(rule.args, args)) return "";
      continue;
    }
    if (!interpreter(command)) return "";
    // An interpreter runs a script file, given first: no inline code (-e, -c, --eval,
    // -p, -m, -r ...), no program read from stdin (stdin carries the MCP messages).
    if (args.empty() || args[0].empty() || args[0][0] == '-') {
      plain_refusal = "'" + command +
                      "' must be given a script file as its first argument (flags before it, such as "
                      "-e, -c, -m or --eval, run code the allowlist did not name)";
      continue;
    }
    std::filesystem::path script(args[0]);
    if (script.is_relative())
      script = (cwd.empty() ? std::filesystem::current_path() : std::filesystem::path(cwd)) / script;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(script, ec)) {
      plain_refusal = "the script '" + args[0] + "' is not a file";
      continue;
    }
    return "";
  }
  if (!named) {
    field = "command";
    return "command '" + command + "' is not in mcp.allowed_commands";
  }
  field = "args";
  if (!plain_refusal.empty()) return plain_refusal;
  return "these arguments of '" + command +
         "' match no entry of mcp.allowed_commands (entries name the arguments "
         "a command may be given, e.g. {command = \"npx\", args = [\"-y\", \"<package>\", \"**\"]})";
}

namespace {

bool parse_positive(const char* text, int& out) {
  char* end = nullptr;
  long v = std::strtol(text, &end, 10);
  if (!end || *end || v <= 0 || v > 1024) return false;
  out = static_cast<int>(v);
  return true;
}

} // namespace

bool split_host_port(const std::string& text, std::string& host, std::uint16_t& port) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 >= text.size()) return false;
  host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned long v = 0;
  for (std::size_t i = colon + 1; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
    v = v * 10 + static_cast<unsigned long>(text[i] - '0');
    if (v > 65535) return false;
  }
  port = static_cast<std::uint16_t>(v);
  return !host.empty();
}

load_result parse(const std::string& toml_text, const std::string& origin) {
  try {
    auto table = toml::parse(toml_text, origin);
    return from_table(table);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << origin << ":" << e.source().begin.line << ":" << e.source().begin.column << ": " << e.description();
    return {std::nullopt, msg.str()};
  }
}

std::string apply_environment(gateway_config& cfg) {
  // The variables that set one string each.
  const std::pair<const char*, std::string*> strings[] = {
      {"LOWART_LISTEN", &cfg.server.listen},
      {"LOWART_UDS_PATH", &cfg.server.uds_path},
      {"LOWART_DB", &cfg.storage.sqlite_path},
      {"LOWART_DATABASE_URL", &cfg.storage.url},
      {"LOWART_REDIS_URL", &cfg.cluster.redis_url},
      {"LOWART_REPLICA_ID", &cfg.cluster.replica_id},
      {"LOWART_MASTER_KEY", &cfg.server.master_key},
      {"LOWART_LOG", &cfg.server.log_level},
      {"LOWART_WEBHOOK_SECRET", &cfg.jobs.webhook_secret},
      {"LOWART_SCRIPTS_DIR", &cfg.scripts.dir},
      {"LOWART_A2A_SECRET", &cfg.a2a.push_secret},
      {"LOWART_UI_DIR", &cfg.server.ui_dir},
      {"LOWART_PUBLIC_URL", &cfg.server.public_url},
      {"LOWART_JOBS_DIR", &cfg.jobs.dir},
  };
  for (const auto& [name, out] : strings)
    if (auto v = env(name)) *out = v;
  if (auto v = env("LISTEN_MODE")) {
    std::string error;
    cfg.server.mode = parse_mode(v, error);
    if (!error.empty()) return "LISTEN_MODE: " + error;
  }
  if (auto v = env("LOWART_IO_THREADS"); v && !parse_positive(v, cfg.server.io_threads))
    return "LOWART_IO_THREADS must be a positive integer";
  if (auto v = env("LOWART_ACTOR_THREADS"); v && !parse_positive(v, cfg.server.actor_threads))
    return "LOWART_ACTOR_THREADS must be a positive integer";
  return {};
}

std::string validate(gateway_config& cfg) {
  std::string host;
  std::uint16_t port = 0;
  if (cfg.server.mode != listen_mode::uds && !split_host_port(cfg.server.listen, host, port))
    return "server.listen must be host:port, not '" + cfg.server.listen + "'";
  if (cfg.server.mode != listen_mode::tcp && cfg.server.uds_path.empty())
    return "server.uds_path must be set for LISTEN_MODE=UDS";
  if (cfg.server.io_threads < 1 || cfg.server.actor_threads < 1)
    return "server.io_threads and server.actor_threads must be at least 1";
  if (auto& url = cfg.server.public_url; !url.empty()) {
    while (!url.empty() && url.back() == '/')
      url.pop_back();
    auto scheme_end = url.find("://");
    if ((!url.starts_with("http://") && !url.starts_with("https://")) || url.size() <= scheme_end + 3 ||
        url[scheme_end + 3] == '/' || url.find_first_of("?#&@ \t\"'<>\\") != std::string::npos)
      return "server.public_url must be http(s)://host[:port][/path], not '" + url + "'";
  }
  for (std::size_t i = 0; i < cfg.server.trusted_proxies.size(); ++i) {
    const auto& ip = cfg.server.trusted_proxies[i];
    unsigned char buf[sizeof(in6_addr)];
    if (::inet_pton(AF_INET, ip.c_str(), buf) != 1 && ::inet_pton(AF_INET6, ip.c_str(), buf) != 1)
      return "server.trusted_proxies[" + std::to_string(i) + "] '" + ip + "' is not an IP address";
  }
  std::set<std::string> names;
  for (std::size_t i = 0; i < cfg.providers.size(); ++i) {
    auto& p = cfg.providers[i];
    auto where = "providers[" + std::to_string(i) + "]";
    if (p.name.empty()) return where + ".name is required";
    if (!names.insert(p.name).second) return where + ".name '" + p.name + "' is used twice";
    if (p.kind != "openai" && p.kind != "anthropic" && p.kind != "comfyui")
      return where + ".kind must be openai, anthropic or comfyui, not '" + p.kind + "'";
    if (p.base_url.rfind("http://", 0) != 0 && p.base_url.rfind("https://", 0) != 0)
      return where + ".base_url must start with http:// or https://";
    while (!p.base_url.empty() && p.base_url.back() == '/')
      p.base_url.pop_back();
    if (!p.api_key_env.empty() && p.api_key.empty()) {
      if (auto v = env(p.api_key_env.c_str())) p.api_key = v;
    }
  }
  std::set<std::string> model_names;
  for (std::size_t i = 0; i < cfg.models.size(); ++i) {
    auto& m = cfg.models[i];
    auto where = "models[" + std::to_string(i) + "]";
    if (m.name.empty()) return where + ".name is required";
    if (!model_names.insert(m.name).second) return where + ".name '" + m.name + "' is used twice";
    if (m.deployments.empty()) return where + ".deployments must name at least one deployment";
    for (std::size_t j = 0; j < m.deployments.size(); ++j) {
      auto& d = m.deployments[j];
      auto dwhere = where + ".deployments[" + std::to_string(j) + "]";
      if (!names.count(d.provider)) return dwhere + ".provider '" + d.provider + "' is not a configured provider";
      if (d.model.empty()) return dwhere + ".model is required";
      if (d.weight < 1) return dwhere + ".weight must be at least 1";
    }
    if (m.balancing != "weighted" && m.balancing != "least_inflight" && m.balancing != "latency")
      return where + ".balancing must be weighted, least_inflight or latency";
  }
  for (std::size_t i = 0; i < cfg.models.size(); ++i)
    for (const auto& f : cfg.models[i].fallbacks)
      if (!model_names.count(f)) return "models[" + std::to_string(i) + "].fallbacks names unknown model '" + f + "'";
  const auto& m = cfg.mcp;
  for (std::size_t i = 0; i < m.allowed_commands.size(); ++i) {
    const auto& rule = m.allowed_commands[i];
    auto where = "mcp.allowed_commands[" + std::to_string(i) + "]";
    if (rule.command.empty()) return where + ": command is required";
    if (rule.plain && package_runner(rule.command))
      return where + ": '" + rule.command +
             "' runs any package it is given; allow it with its packages named, e.g. {command = \"" + rule.command +
             "\", args = [\"-y\", \"@modelcontextprotocol/server-filesystem\", \"**\"]}";
    for (std::size_t j = 0; j < rule.args.size(); ++j)
      if (rule.args[j] == "**" && j + 1 != rule.args.size()) return where + ": \"**\" may only be the last pattern";
  }
  if (m.default_policy != "auto" && m.default_policy != "confirm" && m.default_policy != "deny")
    return "mcp.default_policy must be auto, confirm or deny";
  if (m.init_timeout_ms < 100 || m.call_timeout_ms < 100 || m.max_wait_ms < 0 || m.session_grant_s < 1 ||
      m.restart_max_backoff_ms < 500)
    return "mcp timeouts are out of range (init/call at least 100 ms, backoff at least 500 ms)";
  const auto& sc = cfg.scripts;
  if (sc.instructions < 1000 || sc.memory_bytes < 256 * 1024 || sc.poll_ms < 50)
    return "scripts: instructions must be at least 1000, memory_bytes at least 262144, poll_ms at least 50";
  auto plain_name = [](const std::string& n) {
    return n.empty() || (n.find('/') == std::string::npos && n.find("..") == std::string::npos);
  };
  for (const auto& p : cfg.providers)
    if (!plain_name(p.script)) return "provider '" + p.name + "': script must be a file name in [scripts] dir";
  for (const auto& md : cfg.models)
    if (!plain_name(md.script) || !plain_name(md.workflow))
      return "model '" + md.name + "': script and workflow must be file names in [scripts] dir";
  const auto& j = cfg.jobs;
  if (j.poll_ms < 10 || j.submit_attempts < 1 || j.request_timeout_ms < 100 || j.ttl_s < 1 || j.sweep_s < 1 ||
      j.webhook_attempts < 1 || j.unreachable_ms < 100 || j.sync_timeout_ms < 100)
    return "jobs: poll_ms (>= 10), submit_attempts, webhook_attempts, ttl_s, sweep_s (>= 1) and the timeouts "
           "(>= 100 ms) are out of range";
  const auto& a2a = cfg.a2a;
  if (a2a.ack_timeout_ms < 100 || a2a.lease_ms < 100 || a2a.max_attempts < 1 || a2a.max_wait_ms < 100 ||
      a2a.live_ms < 100 || a2a.request_timeout_ms < 100 || a2a.handout_ms < 100 || a2a.task_deadline_ms < 100 ||
      a2a.retry_backoff_ms < 1 || a2a.retry_max_backoff_ms < a2a.retry_backoff_ms)
    return "a2a: timeouts must be at least 100 ms and max_attempts at least 1";
  const auto& b = cfg.breaker;
  if (b.window_s < 1 || b.window_s > 60) return "breaker.window_s must be 1 to 60";
  if (b.failure_rate <= 0 || b.failure_rate > 1) return "breaker.failure_rate must be in (0, 1]";
  if (b.half_open_probes < 1) return "breaker.half_open_probes must be at least 1";
  for (const auto& f : b.failure_on)
    if (f != "connect_error" && f != "timeout" && f != "5xx" && f != "429" && f != "mid_stream")
      return "breaker.failure_on: unknown failure class '" + f + "'";
  const auto& c = cfg.cluster;
  if (c.on_redis_down != "open" && c.on_redis_down != "closed") return "cluster.on_redis_down must be open or closed";
  if (c.timeout_ms < 10 || c.timeout_ms > 60'000) return "cluster.timeout_ms must be 10 to 60000";
  if (!c.redis_url.empty() && !c.redis_url.starts_with("redis://"))
    return "cluster.redis_url must be redis://[:password@]host:port";
  if (!cfg.storage.url.empty() && !cfg.storage.url.starts_with("postgres://") &&
      !cfg.storage.url.starts_with("postgresql://"))
    return "storage.url must be a postgresql:// URL";
  if (c.replica_id.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    // Stable across restarts (a replica resumes the jobs and tasks it owns), distinct for
    // replicas on one host (their listeners differ).
    cfg.cluster.replica_id =
        std::string(host) + ":" + (cfg.server.mode == listen_mode::uds ? cfg.server.uds_path : cfg.server.listen);
  }
  if (cfg.storage.spool_path.empty() && cfg.storage.sqlite_path != ":memory:") {
    // In a fleet (a shared PostgreSQL, shared limits in Redis, or both), replicas on one
    // host may share a directory: each spools to its own file.
    std::string suffix;
    if (!c.redis_url.empty() || !cfg.storage.url.empty())
      for (char ch : cfg.cluster.replica_id)
        suffix += std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '.' ? ch : '_';
    cfg.storage.spool_path = cfg.storage.sqlite_path + (suffix.empty() ? "" : "." + suffix) + ".usage-spool";
  }
  return {};
}

load_result load(const std::string& path) {
  load_result result;
  if (path.empty()) {
    result.config = gateway_config{};
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) return {std::nullopt, "cannot read config file '" + path + "'"};
    std::stringstream text;
    text << in.rdbuf();
    result = parse(text.str(), path);
    if (!result.config) return result;
  }
  if (auto e = apply_environment(*result.config); !e.empty()) return {std::nullopt, e};
  if (auto e = validate(*result.config); !e.empty()) return {std::nullopt, e};
  return result;
}

} // namespace lowart::config
