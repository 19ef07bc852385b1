// lowart: an AI API gateway. `lowart serve --config lowart.toml` runs it.
//
// main owns the order of things: configuration, logging, the actor runtime (which
// opens SQLite), the HTTP server; then it waits for SIGINT/SIGTERM and shuts down
// in reverse: stop accepting, drain in-flight requests, flush usage, stop actors.

#include "actors/admin/admin_service.hpp"
#include "actors/limits/fleet.hpp"
#include "actors/runtime.hpp"
#include "actors/state.hpp"
#include "config/config.hpp"
#include "core/log.hpp"
#include "core/tokenizer.hpp"
#include "net/routing.hpp"
#include "net/server.hpp"
#include "net/ui_files.hpp"
#include "storage/database.hpp"

#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <pthread.h>

namespace {

std::string tokenizer_dir(const char* argv0);

int serve(const std::string& config_path, const char* argv0) {
  auto loaded = lowart::config::load(config_path);
  if (!loaded.config) {
    std::fprintf(stderr, "lowart: configuration error: %s\n", loaded.error.c_str());
    return 2;
  }
  auto& cfg = *loaded.config;
  lowart::log::set_level(lowart::log::parse_level(cfg.server.log_level));

  // Signals go to this thread only (sigwait below); every thread started from here
  // on inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  lowart::gateway_state state{cfg, config_path};
  std::string key_error;
  state.keyring = lowart::crypto::keyring::from_environment(key_error);
  if (!key_error.empty()) {
    std::fprintf(stderr, "lowart: %s\n", key_error.c_str());
    return 2;
  }
  if (!state.keyring.can_seal())
    lowart::log::warn("no LOWART_ENCRYPTION_KEY: provider keys cannot be stored through the admin API");
  if (state.config.server.master_key.empty())
    lowart::log::warn("no master key (LOWART_MASTER_KEY): the admin API refuses every request");
  for (const auto& p : state.config.providers)
    if (p.api_key.empty() && !p.api_key_env.empty())
      lowart::log::warn("provider key variable is not set", {{"provider", p.name}, {"variable", p.api_key_env}});

  try {
    state.tokenizer = lowart::bpe_tokenizer::load(tokenizer_dir(argv0), "o200k_base");
    state.tokenizer_cl100k = lowart::bpe_tokenizer::load(tokenizer_dir(argv0), "cl100k_base");
  } catch (const std::exception& e) {
    lowart::log::warn("no tokenizer: responses without upstream usage are billed at an estimate",
                      {{"error", e.what()}});
  }
  state.ui = lowart::net::load_ui(state.config.server.ui_dir);
  if (state.ui)
    lowart::log::info("web console at /ui", {{"dir", state.config.server.ui_dir}, {"files", state.ui->files.size()}});
  else
    lowart::log::info("no web console built (run the set-up, or set LOWART_UI_DIR)",
                      {{"dir", state.config.server.ui_dir}});
  if (!state.config.cluster.redis_url.empty()) {
    try {
      state.fleet = lowart::make_redis_fleet(state.config.cluster);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "lowart: %s\n", e.what());
      return 2;
    }
    lowart::log::info(
        "fleet mode: limits, breakers and changes shared through redis",
        {{"replica", state.config.cluster.replica_id}, {"on_redis_down", state.config.cluster.on_redis_down}});
  }
  lowart::actors::runtime runtime{state};
  if (auto error = runtime.start(); !error.empty()) {
    lowart::log::error("cannot start", {{"error", error}});
    lowart::log::flush();
    std::fprintf(stderr, "lowart: %s\n", error.c_str());
    return 1;
  }
  lowart::net::server server{state, runtime};
  try {
    server.start();
  } catch (const std::exception& e) {
    lowart::log::error("cannot start", {{"error", e.what()}});
    lowart::log::flush();
    std::fprintf(stderr, "lowart: %s\n", e.what());
    runtime.stop();
    return 1;
  }
  lowart::log::info("lowart ready", {{"io_threads", cfg.server.io_threads},
                                     {"actor_threads", cfg.server.actor_threads},
                                     {"models", cfg.models.size()}});

  int sig = 0;
  sigwait(&signals, &sig);
  lowart::log::info("shutting down", {{"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"}});
  state.draining.store(true);
  int left = server.drain(cfg.server.drain_timeout_ms);
  if (left > 0) lowart::log::warn("drain timeout: closing connections still open", {{"connections", left}});
  if (state.fleet) state.fleet->flush(); // batched settles, while the I/O threads still run
  server.stop();
  runtime.flush_usage();
  runtime.stop();
  // Streams still registered hold connections: release them before the server's workers
  // (which their sessions point into) go away at the end of this scope.
  state.streams.clear();
  lowart::log::info("stopped");
  lowart::log::flush();
  return 0;
}

