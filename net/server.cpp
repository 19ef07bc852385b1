#include "net/server.hpp"

#include "actors/state.hpp"
#include "config/config.hpp"
#include "core/log.hpp"
#include "net/session.hpp"
#include "net/worker.hpp"

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <condition_variable>
#include <filesystem>
#include <future>
#include <malloc.h>
#include <mutex>
#include <optional>
#include <thread>

namespace lowart::net {

struct server::impl {
  impl(gateway_state& s, actors::runtime& r) : state(s), runtime(r) {}

  gateway_state& state;
  actors::runtime& runtime;
  std::atomic<int> open_sessions{0};
  std::vector<std::unique_ptr<server_worker>> workers;
  std::vector<std::thread> threads;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard0;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::unique_ptr<asio::ip::tcp::acceptor> tcp;
  std::unique_ptr<asio::local::stream_protocol::acceptor> uds;
  std::size_t next_worker = 0;
  std::string bound;

  /// Gives memory back after a spike: glibc keeps what its arenas freed, so RSS stayed up
  /// for good after a burst of connections. A thread of its own (never an I/O thread: a
  /// trim holds an arena's lock while it walks it) trims every 5 s when more than 4 MiB
  /// is free inside the heap; a trim takes well under a millisecond.
  std::thread trimmer;
  std::mutex trimmer_mutex;
  std::condition_variable trimmer_wake;
  bool trimmer_stop = false;
  void run_trimmer() {
    constexpr std::size_t worth = 4 * 1024 * 1024;
    std::unique_lock guard{trimmer_mutex};
    while (!trimmer_wake.wait_for(guard, std::chrono::seconds(5), [&] { return trimmer_stop; })) {
      guard.unlock();
      if (auto free_bytes = mallinfo2().fordblks; free_bytes >= worth) {
        auto start = std::chrono::steady_clock::now();
        malloc_trim(64 * 1024);
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
        log::debug("memory trimmed", {{"free_bytes", free_bytes}, {"duration_us", static_cast<long long>(us.count())}});
      }
      guard.lock();
    }
  }

  server_worker& pick() {
    auto& w = *workers[next_worker];
    next_worker = (next_worker + 1) % workers.size();
    return w;
  }

  bool over_limit() const {
    return open_sessions.load(std::memory_order_relaxed) >= state.config.server.max_connections;
  }

  /// A flood must not become a log flood: one line per second at most, with a count.
  std::chrono::steady_clock::time_point last_refusal_log{};
  std::int64_t refused_since_log = 0;
  void note_refusal() {
    ++refused_since_log;
    auto now = std::chrono::steady_clock::now();
    if (now - last_refusal_log < std::chrono::seconds(1)) return;
    log::warn("connection limit reached; closing new connections",
              {{"max_connections", state.config.server.max_connections}, {"refused", refused_since_log}});
    refused_since_log = 0;
    last_refusal_log = now;
  }

  /// Out of file descriptors (EMFILE/ENFILE): accepting again at once would spin, so
  /// wait a little for connections to close.
  std::optional<asio::steady_timer> accept_pause;
  template <class Again> bool pause_if_exhausted(const beast::error_code& ec, Again again) {
    if (ec != asio::error::no_descriptors && ec != boost::system::errc::too_many_files_open_in_system) return false;
    note_refusal();
    accept_pause.emplace(workers.front()->ioc, std::chrono::milliseconds(50)); // the acceptors' context
    accept_pause->async_wait([again](beast::error_code e) {
      if (!e) again();
    });
    return true;
  }

  void accept_tcp() {
    auto& w = pick();
    tcp->async_accept(w.ioc.get_executor(), [this, &w](beast::error_code ec, session::tcp_stream::socket_type socket) {
      if (ec == asio::error::operation_aborted || !tcp || !tcp->is_open()) return;
      if (pause_if_exhausted(ec, [this] { accept_tcp(); })) return;
      if (!ec) {
        if (over_limit()) {
          note_refusal();
        } else {
          asio::post(w.ioc, [&w, socket = std::move(socket)]() mutable {
            std::make_shared<session>(w, session::tcp_stream(std::move(socket)))->start();
          });
        }
      } else {
        log::warn("accept failed", {{"error", ec.message()}});
      }
      accept_tcp();
    });
  }

