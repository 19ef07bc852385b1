#pragma once
// One MCP stdio child process: started in its own process group (so that everything it
// spawns ends with it), stdin written one line at a time, stdout split into lines (one
// JSON-RPC message each, newline-delimited as the MCP stdio transport says), stderr
// lines handed to the log. Boost.Process v2 and Asio pipes; every operation runs on the
// one io_context thread the MCP manager owns, so nothing here blocks an actor.
// No Boost.Process or CAF types in this header.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace lowart::actors {

/// True for the names every child gets from lowart's environment: PATH, HOME, USER,
/// LOGNAME, SHELL, LANG, LC_*, TZ, TMPDIR, TERM. Nothing else is passed unless named.
bool mcp_env_allowed(std::string_view name);

class mcp_process {
public:
  struct spec {
    std::string command; ///< looked up in PATH unless it contains a '/'
    std::vector<std::string> args;
    std::vector<std::pair<std::string, std::string>> env; ///< the server's own variables
    std::vector<std::string> inherit; ///< names of lowart's environment passed on besides the allowlist
    std::string cwd;
  };
  struct callbacks {
    std::function<void(std::string line)> on_stdout; ///< one complete line, without the newline
    std::function<void(std::string line)> on_stderr;
    std::function<void(int exit_code)> on_exit; ///< once, after the child was reaped
  };

  /// Starts the child; on failure returns null and sets `error`. Call on the io thread.
  static std::shared_ptr<mcp_process> start(boost::asio::io_context& ioc, const spec& s, callbacks cb,
                                            std::string& error);
  virtual ~mcp_process() = default;

  /// Queues `line` + '\n' for stdin (one write in flight). Call on the io thread.
  virtual void write(std::string line) = 0;
  /// SIGTERM to the whole process group, SIGKILL after `grace_ms`; on_exit follows once
  /// the child is reaped. Call on the io thread.
  virtual void stop(int grace_ms = 2000) = 0;
  virtual int pid() const = 0;

  /// Children started and not yet reaped (shutdown waits for this to reach 0).
  static int live_count();
};

} // namespace lowart::actors
