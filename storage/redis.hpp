#pragma once
// One Redis connection on one io_context: commands are pipelined (replies come back in
// order, each to its handler), hiredis parses the replies, Asio does the I/O, so nothing
// blocks the thread. A command unanswered within the timeout, or a broken socket,
// fails every pending command (handler gets nullptr) and reconnects with backoff
// (100 ms doubling to 5 s). Used on its io_context's thread only, except problem().

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

struct redisReader;

namespace lowart::storage {

struct redis_reply {
  enum kind { string, array, integer, nil, status, error } type = nil;
  long long number = 0;
  std::string text; ///< string, status, error
  std::vector<redis_reply> items;
};

struct redis_endpoint {
  std::string host = "127.0.0.1";
  std::string port = "6379";
  std::string user; ///< ACL user ("" = the default user)
  std::string password;
  int db = 0;
};
/// Parses redis://[user][:password@]host[:port][/db]; false when it is not one.
bool parse_redis_url(const std::string& url, redis_endpoint& out);

class redis_connection : public std::enable_shared_from_this<redis_connection> {
public:
  using handler = std::function<void(const redis_reply* reply)>; ///< nullptr: no answer

  redis_connection(boost::asio::io_context& ioc, redis_endpoint endpoint, std::chrono::milliseconds timeout,
                   std::string name);
  ~redis_connection();

  void start();
  void stop();

  /// Sends one command (arguments as given). When down, `done(nullptr)` is posted.
  void send(const std::vector<std::string>& args, handler done);

  bool up() const { return up_; }
  /// "" while up, else the last error ("connecting" before the first connect).
  std::string problem() const;

  /// After each connect, before anything queued later: (re)load scripts, subscribe.
  std::function<void(redis_connection&)> on_up;
  /// After a connection that was up is lost (with why).
  std::function<void(const std::string& why)> on_down;
  /// Subscriber connections: each pushed message (["message", channel, payload]).
  std::function<void(const redis_reply&)> on_push;
  /// Set for a connection that SUBSCRIBEs: replies that no command waits for are pushes.
  bool subscriber = false;

private:
  void connect();
  void fail(const std::string& why);
  void write_more();
  void read_more();
  void arm_watchdog();
  void set_problem(std::string text);

  boost::asio::io_context& ioc_;
  redis_endpoint endpoint_;
  std::chrono::milliseconds timeout_;
  std::string name_;
  boost::asio::ip::tcp::resolver resolver_;
  boost::asio::ip::tcp::socket socket_;
  boost::asio::steady_timer retry_timer_;
  boost::asio::steady_timer watchdog_;
  redisReader* reader_ = nullptr;
  struct pending {
    handler done;
    std::chrono::steady_clock::time_point sent;
  };
  std::deque<pending> pending_;
  std::string out_;     ///< commands not yet handed to the socket
  std::string writing_; ///< the buffer being written
  std::array<char, 16 * 1024> in_{};
  bool up_ = false;
  bool stopped_ = false;
  bool watchdog_armed_ = false;
  std::uint64_t generation_ = 0; ///< ignores completions of an earlier socket
  std::chrono::milliseconds backoff_{100};
  mutable std::mutex problem_mutex_;
  std::string problem_ = "connecting";
};

/// Appends one command in RESP.
void append_command(std::string& out, const std::vector<std::string>& args);

} // namespace lowart::storage