  void accept_uds() {
    auto& w = pick();
    uds->async_accept(w.ioc.get_executor(), [this, &w](beast::error_code ec, session::uds_stream::socket_type socket) {
      if (ec == asio::error::operation_aborted || !uds || !uds->is_open()) return;
      if (pause_if_exhausted(ec, [this] { accept_uds(); })) return;
      if (!ec && over_limit()) note_refusal();
      if (!ec && !over_limit()) {
        asio::post(w.ioc, [&w, socket = std::move(socket)]() mutable {
          std::make_shared<session>(w, session::uds_stream(std::move(socket)))->start();
        });
      }
      accept_uds();
    });
  }
};

server::server(gateway_state& state, actors::runtime& runtime) : impl_(std::make_unique<impl>(state, runtime)) {}

server::~server() {
  stop();
  // The workers (their io_contexts and session lists) go last: callbacks the actors held
  // may have queued the release of a session onto them after the threads stopped.
  impl_->tcp.reset();
  impl_->uds.reset();
  impl_->workers.clear();
}

void server::start() {
  auto& cfg = impl_->state.config.server;
  for (int i = 0; i < cfg.io_threads; ++i) {
    impl_->workers.push_back(std::make_unique<server_worker>(impl_->state, impl_->runtime, impl_->open_sessions));
    impl_->workers.back()->index = static_cast<std::size_t>(i);
    if (impl_->state.fleet) impl_->state.fleet->attach(static_cast<std::size_t>(i), impl_->workers.back()->ioc);
  }
  auto& ioc0 = impl_->workers.front()->ioc;

  if (cfg.mode != config::listen_mode::uds) {
    std::string host;
    std::uint16_t port = 0;
    config::split_host_port(cfg.listen, host, port);
    beast::error_code ec;
    auto addr = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
    if (ec) throw std::runtime_error("server.listen: '" + host + "' is not an IP address");
    asio::ip::tcp::endpoint ep{addr, port};
    impl_->tcp = std::make_unique<asio::ip::tcp::acceptor>(ioc0);
    impl_->tcp->open(ep.protocol());
    impl_->tcp->set_option(asio::socket_base::reuse_address(true));
    impl_->tcp->bind(ep, ec);
    if (ec) throw std::runtime_error("cannot listen on " + cfg.listen + ": " + ec.message());
    impl_->tcp->listen(asio::socket_base::max_listen_connections);
    auto local = impl_->tcp->local_endpoint();
    impl_->bound = local.address().to_string() + ":" + std::to_string(local.port());
    impl_->accept_tcp();
    log::info("listening", {{"transport", "tcp"}, {"address", impl_->bound}});
  }
  if (cfg.mode != config::listen_mode::tcp) {
    std::error_code fs_ec;
    std::filesystem::remove(cfg.uds_path, fs_ec); // a stale socket file from an earlier run
    impl_->uds = std::make_unique<asio::local::stream_protocol::acceptor>(ioc0);
    asio::local::stream_protocol::endpoint ep{cfg.uds_path};
    beast::error_code ec;
    impl_->uds->open(ep.protocol());
    impl_->uds->bind(ep, ec);
    if (ec) throw std::runtime_error("cannot listen on unix socket " + cfg.uds_path + ": " + ec.message());
    impl_->uds->listen(asio::socket_base::max_listen_connections);
    impl_->accept_uds();
    log::info("listening", {{"transport", "uds"}, {"path", cfg.uds_path}});
  }

  for (auto& w : impl_->workers) {
    impl_->guards.push_back(asio::make_work_guard(w->ioc));
    w->pool.start_housekeeping();
    w->start_sweep();
  }
  impl_->trimmer = std::thread([this] { impl_->run_trimmer(); });
  for (auto& w : impl_->workers) {
    impl_->threads.emplace_back([&ioc = w->ioc] {
      for (;;) {
        try {
          ioc.run();
          return;
        } catch (const std::exception& e) {
          // A handler threw: log it and keep serving the other connections.
          log::error("unhandled exception on I/O thread", {{"error", e.what()}});
        }
      }
    });
  }
}

int server::drain(int timeout_ms) {
  auto& s = *impl_;
  if (s.workers.empty()) return 0;
  std::promise<void> closed;
  asio::post(s.workers.front()->ioc, [&] {
    beast::error_code ec;
    if (s.tcp) s.tcp->close(ec);
    if (s.uds) s.uds->close(ec);
    closed.set_value();
  });
  closed.get_future().wait();
  for (auto& w : s.workers) {
    asio::post(w->ioc, [w = w.get()] {
      // Copy: closing may destroy sessions, which unlink themselves from the list.
      std::vector<std::weak_ptr<session>> live;
      for (auto* sess : w->sessions)
        live.push_back(sess->weak_from_this());
      for (auto& weak : live)
        if (auto sp = weak.lock()) sp->close_if_idle();
    });
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (s.open_sessions.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (s.state.config.server.mode != config::listen_mode::tcp) {
    std::error_code ec;
    std::filesystem::remove(s.state.config.server.uds_path, ec);
  }
  return s.open_sessions.load();
}

void server::stop() {
  auto& s = *impl_;
  if (s.trimmer.joinable()) {
    {
      std::lock_guard guard{s.trimmer_mutex};
      s.trimmer_stop = true;
    }
    s.trimmer_wake.notify_all();
    s.trimmer.join();
  }
  if (s.threads.empty()) return;
  s.guards.clear();
  for (auto& w : s.workers)
    w->ioc.stop();
  for (auto& t : s.threads)
    t.join();
  s.threads.clear();
  if (s.state.fleet) s.state.fleet->release_workers(); // their sockets belong to the workers' io_contexts
}

std::string server::tcp_endpoint() const {
  return impl_->bound;
}

} // namespace lowart::net
