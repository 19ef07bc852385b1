#include "actors/admin/rbac.hpp"
#include "core/crypto.hpp"

#include <gtest/gtest.h>

using lowart::crypto::keyring;

namespace {
keyring ring_with(char fill) {
  keyring r;
  r.add(std::string(32, fill));
  return r;
}
} // namespace

TEST(crypto, sealed_values_open_with_the_same_key_and_row_only) {
  auto ring = ring_with('a');
  auto sealed = ring.seal("sk-vendor-secret", "providers/openai/api_key");
  EXPECT_TRUE(keyring::is_sealed(sealed));
  EXPECT_EQ(sealed.find("sk-vendor-secret"), std::string::npos);
  EXPECT_EQ(keyring::key_id_of(sealed), ring.sealing_key_id());
  EXPECT_EQ(ring.open(sealed, "providers/openai/api_key"), "sk-vendor-secret");
  EXPECT_FALSE(ring.open(sealed, "providers/other/api_key")) << "AAD binds the value to its row";
  EXPECT_FALSE(ring_with('b').open(sealed, "providers/openai/api_key")) << "another key cannot open it";
}

TEST(crypto, every_seal_uses_a_fresh_nonce) {
  auto ring = ring_with('a');
  EXPECT_NE(ring.seal("same", "aad"), ring.seal("same", "aad"));
}

TEST(crypto, tampering_is_detected) {
  auto ring = ring_with('a');
  auto sealed = ring.seal("value", "aad");
  auto tampered = sealed;
  tampered[tampered.size() - 6] = tampered[tampered.size() - 6] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(ring.open(tampered, "aad"));
  EXPECT_FALSE(ring.open("lwenc:v1:zzzz:AAAA", "aad"));
  EXPECT_FALSE(ring.open("plain text", "aad"));
}

TEST(crypto, a_ring_with_a_previous_key_opens_old_values_and_seals_with_the_new) {
  auto old_ring = ring_with('o');
  auto sealed_old = old_ring.seal("v", "aad");
  keyring rotated;
  rotated.add(std::string(32, 'n'));
  rotated.add(std::string(32, 'o'));
  EXPECT_EQ(rotated.open(sealed_old, "aad"), "v");
  EXPECT_EQ(keyring::key_id_of(rotated.seal("v", "aad")), ring_with('n').sealing_key_id());
}

TEST(crypto, keys_parse_from_hex_or_base64_only_at_32_bytes) {
  EXPECT_TRUE(keyring::parse_key(std::string(64, 'f')));
  EXPECT_FALSE(keyring::parse_key(std::string(63, 'f')));
  EXPECT_FALSE(keyring::parse_key(std::string(64, 'g')));
  auto b64 = lowart::crypto::base64_encode(std::string(32, '\x01'));
  EXPECT_EQ(keyring::parse_key(b64), std::string(32, '\x01'));
  EXPECT_FALSE(keyring::parse_key(lowart::crypto::base64_encode("short")));
}

TEST(rbac, the_role_table) {
  using lowart::rbac::may;
  EXPECT_TRUE(may("admin", "DELETE", "users"));
  EXPECT_TRUE(may("admin", "GET", "anything"));
  EXPECT_TRUE(may("operator", "POST", "keys"));
  EXPECT_TRUE(may("operator", "PUT", "providers"));
  EXPECT_FALSE(may("operator", "POST", "users"));
  EXPECT_FALSE(may("operator", "PATCH", "teams"));
  EXPECT_TRUE(may("operator", "GET", "users"));
  EXPECT_TRUE(may("viewer", "GET", "audit"));
  EXPECT_FALSE(may("viewer", "POST", "keys"));
  EXPECT_FALSE(may("viewer", "GET", "unknown"));
  EXPECT_FALSE(may("user", "GET", "keys"));
  EXPECT_FALSE(may("nobody", "GET", "keys"));
  EXPECT_GT(lowart::rbac::rank("admin"), lowart::rbac::rank("operator"));
}
