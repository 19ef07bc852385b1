#include "core/file_watch.hpp"

#include <gtest/gtest.h>

#include <fstream>

using namespace lowart;

TEST(file_watch, a_change_is_taken_once_two_polls_see_it_alike) {
  settling_file f;
  f.taken({100, 10});
  EXPECT_FALSE(f.ready({100, 10})) << "unchanged";
  EXPECT_FALSE(f.ready({200, 0})) << "truncated by a writer: seen once, not taken";
  EXPECT_FALSE(f.ready({300, 42})) << "written since the last poll: still settling";
  EXPECT_TRUE(f.ready({300, 42})) << "alike on two polls: taken";
  EXPECT_FALSE(f.ready({300, 42})) << "taken once";
}

TEST(file_watch, a_change_undone_before_it_settled_is_not_taken) {
  settling_file f;
  f.taken({100, 10});
  EXPECT_FALSE(f.ready({200, 0}));
  EXPECT_FALSE(f.ready({100, 10})) << "back to what was read";
  EXPECT_FALSE(f.ready({200, 0})) << "a new change starts settling again";
  EXPECT_TRUE(f.ready({200, 0}));
}

TEST(file_watch, a_file_never_read_is_taken_once_settled_and_a_missing_one_has_no_stamp) {
  settling_file f;
  EXPECT_FALSE(f.ready({5, 1}));
  EXPECT_TRUE(f.ready({5, 1}));
  auto path = std::filesystem::temp_directory_path() / "lowart_file_watch_test.txt";
  std::filesystem::remove(path);
  EXPECT_FALSE(stamp_of(path));
  std::ofstream(path) << "hello";
  auto s = stamp_of(path);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->size, 5u);
  std::filesystem::remove(path);
}
