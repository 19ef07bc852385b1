#include "actors/state.hpp"
#include "config/config.hpp"

#include <gtest/gtest.h>

#include <cstdlib>

using namespace lowart;

namespace {

const char* demo = R"(
[server]
listen = "127.0.0.1:3000"
io_threads = 2
[storage]
sqlite_path = "x.db"
[[providers]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:18090/v1/"
api_key_env = "LOWART_TEST_PROVIDER_KEY"
[[providers]]
name = "vendor"
base_url = "https://api.example.com/v1"
api_key = "sk-inline"
first_byte_timeout_ms = 1500
[[models]]
name = "gpt-demo"
[[models.deployments]]
provider = "mock"
model = "mock-model"
priority = 1
weight = 3
[[models.deployments]]
provider = "vendor"
model = "gpt-4o"
)";

/// Sets an environment variable for one test and restores the old value after.
class scoped_env {
public:
  scoped_env(const char* name, const char* value) : name_(name) {
    if (auto* old = std::getenv(name)) old_ = old;
    ::setenv(name, value, 1);
  }
  ~scoped_env() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }

private:
  const char* name_;
  std::optional<std::string> old_;
};

config::gateway_config parse_ok(const std::string& text) {
  auto r = config::parse(text, "test.toml");
  EXPECT_TRUE(r.config) << r.error;
  return r.config ? *r.config : config::gateway_config{};
}

} // namespace

TEST(config, reads_the_documented_shape) {
  auto cfg = parse_ok(demo);
  EXPECT_EQ(cfg.server.listen, "127.0.0.1:3000");
  EXPECT_EQ(cfg.server.io_threads, 2);
  EXPECT_EQ(cfg.storage.sqlite_path, "x.db");
  ASSERT_EQ(cfg.providers.size(), 2u);
  EXPECT_EQ(cfg.providers[1].first_byte_timeout_ms, 1500);
  ASSERT_EQ(cfg.models.size(), 1u);
  ASSERT_EQ(cfg.models[0].deployments.size(), 2u);
  EXPECT_EQ(cfg.models[0].deployments[0].priority, 1);
  EXPECT_EQ(cfg.models[0].deployments[0].weight, 3);
}

TEST(config, provider_key_comes_from_its_variable_and_urls_lose_trailing_slash) {
  scoped_env key{"LOWART_TEST_PROVIDER_KEY", "sk-from-env"};
  auto cfg = parse_ok(demo);
  ASSERT_EQ(config::validate(cfg), "");
  EXPECT_EQ(cfg.providers[0].api_key, "sk-from-env");
  EXPECT_EQ(cfg.providers[0].base_url, "http://127.0.0.1:18090/v1");
  EXPECT_EQ(cfg.providers[1].api_key, "sk-inline");
}

TEST(config, environment_overrides_the_file) {
  scoped_env listen{"LOWART_LISTEN", "127.0.0.1:4000"};
  scoped_env mode{"LISTEN_MODE", "both"};
  scoped_env db{"LOWART_DB", "/tmp/other.db"};
  scoped_env master{"LOWART_MASTER_KEY", "sk-master"};
  auto cfg = parse_ok(demo);
  ASSERT_EQ(config::apply_environment(cfg), "");
  EXPECT_EQ(cfg.server.listen, "127.0.0.1:4000");
  EXPECT_EQ(cfg.server.mode, config::listen_mode::both);
  EXPECT_EQ(cfg.storage.sqlite_path, "/tmp/other.db");
  EXPECT_EQ(cfg.server.master_key, "sk-master");
}

TEST(config, errors_name_the_field) {
  auto r = config::parse("[server]\nio_threads = \"two\"\n", "t.toml");
  ASSERT_FALSE(r.config);
  EXPECT_NE(r.error.find("server.io_threads"), std::string::npos) << r.error;

  auto syntax = config::parse("[server\nlisten=", "broken.toml");
  ASSERT_FALSE(syntax.config);
  EXPECT_NE(syntax.error.find("broken.toml:1"), std::string::npos) << syntax.error;

  auto cfg = parse_ok(R"([[providers]]
name = "p"
base_url = "ftp://x"
)");
  EXPECT_NE(config::validate(cfg).find("providers[0].base_url"), std::string::npos);

  auto unknown = parse_ok(R"([[providers]]
name = "p"
base_url = "http://x"
[[models]]
name = "m"
[[models.deployments]]
provider = "nope"
model = "x"
)");
  EXPECT_NE(config::validate(unknown).find("models[0].deployments[0].provider 'nope'"), std::string::npos);
}

TEST(config, bad_listen_mode_is_refused) {
  scoped_env mode{"LISTEN_MODE", "pigeon"};
  config::gateway_config cfg;
  EXPECT_NE(config::apply_environment(cfg).find("LISTEN_MODE"), std::string::npos);
}

