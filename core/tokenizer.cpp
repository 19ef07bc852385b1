#include "core/tokenizer.hpp"

#include "core/crypto.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace lowart {

namespace {

constexpr std::uint32_t no_rank = std::numeric_limits<std::uint32_t>::max();

/// Up to 8 bytes packed into one word without a byte loop or a memcpy call: two
/// overlapping 4-byte loads (4..8 bytes) or three single bytes (1..3). For a given length
/// the packing is one-to-one, and lengths are always compared separately.
inline std::uint64_t pack_short(const char* p, std::size_t n) {
  if (n >= 4) {
    std::uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + n - 4, 4);
    return (static_cast<std::uint64_t>(hi) << 32) | lo;
  }
  if (n == 0) return 0;
  auto b = [&](std::size_t i) { return static_cast<std::uint64_t>(static_cast<unsigned char>(p[i])); };
  return b(0) | (b(n / 2) << 8) | (b(n - 1) << 16);
}

/// A multiply-mix over 8-byte words: token byte strings are short, and per-byte hashing
/// (FNV, the library's murmur) dominated the profile.
inline std::uint64_t hash_bytes(std::string_view s) {
  std::uint64_t h;
  if (s.size() <= 8) {
    h = pack_short(s.data(), s.size()) ^ (s.size() << 56);
  } else {
    h = s.size();
    std::size_t i = 0;
    for (; i + 8 <= s.size(); i += 8) {
      std::uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
      h ^= h >> 31;
    }
    h ^= pack_short(s.data() + s.size() - 8, 8); // the last 8 bytes (overlapping)
  }
  // murmur3's finalizer: every input bit reaches the low bits the table indexes by.
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDull;
  h ^= h >> 33;
  h *= 0xC4CEB9FE1A85EC53ull;
  return h ^ (h >> 33);
}

