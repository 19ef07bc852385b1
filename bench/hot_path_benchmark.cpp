// What each piece of a proxied request costs on one core: key check, request parse and
// model rewrite, SSE parsing of a realistic stream, usage extraction, metrics.

#include "actors/admin/rbac.hpp"
#include "actors/state.hpp"
#include "core/json_text.hpp"
#include "core/metrics.hpp"
#include "core/secrets.hpp"
#include "core/tokenizer.hpp"
#include "net/sse.hpp"
#include "net/usage_count.hpp"

#include <benchmark/benchmark.h>
#include <simdjson.h>

#include <cstdlib>
#include <filesystem>
#include <memory>

using namespace lowart;

namespace {

const std::string request_body =
    R"({"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a concise, helpful assistant. Answer in plain English, cite facts you are sure of, and keep answers under 120 words unless asked otherwise."},{"role":"user","content":"Hi! I am planning a weekend trip and need some quick facts."},{"role":"assistant","content":"Sure - tell me where you are going and what you would like to know."},{"role":"user","content":"What is the capital of France, which river runs through it, and roughly how many people live there? One short paragraph please."}],"temperature":0.7,"top_p":1,"max_tokens":256,"user":"bench-user-0001","stream":true})";

std::string sse_stream() {
  std::string s;
  const char* words[] = {"The",  " capital", " of",    " France", " is",      " Paris.",
                         " It",  " sits",    " on",    " the",    " Seine",   " river",
                         " and", " has",     " about", " 2.1",    " million", " inhabitants."};
  auto chunk = [](std::string_view delta) {
    return std::string(
               R"(data: {"id":"chatcmpl-AXmock0000000000000000000001","object":"chat.completion.chunk","created":1732600000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":)") +
           std::string(delta) + R"(,"logprobs":null,"finish_reason":null}],"usage":null})" + "\n\n";
  };
  s += chunk(R"({"role":"assistant","content":""})");
  for (auto* w : words)
    s += chunk(std::string(R"({"content":")") + w + "\"}");
  s +=
      R"(data: {"id":"x","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":57,"completion_tokens":18,"total_tokens":75}})"
      "\n\n";
  s += "data: [DONE]\n\n";
  return s;
}

void bm_key_check(benchmark::State& state) {
  // The auth path: hash the presented key, look it up in the snapshot (10,000 active
  // keys), compare in constant time, check the model and the role table.
  auto table = std::make_shared<key_table>();
  std::string presented;
  for (int i = 0; i < 10000; ++i) {
    auto key = secrets::new_virtual_key();
    auto e = std::make_shared<key_entry>();
    e->hash = secrets::sha256_hex(key);
    e->id = "key_" + std::to_string(i);
    table->by_hash.emplace(e->hash, e);
    if (i == 5000) presented = key;
  }
  snapshot<key_table> snap;
  snap.publish(table);
  for (auto _ : state) {
    auto keys = snap.load();
    auto hash = secrets::sha256_hex(presented);
    auto it = keys->by_hash.find(hash);
    bool ok = it != keys->by_hash.end() && secrets::constant_time_equal(it->second->hash, hash) &&
              it->second->allows_model("gpt-demo") && !rbac::may(it->second->role, "GET", "keys");
    benchmark::DoNotOptimize(ok);
  }
}
BENCHMARK(bm_key_check);

void bm_parse_and_rewrite_request(benchmark::State& state) {
  simdjson::dom::parser parser;
  for (auto _ : state) {
    std::string body = request_body;
    body.reserve(body.size() + simdjson::SIMDJSON_PADDING);
    simdjson::dom::element doc;
    auto err = parser.parse(body.data(), body.size(), false).get(doc);
    std::string_view model;
    err = doc["model"].get_string().get(model);
    benchmark::DoNotOptimize(err);
    json::set_member(body, "model", "\"mock-model\"");
    json::set_member(body, "stream_options", R"({"include_usage":true})");
    benchmark::DoNotOptimize(body.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * request_body.size()));
}
BENCHMARK(bm_parse_and_rewrite_request);

void bm_sse_relay_stream(benchmark::State& state) {
  // Parse a 21-event stream fed in 1 KiB reads and re-serialise every event.
  auto stream = sse_stream();
  for (auto _ : state) {
    net::sse_parser parser;
    std::string out;
    out.reserve(stream.size());
    for (std::size_t at = 0; at < stream.size(); at += 1024) {
      parser.feed(std::string_view(stream).substr(at, 1024),
                  [&](const net::sse_event& ev) { net::append_sse_event(out, ev); });
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * stream.size()));
}
BENCHMARK(bm_sse_relay_stream);

void bm_limit_check(benchmark::State& state) {
  // Reserve and settle against a key, its team and the model (RPM, TPM, parallel, budget).
  rate_limiter limiter;
  limits key, team, model;
  key.rpm = 1'000'000'000;
  key.tpm = 1'000'000'000;
  key.budget_tokens = 1'000'000'000'000;
  team.max_parallel = 1000;
  model.rpm = 1'000'000'000;
  std::vector<rate_limiter::subject_ref> subjects{{"key:key_1", &key}, {"team:team_1", &team}, {"model:gpt", &model}};
  std::int64_t now = 1'795'000'000'000;
  for (auto _ : state) {
    rate_limiter::ticket t;
    auto d = limiter.reserve(subjects, 400, now, t);
    benchmark::DoNotOptimize(d.allowed);
    limiter.settle(t, 350, 0.001, now);
  }
}
BENCHMARK(bm_limit_check);

std::shared_ptr<const bpe_tokenizer> load_o200k(benchmark::State& state) {
  const char* env = std::getenv("LOWART_TOKENIZER_DIR");
  std::string dir =
      env ? env
          : (std::filesystem::canonical("/proc/self/exe").parent_path().parent_path() / ".deps/tokenizers").string();
  try {
    return bpe_tokenizer::load(dir, "o200k_base");
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return nullptr;
  }
}

/// Counts tokens of successive 1 KiB windows of `corpus` (cut at whole UTF-8 characters).
void count_windows(benchmark::State& state, const bpe_tokenizer& tok, const std::string& corpus) {
  std::vector<std::string> windows;
  for (std::size_t at = 0; at + 1024 <= corpus.size(); at += 1024) {
    std::string w = corpus.substr(at, 1024);
    while (!w.empty() && (static_cast<unsigned char>(w.back()) & 0xC0) == 0x80)
      w.pop_back();
    while (!w.empty() && (static_cast<unsigned char>(w.front()) & 0xC0) == 0x80)
      w.erase(0, 1);
    windows.push_back(std::move(w));
  }
  std::size_t bytes = 0, i = 0;
  for (auto _ : state) {
    const auto& text = windows[i++ % windows.size()];
    benchmark::DoNotOptimize(tok.count(text));
    bytes += text.size();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
}

void bm_tokenize_1kb(benchmark::State& state) {
  // Counting o200k_base tokens of 1 KiB of mixed text (the goal: above 50 MB/s).
  auto tok = load_o200k(state);
  if (!tok) return;
  // 1 KiB windows of a 64 KiB pseudo-random text over a 2,000-word vocabulary in four
  // scripts, so that successive iterations see different text (no window repeats).
  std::vector<std::string> vocabulary;
  const char* stems[] = {"capital", "river",  "inhabit", "compute", "token",  "gateway", "stream",
                         "北京",    "東京",   "世界",    "数据",    "Москва", "данные",  "поток",
                         "fn",      "return", "123",     "4567",    "🎉",      "naïve"};
  std::uint64_t seed = 42;
  auto rnd = [&] {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return seed >> 33;
  };
  for (int i = 0; i < 2000; ++i)
    vocabulary.push_back(std::string(stems[rnd() % 20]) + std::to_string(rnd() % 97) + (rnd() % 3 ? "s" : "ed"));
  std::string corpus;
  while (corpus.size() < 64 * 1024) {
    corpus += vocabulary[rnd() % vocabulary.size()];
    corpus += (rnd() % 9 == 0) ? ". " : " ";
  }
  count_windows(state, *tok, corpus);
}
BENCHMARK(bm_tokenize_1kb);

void bm_tokenize_unique_1kb(benchmark::State& state) {
  // The worst case for the piece cache: 1 KiB windows of text whose words almost never
  // repeat (random letters, CJK, Cyrillic, digits and code punctuation).
  auto tok = load_o200k(state);
  if (!tok) return;
  const char* pieces[] = {"a",  "e",  "i",  "o",  "u",  "k", "r", "s", "t", "n", "th", "qu", "zz", "x",  "m",
                          "数", "据", "流", "网", "关", "д", "а", "н", "ы", "е", "7",  "42", "(",  "){", "->"};
  std::uint64_t seed = 7;
  auto rnd = [&] {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return seed >> 33;
  };
  std::string corpus;
  while (corpus.size() < 256 * 1024) {
    auto len = 2 + rnd() % 6;
    for (std::uint64_t k = 0; k < len; ++k)
      corpus += pieces[rnd() % 30];
    corpus += rnd() % 7 == 0 ? "\n" : " ";
  }
  count_windows(state, *tok, corpus);
}
BENCHMARK(bm_tokenize_unique_1kb);

/// The data of an OpenAI stream whose completion is about `kb` KiB of `flavour` text
/// (0: English words, 1: CJK, 2: code), one word per event like vendors send it.
std::vector<std::string> completion_events(std::size_t kb, int flavour, std::size_t& text_bytes) {
  // (In JSON escapes: "\\n" is one character of the completion.)
  const std::vector<std::vector<const char*>> words = {
      {" the",  " capital", " of",      " France",      " is",  " Paris",   ".",      " It",
       " sits", " on",      " Seine",   " river",       " and", " has",     " about", " 2",
       ".",     "1",        " million", " inhabitants", ",",    " they're", " naïve"},
      {"东京", "是", "日本", "的", "首都", "，", "人口", "约", "一千四百万", "。", "北京", "天气", "很好"},
      {"for", " (",    "int",  " i", " =", " 0", ";",  " i", " <", " n", ";",    " ++", "i",
       ")",   " {\\n", "    ", "x",  "->", "y",  " =", " *", "p",  "++", ";\\n", "}\\n"}};
  std::vector<std::string> out;
  std::uint64_t seed = 11;
  text_bytes = 0;
  while (text_bytes < kb * 1024) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    const auto& pool = words[static_cast<std::size_t>(flavour)];
    std::string w = pool[(seed >> 33) % pool.size()];
    text_bytes += w.size();
    out.push_back(
        R"({"id":"chatcmpl-AXmock0000000000000000000001","object":"chat.completion.chunk","created":1732600000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":")" +
        w + R"("},"logprobs":null,"finish_reason":null}]})");
  }
  return out;
}

