// Internal consistency of the BPE tokenizer: the per-thread piece cache must never change
// an answer (cache hits equal fresh merges, count equals encode, two encodings never
// share entries). Exactness against tiktoken itself is the e2e test's job
// (tests/e2e/tokenizer.test.mjs, token ids compared with js-tiktoken).

#include "core/tokenizer.hpp"
#include "tests/unit/tokenizers.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using lowart::bpe_tokenizer;

namespace {

auto load(const char* name) {
  return lowart::testing::load_tokenizer(name);
}

std::vector<std::string> samples() {
  // Words that need merging (not single tokens), in several scripts, plus collisions
  // for the direct-mapped cache: 5,000 distinct pieces overflow its 2,048 slots.
  std::vector<std::string> out = {"naïveté",  " antidisestablishment", " Zürichsee", "東京都庁舎", " данныеё", "🎉🎉🎉",
                                  " x_y_z_w", "\tindented\r\n"};
  for (int i = 0; i < 5000; ++i)
    out.push_back(" qz" + std::to_string(i * 7919 % 100000) + "vk" + std::string(1 + i % 5, 'x'));
  return out;
}

} // namespace

TEST(tokenizer, cache_hits_give_the_same_ids_as_fresh_merges_and_counts_agree) {
  auto tok = load("o200k_base");
  ASSERT_TRUE(tok);
  auto words = samples();
  std::vector<std::vector<std::uint32_t>> first;
  for (const auto& w : words)
    first.push_back(tok->encode(w));
  for (int round = 0; round < 2; ++round)
    for (std::size_t i = 0; i < words.size(); ++i) {
      ASSERT_EQ(tok->encode(words[i]), first[i]) << words[i];
      ASSERT_EQ(tok->count(words[i]), first[i].size()) << words[i];
    }
  std::string all;
  std::size_t sum = 0;
  for (std::size_t i = 0; i < words.size(); ++i) {
    all += words[i];
    all += '\n';
  }
  sum = tok->count(all);
  EXPECT_EQ(sum, tok->encode(all).size());
}

TEST(tokenizer, two_encodings_never_share_cached_pieces) {
  auto o200k = load("o200k_base");
  auto cl100k = load("cl100k_base");
  ASSERT_TRUE(o200k && cl100k);
  auto words = samples();
  std::vector<std::vector<std::uint32_t>> a, b;
  for (const auto& w : words) {
    a.push_back(o200k->encode(w));
    b.push_back(cl100k->encode(w));
  }
  bool differ = false;
  for (std::size_t i = 0; i < words.size(); ++i) {
    EXPECT_EQ(o200k->encode(words[i]), a[i]);
    EXPECT_EQ(cl100k->encode(words[i]), b[i]);
    differ = differ || a[i] != b[i];
  }
  EXPECT_TRUE(differ) << "the two vocabularies should disagree somewhere";
}

TEST(tokenizer, empty_and_invalid_utf8_are_handled) {
  auto tok = load("o200k_base");
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->count(""), 0u);
  // Invalid UTF-8 never reaches the JIT-compiled regex (it does not check, and reads
  // past a bad sequence): bad bytes are byte tokens, the valid text around them counts.
  for (std::string bad :
       {std::string("ok \xff\xfe\x80 tail"), std::string("\xc0\xaf overlong"), std::string("surrogate \xed\xa0\x80 x"),
        std::string("cut at the end \xe6\x97"), std::string("\xf4\x90\x80\x80 too high"), std::string(1000, '\x80')}) {
    EXPECT_EQ(tok->count(bad), tok->encode(bad).size());
    EXPECT_GT(tok->count(bad), 0u);
  }
  EXPECT_EQ(tok->encode("valid \xff valid"), [&] {
    auto a = tok->encode("valid ");
    auto b = tok->encode("\xff");
    auto c = tok->encode(" valid");
    a.insert(a.end(), b.begin(), b.end());
    a.insert(a.end(), c.begin(), c.end());
    return a;
  }());
}
