// OpenAI <-> Anthropic translation: requests, answers, errors and streams. Streams are
// vendor stream captures (tests/unit/golden/*.sse) fed through the SSE parser whole, a
// byte at a time and in random pieces, as the proxy feeds them; the translated stream is
// compared event by event with an expectation written by hand from docs/translation.md "Protocol
// translation" (tests/unit/golden/*.expected).

#include "net/sse.hpp"
#include "net/translate.hpp"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

using namespace lowart::net;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string golden(const std::string& name) {
  return std::string(LOWART_GOLDEN_DIR) + "/" + name;
}

/// Parses JSON text for structural checks (its own parser: documents stay valid).
struct doc {
  explicit doc(const std::string& text) : text_(text) {
    EXPECT_EQ(parser_.parse(text_).get(root), simdjson::SUCCESS) << text;
  }
  simdjson::dom::element root;

private:
  std::string text_;
  simdjson::dom::parser parser_;
};

std::string str(simdjson::simdjson_result<simdjson::dom::element> e) {
  std::string_view v;
  if (e.get_string().get(v) != simdjson::SUCCESS) return "<absent>";
  return std::string(v);
}

std::int64_t num(simdjson::simdjson_result<simdjson::dom::element> e) {
  std::int64_t v = -1;
  if (e.get_int64().get(v) != simdjson::SUCCESS) return -1;
  return v;
}

std::string minify(simdjson::simdjson_result<simdjson::dom::element> e) {
  simdjson::dom::element v;
  if (e.get(v) != simdjson::SUCCESS) return "<absent>";
  return simdjson::minify(v);
}

/// One event of a stream as the SSE parser hands it out.
struct wire_event {
  std::string event;
  std::string data;
};

/// A hand-written expectation (tests/unit/golden/*.expected): the client's stream in SSE
/// form, plus comment lines ": after upstream event N" saying how many of its events must
/// be out once the N-th upstream event was translated (other comment lines are notes).
struct expected_stream {
  std::vector<wire_event> events;
  std::map<std::size_t, std::size_t> out_after; ///< upstream event number (1-based) -> events out
};

expected_stream read_expected(const std::string& text) {
  static const std::regex mark(R"(^: after upstream event ([0-9]+)$)");
  expected_stream want;
  std::size_t at = 0;
  while (at < text.size()) {
    auto end = text.find("\n\n", at);
    if (end == std::string::npos) end = text.size();
    std::string block = text.substr(at, end - at);
    at = end + 2;
    if (block.empty()) continue;
    if (block.front() == ':') {
      std::smatch m;
      if (std::regex_match(block, m, mark)) want.out_after[std::stoul(m[1])] = want.events.size();
      continue;
    }
    wire_event ev;
    std::istringstream lines(block);
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("event: ", 0) == 0)
        ev.event = line.substr(7);
      else if (line.rfind("data: ", 0) == 0)
        ev.data = line.substr(6);
      else
        ADD_FAILURE() << "unexpected line in an expectation: " << line;
    }
    want.events.push_back(std::move(ev));
  }
  return want;
}

/// The events of an SSE text, through lowart's parser; fails unless the text ends on an
/// event boundary.
std::vector<wire_event> events_of(const std::string& text) {
  std::vector<wire_event> events;
  sse_parser parser;
  EXPECT_TRUE(parser.feed(text, [&](const sse_event& ev) { events.push_back({ev.event, ev.data}); }));
  EXPECT_EQ(parser.buffered(), 0u) << "an unterminated line at the end";
  EXPECT_TRUE(text.empty() || text.ends_with("\n\n")) << "the last event is not terminated";
  return events;
}