TEST(upstream_target, splits_base_urls) {
  upstream_target t;
  ASSERT_TRUE(parse_upstream("https://api.openai.com/v1", t));
  EXPECT_TRUE(t.tls);
  EXPECT_EQ(t.host, "api.openai.com");
  EXPECT_EQ(t.port, 443);
  EXPECT_EQ(t.base_path, "/v1");
  EXPECT_EQ(t.host_header, "api.openai.com");
  ASSERT_TRUE(parse_upstream("http://127.0.0.1:18090/openai/v1/", t));
  EXPECT_FALSE(t.tls);
  EXPECT_EQ(t.port, 18090);
  EXPECT_EQ(t.base_path, "/openai/v1");
  EXPECT_EQ(t.host_header, "127.0.0.1:18090");
  ASSERT_TRUE(parse_upstream("http://[::1]:8080", t));
  EXPECT_EQ(t.host, "::1");
  EXPECT_EQ(t.host_header, "[::1]:8080");
  EXPECT_FALSE(parse_upstream("http://:80/v1", t));
  EXPECT_FALSE(parse_upstream("http://host:99999", t));
  EXPECT_FALSE(parse_upstream("unix:///x", t));
}

TEST(mcp_allowlist, plain_interpreters_run_a_script_file_only) {
  config::mcp_config mcp; // the defaults
  std::string field;
  auto script = std::string(::testing::TempDir()) + "/lowart_mcp_script.js";
  {
    std::FILE* f = std::fopen(script.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
  }
  EXPECT_EQ(config::check_mcp_command(mcp, "node", {script, "stdio"}, "", field), "");
  EXPECT_EQ(config::check_mcp_command(mcp, "/usr/bin/node", {script}, "", field), "");
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"-e", "1"}, {"--eval=1"}, {"-p", "1"}, {"--require", script, script}, {}, {"/no/such/file.js"}}) {
    field.clear();
    EXPECT_NE(config::check_mcp_command(mcp, "node", args, "", field), "");
    EXPECT_EQ(field, "args");
  }
  field.clear();
  EXPECT_NE(config::check_mcp_command(mcp, "python3", {"-c", "import os"}, "", field), "");
  EXPECT_EQ(field, "args");
  field.clear();
  EXPECT_NE(config::check_mcp_command(mcp, "bash", {"-c", "id"}, "", field), "");
  EXPECT_EQ(field, "command");
  std::remove(script.c_str());
}

TEST(mcp_allowlist, package_runners_only_with_named_packages) {
  config::mcp_config mcp;
  std::string field;
  EXPECT_EQ(config::check_mcp_command(mcp, "npx", {"-y", "@modelcontextprotocol/server-filesystem", "/srv", "/tmp"}, "",
                                      field),
            "");
  EXPECT_EQ(config::check_mcp_command(mcp, "npx", {"-y", "@modelcontextprotocol/server-filesystem"}, "", field), "");
  EXPECT_NE(config::check_mcp_command(mcp, "npx", {"-y", "cowsay"}, "", field), "");
  EXPECT_EQ(field, "args");
  EXPECT_NE(config::check_mcp_command(mcp, "npx", {"@modelcontextprotocol/server-filesystem"}, "", field), "");
  mcp.allowed_commands = {{"uvx", {"mcp-server-git", "--repository", "/srv/*"}, false}};
  EXPECT_EQ(config::check_mcp_command(mcp, "uvx", {"mcp-server-git", "--repository", "/srv/app"}, "", field), "");
  EXPECT_NE(config::check_mcp_command(mcp, "uvx", {"mcp-server-git", "--repository", "/srv/app", "x"}, "", field), "");
  EXPECT_NE(config::check_mcp_command(mcp, "uvx", {"mcp-server-git", "--repository"}, "", field), "");
}

TEST(mcp_allowlist, toml_entries_and_plain_runners_refused) {
  auto ok = config::parse(R"(
[mcp]
allowed_commands = ["node", { command = "npx", args = ["-y", "@scope/server", "**"] }]
)",
                          "t");
  ASSERT_TRUE(ok.config) << ok.error;
  EXPECT_EQ(config::validate(*ok.config), "");
  ASSERT_EQ(ok.config->mcp.allowed_commands.size(), 2u);
  EXPECT_TRUE(ok.config->mcp.allowed_commands[0].plain);
  EXPECT_FALSE(ok.config->mcp.allowed_commands[1].plain);
  auto runner = config::parse("[mcp]\nallowed_commands = [\"npx\"]\n", "t");
  ASSERT_TRUE(runner.config) << runner.error;
  EXPECT_NE(config::validate(*runner.config).find("packages named"), std::string::npos);
  auto mid = config::parse("[mcp]\nallowed_commands = [{ command = \"uvx\", args = [\"**\", \"x\"] }]\n", "t");
  ASSERT_TRUE(mid.config);
  EXPECT_NE(config::validate(*mid.config).find("last pattern"), std::string::npos);
}

