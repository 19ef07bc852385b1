#include "core/request_id.hpp"
#include "core/secrets.hpp"

#include <gtest/gtest.h>

#include <set>

using namespace lowart;

TEST(secrets, sha256_matches_the_known_vector) {
  EXPECT_EQ(secrets::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(secrets::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(secrets, virtual_keys_are_unique_base62_with_prefix) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    auto k = secrets::new_virtual_key();
    ASSERT_EQ(k.size(), 46u);
    ASSERT_EQ(k.rfind("sk-lw-", 0), 0u);
    for (char c : k.substr(6))
      ASSERT_TRUE(std::isalnum(static_cast<unsigned char>(c))) << k;
    ASSERT_TRUE(seen.insert(k).second);
  }
  EXPECT_EQ(secrets::key_prefix("sk-lw-abcdefghijkl"), "sk-lw-abcdef");
}

TEST(secrets, constant_time_equal_compares_content_and_length) {
  EXPECT_TRUE(secrets::constant_time_equal("abc", "abc"));
  EXPECT_FALSE(secrets::constant_time_equal("abc", "abd"));
  EXPECT_FALSE(secrets::constant_time_equal("abc", "abcd"));
}

TEST(request_id, ids_are_unique_and_client_ids_are_screened) {
  auto a = new_request_id();
  auto b = new_request_id();
  EXPECT_NE(a, b);
  EXPECT_TRUE(acceptable_request_id(a));
  EXPECT_TRUE(acceptable_request_id("trace-42_a.b:c"));
  EXPECT_FALSE(acceptable_request_id(""));
  EXPECT_FALSE(acceptable_request_id("has space"));
  EXPECT_FALSE(acceptable_request_id("quote\"inject"));
  EXPECT_FALSE(acceptable_request_id(std::string(129, 'a')));
}