/// Reports "us_per_KiB": CPU microseconds per KiB of completion text (printed as a plain
/// number of microseconds).
void per_kib(benchmark::State& state, std::size_t text_bytes) {
  state.counters["us_per_KiB"] =
      benchmark::Counter(static_cast<double>(text_bytes) / 1024.0 * 1e-6,
                         benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void bm_count_completion(benchmark::State& state) {
  // lowart's own count of a stream whose upstream sent no usage: every event held as it
  // is relayed, then read and counted once at the end (what finish_request pays on the
  // I/O thread). Reported as microseconds per KiB of completion text.
  auto tok = load_o200k(state);
  if (!tok) return;
  std::size_t text_bytes = 0;
  auto events =
      completion_events(static_cast<std::size_t>(state.range(0)), static_cast<int>(state.range(1)), text_bytes);
  net::completion_text text;
  for (auto _ : state) {
    text.reset(net::protocol::openai);
    for (const auto& e : events)
      text.add_event(e, tok.get());
    benchmark::DoNotOptimize(text.count(*tok).tokens);
  }
  per_kib(state, text_bytes);
  state.counters["events"] = static_cast<double>(events.size());
}
// Args: KiB of completion, text kind (0 English, 1 CJK, 2 code).
BENCHMARK(bm_count_completion)->Args({1, 0})->Args({4, 0})->Args({16, 0})->Args({128, 0})->Args({4, 1})->Args({4, 2});

void bm_hold_completion(benchmark::State& state) {
  // What a stream whose upstream does report usage pays for the chance that it will not:
  // holding each relayed event's data (no parsing, no counting).
  std::size_t text_bytes = 0;
  auto events = completion_events(4, 0, text_bytes);
  net::completion_text text;
  for (auto _ : state) {
    text.reset(net::protocol::openai);
    for (const auto& e : events)
      text.add_event(e, nullptr);
    benchmark::DoNotOptimize(text.held());
  }
  per_kib(state, text_bytes);
}
BENCHMARK(bm_hold_completion);

void bm_metrics_per_request(benchmark::State& state) {
  // What session::record and proxy settle spend on Prometheus per request.
  auto tokens = metrics::tokens("gpt-demo", "prompt");
  auto duration = metrics::upstream_duration("mock/mock-model");
  for (auto _ : state) {
    metrics::http_requests("chat", 200).inc();
    metrics::http_request_duration("chat").observe(0.0004);
    metrics::upstream_requests("mock/mock-model", "200").inc();
    duration.observe(0.0003);
    tokens.inc(57);
  }
}
BENCHMARK(bm_metrics_per_request);

} // namespace

BENCHMARK_MAIN();