/// JSON equality: same members (in any order), same array elements, same scalars.
/// Where the expectation says "created": 0, any integer is accepted and collected.
bool same_json(simdjson::dom::element got, simdjson::dom::element want, const std::string& where, std::string& why,
               std::vector<std::int64_t>& created) {
  using simdjson::dom::element_type;
  auto kind = [](element_type t) {
    return t == element_type::INT64 || t == element_type::UINT64 ? element_type::INT64 : t;
  };
  if (kind(got.type()) != kind(want.type())) {
    why = where + ": " + simdjson::minify(got) + " where " + simdjson::minify(want) + " was expected";
    return false;
  }
  switch (want.type()) {
  case element_type::OBJECT: {
    auto g = got.get_object().value_unsafe();
    auto w = want.get_object().value_unsafe();
    for (auto [key, value] : w) {
      simdjson::dom::element other;
      if (g[key].get(other) != simdjson::SUCCESS) {
        why = where + "." + std::string(key) + " is missing";
        return false;
      }
      std::int64_t n = -1;
      if (key == "created" && value.get_int64().get(n) == simdjson::SUCCESS && n == 0) {
        if (other.get_int64().get(n) != simdjson::SUCCESS) {
          why = where + ".created is not an integer";
          return false;
        }
        created.push_back(n);
        continue;
      }
      if (!same_json(other, value, where + "." + std::string(key), why, created)) return false;
    }
    if (g.size() != w.size()) {
      for (auto [key, value] : g)
        if (w[key].error() != simdjson::SUCCESS) why = where + "." + std::string(key) + " was not expected";
      return false;
    }
    return true;
  }
  case element_type::ARRAY: {
    auto g = got.get_array().value_unsafe();
    auto w = want.get_array().value_unsafe();
    if (g.size() != w.size()) {
      why = where + " has " + std::to_string(g.size()) + " elements, not " + std::to_string(w.size());
      return false;
    }
    for (std::size_t i = 0; i < w.size(); ++i)
      if (!same_json(g.at(i).value_unsafe(), w.at(i).value_unsafe(), where + "[" + std::to_string(i) + "]", why,
                     created))
        return false;
    return true;
  }
  default:
    if (simdjson::minify(got) == simdjson::minify(want)) return true;
    why = where + ": " + simdjson::minify(got) + " where " + simdjson::minify(want) + " was expected";
    return false;
  }
}

/// Compares a translated stream with its expectation, event by event.
void expect_stream(const std::string& out, const expected_stream& want, const std::string& label) {
  auto got = events_of(out);
  std::vector<std::int64_t> created;
  for (std::size_t i = 0; i < std::max(got.size(), want.events.size()); ++i) {
    if (i >= got.size()) {
      ADD_FAILURE() << label << ": event " << i << " is missing: " << want.events[i].data;
      return;
    }
    if (i >= want.events.size()) {
      ADD_FAILURE() << label << ": unexpected event " << i << ": " << got[i].data;
      return;
    }
    const auto& g = got[i];
    const auto& w = want.events[i];
    EXPECT_EQ(g.event, w.event) << label << ": event " << i;
    if (w.data == "[DONE]" || g.data == "[DONE]") {
      EXPECT_EQ(g.data, w.data) << label << ": event " << i;
      continue;
    }
    simdjson::dom::parser pg, pw;
    simdjson::dom::element eg, ew;
    ASSERT_EQ(pw.parse(w.data).get(ew), simdjson::SUCCESS) << "expectation " << i << ": " << w.data;
    if (pg.parse(g.data).get(eg) != simdjson::SUCCESS) {
      ADD_FAILURE() << label << ": event " << i << " is not JSON: " << g.data;
      return;
    }
    std::string why;
    if (!same_json(eg, ew, "$", why, created)) {
      ADD_FAILURE() << label << ": event " << i << ": " << why << "\n  got:  " << g.data << "\n  want: " << w.data;
      return;
    }
  }
  // One chunk's "created" is every chunk's: OpenAI's stream is one completion.
  for (auto c : created) {
    EXPECT_EQ(c, created.front()) << label;
    EXPECT_GT(c, 1'700'000'000) << label << ": created is a Unix time";
  }
}

/// Feeds `capture` to parser and translator in the given pieces, as the proxy does
/// (net/proxy.cpp: sse_parser -> stream_translator::feed), then closes with the
/// upstream's own usage. The upstream's end marker must be the last event.
std::string translate_pieces(const std::string& capture, const std::vector<std::size_t>& cuts, protocol from,
                             protocol to, const stream_translator::options& opt, token_usage* usage = nullptr) {
  auto t = make_stream_translator(from, to, opt);
  sse_parser parser;
  std::string out;
  std::size_t events = 0, ended_at = 0;
  std::size_t at = 0;
  auto feed = [&](std::string_view piece) {
    EXPECT_TRUE(parser.feed(piece, [&](const sse_event& ev) {
      if (!ev.has_data) return;
      ++events;
      if (t->feed(ev.event, ev.data, out) && !ended_at) ended_at = events;
    }));
  };
  for (auto cut : cuts) {
    feed(std::string_view(capture).substr(at, cut - at));
    at = cut;
  }
  feed(std::string_view(capture).substr(at));
  EXPECT_EQ(ended_at, events) << "the end marker is the upstream's last event, and only it ends the stream";
  if (usage) *usage = t->usage();
  t->close(t->usage(), out);
  return out;
}

/// Random cut points: mostly short pieces (a byte, a few), now and then a long one.
std::vector<std::size_t> random_cuts(std::size_t size, std::mt19937& rng) {
  std::vector<std::size_t> cuts;
  std::uniform_int_distribution<int> kind(0, 9);
  std::size_t at = 0;
  for (;;) {
    std::size_t step = kind(rng) < 7 ? std::uniform_int_distribution<std::size_t>(1, 8)(rng)
                                     : std::uniform_int_distribution<std::size_t>(9, 700)(rng);
    at += step;
    if (at >= size) return cuts;
    cuts.push_back(at);
  }
}

/// Runs one capture against its expectation: read whole, a byte at a time, cut inside
/// every multi-byte UTF-8 character, and in 300 random chunkings (each also cut inside a
/// few characters); then event by event, checking after each upstream event what must
/// already be out.
void check_capture(const std::string& name, const std::string& expectation, protocol from, protocol to,
                   const stream_translator::options& opt, token_usage* usage) {
  auto capture = read_file(golden(name));
  ASSERT_FALSE(capture.empty()) << name;
  auto want = read_expected(read_file(golden(expectation)));
  ASSERT_FALSE(want.events.empty()) << expectation;

  expect_stream(translate_pieces(capture, {}, from, to, opt, usage), want, name + " read whole");
  std::vector<std::size_t> every_byte;
  for (std::size_t i = 1; i < capture.size(); ++i)
    every_byte.push_back(i);
  expect_stream(translate_pieces(capture, every_byte, from, to, opt), want, name + " a byte at a time");
  std::vector<std::size_t> inside_sequence; // offsets of UTF-8 continuation bytes: a cut there splits a character
  for (std::size_t i = 0; i < capture.size(); ++i)
    if ((static_cast<unsigned char>(capture[i]) & 0xC0) == 0x80) inside_sequence.push_back(i);
  ASSERT_FALSE(inside_sequence.empty()) << name << " has no multi-byte UTF-8 text";
  expect_stream(translate_pieces(capture, inside_sequence, from, to, opt), want, name + " cut inside every character");
  std::size_t inside_utf8 = 0;
  for (unsigned seed = 1; seed <= 300 && !::testing::Test::HasFailure(); ++seed) {
    std::mt19937 rng(seed);
    auto cuts = random_cuts(capture.size(), rng);
    for (int i = 0; i < 3; ++i) // and a few inside characters, wherever the pieces fall
      cuts.push_back(inside_sequence[std::uniform_int_distribution<std::size_t>(0, inside_sequence.size() - 1)(rng)]);
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    for (auto c : cuts)
      if ((static_cast<unsigned char>(capture[c]) & 0xC0) == 0x80) ++inside_utf8;
    expect_stream(translate_pieces(capture, cuts, from, to, opt), want,
                  name + " in random pieces, seed " + std::to_string(seed));
  }
  if (!::testing::Test::HasFailure()) {
    EXPECT_GE(inside_utf8, 300u) << "the random chunkings cut inside UTF-8 sequences";
  }

  // Event by event: nothing waits for a later upstream event it does not depend on.
  auto t = make_stream_translator(from, to, opt);
  std::string out;
  std::size_t n = 0;
  sse_parser parser;
  parser.feed(capture, [&](const sse_event& ev) {
    if (!ev.has_data) return;
    t->feed(ev.event, ev.data, out);
    ++n;
    if (auto it = want.out_after.find(n); it != want.out_after.end()) {
      EXPECT_EQ(events_of(out).size(), it->second) << name << ": events out after upstream event " << n << ":\n" << out;
    }
  });
  EXPECT_FALSE(want.out_after.empty()) << expectation << " marks no upstream event";
}

} // namespace

