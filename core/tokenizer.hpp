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

  /// Counts the leading part of `text` that no text appended later can tokenize
  /// differently, and sets `used` to its length (0: none found; the count is then 0).
  /// So count(text + more) == count_settled(text, used) + count(text.substr(used) + more)
  /// for any `more`: a long completion is counted exactly in parts while it streams.
  /// The cut is the last piece boundary at least `settle_margin` bytes before the end
  /// that follows a character which is neither whitespace nor a control character:
  /// tiktoken's patterns look past the end of a piece only by backtracking inside a run
  /// of whitespace (a piece that then ends in whitespace) or by up to three characters
  /// (a contraction, the next character's class), so what comes later cannot reach back
  /// across such a boundary.
  std::size_t count_settled(std::string_view text, std::size_t& used) const;
  static constexpr std::size_t settle_margin = 64;

  const std::string& name() const { return name_; }
  std::size_t vocabulary() const;

private:
  bpe_tokenizer() = default;
  /// Tokenizes `text`: `sink(id)` per token, `piece_end(offset)` after each piece.
  template <class Sink, class PieceEnd>
  void run(std::string_view text, Sink&& sink, bool exact, PieceEnd&& piece_end) const;
  struct impl;
  static void merge_long(const impl& d, std::string_view piece, std::vector<std::size_t>& bounds);

  std::unique_ptr<impl> impl_;
  std::string name_;
};

/// The tiktoken encoding of an OpenAI model name ("o200k_base", "cl100k_base"), as
/// tiktoken's encoding_for_model maps it (a "ft:" prefix or a "vendor/" path is looked
/// through); "" for a model tiktoken does not know.
std::string_view encoding_for_model(std::string_view model);

} // namespace lowart