/// `lowart secrets rotate`: re-seals every stored provider key with LOWART_ENCRYPTION_KEY,
/// opening values sealed before with LOWART_ENCRYPTION_KEY_PREVIOUS. Run it with the
/// gateway stopped, then start the gateway with the new key alone.
int rotate_secrets(const std::string& config_path) {
  auto loaded = lowart::config::load(config_path);
  if (!loaded.config) {
    std::fprintf(stderr, "lowart: configuration error: %s\n", loaded.error.c_str());
    return 2;
  }
  lowart::gateway_state state{*loaded.config, config_path};
  std::string key_error;
  state.keyring = lowart::crypto::keyring::from_environment(key_error);
  if (!key_error.empty() || !state.keyring.can_seal()) {
    std::fprintf(stderr, "lowart: %s\n",
                 key_error.empty()
                     ? "set LOWART_ENCRYPTION_KEY to the new key (and LOWART_ENCRYPTION_KEY_PREVIOUS to the old one)"
                     : key_error.c_str());
    return 2;
  }
  try {
    lowart::storage::database db{state.config.storage.url.empty() ? state.config.storage.sqlite_path
                                                                  : state.config.storage.url};
    lowart::actors::admin_service admin{db, state};
    int n = admin.rotate();
    std::printf("re-encrypted %d provider key(s) under key id %s\n", n, state.keyring.sealing_key_id().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lowart: rotation failed, nothing changed: %s\n", e.what());
    return 1;
  }
}

/// Where the tokenizer ranks are: LOWART_TOKENIZER_DIR, else .deps/tokenizers beside
/// the build directory (scripts/setup.sh extracts them there from js-tiktoken).
std::string tokenizer_dir(const char* argv0) {
  if (const char* v = std::getenv("LOWART_TOKENIZER_DIR"); v && *v) return v;
  std::error_code ec;
  auto exe = std::filesystem::canonical("/proc/self/exe", ec);
  if (ec) exe = std::filesystem::absolute(argv0);
  return (exe.parent_path().parent_path() / ".deps" / "tokenizers").string();
}

/// `lowart tokenize --encoding o200k_base [--ids]`: counts (or lists) the tokens of stdin.
int tokenize(const std::string& encoding, bool ids, const char* argv0) {
  try {
    auto tok = lowart::bpe_tokenizer::load(tokenizer_dir(argv0), encoding);
    std::string text{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
    if (!ids) {
      std::printf("%zu\n", tok->count(text));
      return 0;
    }
    auto out = tok->encode(text);
    std::string line = "[";
    for (std::size_t i = 0; i < out.size(); ++i) {
      if (i) line += ',';
      line += std::to_string(out[i]);
    }
    line += "]\n";
    std::fwrite(line.data(), 1, line.size(), stdout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lowart: %s\n", e.what());
    return 1;
  }
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"lowart: an AI API gateway (OpenAI and Anthropic compatible)"};
  app.require_subcommand(0, 1); // one, unless --routes (checked below)
  bool routes = false;
  app.add_flag("--routes", routes, "print every endpoint (the route table) as JSON lines and exit");
  std::string config_path;
  auto* serve_cmd = app.add_subcommand("serve", "run the gateway");
  serve_cmd->add_option("-c,--config", config_path, "path of lowart.toml (optional: defaults + environment)");
  auto* version_cmd = app.add_subcommand("version", "print the version");
  std::string encoding = "o200k_base";
  bool token_ids = false;
  auto* tokenize_cmd = app.add_subcommand("tokenize", "count the tokens of standard input (tiktoken-compatible)");
  tokenize_cmd->add_option("-e,--encoding", encoding, "o200k_base or cl100k_base");
  tokenize_cmd->add_flag("--ids", token_ids, "print the token ids as a JSON array");
  auto* secrets_cmd = app.add_subcommand("secrets", "manage secrets at rest");
  secrets_cmd->require_subcommand(1);
  auto* rotate_cmd =
      secrets_cmd->add_subcommand("rotate", "re-encrypt stored provider keys under LOWART_ENCRYPTION_KEY");
  rotate_cmd->add_option("-c,--config", config_path, "path of lowart.toml (for storage.sqlite_path)");
  CLI11_PARSE(app, argc, argv);
  if (routes) {
    for (const auto& r : lowart::net::route_table())
      std::puts(lowart::net::route_json(r).c_str());
    return 0;
  }
  if (app.get_subcommands().empty()) return app.exit(CLI::RequiredError::Subcommand(1));
  if (version_cmd->parsed()) {
    std::puts("lowart 0.1.0");
    return 0;
  }
  if (tokenize_cmd->parsed()) return tokenize(encoding, token_ids, argv[0]);
  if (rotate_cmd->parsed()) return rotate_secrets(config_path);
  return serve(config_path, argv[0]);
}