// --- requests ---------------------------------------------------------------------------

TEST(translate_request, openai_to_anthropic_maps_system_content_images_and_tools) {
  auto out = openai_request_to_anthropic(R"({
    "model": "gpt-x", "temperature": 0.5, "stop": "END", "user": "u-42", "n": 1, "logit_bias": {"1": 2},
    "parallel_tool_calls": false, "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "developer", "content": [{"type": "text", "text": "Use metric units.", "cache_control": {"type": "ephemeral"}}]},
      {"role": "user", "content": [
        {"type": "text", "text": "What is on these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "low"}}]},
      {"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "not json"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "rain, 4 C"},
      {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "09:00"}]},
      {"role": "user", "content": "Thanks!"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
              {"type": "function", "function": {"name": "get_time"}}]
  })");
  doc d(out);
  auto r = d.root;
  EXPECT_EQ(str(r["model"]), "gpt-x");
  EXPECT_EQ(num(r["max_tokens"]), 4096) << "Anthropic requires max_tokens: a default is supplied";
  EXPECT_EQ(
      minify(r["system"]),
      R"([{"type":"text","text":"Be brief."},{"type":"text","text":"Use metric units.","cache_control":{"type":"ephemeral"}}])");
  EXPECT_EQ(minify(r["stop_sequences"]), R"(["END"])");
  EXPECT_EQ(minify(r["metadata"]), R"({"user_id":"u-42"})");
  EXPECT_EQ(minify(r["tool_choice"]), R"({"type":"tool","name":"get_weather","disable_parallel_tool_use":true})");
  EXPECT_EQ(
      minify(r["tools"]),
      R"([{"name":"get_weather","description":"Weather by city","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}},)"
      R"({"name":"get_time","input_schema":{"type":"object","properties":{}}}])");
  EXPECT_EQ(r["n"].error(), simdjson::NO_SUCH_FIELD);
  EXPECT_EQ(r["logit_bias"].error(), simdjson::NO_SUCH_FIELD);
  EXPECT_EQ(r["user"].error(), simdjson::NO_SUCH_FIELD);
  simdjson::dom::array messages;
  ASSERT_EQ(r["messages"].get_array().get(messages), simdjson::SUCCESS);
  ASSERT_EQ(messages.size(), 3u) << out; // user, assistant, user (tool results merged with "Thanks!")
  EXPECT_EQ(minify(messages.at(0)),
            R"({"role":"user","content":[{"type":"text","text":"What is on these?"},)"
            R"({"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},)"
            R"({"type":"image","source":{"type":"url","url":"https://example.com/a.jpg"}}]})");
  EXPECT_EQ(
      minify(messages.at(1)),
      R"({"role":"assistant","content":[{"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Oslo"}},)"
      R"({"type":"tool_use","id":"call_2","name":"get_time","input":{}}]})");
  EXPECT_EQ(minify(messages.at(2)),
            R"({"role":"user","content":[{"type":"tool_result","tool_use_id":"call_1","content":"rain, 4 C"},)"
            R"({"type":"tool_result","tool_use_id":"call_2","content":[{"type":"text","text":"09:00"}]},)"
            R"({"type":"text","text":"Thanks!"}]})");
}

