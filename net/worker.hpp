#pragma once
// One I/O thread's world: its io_context, its upstream pool and its sessions. A
// worker's members are used only on its own thread (the io_context runs on exactly
// one), which is why neither the pool nor the session list needs a lock.

#include "net/upstream.hpp"

#include <boost/asio/steady_timer.hpp>

#include <array>
#include <atomic>
#include <list>
#include <memory>

namespace lowart {
struct gateway_state;
}
namespace lowart::actors {
class runtime;
}

namespace lowart::net {

class session;

class server_worker {
public:
  server_worker(gateway_state& state, actors::runtime& runtime, std::atomic<int>& open_sessions)
      : state(state), runtime(runtime), open_sessions(open_sessions), pool(ioc) {}
  server_worker(const server_worker&) = delete;
  server_worker& operator=(const server_worker&) = delete;

  gateway_state& state;
  actors::runtime& runtime;
  std::atomic<int>& open_sessions;
  std::size_t index = 0; ///< which I/O thread (its own Redis connection in a fleet)
  /// Live sessions of this thread, for draining. Declared before `ioc` so it outlives
  /// the handlers (and the sessions they own) that the io_context destroys.
  std::list<session*> sessions;
  asio::io_context ioc{1};
  upstream_pool pool; ///< destroyed first: its sockets belong to `ioc`

  /// What a session reads a new request into. A connection waiting for its next request
  /// holds no read buffer of its own: it waits for the socket to be readable, reads into
  /// this, parses at once and keeps only bytes left over (a pipelined or unfinished
  /// request). Safe to share because the read and the parse run in one handler.
  static constexpr std::size_t read_scratch_bytes = 16 * 1024;
  std::array<char, read_scratch_bytes> read_scratch;

  /// One deadline per connection instead of a timer armed and cancelled per read and
  /// write: every tick the sweep closes the sessions whose deadline passed (session.cpp).
  static constexpr std::chrono::milliseconds sweep_tick{100};
  asio::steady_timer sweep{ioc};
  void start_sweep();
};

} // namespace lowart::net
