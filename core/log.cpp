#include "core/log.hpp"

#include "core/json_text.hpp"

#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace lowart::log {
namespace {

std::atomic<int> level_{static_cast<int>(level::info)};

/// One thread's lines not yet written. Its lock is taken by that thread per line and by
/// the writer once per batch, so it is practically never contended (the shared buffer
/// it replaces was locked by every I/O thread per line, and each line was a malloc).
struct thread_buffer {
  std::mutex mutex;
  std::string lines;
  std::size_t dropped = 0;        ///< lines refused while the buffer was full
  std::atomic<bool> ended{false}; ///< its thread is gone: free it once drained
};

/// Past this a thread's buffer refuses lines (counted, reported): bounded memory when
/// stderr is slower than the log.
constexpr std::size_t buffer_cap = 8 * 1024 * 1024;
/// A buffer this full wakes the writer at once, instead of at its next tick.
constexpr std::size_t wake_at = 64 * 1024;

/// Each line in a thread's buffer is its sequence number (8 bytes) and the line.
std::atomic<std::uint64_t> next_seq{0};
std::uint64_t seq_at(const std::string& lines, std::size_t at) {
  std::uint64_t seq;
  std::memcpy(&seq, lines.data() + at, sizeof seq);
  return seq;
}

/// Owns the background writer and the threads' buffers. Lives for the whole process
/// (never destroyed, so logging during static destruction stays safe).
class sink {
public:
  sink() : writer_([this] { run(); }) { writer_.detach(); }

  /// The calling thread's buffer, registered on its first line. The registry owns it;
  /// once the thread has ended and the writer has taken its last lines it is freed.
  thread_buffer& mine();

  void wake() {
    if (!wake_requested_.exchange(true, std::memory_order_relaxed)) {
      std::lock_guard guard{mutex_}; // a notify outside the lock could fall between check and wait
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
    std::vector<std::shared_ptr<thread_buffer>> buffers;
    std::vector<std::string> taken;
    for (;;) {
      unsigned long long serving = 0;
      {
        std::unique_lock guard{mutex_};
        wake_.wait_for(guard, std::chrono::milliseconds(50), [&] {
          return flush_requested_ > flush_done_ || wake_requested_.load(std::memory_order_relaxed);
        });
        wake_requested_.store(false, std::memory_order_relaxed);
        serving = flush_requested_;
        // Buffers of threads that ended and were emptied go; the rest are drained below.
        std::erase_if(buffers_, [](const auto& b) {
          if (!b->ended.load(std::memory_order_acquire)) return false;
          std::lock_guard inner{b->mutex};
          return b->lines.empty() && b->dropped == 0;
        });
        buffers = buffers_;
      }
      // Lines carry a global sequence number (taken under their thread's lock, so each
      // buffer is in order): everything numbered below `upto` is in its buffer by now, and
      // the taken parts are merged in that order, so the log reads in the order lines
      // were written whichever thread wrote them.
      auto upto = next_seq.load(std::memory_order_relaxed);
      taken.resize(buffers.size());
      std::size_t dropped = 0;
      for (std::size_t i = 0; i < buffers.size(); ++i) {
        auto& b = *buffers[i];
        std::lock_guard guard{b.mutex};
        std::size_t at = 0;
        while (at < b.lines.size() && seq_at(b.lines, at) < upto)
          at = b.lines.find('\n', at + sizeof(std::uint64_t)) + 1;
        taken[i].assign(b.lines, 0, at);
        b.lines.erase(0, at);
        if (b.lines.capacity() > 4 * wake_at && b.lines.size() < wake_at) b.lines.shrink_to_fit(); // after a burst
        dropped += std::exchange(b.dropped, 0);
      }
      std::vector<std::size_t> pos(buffers.size(), 0);
      for (;;) {
        std::size_t pick = taken.size();
        for (std::size_t i = 0; i < taken.size(); ++i)
          if (pos[i] < taken[i].size() &&
              (pick == taken.size() || seq_at(taken[i], pos[i]) < seq_at(taken[pick], pos[pick])))
            pick = i;
        if (pick == taken.size()) break;
        auto start = pos[pick] + sizeof(std::uint64_t);
        auto end = taken[pick].find('\n', start) + 1;
        out.append(taken[pick], start, end - start);
        pos[pick] = end;
      }
      for (auto& t : taken)
        t.clear();
      if (dropped)
        out += "{\"level\":\"warn\",\"msg\":\"log lines dropped: stderr is slower than the log\",\"dropped\":" +
               std::to_string(dropped) + "}\n";
      buffers.clear();
      if (!out.empty()) {
        std::fwrite(out.data(), 1, out.size(), stderr);
        std::fflush(stderr);
        out.clear();
        if (out.capacity() > 4 * wake_at) out.shrink_to_fit();
      }
      {
        std::lock_guard guard{mutex_};
        flush_done_ = serving;
      }
      flushed_.notify_all();
    }
  }

  std::mutex mutex_; ///< the registry, the wake-up and the flush counters
  std::condition_variable wake_;
  std::condition_variable flushed_;
  std::vector<std::shared_ptr<thread_buffer>> buffers_;
  std::atomic<bool> wake_requested_{false};
  unsigned long long flush_requested_ = 0;
  unsigned long long flush_done_ = 0;
  std::thread writer_;
};

sink& the_sink() {
  static auto* instance = new sink; // intentionally leaked: see class comment
  return *instance;
}

// The thread's buffer pointer is trivially destructible, so it stays readable to the
// thread's very end; the end mark's destructor (run at thread exit) hands the buffer to
// the writer to free and clears the pointer. A line written later still (static
// destruction on the main thread) gets a buffer of its own that is never freed.
thread_local thread_buffer* this_thread_buffer = nullptr;
thread_local bool thread_ending = false;
struct thread_end_mark {
  ~thread_end_mark() {
    thread_ending = true;
    if (this_thread_buffer) this_thread_buffer->ended.store(true, std::memory_order_release);
    this_thread_buffer = nullptr;
  }
};
thread_local thread_end_mark end_mark;

thread_buffer& sink::mine() {
  if (this_thread_buffer) return *this_thread_buffer;
  auto b = std::make_shared<thread_buffer>();
  {
    std::lock_guard guard{mutex_};
    buffers_.push_back(b);
  }
  this_thread_buffer = b.get();
  if (!thread_ending) (void)&end_mark; // odr-use: constructed with the thread's first line
  return *b;
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
  auto& sink = the_sink();
  auto& buffer = sink.mine();
  std::unique_lock guard{buffer.mutex};
  if (buffer.lines.size() >= buffer_cap) {
    ++buffer.dropped;
    return;
  }
  // The line is formatted straight into the thread's buffer: no allocation per line.
  auto& line = buffer.lines;
  auto seq = next_seq.fetch_add(1, std::memory_order_relaxed); // under the buffer's lock: see run()
  line.append(reinterpret_cast<const char*>(&seq), sizeof seq);
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
  bool wake = line.size() >= wake_at;
  guard.unlock();
  if (wake) sink.wake();
}

void flush() {
  the_sink().flush();
}

} // namespace lowart::log