TEST(translate_request, openai_to_anthropic_tool_choice_words_and_max_tokens) {
  auto choice = [](const std::string& tc) {
    auto out = openai_request_to_anthropic(R"({"model":"m","max_completion_tokens":77,"messages":[],"tool_choice":)" +
                                           tc + R"(,"tools":[{"type":"function","function":{"name":"f"}}]})");
    doc d(out);
    EXPECT_EQ(num(d.root["max_tokens"]), 77);
    return minify(d.root["tool_choice"]);
  };
  EXPECT_EQ(choice(R"("auto")"), R"({"type":"auto"})");
  EXPECT_EQ(choice(R"("required")"), R"({"type":"any"})");
  EXPECT_EQ(choice(R"("none")"), R"({"type":"none"})");
  // Without tools there is no tool_choice at all (Anthropic refuses one).
  doc d(openai_request_to_anthropic(R"({"model":"m","messages":[],"tool_choice":"auto","stream":true})"));
  EXPECT_EQ(d.root["tool_choice"].error(), simdjson::NO_SUCH_FIELD);
  EXPECT_EQ(minify(d.root["stream"]), "true");
}

// Structured output (Anthropic's docs, "Tool use: JSON output"): Anthropic has no
// response_format; the schema becomes a tool the model is forced to call.
TEST(translate_request, openai_response_format_json_schema_becomes_a_forced_tool_on_anthropic) {
  bool structured = false;
  doc d(openai_request_to_anthropic(
      R"({"model":"m","messages":[{"role":"user","content":"Weather?"}],"response_format":{"type":"json_schema",)"
      R"("json_schema":{"name":"weather","description":"The weather","strict":true,"schema":{"type":"object",)"
      R"("properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}}}})",
      4096, &structured));
  EXPECT_TRUE(structured);
  EXPECT_EQ(d.root["response_format"].error(), simdjson::NO_SUCH_FIELD) << "Anthropic refuses unknown fields";
  EXPECT_EQ(str(d.root["tools"].at(0)["name"]), std::string(json_output_tool));
  EXPECT_EQ(
      minify(d.root["tools"].at(0)["input_schema"]),
      R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false})");
  EXPECT_NE(str(d.root["tools"].at(0)["description"]).find("The weather"), std::string::npos);
  EXPECT_EQ(minify(d.root["tool_choice"]), R"({"type":"tool","name":"json_output","disable_parallel_tool_use":true})");

  // json_object: any object; with tools of the client's, one more tool and the client's choice.
  doc o(openai_request_to_anthropic(R"({"model":"m","messages":[],"response_format":{"type":"json_object"},)"
                                    R"("tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"auto"})",
                                    4096, &structured));
  EXPECT_TRUE(structured);
  EXPECT_EQ(str(o.root["tools"].at(0)["name"]), "f");
  EXPECT_EQ(str(o.root["tools"].at(1)["name"]), std::string(json_output_tool));
  EXPECT_EQ(minify(o.root["tools"].at(1)["input_schema"]), R"({"type":"object"})");
  EXPECT_EQ(minify(o.root["tool_choice"]), R"({"type":"auto"})");

  // Plain text stays plain.
  doc t(openai_request_to_anthropic(R"({"model":"m","messages":[],"response_format":{"type":"text"}})", 4096,
                                    &structured));
  EXPECT_FALSE(structured);
  EXPECT_EQ(t.root["tools"].error(), simdjson::NO_SUCH_FIELD);
}