// Every key lowart.toml documents (docs/configuration.md) is read, at its own path: a value
// of the wrong type for any one of them is refused with an error naming that path. A key
// the reader forgot would be accepted silently, so this fails for a dropped key.
TEST(config_reader, every_documented_key_is_read_and_refused_with_its_path_when_mistyped) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> sections = {
      {"server",
       {"listen", "listen_mode", "uds_path", "io_threads", "actor_threads", "max_body_bytes", "max_header_bytes",
        "header_timeout_ms", "idle_timeout_ms", "drain_timeout_ms", "max_connections", "master_key", "log_level",
        "ui_dir", "public_url", "trusted_proxies"}},
      {"storage",
       {"sqlite_path", "usage_flush_ms", "url", "spool_path", "responses_ttl_s", "usage_ttl_s", "body_capture_bytes",
        "redact_fields", "body_ttl_s"}},
      {"cluster", {"redis_url", "on_redis_down", "timeout_ms", "replica_id", "prefix"}},
      {"limits", {"default_max_tokens"}},
      {"mcp",
       {"default_policy", "init_timeout_ms", "call_timeout_ms", "max_wait_ms", "session_grant_s",
        "restart_max_backoff_ms"}},
      {"scripts", {"dir", "instructions", "memory_bytes", "poll_ms"}},
      {"jobs",
       {"dir", "poll_ms", "submit_attempts", "retry_backoff_ms", "unreachable_ms", "request_timeout_ms", "ttl_s",
        "sweep_s", "webhook_attempts", "webhook_secret", "sync_timeout_ms"}},
      {"a2a",
       {"ack_timeout_ms", "lease_ms", "max_attempts", "max_wait_ms", "live_ms", "request_timeout_ms", "push_secret",
        "handout_ms", "task_deadline_ms", "retry_backoff_ms", "retry_max_backoff_ms"}},
      {"breaker", {"window_s", "failure_rate", "min_requests", "open_ms", "half_open_probes", "failure_on"}},
  };
  std::size_t checked = 0;
  auto refused = [&](const std::string& text, const std::string& path) {
    auto r = config::parse(text, "t.toml");
    EXPECT_FALSE(r.config) << path << " was accepted as a table";
    EXPECT_NE(r.error.find(path), std::string::npos) << path << ": " << r.error;
    ++checked;
  };
  // An inline table is the wrong type for every key (strings, numbers, booleans, lists).
  for (const auto& [section, keys] : sections)
    for (const auto& k : keys)
      refused("[" + section + "]\n" + k + " = {}\n", section + "." + k);
  for (const auto& k : {"name", "kind", "base_url", "api_key", "api_key_env", "ca_file", "verify_tls", "include_usage",
                        "responses", "connect_timeout_ms", "first_byte_timeout_ms", "idle_timeout_ms",
                        "total_timeout_ms", "max_idle_connections", "script"})
    refused(std::string("[[providers]]\nname = \"p\"\n[[providers]]\n") + k + " = {}\n",
            std::string("providers[1].") + k);
  for (const auto& k : {"name", "fallbacks", "balancing", "retries", "retry_backoff_ms", "max_retry_wait_ms",
                        "timeout_ms", "connect_timeout_ms", "first_byte_timeout_ms", "idle_timeout_ms", "rpm", "tpm",
                        "max_parallel", "script", "workflow", "log_bodies"})
    refused(std::string("[[models]]\n") + k + " = {}\n", std::string("models[0].") + k);
  for (const auto& k : {"provider", "model", "priority", "weight"})
    refused(
        std::string("[[models]]\nname = \"m\"\n[[models.deployments]]\nprovider = \"p\"\n[[models.deployments]]\n") +
            k + " = {}\n",
        std::string("models[0].deployments[1].") + k);
  refused("[[models]]\nname = \"m\"\ndeployments = [1]\n", "models[0].deployments[0] must be a table");
  refused("providers = [{ name = \"p\" }, 2]\n", "providers[1] must be a table");
  EXPECT_EQ(checked, 106u);
}

// Two replicas on one host that share only PostgreSQL (no Redis) must not share a spool
// file: each names its own after its replica id, as replicas on Redis do.
TEST(config_reader, replicas_sharing_postgresql_spool_to_files_of_their_own) {
  auto spool = [](const std::string& text) {
    auto r = config::parse(text, "t.toml");
    EXPECT_TRUE(r.config) << r.error;
    EXPECT_EQ(config::validate(*r.config), "");
    return r.config->storage.spool_path;
  };
  const std::string pg = "[storage]\nsqlite_path = \"d/l.db\"\nurl = \"postgresql://db/lowart\"\n";
  auto a = spool(pg + "[server]\nlisten = \"127.0.0.1:3001\"\n");
  auto b = spool(pg + "[server]\nlisten = \"127.0.0.1:3002\"\n");
  EXPECT_NE(a, b);
  EXPECT_NE(a.find("3001"), std::string::npos) << a;
  auto redis = spool("[storage]\nsqlite_path = \"d/l.db\"\n[cluster]\nredis_url = "
                     "\"redis://127.0.0.1:6379\"\nreplica_id = \"gw-1\"\n");
  EXPECT_EQ(redis, "d/l.db.gw-1.usage-spool");
  EXPECT_EQ(spool("[storage]\nsqlite_path = \"d/l.db\"\n"), "d/l.db.usage-spool")
      << "one gateway on SQLite: the plain name";
}
