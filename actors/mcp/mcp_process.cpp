#include "actors/mcp/mcp_process.hpp"

// GCC 12 sees out-of-bounds copies in Boost.Process's launcher (its fd_whitelist
// reassignment, inlined here) that are not there: a known false positive of
// -Warray-bounds / -Wstringop-overflow / -Wrestrict on std::vector assignment.
#pragma GCC diagnostic ignored "-Warray-bounds"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#pragma GCC diagnostic ignored "-Wrestrict"

#include "actors/mcp/jsonrpc.hpp"

#define BOOST_PROCESS_USE_STD_FS 1
#include <boost/optional.hpp> // Boost.Process 1.81 names boost::optional even with std::filesystem

#include <type_traits>
// ... and uses these unqualified inside its own namespace.
namespace boost::process::v2 {
using std::is_constructible;
using std::remove_pointer;
} // namespace boost::process::v2
#include <boost/asio/io_context.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/writable_pipe.hpp>
#include <boost/asio/write.hpp>
#include <boost/process/v2/environment.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/start_dir.hpp>
#include <boost/process/v2/stdio.hpp>

#include <atomic>
#include <csignal>
#include <deque>
#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace lowart::actors {

namespace {

namespace asio = boost::asio;

std::atomic<int> live_children{0};
namespace bp = boost::process::v2;

/// lowart holds the write end of this pipe and nothing else does: when lowart dies, by
/// any signal, the read end sees end-of-file. A child's guard waits on it.
int death_pipe_read() {
  static int fd = [] {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return -1;
    return p[0]; // p[1] stays open, unused, for as long as lowart lives
  }();
  return fd;
}

/// Runs in the child between fork and exec: a process group of its own, so that the
/// whole tree (npx -> node, a shell -> python) can be signalled at once, and a guard.
/// The child forks once more: the grandchild goes on to exec the server; the child stays
/// as its guard (no exec; async-signal-safe calls only). The guard waits for the server
/// and exits with its status (reaped() then ends the rest of the group); should lowart die (SIGKILL, a crash), the
/// guard sees the death pipe close and SIGKILLs the whole group — grandchildren that npx or uvx started included, which
/// PR_SET_PDEATHSIG alone cannot reach.
[[noreturn]] void guard_server(pid_t server, int guard_fd);

/// The child's side of own_process_group.
int setup_child(int guard_fd) {
  if (::setpgid(0, 0) != 0) return errno;
  // lowart blocks SIGTERM/SIGINT in every thread (main waits for them with sigwait) and
  // ignores SIGPIPE; a child must not inherit either, or it could not be stopped.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGPIPE, SIG_DFL);
  if (guard_fd >= 0) {
    pid_t server = ::fork();
    if (server < 0) return errno;
    if (server > 0) guard_server(server, guard_fd); // never returns
    // The server: goes with its guard, whatever ends it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() == 1) ::_exit(127);
  } else {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL); // no pipe: at least the direct child goes
  }
  // Nothing of lowart's (listening sockets, the database, upstream connections) may
  // leak into the child: every descriptor above stderr closes at exec.
  if (::syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) != 0)
    for (int fd = 3; fd < 65536; ++fd)
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return 0;
}