TEST(translate_request, anthropic_to_openai_maps_system_blocks_images_tools_and_results) {
  auto out = anthropic_request_to_openai(R"({
    "model": "claude-x", "max_tokens": 300, "top_k": 5, "stop_sequences": ["###"], "stream": true,
    "metadata": {"user_id": "u-7"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
    "system": [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in English.", "cache_control": {"type": "ephemeral"}}],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
    "tools": [{"name": "lookup", "description": "Find a word", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}},
              {"type": "web_search_20250305", "name": "web_search"}],
    "messages": [
      {"role": "user", "content": [{"type": "text", "text": "Describe"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/b.png"}}]},
      {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
        {"type": "text", "text": "Looking it up."},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "ünïcode"}}]},
      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "found"}]},
        {"type": "text", "text": "Go on"}]}]
  })",
                                         true);
  doc d(out);
  auto r = d.root;
  EXPECT_EQ(num(r["max_tokens"]), 300);
  EXPECT_EQ(minify(r["stop"]), R"(["###"])");
  EXPECT_EQ(minify(r["stream_options"]), R"({"include_usage":true})");
  EXPECT_EQ(str(r["user"]), "u-7");
  EXPECT_EQ(str(r["tool_choice"]), "required");
  EXPECT_EQ(minify(r["parallel_tool_calls"]), "false");
  EXPECT_EQ(r["top_k"].error(), simdjson::NO_SUCH_FIELD);
  EXPECT_EQ(r["thinking"].error(), simdjson::NO_SUCH_FIELD);
  EXPECT_EQ(minify(r["tools"]), R"([{"type":"function","function":{"name":"lookup","description":"Find a word",)"
                                R"("parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}])")
      << "server tools run at Anthropic only and are dropped";
  simdjson::dom::array messages;
  ASSERT_EQ(r["messages"].get_array().get(messages), simdjson::SUCCESS);
  ASSERT_EQ(messages.size(), 5u) << out;
  EXPECT_EQ(minify(messages.at(0)), R"({"role":"system","content":"You are terse.\nAnswer in English."})");
  EXPECT_EQ(minify(messages.at(1)), R"({"role":"user","content":[{"type":"text","text":"Describe"},)"
                                    R"({"type":"image_url","image_url":{"url":"data:image/jpeg;base64,/9j/4AAQ"}},)"
                                    R"({"type":"image_url","image_url":{"url":"https://example.com/b.png"}}]})");
  EXPECT_EQ(minify(messages.at(2)),
            R"({"role":"assistant","content":"Looking it up.","tool_calls":[{"id":"toolu_1","type":"function",)"
            R"("function":{"name":"lookup","arguments":"{\"q\":\"ünïcode\"}"}}]})");
  EXPECT_EQ(minify(messages.at(3)), R"({"role":"tool","tool_call_id":"toolu_1","content":"found"})");
  EXPECT_EQ(minify(messages.at(4)), R"({"role":"user","content":"Go on"})");
}

TEST(translate_request, anthropic_to_openai_named_tool_choice_and_string_content) {
  doc d(anthropic_request_to_openai(
      R"({"model":"m","max_tokens":5,"system":"Sys","messages":[{"role":"user","content":"hi"}],)"
      R"("tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"f"}})",
      true));
  EXPECT_EQ(minify(d.root["tool_choice"]), R"({"type":"function","function":{"name":"f"}})");
  EXPECT_EQ(minify(d.root["messages"]), R"([{"role":"system","content":"Sys"},{"role":"user","content":"hi"}])");
  EXPECT_EQ(d.root["stream_options"].error(), simdjson::NO_SUCH_FIELD) << "not a stream";
}

// --- answers and errors ---------------------------------------------------------------