/// End of the longest valid UTF-8 stretch of `text` starting at `from` (no overlongs,
/// surrogates or code points above U+10FFFF).
std::size_t valid_utf8_prefix(std::string_view text, std::size_t from) {
  auto u = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  std::size_t i = from, n = text.size();
  while (i < n) {
    // ASCII runs, 8 bytes at a time.
    while (i + 8 <= n) {
      std::uint64_t w;
      std::memcpy(&w, text.data() + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    unsigned c = u(i);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (len == 0 || c > 0xF4 || i + len > n) return i;
    for (std::size_t k = 1; k < len; ++k)
      if ((u(i + k) & 0xC0) != 0x80) return i;
    if (c == 0xE0 && u(i + 1) < 0xA0) return i; // overlong
    if (c == 0xED && u(i + 1) > 0x9F) return i; // surrogate
    if (c == 0xF0 && u(i + 1) < 0x90) return i; // overlong
    if (c == 0xF4 && u(i + 1) > 0x8F) return i; // above U+10FFFF
    i += len;
  }
  return n;
}

/// The rank table: open addressing with linear probing over 16-byte slots. Strings of up
/// to 8 bytes (most byte pairs the merge loop asks about) live in the slot itself, so a
/// lookup is usually one cache line; longer ones point into one byte arena.
class rank_table {
public:
  void build(std::vector<std::pair<std::string, std::uint32_t>>& entries) {
    std::size_t cap = 16;
    while (cap < entries.size() * 2) // load under 1/2: most merge lookups miss, and misses probe longest
      cap <<= 1;
    slots_.assign(cap, slot{});
    mask_ = cap - 1;
    for (auto& [bytes, rank] : entries) {
      slot s;
      s.len = static_cast<std::uint32_t>(bytes.size());
      s.rank = rank;
      if (bytes.size() <= 8) {
        s.word = pack_short(bytes.data(), bytes.size());
      } else {
        s.word = arena_.size();
        arena_ += bytes;
      }
      for (auto i = hash_bytes(bytes) & mask_;; i = (i + 1) & mask_)
        if (slots_[i].rank == no_rank) {
          slots_[i] = s;
          break;
        }
    }
    size_ = entries.size();
  }

  std::uint32_t find(std::string_view bytes) const {
    const bool inline_key = bytes.size() <= 8;
    const std::uint64_t word = inline_key ? pack_short(bytes.data(), bytes.size()) : 0;
    for (auto i = hash_bytes(bytes) & mask_;; i = (i + 1) & mask_) {
      const slot& s = slots_[i];
      if (s.rank == no_rank) return no_rank;
      if (s.len != bytes.size()) continue;
      if (inline_key ? s.word == word : std::memcmp(arena_.data() + s.word, bytes.data(), bytes.size()) == 0)
        return s.rank;
    }
  }

  std::size_t size() const { return size_; }

private:
  struct slot {
    std::uint64_t word = 0; ///< the bytes (up to 8), or their offset in arena_
    std::uint32_t len = 0;
    std::uint32_t rank = no_rank; ///< no_rank: empty
  };
  std::vector<slot> slots_;
  std::string arena_;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
};

/// Recently merged pieces and their token ids, per thread: text repeats its words, and a
/// word's merge (dozens of rank lookups) is the tokenizer's main cost. Direct-mapped by
/// hash; pieces over 24 bytes or 6 tokens are not kept.
struct piece_cache {
  static constexpr std::size_t entries = 2048;
  static constexpr std::size_t max_bytes = 24;
  static constexpr std::size_t max_ids = 6;
  struct entry {
    std::uint64_t owner = 0; ///< the id of the tokenizer the ids belong to (0: empty)
    std::uint8_t len = 0;
    std::uint8_t n = 0;
    char bytes[max_bytes];
    std::uint32_t ids[max_ids];
  };
  std::array<entry, entries> slots;
};

piece_cache& thread_piece_cache() {
  thread_local auto cache = std::make_unique<piece_cache>();
  return *cache;
}

} // namespace

std::atomic<std::uint64_t> next_tokenizer_id{1};

struct bpe_tokenizer::impl {
  rank_table ranks;
  std::uint64_t id = next_tokenizer_id.fetch_add(1); ///< tags this tokenizer's cache entries
  pcre2_code* pattern = nullptr;
  bool jit = false;

  ~impl() {
    if (pattern) pcre2_code_free(pattern);
  }

  std::uint32_t rank(std::string_view bytes) const { return ranks.find(bytes); }
};

namespace {

/// Byte-pair merge of a long piece in O(n log n): a linked list of parts and a heap of
/// (rank, position) pairs with lazy invalidation. Merges in exactly tiktoken's order (the
/// lowest rank first, the leftmost of equal ranks first). Leaves the final split points
/// in `bounds`.
template <class Ranks>
void merge_long_impl(const Ranks& rank, std::string_view piece, std::vector<std::size_t>& bounds) {
  const std::size_t n = piece.size();
  std::vector<std::size_t> next(n + 1), prev(n + 1);
  std::vector<std::uint32_t> version(n + 1, 0);
  std::vector<bool> alive(n + 1, true);
  for (std::size_t i = 0; i <= n; ++i) {
    next[i] = i + 1;
    prev[i] = i == 0 ? 0 : i - 1;
  }
  struct entry {
    std::uint32_t rank;
    std::size_t pos;
    std::uint32_t version;
    bool operator>(const entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<entry> heap;
  auto pair_rank = [&](std::size_t i) -> std::uint32_t {
    if (i >= n) return no_rank;
    auto j = next[i];
    if (j >= n) return no_rank;
    auto k = next[j];
    return rank(piece.substr(i, k - i));
  };
  auto push = [&](std::size_t i) {
    auto r = pair_rank(i);
    if (r == no_rank) return;
    heap.push_back({r, i, version[i]});
    std::push_heap(heap.begin(), heap.end(), std::greater<>{});
  };
  for (std::size_t i = 0; i < n; ++i)
    push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
    auto e = heap.back();
    heap.pop_back();
    if (!alive[e.pos] || e.version != version[e.pos]) continue; // stale
    // Merge the part at e.pos with the one after it.
    auto j = next[e.pos];
    alive[j] = false;
    next[e.pos] = next[j];
    if (next[j] <= n) prev[next[j]] = e.pos;
    ++version[e.pos];
    push(e.pos);
    if (e.pos > 0) {
      auto p = prev[e.pos];
      ++version[p];
      push(p);
    }
  }
  for (std::size_t i = 0; i <= n; i = next[i]) {
    bounds.push_back(i);
    if (i == n) break;
  }
}

} // namespace

void bpe_tokenizer::merge_long(const impl& d, std::string_view piece, std::vector<std::size_t>& bounds) {
  merge_long_impl([&](std::string_view bytes) { return d.rank(bytes); }, piece, bounds);
}

std::shared_ptr<const bpe_tokenizer> bpe_tokenizer::load(const std::string& dir, const std::string& name) {
  auto t = std::shared_ptr<bpe_tokenizer>(new bpe_tokenizer);
  t->name_ = name;
  t->impl_ = std::make_unique<impl>();
  auto ranks_path = dir + "/" + name + ".tiktoken";
  std::ifstream in(ranks_path);
  if (!in) throw std::runtime_error("tokenizer ranks not found: " + ranks_path + " (scripts/setup.sh extracts them)");
  std::string token;
  std::uint64_t rank = 0;
  std::vector<std::pair<std::string, std::uint32_t>> entries;
  entries.reserve(210'000);
  while (in >> token >> rank) {
    auto bytes = crypto::base64_decode(token);
    if (!bytes || bytes->empty() || rank >= no_rank)
      throw std::runtime_error("malformed rank line in " + ranks_path + ": " + token);
    entries.emplace_back(std::move(*bytes), static_cast<std::uint32_t>(rank));
  }
  if (entries.size() < 256) throw std::runtime_error("too few ranks in " + ranks_path);
  t->impl_->ranks.build(entries);
  auto pattern_path = dir + "/" + name + ".pattern";
  std::ifstream pin(pattern_path);
  if (!pin) throw std::runtime_error("tokenizer pattern not found: " + pattern_path);
  std::stringstream text;
  text << pin.rdbuf();
  auto pattern = text.str();
  int error = 0;
  PCRE2_SIZE offset = 0;
  t->impl_->pattern = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                    PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error, &offset, nullptr);
  if (!t->impl_->pattern) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    throw std::runtime_error("tokenizer pattern of " + name + " does not compile at " + std::to_string(offset) + ": " +
                             reinterpret_cast<char*>(message));
  }
  t->impl_->jit = pcre2_jit_compile(t->impl_->pattern, PCRE2_JIT_COMPLETE) == 0;
  return t;
}

bpe_tokenizer::~bpe_tokenizer() = default;

std::size_t bpe_tokenizer::vocabulary() const {
  return impl_->ranks.size();
}

template <class Sink, class PieceEnd>
void bpe_tokenizer::run(std::string_view text, Sink&& sink, bool exact, PieceEnd&& piece_end) const {
  const auto& d = *impl_;
  thread_local std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match{
      pcre2_match_data_create(4, nullptr), &pcre2_match_data_free};
  thread_local std::vector<std::size_t> bounds;     // piece split points during merging
  thread_local std::vector<std::uint32_t> ranks_of; // rank of the pair starting at each split
  auto& cache = thread_piece_cache();
  // The piece cache slot of a piece (null when too long to keep), looked up once for
  // both the hit test and, on a miss, the store after merging.
  auto slot_of = [&](std::string_view piece) -> piece_cache::entry* {
    return piece.size() <= piece_cache::max_bytes ? &cache.slots[hash_bytes(piece) & (piece_cache::entries - 1)]
                                                  : nullptr;
  };
  auto holds = [&](const piece_cache::entry* e, std::string_view piece) {
    return e && e->owner == d.id && e->len == piece.size() && std::memcmp(e->bytes, piece.data(), piece.size()) == 0;
  };
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  PCRE2_SIZE at = 0;
  auto byte_token = [&](char c) {
    auto r = d.rank(std::string_view(&c, 1));
    sink(r == no_rank ? 0u : r);
  };
  // JIT matching does not check UTF-8 (reading past a bad sequence is undefined), so
  // the regex only ever sees a valid stretch; a bad byte goes out as a byte token.
  std::size_t valid_end = valid_utf8_prefix(text, 0);
  while (at < text.size()) {
    if (at >= valid_end) {
      byte_token(text[at++]);
      piece_end(at);
      valid_end = valid_utf8_prefix(text, at);
      continue;
    }
    int rc = d.jit ? pcre2_jit_match(d.pattern, subject, valid_end, at, 0, match.get(), nullptr)
                   : pcre2_match(d.pattern, subject, valid_end, at, 0, match.get(), nullptr);
    if (rc < 0) {
      // No match: the rest of the stretch goes out byte by byte.
      while (at < valid_end) {
        byte_token(text[at++]);
        piece_end(at);
      }
      continue;
    }
    auto* ov = pcre2_get_ovector_pointer(match.get());
    auto start = ov[0];
    auto end = ov[1] > start ? ov[1] : start + 1; // an empty match still advances
    auto piece = text.substr(start, end - start);
    if (!exact && piece.size() > max_exact_piece) {
      // Counting only: a "word" this long exists only in hostile input, and merging it
      // exactly would hold an I/O thread for a second per megabyte. Estimate instead.
      for (std::size_t k = 0; k < (piece.size() + 3) / 4; ++k)
        sink(0u);
    } else if (auto r = d.rank(piece); r != no_rank) {
      sink(r);
    } else if (auto* slot = slot_of(piece); holds(slot, piece)) {
      for (std::uint8_t k = 0; k < slot->n; ++k)
        sink(slot->ids[k]);
    } else {
      // Byte-pair merge (tiktoken's algorithm): parts[i] is a split point with the rank
      // of the pair starting there; merge the lowest-ranked pair, then re-rank only its
      // two neighbours.
      auto pair_rank = [&](std::size_t i) -> std::uint32_t {
        if (i + 2 >= bounds.size()) return no_rank;
        return d.rank(piece.substr(bounds[i], bounds[i + 2] - bounds[i]));
      };
      bounds.clear();
      ranks_of.clear();
      if (piece.size() > 64) {
        // A long piece (a 10,000-letter "word" from a hostile client): the scan below is
        // quadratic, so merge with a heap instead — same order, lowest rank then leftmost.
        merge_long(d, piece, bounds);
      } else {
        for (std::size_t i = 0; i <= piece.size(); ++i)
          bounds.push_back(i);
        for (std::size_t i = 0; i < bounds.size(); ++i)
          ranks_of.push_back(pair_rank(i));
        while (bounds.size() > 2) {
          std::uint32_t best = no_rank;
          std::size_t best_i = 0;
          for (std::size_t i = 0; i + 2 < bounds.size(); ++i)
            if (ranks_of[i] < best) {
              best = ranks_of[i];
              best_i = i;
            }
          if (best == no_rank) break;
          bounds.erase(bounds.begin() + static_cast<long>(best_i) + 1);
          ranks_of.erase(ranks_of.begin() + static_cast<long>(best_i) + 1);
          ranks_of[best_i] = pair_rank(best_i);
          if (best_i > 0) ranks_of[best_i - 1] = pair_rank(best_i - 1);
        }
      }
      const bool keep = slot && bounds.size() - 1 <= piece_cache::max_ids;
      if (keep) {
        slot->owner = d.id;
        slot->len = static_cast<std::uint8_t>(piece.size());
        slot->n = 0;
        std::memcpy(slot->bytes, piece.data(), piece.size());
      }
      for (std::size_t i = 0; i + 1 < bounds.size(); ++i) {
        auto r = d.rank(piece.substr(bounds[i], bounds[i + 1] - bounds[i]));
        if (r == no_rank) r = 0;
        if (keep) slot->ids[slot->n++] = r;
        sink(r);
      }
    }
    at = end;
    piece_end(at);
  }
}

std::vector<std::uint32_t> bpe_tokenizer::encode(std::string_view text) const {
  std::vector<std::uint32_t> out;
  out.reserve(text.size() / 3 + 1);
  run(
      text, [&](std::uint32_t id) { out.push_back(id); }, true, [](std::size_t) {});
  return out;
}

std::size_t bpe_tokenizer::count(std::string_view text) const {
  std::size_t n = 0;
  run(
      text, [&](std::uint32_t) { ++n; }, false, [](std::size_t) {});
  return n;
}

namespace {

/// The code point of the UTF-8 sequence at `i` (-1: not a valid sequence start).
long code_point_at(std::string_view text, std::size_t i) {
  if (i >= text.size() || valid_utf8_prefix(text.substr(0, std::min(text.size(), i + 4)), i) == i) return -1;
  auto u = [&](std::size_t k) { return static_cast<long>(static_cast<unsigned char>(text[i + k])); };
  long c = u(0);
  if (c < 0x80) return c;
  if (c < 0xE0) return ((c & 0x1F) << 6) | (u(1) & 0x3F);
  if (c < 0xF0) return ((c & 0x0F) << 12) | ((u(1) & 0x3F) << 6) | (u(2) & 0x3F);
  return ((c & 0x07) << 18) | ((u(1) & 0x3F) << 12) | ((u(2) & 0x3F) << 6) | (u(3) & 0x3F);
}

/// A character no tiktoken pattern treats as (or near) whitespace: not \s in PCRE2's or
/// JavaScript's Unicode sense, not a control character, and valid UTF-8.
bool solid(long c) {
  if (c <= 0x20 || c == 0x7F || (c >= 0x80 && c <= 0xA0) || (c >= 0x2000 && c <= 0x200D)) return false;
  for (long space : {0x1680L, 0x180EL, 0x2028L, 0x2029L, 0x202FL, 0x205FL, 0x3000L, 0xFEFFL})
    if (c == space) return false;
  return true;
}

bool solid_before(std::string_view text, std::size_t i) {
  std::size_t start = i;
  while (start > 0 && i - start < 4) {
    --start;
    if ((static_cast<unsigned char>(text[start]) & 0xC0) != 0x80) break;
  }
  return start < i && valid_utf8_prefix(text.substr(0, i), start) == i && solid(code_point_at(text, start));
}

} // namespace

std::size_t bpe_tokenizer::count_settled(std::string_view text, std::size_t& used) const {
  used = 0;
  if (text.size() <= settle_margin) return 0;
  const std::size_t limit = text.size() - settle_margin;
  std::size_t n = 0, settled = 0;
  run(
      text, [&](std::uint32_t) { ++n; }, false,
      [&](std::size_t end) {
        if (end <= limit && solid_before(text, end)) {
          used = end;
          settled = n;
        }
      });
  return settled;
}

std::string_view encoding_for_model(std::string_view model) {
  if (model.starts_with("ft:")) model.remove_prefix(3);
  if (auto slash = model.rfind('/'); slash != std::string_view::npos) model.remove_prefix(slash + 1);
  // tiktoken's MODEL_TO_ENCODING / MODEL_PREFIX_TO_ENCODING, newest families first
  // ("gpt-4o" before "gpt-4").
  for (std::string_view p : {"gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "gpt-oss"})
    if (model.starts_with(p)) return "o200k_base";
  for (std::string_view p : {"gpt-4", "gpt-3.5", "gpt-35", "text-embedding-ada-002", "text-embedding-3"})
    if (model.starts_with(p)) return "cl100k_base";
  return {};
}

} // namespace lowart
