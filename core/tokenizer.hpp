#pragma once
// A byte-pair-encoding tokenizer compatible with tiktoken (o200k_base, cl100k_base):
// a regex splits text into pieces (PCRE2, Unicode properties, JIT), and each piece is
// merged byte pair by byte pair, lowest rank first. Ranks and the pattern come from the
// js-tiktoken npm package at set-up (scripts/extract_ranks.mjs); nothing is embedded.
// Immutable after load: one instance serves every thread (each thread keeps its own
// PCRE2 match data).

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lowart {

class bpe_tokenizer {
public:
  /// Loads "<dir>/<name>.tiktoken" and "<dir>/<name>.pattern". Throws with a clear
  /// message when a file is missing or malformed.
  static std::shared_ptr<const bpe_tokenizer> load(const std::string& dir, const std::string& name);

  ~bpe_tokenizer();
  bpe_tokenizer(const bpe_tokenizer&) = delete;
  bpe_tokenizer& operator=(const bpe_tokenizer&) = delete;

  /// Token ids of `text` (ordinary text: special tokens are not recognised).
  std::vector<std::uint32_t> encode(std::string_view text) const;
  /// Number of tokens of `text`, without building the id list. Exact (equal to
  /// encode().size()) except for pre-tokenizer pieces over `max_exact_piece` bytes —
  /// single "words" that only hostile input has — which count as one token per 4 bytes
  /// so that counting stays linear.
  std::size_t count(std::string_view text) const;
  static constexpr std::size_t max_exact_piece = 16 * 1024;

  const std::string& name() const { return name_; }
  std::size_t vocabulary() const;

private:
  bpe_tokenizer() = default;
  template <class Sink> void run(std::string_view text, Sink&& sink, bool exact) const;
  struct impl;
  static void merge_long(const impl& d, std::string_view piece, std::vector<std::size_t>& bounds);

  std::unique_ptr<impl> impl_;
  std::string name_;
};

} // namespace lowart