TEST(translate_response, anthropic_answer_becomes_a_chat_completion_with_cache_tokens_mapped) {
  token_usage u;
  auto out = anthropic_response_to_openai(
      R"({"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"Hi "},)"
      R"({"type":"text","text":"there"},{"type":"tool_use","id":"toolu_9","name":"f","input":{"a":[1,2]}}],)"
      R"("stop_reason":"tool_use","stop_sequence":null,)"
      R"("usage":{"input_tokens":10,"cache_creation_input_tokens":20,"cache_read_input_tokens":30,"output_tokens":7}})",
      u);
  EXPECT_TRUE(u.present);
  EXPECT_EQ(u.prompt, 60) << "prompt_tokens = input + cache_read + cache_creation";
  EXPECT_EQ(u.cached, 30);
  EXPECT_EQ(u.cache_creation, 20);
  EXPECT_EQ(u.completion, 7);
  doc d(out);
  EXPECT_EQ(str(d.root["object"]), "chat.completion");
  EXPECT_EQ(str(d.root["choices"].at(0)["finish_reason"]), "tool_calls");
  EXPECT_EQ(str(d.root["choices"].at(0)["message"]["content"]), "Hi there");
  EXPECT_EQ(minify(d.root["choices"].at(0)["message"]["tool_calls"]),
            R"([{"id":"toolu_9","type":"function","function":{"name":"f","arguments":"{\"a\":[1,2]}"}}])");
  EXPECT_EQ(
      minify(d.root["usage"]),
      R"({"prompt_tokens":60,"completion_tokens":7,"total_tokens":67,"prompt_tokens_details":{"cached_tokens":30}})");
}

TEST(translate_response, a_forced_json_output_call_is_the_chat_completions_text) {
  const std::string answer =
      R"({"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[{"type":"tool_use",)"
      R"("id":"toolu_1","name":"json_output","input":{"city":"Zürich","temp_c":21}}],"stop_reason":"tool_use",)"
      R"("stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":12}})";
  token_usage u;
  doc d(anthropic_response_to_openai(answer, u, true));
  auto message = d.root["choices"].at(0)["message"];
  EXPECT_EQ(str(message["content"]), R"({"city":"Zürich","temp_c":21})");
  EXPECT_EQ(message["tool_calls"].error(), simdjson::NO_SUCH_FIELD);
  EXPECT_EQ(str(d.root["choices"].at(0)["finish_reason"]), "stop");
  // Without structured output the same answer is a tool call (a client's own tool may be
  // named json_output).
  doc plain(anthropic_response_to_openai(answer, u, false));
  EXPECT_EQ(str(plain.root["choices"].at(0)["message"]["tool_calls"].at(0)["function"]["name"]), "json_output");
  EXPECT_EQ(str(plain.root["choices"].at(0)["finish_reason"]), "tool_calls");
}

TEST(translate_response, chat_completion_becomes_an_anthropic_message) {
  token_usage u;
  auto out = openai_response_to_anthropic(
      R"({"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-x","choices":[{"index":0,)"
      R"("message":{"role":"assistant","content":"Sure.","tool_calls":[{"id":"call_1","type":"function",)"
      R"("function":{"name":"f","arguments":"{\"x\":1}"}}]},"finish_reason":"length"}],)"
      R"("usage":{"prompt_tokens":50,"completion_tokens":5,"total_tokens":55,"prompt_tokens_details":{"cached_tokens":40}}})",
      u);
  doc d(out);
  EXPECT_EQ(str(d.root["type"]), "message");
  EXPECT_EQ(str(d.root["stop_reason"]), "max_tokens");
  EXPECT_EQ(minify(d.root["content"]),
            R"([{"type":"text","text":"Sure."},{"type":"tool_use","id":"call_1","name":"f","input":{"x":1}}])");
  EXPECT_EQ(minify(d.root["usage"]),
            R"({"input_tokens":10,"cache_creation_input_tokens":0,"cache_read_input_tokens":40,"output_tokens":5})");
}

TEST(translate_response, stop_reasons_map_both_ways) {
  EXPECT_EQ(anthropic_stop_reason("stop"), "end_turn");
  EXPECT_EQ(anthropic_stop_reason("length"), "max_tokens");
  EXPECT_EQ(anthropic_stop_reason("tool_calls"), "tool_use");
  EXPECT_EQ(openai_finish_reason("end_turn"), "stop");
  EXPECT_EQ(openai_finish_reason("stop_sequence"), "stop");
  EXPECT_EQ(openai_finish_reason("max_tokens"), "length");
  EXPECT_EQ(openai_finish_reason("tool_use"), "tool_calls");
}

TEST(translate_error, envelopes_keep_the_upstream_message) {
  doc a(translate_error(R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})", 529,
                        protocol::openai));
  EXPECT_EQ(str(a.root["error"]["message"]), "Overloaded");
  EXPECT_EQ(str(a.root["error"]["code"]), "overloaded_error");
  doc o(translate_error(R"({"error":{"message":"Invalid 'messages'","type":"invalid_request_error"}})", 400,
                        protocol::anthropic));
  EXPECT_EQ(str(o.root["type"]), "error");
  EXPECT_EQ(str(o.root["error"]["type"]), "invalid_request_error");
  EXPECT_EQ(str(o.root["error"]["message"]), "Invalid 'messages'");
  doc t(translate_error("upstream exploded", 502, protocol::anthropic));
  EXPECT_EQ(str(t.root["error"]["message"]), "upstream exploded");
  EXPECT_EQ(str(t.root["error"]["type"]), "api_error");
}

