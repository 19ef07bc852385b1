// lowart's own counts (net/usage_count.hpp): a completion relayed in any number of deltas
// counts what its whole text counts; the settled-prefix cut that bounds memory is exact;
// the prompt follows OpenAI's cookbook, checked on the cookbook's own examples (whose
// numbers OpenAI's API reported). Thousands of generated cases per property, from a
// seeded generator (the seed is in every failure message). js-tiktoken equality of the
// whole-text count itself is the e2e tests' job (tokenizer.test.mjs, billing_property).

#include "net/usage_count.hpp"
#include "tests/unit/tokenizers.hpp"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <cstdint>
#include <string>
#include <vector>

using lowart::bpe_tokenizer;
using lowart::net::completion_text;
using lowart::net::protocol;

namespace {

auto load(const char* name) {
  return lowart::testing::load_tokenizer(name);
}

struct rng {
  std::uint64_t s;
  std::uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  std::size_t below(std::size_t n) { return n ? next() % n : 0; }
  bool chance(unsigned percent) { return below(100) < percent; }
  template <class T> const T& pick(const std::vector<T>& v) { return v[below(v.size())]; }
};

const std::vector<std::vector<std::string>> pools = {
    {"the", "capital", "of", "France", "is", "Paris", "it's", "they're", "WE'LL", "HTTPServer", "camelCase", "naïve",
     "café", "Straße", "a", "I"},
    {"你好", "世界", "今天天气很好", "日本語", "のテキスト", "カタカナ", "한국어", "토큰화되어야", "東京"},
    {"Привет", "мир", "Ελληνικά", "مرحبا", "שלום", "नमस्ते", "हिन्दी", "ภาษาไทย", "தமிழ்"},
    {"🎉", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "1️⃣", "❤️", "🧑🏿‍💻",
     "😀😃"},
    {"e\xcc\x81", "a\xcc\x88\xcc\xa3", "Z\xcd\x91\xcd\xa7\xcc\xb4", "\xe0\xa4\x95\xe0\xa4\xbf"},
    {"for (int i = 0; i < n; ++i) {", "}", "return x;", "def f(x):", "    return x * 2", "\"key\": \"value\",",
     "x->y = *p++;", "SELECT * FROM t;", "\\n", "<|endoftext|>", "0x1F", "&&=", "// c"},
    {"0", "42", "123", "1234", "12345", "1234567890", "3.14159", "1e-9", "12,345", "-0.5", "2026-11-27", "١٢٣"},
    {".", ",", "!", "?", "...", "…", "—", "“", "”", "(", ")", "!!!", "?!", "***", "'", "\"", "\\", "/"},
    {" ", "  ", "\t", "\n", "\n\n", "\r\n", " \n", "\xc2\xa0", "\xe3\x80\x80"},
};

std::string whitespace_run(rng& r) {
  static const std::vector<std::string> units = {" ", "\t", "\n", " \n", "\r\n", "\xc2\xa0"};
  std::string unit = r.pick(units), out;
  auto n = 2 + r.below(r.chance(30) ? 120 : 20);
  for (std::size_t i = 0; i < n; ++i)
    out += unit;
  return out;
}

std::string gen_text(rng& r) {
  std::string out;
  auto n = 1 + r.below(r.chance(15) ? 200 : 40);
  auto main = r.below(pools.size());
  for (std::size_t i = 0; i < n; ++i) {
    if (r.chance(6))
      out += whitespace_run(r);
    else if (r.chance(3))
      out += static_cast<char>(1 + r.below(31));
    else
      out += r.pick(pools[r.chance(50) ? main : r.below(pools.size())]);
    auto j = r.below(100);
    if (j < 55)
      out += ' ';
    else if (j < 62)
      out += '\n';
  }
  if (r.chance(10)) out = whitespace_run(r) + out;
  if (r.chance(10)) out += whitespace_run(r);
  return out;
}

/// Code point boundaries of `s` (0 and s.size() included).
std::vector<std::size_t> boundaries(const std::string& s) {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) out.push_back(i);
  out.push_back(s.size());
  return out;
}

