#include "core/log.hpp"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

/// Runs `f` with stderr sent to a file and returns what was written there.
template <class F> std::string capture_stderr(F&& f) {
  char path[] = "/tmp/lowart-log-test-XXXXXX";
  int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  std::fflush(stderr);
  int saved = dup(STDERR_FILENO);
  dup2(fd, STDERR_FILENO);
  f();
  lowart::log::flush();
  std::fflush(stderr);
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(fd);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  unlink(path);
  return text.str();
}

} // namespace

// Lines from many threads, some of which end before the writer runs, all come out whole
// (one JSON object per line, none cut or interleaved) and none is lost or doubled.
TEST(log, lines_of_many_threads_come_out_whole_once_each) {
  lowart::log::set_level(lowart::log::level::info);
  constexpr int threads = 6, per_thread = 3000;
  auto text = capture_stderr([&] {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([t] {
        for (int i = 0; i < per_thread; ++i)
          lowart::log::info("request", {{"thread", t}, {"i", i}, {"note", "quote \" and \\ and \n newline"}});
      });
    for (auto& th : pool)
      th.join(); // these threads are gone before flush: their buffers must still be drained
    lowart::log::warn("after", {{"thread", 99}, {"i", 0}});
  });
  simdjson::dom::parser parser;
  std::map<long long, std::vector<int>> seen;
  std::istringstream lines(text);
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) {
    simdjson::dom::element doc;
    ASSERT_EQ(parser.parse(line).get(doc), simdjson::SUCCESS) << line;
    std::string_view msg;
    ASSERT_EQ(doc["msg"].get_string().get(msg), simdjson::SUCCESS);
    if (msg != "request" && msg != "after") continue;
    int64_t t = 0, i = 0;
    ASSERT_EQ(doc["thread"].get_int64().get(t), simdjson::SUCCESS);
    ASSERT_EQ(doc["i"].get_int64().get(i), simdjson::SUCCESS);
    if (msg == "request") {
      std::string_view note;
      ASSERT_EQ(doc["note"].get_string().get(note), simdjson::SUCCESS);
      EXPECT_EQ(note, "quote \" and \\ and \n newline");
    }
    seen[t].push_back(static_cast<int>(i));
    ++count;
  }
  EXPECT_EQ(count, threads * per_thread + 1);
  for (int t = 0; t < threads; ++t) {
    ASSERT_EQ(seen[t].size(), static_cast<std::size_t>(per_thread)) << "thread " << t;
    // One thread's lines keep their order.
    for (int i = 0; i < per_thread; ++i)
      ASSERT_EQ(seen[t][static_cast<std::size_t>(i)], i);
  }
  EXPECT_EQ(seen[99].size(), 1u);
}

TEST(log, a_disabled_level_writes_nothing) {
  lowart::log::set_level(lowart::log::level::warn);
  auto text = capture_stderr([] { lowart::log::info("quiet"); });
  lowart::log::set_level(lowart::log::level::info);
  EXPECT_EQ(text.find("quiet"), std::string::npos);
}

// Lines written one after another by different threads come out in that order (the
// breaker's transitions are logged by whichever thread makes them, and read in order).
TEST(log, lines_of_different_threads_keep_the_order_they_were_written_in) {
  lowart::log::set_level(lowart::log::level::info);
  constexpr int rounds = 400;
  std::atomic<int> turn{0};
  auto text = capture_stderr([&] {
    auto player = [&](int me) {
      for (int i = me; i < rounds; i += 2) {
        while (turn.load() != i)
          std::this_thread::yield();
        lowart::log::info("turn", {{"i", i}});
        turn.store(i + 1);
      }
    };
    std::thread a(player, 0), b(player, 1);
    a.join();
    b.join();
  });
  simdjson::dom::parser parser;
  std::istringstream lines(text);
  std::string line;
  int expect = 0;
  while (std::getline(lines, line)) {
    simdjson::dom::element doc;
    ASSERT_EQ(parser.parse(line).get(doc), simdjson::SUCCESS) << line;
    int64_t i = 0;
    if (doc["i"].get_int64().get(i) != simdjson::SUCCESS) continue;
    ASSERT_EQ(i, expect) << "line " << expect << " out of order";
    ++expect;
  }
  EXPECT_EQ(expect, rounds);
}