// --- streams: vendor stream captures against hand-written expectations --------------------
//
// tests/unit/golden/*.sse are upstream streams in the vendors' documented event shapes
// (OpenAI's API reference and openai-node's stream fixtures; Anthropic's streaming
// reference and anthropic-sdk-typescript's fixtures). *.expected is what the client
// must receive, written by hand from docs/translation.md "Protocol translation", never from lowart's
// output.

TEST(translate_stream, openai_parallel_tool_calls_become_one_tool_use_block_each) {
  stream_translator::options opt;
  opt.prompt_tokens = 1036; // lowart's own count, for message_start
  token_usage u;
  check_capture("openai_parallel_tools.sse", "openai_parallel_tools.anthropic.expected", protocol::openai,
                protocol::anthropic, opt, &u);
  EXPECT_TRUE(u.present);
  EXPECT_EQ(u.prompt, 1041);
  EXPECT_EQ(u.cached, 896);
  EXPECT_EQ(u.completion, 87);
}

TEST(translate_stream, interleaved_openai_tool_calls_become_contiguous_tool_use_blocks) {
  stream_translator::options opt;
  opt.prompt_tokens = 409;
  token_usage u;
  check_capture("openai_interleaved_tools.sse", "openai_interleaved_tools.anthropic.expected", protocol::openai,
                protocol::anthropic, opt, &u);
  EXPECT_EQ(u.prompt, 412) << "usage from the finish chunk";
  EXPECT_EQ(u.completion, 64);
}

TEST(translate_stream, anthropic_thinking_text_and_tool_use_blocks_with_cache_tokens_to_openai) {
  stream_translator::options opt;
  opt.client_wants_usage = true;
  token_usage u;
  check_capture("anthropic_thinking_tools.sse", "anthropic_thinking_tools.openai.expected", protocol::anthropic,
                protocol::openai, opt, &u);
  EXPECT_EQ(u.prompt, 22 + 10240 + 1805) << "prompt_tokens = input + cache read + cache write";
  EXPECT_EQ(u.cached, 10240);
  EXPECT_EQ(u.cache_creation, 1805);
  EXPECT_EQ(u.completion, 236) << "message_delta's cumulative output_tokens replaces message_start's";
}

TEST(translate_stream, anthropic_forced_json_output_tool_to_openai_content_text) {
  stream_translator::options opt;
  opt.client_wants_usage = true;
  opt.structured = true;
  token_usage u;
  check_capture("anthropic_json_output.sse", "anthropic_json_output.openai.expected", protocol::anthropic,
                protocol::openai, opt, &u);
  EXPECT_EQ(u.completion, 31);
  // Not structured: the same stream is a tool call.
  opt.structured = false;
  auto out =
      translate_pieces(read_file(golden("anthropic_json_output.sse")), {}, protocol::anthropic, protocol::openai, opt);
  EXPECT_NE(out.find(R"("tool_calls")"), std::string::npos);
  EXPECT_NE(out.find(R"("finish_reason":"tool_calls")"), std::string::npos);
}

TEST(translate_stream, anthropic_redacted_thinking_and_max_tokens_to_openai_without_usage_chunk) {
  token_usage u;
  check_capture("anthropic_redacted_max_tokens.sse", "anthropic_redacted_max_tokens.openai.expected",
                protocol::anthropic, protocol::openai, {}, &u);
  EXPECT_EQ(u.prompt, 1450) << "null cache counts in message_delta keep message_start's";
  EXPECT_EQ(u.cached, 0);
  EXPECT_EQ(u.completion, 1024);
}

TEST(translate_stream, message_delta_cache_counts_replace_message_starts) {
  // Anthropic's message_delta usage is cumulative and may carry updated input and cache
  // counts (MessageDeltaUsage): they replace message_start's, part by part.
  auto t = make_stream_translator(protocol::anthropic, protocol::openai, {});
  std::string out;
  t->feed("message_start",
          R"({"type":"message_start","message":{"id":"msg_1","model":"c","usage":{"input_tokens":5,)"
          R"("cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}})",
          out);
  t->feed("message_delta",
          R"({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},)"
          R"("usage":{"cache_read_input_tokens":4096,"output_tokens":9}})",
          out);
  EXPECT_EQ(t->usage().prompt, 5 + 4096);
  EXPECT_EQ(t->usage().cached, 4096);
  EXPECT_EQ(t->usage().completion, 9);
}