/// `s` cut into deltas of whole code points: 1 each, fixed, random sizes, or whole.
std::vector<std::string> deltas(rng& r, const std::string& s) {
  auto b = boundaries(s);
  std::vector<std::string> out;
  auto mode = r.below(5);
  if (mode == 4 || b.size() < 2) return {s};
  auto fixed = 1 + r.below(12);
  for (std::size_t i = 0; i + 1 < b.size();) {
    auto k = mode == 0 ? 1 : mode == 1 ? fixed : 1 + r.below(r.chance(30) ? 64 : 6);
    auto j = std::min(b.size() - 1, i + k);
    out.push_back(s.substr(b[i], b[j] - b[i]));
    i = j;
  }
  return out;
}

/// A JSON string literal, control characters and some others escaped as \uXXXX.
std::string quoted(rng& r, const std::string& s) {
  std::string out = "\"";
  static const char* hex = "0123456789abcdef";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || (c < 0x80 && r.chance(3))) {
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string chunk(const std::string& delta, int choice = 0) {
  return R"({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":)" +
         std::to_string(choice) + R"(,"delta":)" + delta + R"(,"finish_reason":null}]})";
}

} // namespace

TEST(usage_count, a_settled_prefix_counts_exactly_what_the_whole_text_counts) {
  // count(T) == count_settled(B, used) + count(T[used:]) for every prefix B of T: the
  // property that makes counting a long stream in parts exact.
  for (const char* name : {"o200k_base", "cl100k_base"}) {
    auto tok = load(name);
    ASSERT_TRUE(tok);
    const std::uint64_t seed = 0x5eed0001;
    rng r{seed};
    std::size_t cut_found = 0, cases = 3000;
    for (std::size_t i = 0; i < cases; ++i) {
      std::string text;
      while (text.size() < 200)
        text += gen_text(r);
      auto b = boundaries(text);
      auto prefix_end = b[r.below(b.size())];
      std::string prefix = text.substr(0, prefix_end);
      std::size_t used = 0;
      auto settled = tok->count_settled(prefix, used);
      ASSERT_LE(used + bpe_tokenizer::settle_margin, std::max(prefix.size(), bpe_tokenizer::settle_margin));
      if (used) ++cut_found;
      ASSERT_EQ(settled + tok->count(std::string_view(text).substr(used)), tok->count(text))
          << name << " seed " << seed << " case " << i << " cut at " << used << " of prefix " << prefix.size();
    }
    EXPECT_GT(cut_found, cases / 2) << "the cut exists in most ordinary text";
  }
}

TEST(usage_count, a_stream_in_any_deltas_counts_its_whole_text_once) {
  // OpenAI streams: content in random deltas (and a reasoning stream, a second choice, a
  // tool call), with the default bounds, small ones (settling every 2 KiB) and tiny ones
  // (every 256 bytes, where generated whitespace runs often leave no cut: estimates).
  for (const char* name : {"o200k_base", "cl100k_base"}) {
    auto tok = load(name);
    ASSERT_TRUE(tok);
    const std::uint64_t seed = 0x5eed0002;
    rng r{seed};
    std::size_t estimated_small = 0, small_cases = 0, cases = 3000;
    for (std::size_t i = 0; i < cases; ++i) {
      auto bounds = r.below(3); // 0 default, 1 small, 2 tiny
      bool tiny = bounds == 2;
      small_cases += bounds == 1;
      completion_text c = bounds == 0 ? completion_text()
                          : tiny      ? completion_text(512, 256)
                                      : completion_text(4096, 2048);
      c.reset(protocol::openai);
      std::size_t expected = 0;
      std::vector<std::string> events;
      int choices = r.chance(15) ? 2 : 1;
      for (int k = 0; k < choices; ++k) {
        auto text = gen_text(r);
        if (r.chance(20))
          while (text.size() < 3000)
            text += gen_text(r);
        expected += tok->count(text);
        for (const auto& d : deltas(r, text))
          events.push_back(chunk(R"({"content":)" + quoted(r, d) + "}", k));
        if (r.chance(10)) {
          auto thought = gen_text(r);
          expected += tok->count(thought);
          for (const auto& d : deltas(r, thought))
            events.push_back(chunk(R"({"reasoning_content":)" + quoted(r, d) + "}", k));
        }
        if (r.chance(20)) {
          std::string args = R"({"q": )" + quoted(r, gen_text(r)) + "}";
          expected += tok->count("get_weather") + tok->count(args);
          events.push_back(chunk(
              R"({"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]})",
              k));
          for (const auto& d : deltas(r, args))
            events.push_back(chunk(R"({"tool_calls":[{"index":0,"function":{"arguments":)" + quoted(r, d) + "}}]}", k));
        }
      }
      for (const auto& e : events) {
        c.add_event(e, tok.get());
        auto bound = bounds == 0 ? completion_text::default_max_events + completion_text::default_max_text
                     : tiny      ? 512 + 256
                                 : 4096 + 2048;
        ASSERT_LE(c.held(), bound + e.size() + 1);
      }
      auto got = c.count(*tok);
      if (!c.settled_exactly()) {
        // No settled cut within the bound (a long unbroken run): an estimate, marked, close.
        ASSERT_NE(bounds, 0u) << "the default bound is never reached here";
        estimated_small += bounds == 1;
        ASSERT_NEAR(static_cast<double>(got.tokens), static_cast<double>(expected), 2.0 + expected / 10.0)
            << name << " seed " << seed << " case " << i;
        continue;
      }
      ASSERT_EQ(got.tokens, static_cast<std::int64_t>(expected))
          << name << " seed " << seed << " case " << i << (tiny ? " (tiny bounds)" : "");
      ASSERT_EQ(c.count(*tok).tokens, got.tokens) << "asking again changes nothing";
    }
    EXPECT_LT(estimated_small, small_cases / 100 + 1) << "with 2 KiB of room a cut is nearly always found";
  }
}

