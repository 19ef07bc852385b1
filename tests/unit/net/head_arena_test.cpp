#include "net/head_arena.hpp"
#include "net/request_head.hpp"

#include <gtest/gtest.h>

#include <string>

namespace net = lowart::net;

namespace {

/// Parses `wire` whole with the session's parser set-up over `arena`.
std::optional<net::request_parser> parse(net::head_arena& arena, std::optional<net::request_parser>& parser,
                                         std::string_view wire) {
  net::prepare_parser(parser, 16 * 1024, 1024 * 1024, &arena);
  auto ec = net::parse_bytes(*parser, wire);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(parser->is_done());
  return std::nullopt;
}

} // namespace

TEST(head_arena, chunk_first_then_heap_and_reuse_after_reset) {
  net::head_arena arena;
  std::pmr::memory_resource& r = arena;
  void* a = r.allocate(100, 8);
  void* b = r.allocate(100, 8);
  EXPECT_EQ(static_cast<std::byte*>(b) - static_cast<std::byte*>(a), 104); // 100 rounded up to 8
  void* big = r.allocate(net::head_arena::chunk_bytes, 8);                 // does not fit: the heap
  EXPECT_TRUE(big < a || big > static_cast<std::byte*>(a) + net::head_arena::chunk_bytes);
  r.deallocate(big, net::head_arena::chunk_bytes, 8);
  r.deallocate(a, 100, 8); // no-ops inside the chunk
  r.deallocate(b, 100, 8);
  arena.reset();
  EXPECT_EQ(r.allocate(16, 8), a); // the same chunk again
  EXPECT_TRUE(arena.is_equal(arena));
  net::head_arena other;
  EXPECT_FALSE(arena.is_equal(other));
}

TEST(head_arena, consecutive_requests_on_one_arena_see_only_their_own_fields) {
  net::head_arena arena;
  std::optional<net::request_parser> parser;
  std::string many = "GET /v1/models HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 60; ++i) // more than the chunk holds: the rest from the heap
    many += "x-field-" + std::to_string(i) + ": value-" + std::to_string(i) + "\r\n";
  many += "\r\n";
  parse(arena, parser, many);
  {
    auto req = parser->release();
    EXPECT_EQ(req["x-field-0"], "value-0");
    EXPECT_EQ(req["x-field-59"], "value-59");
    EXPECT_EQ(req.target(), "/v1/models");
  }
  parse(arena, parser, "POST /v1/chat/completions HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\n\r\n{}");
  std::unique_ptr<net::request_fields> copy;
  {
    auto req = parser->release();
    EXPECT_EQ(req.target(), "/v1/chat/completions");
    EXPECT_EQ(req[boost::beast::http::field::host], "b");
    EXPECT_EQ(req.find("x-field-0"), req.end());
    EXPECT_EQ(req.body(), "{}");
    // A copy of the head lives on the heap: it outlives the arena's reuse. (A use of the
    // request itself after the reset below is what ASan's poisoning of the chunk reports.)
    copy = std::make_unique<net::request_fields>(req.base());
  }
  parser.reset();
  arena.reset();
  EXPECT_EQ((*copy)[boost::beast::http::field::host], "b");
}