TEST(translate_stream, upstream_error_events_become_the_client_protocols_error_event) {
  std::string out;
  auto a = make_stream_translator(protocol::anthropic, protocol::openai, {});
  EXPECT_FALSE(a->feed("message_start",
                       R"({"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":3}}})", out));
  EXPECT_TRUE(a->feed("error", R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})", out));
  EXPECT_TRUE(a->errored());
  a->close(a->usage(), out);
  EXPECT_NE(
      out.find(
          R"(data: {"error":{"message":"Overloaded","type":"service_unavailable","param":null,"code":"overloaded_error"}})"),
      std::string::npos)
      << out;
  EXPECT_EQ(out.find("[DONE]"), std::string::npos);

  out.clear();
  auto o = make_stream_translator(protocol::openai, protocol::anthropic, {});
  EXPECT_FALSE(o->feed("", R"({"id":"c","model":"g","choices":[{"index":0,"delta":{"content":"Hel"}}]})", out));
  EXPECT_TRUE(o->feed("", R"({"error":{"message":"boom","type":"server_error"}})", out));
  o->close(o->usage(), out);
  EXPECT_NE(
      out.find("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"boom\"}}\n\n"),
      std::string::npos)
      << out;
  EXPECT_EQ(out.find("message_stop"), std::string::npos);
}

TEST(translate_stream, a_stream_without_usage_is_closed_with_the_usage_given) {
  std::string out;
  auto o = make_stream_translator(protocol::openai, protocol::anthropic, {});
  o->feed("", R"({"id":"c","model":"g","choices":[{"index":0,"delta":{"content":"Hi"}}]})", out);
  o->feed("", R"({"id":"c","model":"g","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})", out);
  EXPECT_TRUE(o->feed("", "[DONE]", out));
  EXPECT_FALSE(o->usage().present);
  token_usage counted;
  counted.prompt = 12;
  counted.completion = 1;
  counted.present = true;
  o->close(counted, out);
  o->close(counted, out); // idempotent
  EXPECT_EQ(out,
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"c\",\"type\":\"message\","
            "\"role\":\"assistant\",\"model\":\"g\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
            "\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}\n\n"
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
            "{\"type\":\"text\",\"text\":\"\"}}\n\n"
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
            "{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n"
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
            "\"stop_sequence\":null},\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":0,"
            "\"cache_read_input_tokens\":0,\"output_tokens\":1}}\n\n"
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
}

TEST(translate_stream, garbage_events_are_ignored_not_fatal) {
  std::string out;
  for (auto from : {protocol::openai, protocol::anthropic}) {
    auto t = make_stream_translator(from, from == protocol::openai ? protocol::anthropic : protocol::openai, {});
    for (std::string_view junk :
         {"", "{", "[]", "null", R"({"choices":"x"})",
          R"({"type":"content_block_delta","index":-5,"delta":{"type":"input_json_delta","partial_json":"x"}})",
          R"({"type":"content_block_start","index":99999999,"content_block":{"type":"tool_use"}})"})
      t->feed("", junk, out);
    t->close({}, out);
  }
  SUCCEED();
}

// --- routing (net/routing.hpp) -------------------------------------------------------------

#include "net/routing.hpp"

TEST(routing, paths_map_to_routes_and_envelopes) {
  using lowart::net::route_of;
  EXPECT_EQ(route_of("/v1/chat/completions").route, "chat");
  EXPECT_EQ(route_of("/chat/completions").route, "chat");
  EXPECT_EQ(route_of("/v2/chat/completions").route, "other");
  EXPECT_EQ(route_of("/v1/messages").route, "messages");
  EXPECT_EQ(route_of("/v1/messages").format, api_format::anthropic);
  EXPECT_EQ(route_of("/v1/messages/count_tokens").route, "count_tokens");
  EXPECT_EQ(route_of("/admin/keys").format, api_format::admin);
  EXPECT_EQ(route_of("/adminx").route, "other");
  EXPECT_EQ(route_of("/v1/mcp/calls/").route, "other");
  EXPECT_EQ(route_of("/v1/mcp/calls/apr_1").route, "mcp");
  EXPECT_EQ(lowart::net::strip_query("/v1/models?x=1"), "/v1/models");
}

TEST(routing, the_presented_key_is_a_bearer_token_or_x_api_key) {
  using lowart::net::presented_key;
  EXPECT_EQ(presented_key(true, "Bearer sk-1", ""), "sk-1");
  EXPECT_EQ(presented_key(true, "bearer sk-1", "x"), "sk-1");
  EXPECT_EQ(presented_key(true, "Basic abc", "x"), "") << "a non-bearer Authorization presents no key";
  EXPECT_EQ(presented_key(true, "Bearer ", ""), "");
  EXPECT_EQ(presented_key(false, "", "sk-ant"), "sk-ant");
}
