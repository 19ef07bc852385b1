#include "net/sse.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using lowart::net::sse_event;
using lowart::net::sse_parser;

namespace {

std::vector<sse_event> feed_all(sse_parser& p, const std::vector<std::string>& pieces) {
  std::vector<sse_event> out;
  for (const auto& piece : pieces)
    EXPECT_TRUE(p.feed(piece, [&](const sse_event& ev) { out.push_back(ev); }));
  return out;
}

} // namespace

TEST(sse_parser, yields_each_event_at_its_blank_line) {
  sse_parser p;
  auto events = feed_all(p, {"data: one\n\ndata: two\n\n"});
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].data, "one");
  EXPECT_EQ(events[1].data, "two");
}

TEST(sse_parser, events_split_at_every_byte_give_the_same_result) {
  const std::string stream = "event: message_start\r\ndata: {\"a\":\"h\xC3\xA9llo \xF0\x9F\x98\x80\"}\r\n\r\n"
                             ": keep-alive comment\n\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n";
  sse_parser whole;
  auto expected = feed_all(whole, {stream});
  ASSERT_EQ(expected.size(), 3u);
  EXPECT_EQ(expected[0].event, "message_start");
  EXPECT_EQ(expected[0].data, "{\"a\":\"h\xC3\xA9llo \xF0\x9F\x98\x80\"}");
  EXPECT_EQ(expected[1].data, "line1\nline2");
  EXPECT_EQ(expected[2].data, "[DONE]");
  for (std::size_t cut = 1; cut < stream.size(); ++cut) {
    sse_parser p;
    auto got = feed_all(p, {stream.substr(0, cut), stream.substr(cut)});
    ASSERT_EQ(got.size(), expected.size()) << "cut at " << cut;
    for (std::size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].data, expected[i].data) << "cut at " << cut;
      EXPECT_EQ(got[i].event, expected[i].event) << "cut at " << cut;
    }
  }
  sse_parser bytewise;
  std::vector<std::string> bytes;
  for (char c : stream)
    bytes.emplace_back(1, c);
  auto got = feed_all(bytewise, bytes);
  ASSERT_EQ(got.size(), expected.size());
  EXPECT_EQ(got[0].data, expected[0].data);
}

TEST(sse_parser, crlf_split_between_cr_and_lf_is_one_line_end) {
  sse_parser p;
  auto events = feed_all(p, {"data: x\r", "\n\r", "\n"});
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, "x");
}

TEST(sse_parser, value_without_space_after_colon_and_field_without_colon) {
  sse_parser p;
  auto events = feed_all(p, {"data:tight\nid: 7\n\ndata\n\n"});
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].data, "tight");
  EXPECT_EQ(events[0].id, "7");
  EXPECT_EQ(events[1].data, "");
  EXPECT_TRUE(events[1].has_data);
}

TEST(sse_parser, comments_alone_dispatch_nothing) {
  sse_parser p;
  auto events = feed_all(p, {": ping\n\n: ping\n\n"});
  EXPECT_TRUE(events.empty());
}

TEST(sse_parser, refuses_a_line_over_the_limit) {
  sse_parser p{16};
  EXPECT_FALSE(p.feed(std::string(64, 'a'), [](const sse_event&) {}));
}

TEST(sse_parser, unfinished_event_is_held_until_complete) {
  sse_parser p;
  auto events = feed_all(p, {"data: partial"});
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(p.buffered(), 13u);
  events = feed_all(p, {"\n\n"});
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, "partial");
}

TEST(sse_writer, round_trips_multi_line_data_and_event_names) {
  sse_event ev;
  ev.event = "content_block_delta";
  ev.data = "a\nb";
  ev.has_data = true;
  std::string wire;
  lowart::net::append_sse_event(wire, ev);
  EXPECT_EQ(wire, "event: content_block_delta\ndata: a\ndata: b\n\n");
  sse_parser p;
  auto events = feed_all(p, {wire});
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, "a\nb");
  EXPECT_EQ(events[0].event, "content_block_delta");
}
