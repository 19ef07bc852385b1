#pragma once
// Secrets at rest: AES-256-GCM with a 256-bit data key (OpenSSL EVP).
//
// A sealed value reads "lwenc:v1:<key id>:<base64(nonce | ciphertext | tag)>": a fresh
// random 96-bit nonce per value, the id of the key that sealed it (first 8 hex digits
// of SHA-256 over the key), the format version, and an AAD that binds it to its row
// (e.g. "providers/openai/api_key") so a value copied to another row does not open.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lowart::crypto {

class keyring {
public:
  /// Builds the ring from LOWART_ENCRYPTION_KEY (or the file in LOWART_ENCRYPTION_KEY_FILE)
  /// as the sealing key, plus LOWART_ENCRYPTION_KEY_PREVIOUS for values sealed before a
  /// rotation. A key is 64 hex digits or base64 of 32 bytes. `error` explains a bad key.
  static keyring from_environment(std::string& error);

  /// Adds a 32-byte key; the first added key seals.
  void add(std::string raw_key);
  bool can_seal() const { return !keys_.empty(); }
  /// Id of the sealing key ("" when none).
  std::string sealing_key_id() const;

  std::string seal(std::string_view plaintext, std::string_view aad) const;
  /// nullopt when the value is malformed, sealed by an unknown key, or tampered with.
  std::optional<std::string> open(std::string_view sealed, std::string_view aad) const;

  static bool is_sealed(std::string_view value) { return value.rfind("lwenc:v1:", 0) == 0; }
  /// The key id a sealed value names ("" if not sealed).
  static std::string key_id_of(std::string_view sealed);
  /// Parses 64 hex digits or base64 of 32 bytes; nullopt otherwise.
  static std::optional<std::string> parse_key(std::string_view text);

private:
  struct entry {
    std::string id;
    std::string key; ///< 32 raw bytes
  };
  std::vector<entry> keys_;
};

std::string base64_encode(std::string_view bytes);
std::optional<std::string> base64_decode(std::string_view text);

} // namespace lowart::crypto