TEST(usage_count, anthropic_blocks_and_json_answers_count_per_block) {
  auto tok = load("o200k_base");
  ASSERT_TRUE(tok);
  rng r{0x5eed0003};
  for (int i = 0; i < 1000; ++i) {
    auto text = gen_text(r), thought = gen_text(r);
    std::string input = R"({"city": )" + quoted(r, gen_text(r)) + "}";
    completion_text c;
    c.reset(protocol::anthropic);
    c.add_event(R"({"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[]}})",
                tok.get());
    c.add_event(R"({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}})",
                tok.get());
    for (const auto& d : deltas(r, thought))
      c.add_event(R"({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":)" +
                      quoted(r, d) + "}}",
                  tok.get());
    c.add_event(R"({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}})", tok.get());
    for (const auto& d : deltas(r, text))
      c.add_event(R"({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":)" + quoted(r, d) +
                      "}}",
                  tok.get());
    c.add_event(
        R"({"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"t","name":"get_weather","input":{}}})",
        tok.get());
    for (const auto& d : deltas(r, input))
      c.add_event(R"({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":)" +
                      quoted(r, d) + "}}",
                  tok.get());
    auto expected = tok->count(thought) + tok->count(text) + tok->count("get_weather") + tok->count(input);
    ASSERT_EQ(c.count(*tok).tokens, static_cast<std::int64_t>(expected)) << "case " << i;
  }
  // JSON answers: OpenAI's message, Anthropic's blocks (a tool_use's input as compact JSON).
  completion_text c;
  c.reset(protocol::openai);
  c.set_body(
      R"({"choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, world","tool_calls":[{"id":"x","type":"function","function":{"name":"lookup","arguments":"{\"q\":1}"}}]}}]})");
  EXPECT_EQ(c.count(*tok).tokens, static_cast<std::int64_t>(tok->count("Hello there, world") + tok->count("lookup") +
                                                            tok->count("{\"q\":1}")));
  c.reset(protocol::anthropic);
  c.set_body(
      R"({"type":"message","content":[{"type":"text","text":"It is sunny."},{"type":"tool_use","id":"t","name":"w","input":{"a": 1}}]})");
  EXPECT_EQ(c.count(*tok).tokens,
            static_cast<std::int64_t>(tok->count("It is sunny.") + tok->count("w") + tok->count(R"({"a":1})")));
}

