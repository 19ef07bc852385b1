#include "core/crypto.hpp"

#include "core/secrets.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

namespace lowart::crypto {

namespace {

constexpr std::size_t key_bytes = 32;
constexpr std::size_t nonce_bytes = 12;
constexpr std::size_t tag_bytes = 16;
constexpr std::string_view prefix = "lwenc:v1:";

using cipher_ctx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

std::string key_id(std::string_view key) {
  return secrets::sha256_hex(key).substr(0, 8);
}

std::string trim(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' '))
    text.pop_back();
  return text;
}

} // namespace

std::string base64_encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out(3 * (text.size() / 4), '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  // EVP_DecodeBlock counts padding as zero bytes.
  std::size_t pad = 0;
  if (!text.empty() && text.back() == '=') ++pad;
  if (text.size() > 1 && text[text.size() - 2] == '=') ++pad;
  out.resize(static_cast<std::size_t>(n) - pad);
  return out;
}

std::optional<std::string> keyring::parse_key(std::string_view text) {
  if (text.size() == 2 * key_bytes) {
    std::string raw(key_bytes, '\0');
    for (std::size_t i = 0; i < key_bytes; ++i) {
      auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
      };
      int hi = hex(text[2 * i]), lo = hex(text[2 * i + 1]);
      if (hi < 0 || lo < 0) return std::nullopt;
      raw[i] = static_cast<char>(hi * 16 + lo);
    }
    return raw;
  }
  if (auto raw = base64_decode(text); raw && raw->size() == key_bytes) return raw;
  return std::nullopt;
}

keyring keyring::from_environment(std::string& error) {
  keyring ring;
  auto take = [&](const char* name, std::string text) {
    auto raw = parse_key(trim(std::move(text)));
    if (!raw) {
      error = std::string(name) + " must be 64 hex digits or base64 of 32 bytes";
      return;
    }
    ring.add(std::move(*raw));
  };
  if (const char* v = std::getenv("LOWART_ENCRYPTION_KEY"); v && *v) {
    take("LOWART_ENCRYPTION_KEY", v);
  } else if (const char* f = std::getenv("LOWART_ENCRYPTION_KEY_FILE"); f && *f) {
    std::ifstream in(f);
    if (!in) {
      error = std::string("cannot read LOWART_ENCRYPTION_KEY_FILE ") + f;
      return ring;
    }
    std::stringstream text;
    text << in.rdbuf();
    take("LOWART_ENCRYPTION_KEY_FILE", text.str());
  }
  if (const char* v = std::getenv("LOWART_ENCRYPTION_KEY_PREVIOUS"); v && *v && error.empty())
    take("LOWART_ENCRYPTION_KEY_PREVIOUS", v);
  return ring;
}

void keyring::add(std::string raw_key) {
  if (raw_key.size() != key_bytes) throw std::invalid_argument("encryption keys are 32 bytes");
  auto id = key_id(raw_key);
  keys_.push_back({std::move(id), std::move(raw_key)});
}

std::string keyring::sealing_key_id() const {
  return keys_.empty() ? std::string{} : keys_.front().id;
}

std::string keyring::seal(std::string_view plaintext, std::string_view aad) const {
  if (keys_.empty()) throw std::runtime_error("no encryption key (LOWART_ENCRYPTION_KEY) to seal a secret with");
  const auto& k = keys_.front();
  std::string blob(nonce_bytes + plaintext.size() + tag_bytes, '\0');
  auto* nonce = reinterpret_cast<unsigned char*>(blob.data());
  auto* out = nonce + nonce_bytes;
  if (RAND_bytes(nonce, nonce_bytes) != 1) throw std::runtime_error("RAND_bytes failed");
  cipher_ctx ctx{EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free};
  int len = 0;
  bool ok = ctx && EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, nonce_bytes, nullptr) == 1 &&
            EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, reinterpret_cast<const unsigned char*>(k.key.data()),
                               nonce) == 1 &&
            EVP_EncryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(aad.data()),
                              static_cast<int>(aad.size())) == 1 &&
            EVP_EncryptUpdate(ctx.get(), out, &len, reinterpret_cast<const unsigned char*>(plaintext.data()),
                              static_cast<int>(plaintext.size())) == 1 &&
            EVP_EncryptFinal_ex(ctx.get(), out + len, &len) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, tag_bytes, out + plaintext.size()) == 1;
  if (!ok) throw std::runtime_error("AES-256-GCM encryption failed");
  return std::string(prefix) + k.id + ":" + base64_encode(blob);
}

std::string keyring::key_id_of(std::string_view sealed) {
  if (!is_sealed(sealed)) return {};
  auto rest = sealed.substr(prefix.size());
  auto colon = rest.find(':');
  return colon == std::string_view::npos ? std::string{} : std::string(rest.substr(0, colon));
}

std::optional<std::string> keyring::open(std::string_view sealed, std::string_view aad) const {
  if (!is_sealed(sealed)) return std::nullopt;
  auto rest = sealed.substr(prefix.size());
  auto colon = rest.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto id = rest.substr(0, colon);
  const entry* k = nullptr;
  for (const auto& e : keys_)
    if (e.id == id) k = &e;
  if (!k) return std::nullopt;
  auto blob = base64_decode(rest.substr(colon + 1));
  if (!blob || blob->size() < nonce_bytes + tag_bytes) return std::nullopt;
  auto* nonce = reinterpret_cast<const unsigned char*>(blob->data());
  auto* cipher = nonce + nonce_bytes;
  auto cipher_len = blob->size() - nonce_bytes - tag_bytes;
  std::string plain(cipher_len, '\0');
  cipher_ctx ctx{EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free};
  int len = 0;
  std::string tag = blob->substr(nonce_bytes + cipher_len);
  bool ok = ctx && EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, nonce_bytes, nullptr) == 1 &&
            EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, reinterpret_cast<const unsigned char*>(k->key.data()),
                               nonce) == 1 &&
            EVP_DecryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(aad.data()),
                              static_cast<int>(aad.size())) == 1 &&
            EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(plain.data()), &len, cipher,
                              static_cast<int>(cipher_len)) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, tag_bytes, tag.data()) == 1 &&
            EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(plain.data()) + len, &len) == 1;
  if (!ok) return std::nullopt;
  return plain;
}

} // namespace lowart::crypto