[[noreturn]] void guard_server(pid_t server, int guard_fd) {
  // SIGTERM to the group is for the server (it gets its grace); the guard outlives it.
  ::signal(SIGTERM, SIG_IGN);
  ::signal(SIGINT, SIG_IGN);
  // Hold nothing but the death pipe: not the server's stdio (its EOF is lowart's sign
  // that it is gone), not lowart's sockets or database.
  for (int fd = 0; fd < 3; ++fd)
    ::close(fd);
  if (guard_fd > 3) ::syscall(SYS_close_range, 3u, static_cast<unsigned>(guard_fd - 1), 0u);
  ::syscall(SYS_close_range, static_cast<unsigned>(guard_fd + 1), ~0u, 0u);
  for (;;) {
    struct pollfd p {
      guard_fd, POLLIN, 0
    };
    if (::poll(&p, 1, 200) > 0) { // lowart is gone
      ::kill(-::getpgrp(), SIGKILL);
      ::_exit(137);
    }
    int status = 0;
    if (::waitpid(server, &status, WNOHANG) == server) // lowart reaps the guard, then ends the group
      ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
}

struct own_process_group {
  int guard_fd = death_pipe_read();
  template <class Launcher> bp::error_code on_exec_setup(Launcher&, const std::filesystem::path&, const char* const*) {
    if (int e = setup_child(guard_fd)) return bp::error_code(e, bp::system_category());
    return {};
  }
};

/// The child's environment, handed to the launcher (Boost.Process's own
/// process_environment needs its compiled part, which the headers-only package lacks).
struct child_environment {
  std::vector<std::string> entries;
  std::vector<const char*> pointers;
  template <class Launcher>
  bp::error_code on_setup(Launcher& launcher, const std::filesystem::path&, const char* const*) {
    pointers.clear();
    for (const auto& e : entries)
      pointers.push_back(e.c_str());
    pointers.push_back(nullptr);
    launcher.env = pointers.data();
    return {};
  }
};

/// Reads a pipe line by line (jsonrpc.hpp's splitter does the framing).
class line_reader {
public:
  explicit line_reader(asio::io_context& ioc) : pipe(ioc) {}
  asio::readable_pipe pipe;

  template <class OnLine, class OnEnd> void start(OnLine on_line, OnEnd on_end) {
    pipe.async_read_some(asio::buffer(chunk_), [this, on_line, on_end](bp::error_code ec, std::size_t n) {
      if (ec) {
        if (auto rest = lines_.take_rest(); !rest.empty()) on_line(std::move(rest));
        on_end();
        return;
      }
      lines_.feed(std::string_view(chunk_.data(), n), on_line);
      start(on_line, on_end);
    });
  }

private:
  std::array<char, 8192> chunk_{};
  line_splitter lines_;
};

class process_impl final : public mcp_process, public std::enable_shared_from_this<process_impl> {
public:
  process_impl(asio::io_context& ioc, callbacks cb)
      : ioc_(ioc), cb_(std::move(cb)), in_(ioc), out_(ioc), err_(ioc), kill_timer_(ioc) {}

  bool launch(const spec& s, std::string& error) {
    bp::error_code ec;
    std::filesystem::path exe = s.command;
    if (s.command.find('/') == std::string::npos) {
      exe = bp::environment::find_executable(s.command);
      if (exe.empty()) {
        error = "command not found in PATH: " + s.command;
        return false;
      }
    }
    // A short allowlist of lowart's environment (what a shell needs, like the MCP SDKs'
    // default), the names the operator asked to inherit, then the server's own
    // variables (which win). Nothing else of lowart's environment reaches the child.
    child_environment env;
    for (char** e = environ; e && *e; ++e) {
      std::string_view kv(*e);
      auto eq = kv.find('=');
      if (eq == std::string_view::npos) continue;
      auto name = kv.substr(0, eq);
      bool wanted = mcp_env_allowed(name);
      for (const auto& n : s.inherit)
        wanted = wanted || n == name;
      for (const auto& [k, v] : s.env)
        wanted = wanted && k != name;
      if (wanted) env.entries.emplace_back(kv);
    }
    for (const auto& [k, v] : s.env)
      env.entries.push_back(k + "=" + v);
    std::filesystem::path cwd = s.cwd.empty() ? std::filesystem::current_path() : std::filesystem::path(s.cwd);
    // Three pipes: the child's ends are handed to it, ours are in_, out_.pipe, err_.pipe.
    asio::readable_pipe child_stdin(ioc_);
    asio::writable_pipe child_stdout(ioc_), child_stderr(ioc_);
    asio::connect_pipe(child_stdin, in_, ec);
    if (!ec) asio::connect_pipe(out_.pipe, child_stdout, ec);
    if (!ec) asio::connect_pipe(err_.pipe, child_stderr, ec);
    if (ec) {
      error = "cannot create pipes: " + ec.message();
      return false;
    }
    try {
      proc_.emplace(ioc_.get_executor(), exe, s.args, bp::process_stdio{child_stdin, child_stdout, child_stderr},
                    bp::process_start_dir{cwd}, env, own_process_group{});
    } catch (const std::exception& e) {
      error = std::string("cannot start ") + s.command + ": " + e.what();
      return false;
    }
    // The child holds its ends now; ours close, so that EOF reaches the right side.
    child_stdin.close(ec);
    child_stdout.close(ec);
    child_stderr.close(ec);
    pid_ = proc_->id();
    live_children.fetch_add(1);
    return true;
  }

  void begin() {
    auto self = shared_from_this();
    out_.start([self](std::string line) { self->cb_.on_stdout(std::move(line)); }, [self] { self->stdout_closed(); });
    err_.start([self](std::string line) { self->cb_.on_stderr(std::move(line)); }, [] {});
    proc_->async_wait([self](bp::error_code, int code) { self->reaped(code); });
  }

  void write(std::string line) override {
    if (exited_) return;
    line += '\n';
    if (queued_bytes_ + line.size() > max_queued_bytes) {
      // The child stopped reading its stdin: a stuck server. End it (it is restarted,
      // its calls fail) rather than buffer without bound.
      stop(1000);
      return;
    }
    queued_bytes_ += line.size();
    queue_.push_back(std::move(line));
    if (queue_.size() == 1) write_next();
  }

  void stop(int grace_ms) override {
    if (exited_ || stopping_) return;
    stopping_ = true;
    boost::system::error_code ec;
    in_.close(ec); // a well-behaved server exits on EOF
    ::kill(-pid_, SIGTERM);
    kill_timer_.expires_after(std::chrono::milliseconds(grace_ms));
    kill_timer_.async_wait([self = shared_from_this()](bp::error_code ec) {
      if (!ec && !self->exited_) ::kill(-self->pid_, SIGKILL);
    });
  }

  int pid() const override { return pid_; }

private:
  void write_next() {
    asio::async_write(in_, asio::buffer(queue_.front()), [self = shared_from_this()](bp::error_code ec, std::size_t) {
      if (ec) {
        self->queue_.clear(); // the child closed its stdin: it is going away
        self->queued_bytes_ = 0;
        return;
      }
      self->queued_bytes_ -= self->queue_.front().size();
      self->queue_.pop_front();
      if (!self->queue_.empty()) self->write_next();
    });
  }

  void stdout_closed() {
    // A child that closes stdout is done for us: make sure it goes (reaped() follows).
    if (!exited_ && !stopping_) stop(1000);
  }

  void reaped(int code) {
    exited_ = true;
    live_children.fetch_sub(1);
    kill_timer_.cancel();
    // Whatever the leader left behind in its group goes with it: no orphans.
    ::kill(-pid_, SIGKILL);
    boost::system::error_code ec;
    in_.close(ec);
    if (cb_.on_exit) cb_.on_exit(code);
  }

  asio::io_context& ioc_;
  callbacks cb_;
  asio::writable_pipe in_;
  line_reader out_;
  line_reader err_;
  asio::steady_timer kill_timer_;
  std::optional<bp::process> proc_;
  std::deque<std::string> queue_;
  std::size_t queued_bytes_ = 0;
  static constexpr std::size_t max_queued_bytes = 64 * 1024 * 1024;
  int pid_ = 0;
  bool exited_ = false;
  bool stopping_ = false;
};

} // namespace

bool mcp_env_allowed(std::string_view name) {
  static constexpr std::string_view base[] = {"PATH", "HOME", "USER",   "LOGNAME", "SHELL",
                                              "LANG", "TZ",   "TMPDIR", "TERM"};
  for (auto b : base)
    if (name == b) return true;
  return name.starts_with("LC_");
}

int mcp_process::live_count() {
  return live_children.load();
}

std::shared_ptr<mcp_process> mcp_process::start(asio::io_context& ioc, const spec& s, callbacks cb,
                                                std::string& error) {
  auto p = std::make_shared<process_impl>(ioc, std::move(cb));
  if (!p->launch(s, error)) return nullptr;
  p->begin();
  return p;
}

} // namespace lowart::actors