TEST(usage_count, the_prompt_follows_the_cookbook_on_its_own_examples) {
  // "How to count tokens with tiktoken", section 6: OpenAI's API answered 124 prompt
  // tokens for gpt-4o and 129 for gpt-4 on these messages; section 7 (with a tool): 101
  // and 105.
  const std::string messages = R"([
    {"role":"system","content":"You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
    {"role":"system","name":"example_user","content":"New synergies will help drive top-line growth."},
    {"role":"system","name":"example_assistant","content":"Things working well together will increase revenue."},
    {"role":"system","name":"example_user","content":"Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
    {"role":"system","name":"example_assistant","content":"Let's talk later when we're less busy about how to do better."},
    {"role":"user","content":"This late pivot means we don't have time to boil the ocean for the client deliverable."}])";
  const std::string tools_body = R"({"model":"m","messages":[
    {"role":"system","content":"You are a helpful assistant that can answer to questions about the weather."},
    {"role":"user","content":"What's the weather like in San Francisco?"}],
    "tools":[{"type":"function","function":{"name":"get_current_weather","description":"Get the current weather in a given location",
      "parameters":{"type":"object","properties":{
        "location":{"type":"string","description":"The city and state, e.g. San Francisco, CA"},
        "unit":{"type":"string","description":"The unit of temperature to return","enum":["celsius","fahrenheit"]}},
      "required":["location"]}}}]})";
  simdjson::dom::parser parser;
  struct expectation {
    const char* encoding;
    std::int64_t plain, with_tools;
  };
  for (auto [encoding, plain, with_tools] :
       {expectation{"o200k_base", 124, 101}, expectation{"cl100k_base", 129, 105}}) {
    auto tok = load(encoding);
    ASSERT_TRUE(tok);
    std::string body = R"({"model":"m","messages":)" + messages + "}";
    auto n =
        lowart::net::count_prompt(*tok, lowart::net::prompt_shape::openai_chat, parser.parse(body).value(), encoding);
    EXPECT_EQ(n.tokens, plain) << encoding;
    EXPECT_FALSE(n.estimated) << "plain text messages are exact";
    auto t = lowart::net::count_prompt(*tok, lowart::net::prompt_shape::openai_chat, parser.parse(tools_body).value(),
                                       encoding);
    EXPECT_EQ(t.tokens, with_tools) << encoding;
    EXPECT_TRUE(t.estimated) << "tool definitions are the cookbook's estimate";
  }
  auto tok = load("o200k_base");
  ASSERT_TRUE(tok);
  auto image = lowart::net::count_prompt(
      *tok, lowart::net::prompt_shape::openai_chat,
      parser
          .parse(std::string(
              R"({"messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]})"))
          .value(),
      "o200k_base");
  EXPECT_EQ(image.tokens, static_cast<std::int64_t>(3 + tok->count("user") + tok->count("What is this?") +
                                                    lowart::net::image_tokens + 3));
  EXPECT_TRUE(image.estimated);
  auto embeddings =
      lowart::net::count_prompt(*tok, lowart::net::prompt_shape::embeddings,
                                parser.parse(std::string(R"({"input":["hello world",[1,2,3]]})")).value(), "");
  EXPECT_EQ(embeddings.tokens, static_cast<std::int64_t>(tok->count("hello world") + 3));
  EXPECT_FALSE(embeddings.estimated);
}

TEST(usage_count, model_names_map_to_tiktoken_encodings) {
  using lowart::encoding_for_model;
  EXPECT_EQ(encoding_for_model("gpt-4o"), "o200k_base");
  EXPECT_EQ(encoding_for_model("gpt-4o-mini-2024-07-18"), "o200k_base");
  EXPECT_EQ(encoding_for_model("gpt-4.1-nano"), "o200k_base");
  EXPECT_EQ(encoding_for_model("o3-mini"), "o200k_base");
  EXPECT_EQ(encoding_for_model("gpt-5"), "o200k_base");
  EXPECT_EQ(encoding_for_model("gpt-4"), "cl100k_base");
  EXPECT_EQ(encoding_for_model("gpt-4-turbo-2024-04-09"), "cl100k_base");
  EXPECT_EQ(encoding_for_model("gpt-3.5-turbo"), "cl100k_base");
  EXPECT_EQ(encoding_for_model("ft:gpt-3.5-turbo:org:x:1"), "cl100k_base");
  EXPECT_EQ(encoding_for_model("openai/gpt-4o"), "o200k_base");
  EXPECT_EQ(encoding_for_model("text-embedding-3-small"), "cl100k_base");
  EXPECT_EQ(encoding_for_model("claude-sonnet-4-5"), "");
  EXPECT_EQ(encoding_for_model("llama-3.1-8b"), "");
}
