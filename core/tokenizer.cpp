#include "core/tokenizer.hpp"

#include "core/crypto.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

namespace lowart {

namespace {

/// FNV-1a: token byte strings are short (mostly under 10 bytes), where it beats the
/// library's murmur-style hash that dominated the profile.
struct view_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    std::uint64_t h = 1469598103934665603ull;
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
    return static_cast<std::size_t>(h ^ (h >> 29));
  }
};

constexpr std::uint32_t no_rank = std::numeric_limits<std::uint32_t>::max();

} // namespace

struct bpe_tokenizer::impl {
  std::unordered_map<std::string, std::uint32_t, view_hash, std::equal_to<>> ranks;
  pcre2_code* pattern = nullptr;
  bool jit = false;

  ~impl() {
    if (pattern) pcre2_code_free(pattern);
  }

  std::uint32_t rank(std::string_view bytes) const {
    auto it = ranks.find(bytes);
    return it == ranks.end() ? no_rank : it->second;
  }
};

std::shared_ptr<const bpe_tokenizer> bpe_tokenizer::load(const std::string& dir, const std::string& name) {
  auto t = std::shared_ptr<bpe_tokenizer>(new bpe_tokenizer);
  t->name_ = name;
  t->impl_ = std::make_unique<impl>();
  auto ranks_path = dir + "/" + name + ".tiktoken";
  std::ifstream in(ranks_path);
  if (!in) throw std::runtime_error("tokenizer ranks not found: " + ranks_path + " (scripts/setup.sh extracts them)");
  std::string token;
  std::uint64_t rank = 0;
  t->impl_->ranks.reserve(210'000);
  while (in >> token >> rank) {
    auto bytes = crypto::base64_decode(token);
    if (!bytes || rank >= no_rank) throw std::runtime_error("malformed rank line in " + ranks_path + ": " + token);
    t->impl_->ranks.emplace(std::move(*bytes), static_cast<std::uint32_t>(rank));
  }
  if (t->impl_->ranks.size() < 256) throw std::runtime_error("too few ranks in " + ranks_path);
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

template <class Sink> void bpe_tokenizer::run(std::string_view text, Sink&& sink) const {
  const auto& d = *impl_;
  thread_local std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match{
      pcre2_match_data_create(4, nullptr), &pcre2_match_data_free};
  thread_local std::vector<std::size_t> bounds;     // piece split points during merging
  thread_local std::vector<std::uint32_t> ranks_of; // rank of the pair starting at each split
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  PCRE2_SIZE at = 0;
  while (at < text.size()) {
    int rc = d.jit ? pcre2_jit_match(d.pattern, subject, text.size(), at, 0, match.get(), nullptr)
                   : pcre2_match(d.pattern, subject, text.size(), at, 0, match.get(), nullptr);
    if (rc < 0) {
      // No match, or invalid UTF-8 from here on: the rest goes out byte by byte.
      for (char c : text.substr(at)) {
        auto r = d.rank(std::string_view(&c, 1));
        sink(r == no_rank ? 0u : r);
      }
      return;
    }
    auto* ov = pcre2_get_ovector_pointer(match.get());
    auto start = ov[0];
    auto end = ov[1] > start ? ov[1] : start + 1; // an empty match still advances
    auto piece = text.substr(start, end - start);
    if (auto r = d.rank(piece); r != no_rank) {
      sink(r);
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
      for (std::size_t i = 0; i + 1 < bounds.size(); ++i) {
        auto r = d.rank(piece.substr(bounds[i], bounds[i + 1] - bounds[i]));
        sink(r == no_rank ? 0u : r);
      }
    }
    at = end;
  }
}

std::vector<std::uint32_t> bpe_tokenizer::encode(std::string_view text) const {
  std::vector<std::uint32_t> out;
  out.reserve(text.size() / 3 + 1);
  run(text, [&](std::uint32_t id) { out.push_back(id); });
  return out;
}

std::size_t bpe_tokenizer::count(std::string_view text) const {
  std::size_t n = 0;
  run(text, [&](std::uint32_t) { ++n; });
  return n;
}

} // namespace lowart
