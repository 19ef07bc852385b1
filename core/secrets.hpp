#pragma once
// Hashing and random material for virtual keys. Keys are never stored: only their
// SHA-256 digest (hex) and a short visible prefix for humans.

#include <string>
#include <string_view>

namespace lowart::secrets {

/// Lower-case hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);
/// HMAC-SHA256 of `data` under `key`, as lower-case hex (webhook signatures).
std::string hmac_sha256_hex(std::string_view key, std::string_view data);

/// `n` random bytes from the OS CSPRNG, as lower-case hex (2n characters).
std::string random_hex(std::size_t n);
/// A random (version 4) UUID, "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".
std::string random_uuid();

/// A new virtual key: "sk-lw-" followed by 40 characters of base62 (238 bits).
std::string new_virtual_key();

/// What list views show of a key: its first 12 characters.
std::string key_prefix(std::string_view key);

/// Compares two equally long strings in time independent of their content.
bool constant_time_equal(std::string_view a, std::string_view b);

} // namespace lowart::secrets
