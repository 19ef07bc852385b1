// OpenAI <-> Anthropic translation: requests, answers, errors and streams. Streams are
// recorded upstream streams (tests/unit/golden/*.sse) fed through the SSE parser in
// pieces of every size, so events split across TCP reads are covered; the translated
// output is compared with a reviewed golden file (LOWART_UPDATE_GOLDEN=1 rewrites them).

#include "net/sse.hpp"
#include "net/translate.hpp"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

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

/// Runs a recorded stream through parser and translator, `piece` bytes per read.
std::string translate_stream(const std::string& recorded, protocol from, protocol to, std::size_t piece,
                             stream_translator::options opt, token_usage* usage_out = nullptr) {
  auto t = make_stream_translator(from, to, opt);
  sse_parser parser;
  std::string out;
  bool ended = false;
  for (std::size_t i = 0; i < recorded.size(); i += piece) {
    EXPECT_TRUE(parser.feed(std::string_view(recorded).substr(i, piece), [&](const sse_event& ev) {
      if (ev.has_data && !ended) ended = t->feed(ev.event, ev.data, out);
    }));
  }
  EXPECT_TRUE(ended) << "the upstream's end marker was not seen";
  if (usage_out) *usage_out = t->usage();
  t->close(t->usage(), out);
  return out;
}

std::string normalize_created(const std::string& s) {
  static const std::regex created(R"("created":[0-9]+)");
  return std::regex_replace(s, created, R"("created":0)");
}

void check_golden(const std::string& name, const std::string& actual) {
  auto path = golden(name);
  if (std::getenv("LOWART_UPDATE_GOLDEN")) {
    std::ofstream(path, std::ios::binary) << actual;
    return;
  }
  EXPECT_EQ(actual, read_file(path)) << "golden file " << path;
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

// --- streams --------------------------------------------------------------------------

TEST(translate_stream, anthropic_tool_stream_to_openai_matches_golden_at_every_split) {
  auto recorded = read_file(golden("anthropic_tool_stream.sse"));
  ASSERT_FALSE(recorded.empty());
  stream_translator::options opt;
  opt.client_wants_usage = true;
  token_usage u;
  auto whole =
      normalize_created(translate_stream(recorded, protocol::anthropic, protocol::openai, recorded.size(), opt, &u));
  check_golden("anthropic_tool_stream.openai.expected", whole);
  for (std::size_t piece : {1, 2, 3, 7, 64, 1000})
    EXPECT_EQ(normalize_created(translate_stream(recorded, protocol::anthropic, protocol::openai, piece, opt)), whole)
        << "split into " << piece << "-byte reads";
  EXPECT_EQ(u.prompt, 472 + 100 + 50);
  EXPECT_EQ(u.cached, 50);
  EXPECT_EQ(u.completion, 89) << "message_delta's cumulative output_tokens replaces message_start's";
  // Tool calls are numbered among tool calls only (Anthropic numbers every block).
  EXPECT_NE(whole.find(R"("tool_calls":[{"index":0,"id":"toolu_01Weather1")"), std::string::npos);
  EXPECT_NE(whole.find(R"("tool_calls":[{"index":1,"id":"toolu_01Weather2")"), std::string::npos);
  EXPECT_NE(whole.find(R"("finish_reason":"tool_calls")"), std::string::npos);
  EXPECT_EQ(whole.substr(whole.size() - 14), "data: [DONE]\n\n");
}

TEST(translate_stream, openai_tool_stream_to_anthropic_matches_golden_at_every_split) {
  auto recorded = read_file(golden("openai_tool_stream.sse"));
  ASSERT_FALSE(recorded.empty());
  stream_translator::options opt;
  opt.prompt_tokens = 300;
  token_usage u;
  auto whole = translate_stream(recorded, protocol::openai, protocol::anthropic, recorded.size(), opt, &u);
  check_golden("openai_tool_stream.anthropic.expected", whole);
  for (std::size_t piece : {1, 2, 5, 13, 100})
    EXPECT_EQ(translate_stream(recorded, protocol::openai, protocol::anthropic, piece, opt), whole)
        << "split into " << piece << "-byte reads";
  EXPECT_EQ(u.prompt, 320);
  EXPECT_EQ(u.cached, 256);
  EXPECT_NE(whole.find(R"("stop_reason":"tool_use")"), std::string::npos);
  EXPECT_NE(
      whole.find(
          R"("usage":{"input_tokens":64,"cache_creation_input_tokens":0,"cache_read_input_tokens":256,"output_tokens":41})"),
      std::string::npos);
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
