#include "core/json_text.hpp"

#include <gtest/gtest.h>

using namespace lowart;

TEST(json_text, quotes_control_characters_and_quotes) {
  EXPECT_EQ(json::quoted("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\n\\u0001\"");
  EXPECT_EQ(json::quoted("h\xC3\xA9"), "\"h\xC3\xA9\"");
}

TEST(json_text, finds_top_level_members_only) {
  std::string doc = R"({"messages":[{"model":"inner"}],"meta":{"model":"x"},"model" : "gpt-4o","n":1})";
  auto span = json::find_member(doc, "model");
  ASSERT_TRUE(span);
  EXPECT_EQ(doc.substr(span->begin, span->end - span->begin), "\"gpt-4o\"");
  EXPECT_FALSE(json::find_member(doc, "absent"));
  auto n = json::find_member(doc, "n");
  ASSERT_TRUE(n);
  EXPECT_EQ(doc.substr(n->begin, n->end - n->begin), "1");
}

TEST(json_text, strings_with_escaped_quotes_and_brackets_are_skipped) {
  std::string doc = R"({"a":"x\"}{[","model":"m"})";
  auto span = json::find_member(doc, "model");
  ASSERT_TRUE(span);
  EXPECT_EQ(doc.substr(span->begin, span->end - span->begin), "\"m\"");
}

TEST(json_text, set_member_replaces_or_inserts) {
  std::string doc = R"({"model":"a","stream":true})";
  json::set_member(doc, "model", "\"b\"");
  EXPECT_EQ(doc, R"({"model":"b","stream":true})");
  json::set_member(doc, "stream_options", R"({"include_usage":true})");
  EXPECT_EQ(doc, R"({"stream_options":{"include_usage":true},"model":"b","stream":true})");
  std::string empty = "{ }";
  json::set_member(empty, "k", "1");
  EXPECT_EQ(empty, R"({"k":1 })");
}
