#include "core/log.hpp"

#include "core/json_text.hpp"

#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <thread>

namespace lowart::log {
namespace {

std::atomic<int> level_{static_cast<int>(level::info)};

/// Owns the background writer. Lives for the whole process (never destroyed, so
/// logging during static destruction stays safe).
class sink {
public:
  sink() : writer_([this] { run(); }) { writer_.detach(); }

  void push(std::string&& line) {
    std::lock_guard guard{mutex_};
    pending_ += line;
    if (pending_.size() > 64 * 1024 && !woken_) {
      woken_ = true; // once per batch: a notify is a futex call
      wake_.notify_one();
    }
  }

  void flush() {
    std::unique_lock guard{mutex_};
    auto target = ++flush_requested_;
    wake_.notify_one();
    flushed_.wait_for(guard, std::chrono::seconds(2), [&] { return flush_done_ >= target; });
  }

private:
  void run() {
    std::string out;
    for (;;) {
      unsigned long long serving = 0;
      {
        std::unique_lock guard{mutex_};
        wake_.wait_for(guard, std::chrono::milliseconds(50),
                       [&] { return flush_requested_ > flush_done_ || pending_.size() > 64 * 1024; });
        out.swap(pending_);
        woken_ = false;
        serving = flush_requested_;
      }
      if (!out.empty()) {
        std::fwrite(out.data(), 1, out.size(), stderr);
        std::fflush(stderr);
        out.clear();
      }
      {
        std::lock_guard guard{mutex_};
        flush_done_ = serving;
      }
      flushed_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable flushed_;
  std::string pending_;
  bool woken_ = false;
  unsigned long long flush_requested_ = 0;
  unsigned long long flush_done_ = 0;
  std::thread writer_;
};

sink& the_sink() {
  static auto* instance = new sink; // intentionally leaked: see class comment
  return *instance;
}

const char* level_name(level lvl) {
  switch (lvl) {
  case level::debug:
    return "debug";
  case level::info:
    return "info";
  case level::warn:
    return "warn";
  case level::error:
    return "error";
  default:
    return "off";
  }
}

} // namespace

level parse_level(std::string_view text) {
  if (text == "debug" || text == "trace") return level::debug;
  if (text == "warn" || text == "warning") return level::warn;
  if (text == "error") return level::error;
  if (text == "off" || text == "none") return level::off;
  return level::info;
}

void set_level(level lvl) {
  level_.store(static_cast<int>(lvl), std::memory_order_relaxed);
}

level current_level() {
  return static_cast<level>(level_.load(std::memory_order_relaxed));
}

void write(level lvl, std::string_view msg, std::initializer_list<field> fields) {
  if (!enabled(lvl)) return;
  using namespace std::chrono;
  auto now = system_clock::now();
  auto secs = system_clock::to_time_t(now);
  auto millis = static_cast<int>(duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000);
  // The date and time to the second change once a second: formatted then, per thread.
  thread_local std::time_t formatted_secs = -1;
  thread_local char second[64];
  if (secs != formatted_secs) {
    std::tm tm{};
    gmtime_r(&secs, &tm);
    std::snprintf(second, sizeof second, "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec);
    formatted_secs = secs;
  }
  const char ms[] = {static_cast<char>('0' + millis / 100), static_cast<char>('0' + millis / 10 % 10),
                     static_cast<char>('0' + millis % 10)};
  std::string line;
  line.reserve(160 + msg.size());
  line += "{\"ts\":\"";
  line += second;
  line.append(ms, 3);
  line += "Z\",\"level\":\"";
  line += level_name(lvl);
  line += "\",\"msg\":";
  json::append_quoted(line, msg);
  for (const auto& f : fields) {
    line += ',';
    json::append_quoted(line, f.key);
    line += ':';
    if (f.is_number) {
      char digits[24];
      auto end = std::to_chars(digits, digits + sizeof digits, f.number).ptr;
      line.append(digits, end);
    } else
      json::append_quoted(line, f.text);
  }
  line += "}\n";
  the_sink().push(std::move(line));
}

void flush() {
  the_sink().flush();
}

} // namespace lowart::log
