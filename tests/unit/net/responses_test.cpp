// The Responses API translation (net/responses.hpp): requests to Chat Completions and to
// upstreams that speak Responses, Chat answers to Response objects, and Chat streams to
// the typed Responses events. Expectations are written by hand from OpenAI's API
// reference (the Responses object, its streaming events and Chat Completions), compared
// as JSON values (member order aside); streams are fed in pieces of every size.

#include "net/responses.hpp"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

using namespace lowart::net;
namespace rs = lowart::net::responses;

namespace {

/// A JSON value as canonical text: object members sorted by key, so that two documents
/// that differ only in member order compare equal.
std::string canonical(simdjson::dom::element e) {
  switch (e.type()) {
  case simdjson::dom::element_type::OBJECT: {
    std::map<std::string, std::string> members;
    simdjson::dom::object obj;
    if (e.get_object().get(obj) != simdjson::SUCCESS) return {};
    for (auto field : obj)
      members[std::string(field.key)] = canonical(field.value);
    std::string out = "{";
    for (const auto& [k, v] : members) {
      if (out.size() > 1) out += ',';
      out += '"' + k + "\":" + v;
    }
    return out + "}";
  }
  case simdjson::dom::element_type::ARRAY: {
    std::string out = "[";
    simdjson::dom::array arr;
    if (e.get_array().get(arr) != simdjson::SUCCESS) return {};
    for (auto v : arr) {
      if (out.size() > 1) out += ',';
      out += canonical(v);
    }
    return out + "]";
  }
  default:
    return simdjson::minify(e);
  }
}

std::string canonical(const std::string& text) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  EXPECT_EQ(parser.parse(text).get(doc), simdjson::SUCCESS) << text;
  return canonical(doc);
}

#define EXPECT_JSON_EQ(actual, expected) EXPECT_EQ(canonical(actual), canonical(std::string(expected)))

/// One member of a JSON document, as canonical text ("" when absent).
std::string member(const std::string& text, const char* pointer) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc, v;
  if (parser.parse(text).get(doc) != simdjson::SUCCESS || doc.at_pointer(pointer).get(v) != simdjson::SUCCESS)
    return {};
  return canonical(v);
}

struct event {
  std::string type;
  std::string data;
};

std::vector<event> events_of(const std::string& sse) {
  std::vector<event> out;
  sse_parser p;
  p.feed(sse, [&](const sse_event& ev) { out.push_back({ev.event, ev.data}); });
  return out;
}

} // namespace

// --- requests ------------------------------------------------------------------------

TEST(responses_request, summary_reads_what_the_edge_needs) {
  auto s = rs::summarize(R"({"model":"gpt-4o","input":"hi","stream":true,"store":false,
    "previous_response_id":"resp_1"})");
  EXPECT_EQ(s.problem, "");
  EXPECT_EQ(s.model, "gpt-4o");
  EXPECT_TRUE(s.stream);
  EXPECT_FALSE(s.store);
  EXPECT_EQ(s.previous_response_id, "resp_1");
  // store defaults to true (API reference: "store: boolean, defaults to true").
  EXPECT_TRUE(rs::summarize(R"({"model":"m","input":"hi"})").store);
  auto refs = rs::summarize(R"({"model":"m","input":[{"type":"item_reference","id":"msg_a"},
    {"role":"user","content":"x"}]})");
  EXPECT_EQ(refs.references, std::vector<std::string>{"msg_a"});
}

TEST(responses_request, invalid_requests_name_the_parameter) {
  auto param = [](const char* body) { return rs::summarize(body).param; };
  EXPECT_EQ(param(R"({"input":"x"})"), "model");
  EXPECT_EQ(param(R"({"model":"m"})"), "input");
  EXPECT_EQ(param(R"({"model":"m","input":5})"), "input");
  EXPECT_EQ(param(R"({"model":"m","input":"x","max_output_tokens":15})"), "max_output_tokens"); // minimum 16
  EXPECT_EQ(param(R"({"model":"m","input":[{"role":"robot","content":"x"}]})"), "input[0].role");
  EXPECT_EQ(param(R"({"model":"m","input":[{"role":"user","content":"x"},{"type":"function_call","name":"f"}]})"),
            "input[1].call_id");
  EXPECT_EQ(param(R"({"model":"m","input":[{"type":"function_call_output","call_id":"c"}]})"), "input[0].output");
  EXPECT_EQ(param(R"({"model":"m","input":"x","tools":[{"type":"function"}]})"), "tools[0].name");
  EXPECT_EQ(param(R"({"model":"m","input":"x","tool_choice":"sometimes"})"), "tool_choice");
  EXPECT_EQ(param(R"({"model":"m","input":"x","temperature":3})"), "temperature");
  EXPECT_EQ(param(R"({"model":"m","input":"x","text":{"format":{"type":"json_schema","schema":{}}}})"),
            "text.format.name");
  EXPECT_EQ(param(R"({"model":"m","input":"x","background":true})"), "background");
  EXPECT_EQ(param(R"({"model":"m","input":"x","store":"yes"})"), "store");
  EXPECT_NE(rs::summarize("not json").problem, "");
}

TEST(responses_request, becomes_a_chat_completions_request) {
  // Every input item kind, instructions, a function tool beside a built-in one, a named
  // tool choice, structured output and the sampling settings.
  auto body = R"({"model":"gpt-4o","instructions":"Be brief.","max_output_tokens":100,"temperature":0.5,
    "top_p":0.9,"parallel_tool_calls":false,"user":"u1","metadata":{"a":"b"},"store":true,"stream":true,
    "reasoning":{"effort":"low"},
    "input":[
      {"role":"developer","content":"Use metric units."},
      {"type":"message","role":"user","content":[{"type":"input_text","text":"Weather?"},
        {"type":"input_image","image_url":"https://x/y.png","detail":"low"}]},
      {"type":"reasoning","id":"rs_1","summary":[]},
      {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Checking.","annotations":[]}]},
      {"type":"function_call","id":"fc_1","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Oslo\"}"},
      {"type":"function_call_output","call_id":"call_1","output":"sunny"}],
    "tools":[{"type":"function","name":"get_weather","description":"Weather","parameters":{"type":"object"},"strict":true},
      {"type":"web_search"}],
    "tool_choice":{"type":"function","name":"get_weather"},
    "text":{"format":{"type":"json_schema","name":"answer","schema":{"type":"object"},"strict":true}}})";
  auto p = rs::prepare(body, {}, "b1", "resp_b1", 1000);
  EXPECT_JSON_EQ(p.chat, R"({"model":"gpt-4o",
    "messages":[
      {"role":"system","content":"Be brief."},
      {"role":"system","content":"Use metric units."},
      {"role":"user","content":[{"type":"text","text":"Weather?"},
        {"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}}]},
      {"role":"assistant","content":"Checking.","tool_calls":[{"id":"call_1","type":"function",
        "function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]},
      {"role":"tool","tool_call_id":"call_1","content":"sunny"}],
    "tools":[{"type":"function","function":{"name":"get_weather","description":"Weather",
      "parameters":{"type":"object"},"strict":true}}],
    "tool_choice":{"type":"function","function":{"name":"get_weather"}},
    "parallel_tool_calls":false,"max_tokens":100,"temperature":0.5,"top_p":0.9,"user":"u1",
    "reasoning_effort":"low",
    "response_format":{"type":"json_schema","json_schema":{"name":"answer","schema":{"type":"object"},"strict":true}},
    "stream":true,"stream_options":{"include_usage":true}})");
  // The frame echoes the request as the Response object does.
  EXPECT_EQ(p.frame.instructions, R"("Be brief.")");
  EXPECT_EQ(p.frame.max_output_tokens, "100");
  EXPECT_EQ(p.frame.parallel_tool_calls, "false");
  EXPECT_EQ(p.frame.metadata, R"({"a":"b"})");
  // The input items as stored and listed: each with its type and an id.
  EXPECT_EQ(member(p.input, "/0/id"), R"("msg_b1_0")");
  EXPECT_EQ(member(p.input, "/0/content"), R"([{"text":"Use metric units.","type":"input_text"}])");
  EXPECT_EQ(member(p.input, "/5/id"), R"("fco_b1_5")");
  EXPECT_EQ(member(p.input, "/4/id"), R"("fc_1")"); // an id the client gave is kept
}

TEST(responses_request, a_string_input_and_the_stored_conversation) {
  rs::prior prior;
  prior.context =
      R"([{"id":"msg_a_0","type":"message","role":"user","content":[{"type":"input_text","text":"I am Ada"}],
    "status":"completed"},{"id":"msg_a","type":"message","role":"assistant","status":"completed",
    "content":[{"type":"output_text","text":"Hello Ada","annotations":[]}]}])";
  auto p = rs::prepare(R"({"model":"m","input":"Who am I?","previous_response_id":"resp_a","store":false})", prior,
                       "b2", "resp_b2", 1000);
  EXPECT_JSON_EQ(p.chat, R"({"model":"m","messages":[{"role":"user","content":"I am Ada"},
    {"role":"assistant","content":"Hello Ada"},{"role":"user","content":"Who am I?"}]})");
  // The Responses request carries the whole conversation instead of previous_response_id,
  // input messages without the ids lowart gave them.
  EXPECT_JSON_EQ(p.upstream, R"({"model":"m","input":[
    {"type":"message","role":"user","content":[{"type":"input_text","text":"I am Ada"}]},
    {"id":"msg_a","type":"message","role":"assistant","status":"completed",
     "content":[{"type":"output_text","text":"Hello Ada","annotations":[]}]},
    {"type":"message","role":"user","content":"Who am I?"}],"store":false})");
  EXPECT_EQ(p.frame.previous_response_id, R"("resp_a")");
  EXPECT_EQ(p.frame.store, "false");
}

TEST(responses_request, item_references_become_the_items_they_name) {
  rs::prior prior;
  prior.items = {{"msg_x", R"({"id":"msg_x","type":"message","role":"assistant","status":"completed",
    "content":[{"type":"output_text","text":"Earlier answer","annotations":[]}]})"}};
  auto p = rs::prepare(R"({"model":"m","input":[{"role":"user","content":"q"},{"type":"item_reference","id":"msg_x"},
    {"role":"user","content":"and?"}]})",
                       prior, "b3", "resp_b3", 1000);
  EXPECT_EQ(member(p.chat, "/messages/1"), R"({"content":"Earlier answer","role":"assistant"})");
  EXPECT_EQ(member(p.input, "/1/id"), R"("msg_x")");
}

// --- answers -------------------------------------------------------------------------

TEST(responses_answer, a_chat_answer_becomes_a_response) {
  rs::response_frame frame;
  frame.id = "resp_c";
  frame.created_at = 1700000000;
  frame.model = "gpt-4o";
  auto chat = R"({"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[{"index":0,
    "message":{"role":"assistant","content":"Let me check.","tool_calls":[{"id":"call_9","type":"function",
    "function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]},"finish_reason":"tool_calls"}],
    "usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":4},
    "completion_tokens_details":{"reasoning_tokens":3}}})";
  auto r = rs::chat_answer_to_response(chat, frame, "c");
  EXPECT_EQ(member(r, "/id"), R"("resp_c")");
  EXPECT_EQ(member(r, "/object"), R"("response")");
  EXPECT_EQ(member(r, "/status"), R"("completed")");
  EXPECT_EQ(member(r, "/model"), R"("gpt-4o-2024-08-06")");
  EXPECT_EQ(member(r, "/created_at"), "1700000000");
  EXPECT_JSON_EQ(member(r, "/output"), R"([
    {"id":"msg_c","type":"message","status":"completed","role":"assistant",
     "content":[{"type":"output_text","text":"Let me check.","annotations":[],"logprobs":[]}]},
    {"id":"fc_c_0","type":"function_call","status":"completed","arguments":"{\"city\":\"Oslo\"}",
     "call_id":"call_9","name":"get_weather"}])");
  // ResponseUsage: input_tokens, input_tokens_details.cached_tokens, output_tokens,
  // output_tokens_details.reasoning_tokens, total_tokens.
  EXPECT_JSON_EQ(member(r, "/usage"), R"({"input_tokens":20,"input_tokens_details":{"cached_tokens":4},
    "output_tokens":9,"output_tokens_details":{"reasoning_tokens":3},"total_tokens":29})");
  EXPECT_EQ(member(r, "/error"), "null");
  EXPECT_EQ(member(r, "/incomplete_details"), "null");
}

TEST(responses_answer, a_cut_answer_is_incomplete) {
  rs::response_frame frame;
  frame.id = "resp_d";
  auto r = rs::chat_answer_to_response(
      R"({"choices":[{"index":0,"message":{"role":"assistant","content":"Once upon"},"finish_reason":"length"}]})",
      frame, "d");
  EXPECT_EQ(member(r, "/status"), R"("incomplete")");
  EXPECT_EQ(member(r, "/incomplete_details"), R"({"reason":"max_output_tokens"})");
  EXPECT_EQ(member(r, "/output/0/status"), R"("incomplete")");
  EXPECT_EQ(member(r, "/usage"), "null");
}

TEST(responses_answer, usage_reads_and_writes_responses_terms) {
  token_usage u;
  rs::read_usage(R"({"input_tokens":12,"input_tokens_details":{"cached_tokens":2},"output_tokens":5})", u);
  EXPECT_TRUE(u.present);
  EXPECT_EQ(u.prompt, 12);
  EXPECT_EQ(u.cached, 2);
  EXPECT_EQ(u.completion, 5);
  EXPECT_JSON_EQ(rs::usage_json(u, 1), R"({"input_tokens":12,"input_tokens_details":{"cached_tokens":2},
    "output_tokens":5,"output_tokens_details":{"reasoning_tokens":1},"total_tokens":17})");
}

// --- streams -------------------------------------------------------------------------

namespace {

// A Chat Completions stream as OpenAI sends it: role, text, a tool call in pieces, the
// finish reason, the usage chunk, [DONE].
const std::string chat_stream =
    R"(data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]})"
    "\n\n"
    R"(data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]})"
    "\n\n"
    R"(data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":" there"},"finish_reason":null}]})"
    "\n\n"
    R"(data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null}]})"
    "\n\n"
    R"(data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]},"finish_reason":null}]})"
    "\n\n"
    R"(data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},"finish_reason":null}]})"
    "\n\n"
    R"(data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]})"
    "\n\n"
    R"(data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}})"
    "\n\n"
    "data: [DONE]\n\n";

rs::response_frame stream_frame() {
  rs::response_frame f;
  f.id = "resp_s";
  f.created_at = 1700000000;
  f.model = "gpt-4o";
  return f;
}

/// Feeds `upstream` in `piece`-byte runs of complete events, as the proxy hands them over
/// (it converts what it has whenever it writes to the client).
std::string convert_in_pieces(const std::string& upstream, std::size_t piece, std::string* final = nullptr,
                              bool passthrough = false) {
  rs::stream_converter conv(stream_frame(), "s");
  std::string out, pending;
  sse_parser split;
  for (std::size_t at = 0; at < upstream.size(); at += piece) {
    split.feed(std::string_view(upstream).substr(at, piece),
               [&](const sse_event& ev) { append_sse_event(pending, ev); });
    if (!pending.empty()) {
      conv.convert(pending, false, passthrough, out);
      pending.clear();
    }
  }
  conv.convert(pending, true, passthrough, out);
  if (final) *final = conv.final_response();
  return out;
}

} // namespace

TEST(responses_stream, chat_chunks_become_the_typed_events_in_order) {
  std::string final;
  auto out = convert_in_pieces(chat_stream, chat_stream.size(), &final);
  auto events = events_of(out);
  std::vector<std::string> types;
  for (std::size_t i = 0; i < events.size(); ++i) {
    types.push_back(events[i].type);
    EXPECT_EQ(member(events[i].data, "/type"), '"' + events[i].type + '"') << "each event is named by its type";
    EXPECT_EQ(member(events[i].data, "/sequence_number"), std::to_string(i));
  }
  EXPECT_EQ(types,
            (std::vector<std::string>{
                "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
                "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
                "response.content_part.done", "response.output_item.done", "response.output_item.added",
                "response.function_call_arguments.delta", "response.function_call_arguments.delta",
                "response.function_call_arguments.done", "response.output_item.done", "response.completed"}));
  EXPECT_EQ(member(events[0].data, "/response/status"), R"("in_progress")");
  EXPECT_EQ(member(events[0].data, "/response/output"), "[]");
  EXPECT_JSON_EQ(member(events[2].data, "/item"),
                 R"({"id":"msg_s","type":"message","status":"in_progress","content":[],"role":"assistant"})");
  EXPECT_JSON_EQ(member(events[3].data, "/part"), R"({"type":"output_text","annotations":[],"logprobs":[],"text":""})");
  EXPECT_JSON_EQ(events[4].data, R"({"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_s",
    "output_index":0,"content_index":0,"delta":"Hi","logprobs":[]})");
  EXPECT_EQ(member(events[6].data, "/text"), R"("Hi there")");
  EXPECT_JSON_EQ(member(events[9].data, "/item"), R"({"id":"fc_s_0","type":"function_call","status":"in_progress",
    "arguments":"","call_id":"call_1","name":"f"})");
  EXPECT_JSON_EQ(events[10].data, R"({"type":"response.function_call_arguments.delta","sequence_number":10,
    "item_id":"fc_s_0","output_index":1,"delta":"{\"a\":"})");
  EXPECT_EQ(member(events[12].data, "/arguments"), R"("{\"a\":1}")");
  EXPECT_EQ(member(events[14].data, "/response/status"), R"("completed")");
  EXPECT_EQ(member(events[14].data, "/response/usage/input_tokens"), "7");
  EXPECT_EQ(member(events[14].data, "/response/usage/output_tokens"), "5");
  EXPECT_EQ(member(events[14].data, "/response/output/1/arguments"), R"("{\"a\":1}")");
  EXPECT_EQ(canonical(final), member(events[14].data, "/response"));
}

TEST(responses_stream, the_same_events_at_every_split_size) {
  auto whole = convert_in_pieces(chat_stream, chat_stream.size());
  for (std::size_t piece = 1; piece < chat_stream.size(); piece += piece < 64 ? 1 : 37)
    ASSERT_EQ(convert_in_pieces(chat_stream, piece), whole) << "split into " << piece << "-byte reads";
}

TEST(responses_stream, a_length_cut_ends_incomplete) {
  std::string s = R"(data: {"choices":[{"index":0,"delta":{"content":"Once"},"finish_reason":null}]})"
                  "\n\n"
                  R"(data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]})"
                  "\n\ndata: [DONE]\n\n";
  auto events = events_of(convert_in_pieces(s, s.size()));
  EXPECT_EQ(events.back().type, "response.incomplete");
  EXPECT_EQ(member(events.back().data, "/response/incomplete_details"), R"({"reason":"max_output_tokens"})");
}

TEST(responses_stream, an_error_mid_stream_ends_with_error_and_response_failed) {
  std::string s = R"(data: {"choices":[{"index":0,"delta":{"content":"Hal"},"finish_reason":null}]})"
                  "\n\n"
                  R"(data: {"error":{"message":"upstream broke","type":"server_error","param":null,"code":null}})"
                  "\n\n";
  std::string final;
  auto events = events_of(convert_in_pieces(s, s.size(), &final));
  ASSERT_GE(events.size(), 2u);
  auto& err = events[events.size() - 2];
  EXPECT_EQ(err.type, "error");
  EXPECT_EQ(member(err.data, "/code"), R"("server_error")");
  EXPECT_EQ(member(err.data, "/message"), R"("upstream broke")");
  EXPECT_EQ(member(err.data, "/param"), "null");
  EXPECT_EQ(events.back().type, "response.failed");
  EXPECT_EQ(member(events.back().data, "/response/status"), R"("failed")");
  EXPECT_JSON_EQ(member(events.back().data, "/response/error"),
                 R"({"code":"server_error","message":"upstream broke"})");
  EXPECT_EQ(member(final, "/status"), R"("failed")");
}

TEST(responses_stream, an_upstream_that_stops_early_fails_the_response) {
  std::string s = R"(data: {"choices":[{"index":0,"delta":{"content":"Hal"},"finish_reason":null}]})"
                  "\n\n";
  auto events = events_of(convert_in_pieces(s, s.size()));
  EXPECT_EQ(events.back().type, "response.failed");
}

TEST(responses_stream, passthrough_relays_and_keeps_the_final_response) {
  std::string s =
      "event: response.created\ndata: "
      R"({"type":"response.created","sequence_number":0,"response":{"id":"resp_up","status":"in_progress","output":[]}})"
      "\n\nevent: response.output_text.delta\ndata: "
      R"({"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"})"
      "\n\nevent: response.completed\ndata: "
      R"({"type":"response.completed","sequence_number":2,"response":{"id":"resp_up","status":"completed","output":[]}})"
      "\n\n";
  rs::stream_converter conv(stream_frame(), "p");
  conv.previous_id = "resp_prev";
  std::string out;
  conv.convert(s, true, true, out);
  auto events = events_of(out);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(
      events[1].data,
      R"({"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"})");
  EXPECT_EQ(member(events[0].data, "/response/previous_response_id"), R"("resp_prev")");
  EXPECT_TRUE(conv.finished());
  EXPECT_EQ(member(conv.final_response(), "/id"), R"("resp_up")");
  EXPECT_EQ(member(conv.final_response(), "/previous_response_id"), R"("resp_prev")");

  // lowart's own error event for a broken passthrough stream continues the sequence.
  rs::stream_converter broken(stream_frame(), "q");
  std::string out2;
  broken.convert(s.substr(0, s.find("event: response.completed")) +
                     R"(data: {"error":{"message":"gone","type":"server_error","code":"upstream_error"}})" + "\n\n",
                 true, true, out2);
  auto e2 = events_of(out2);
  ASSERT_EQ(e2.size(), 4u);
  EXPECT_EQ(e2[2].type, "error");
  EXPECT_EQ(member(e2[2].data, "/sequence_number"), "2");
  EXPECT_EQ(e2[3].type, "response.failed");
  EXPECT_EQ(member(e2[3].data, "/response/id"), R"("resp_up")");
}

TEST(responses_exchange, stores_what_the_client_got) {
  auto p = rs::prepare(R"({"model":"m","input":"hi"})", {}, "e", "resp_e", 1);
  rs::exchange ex(std::move(p), "e", true, "key_1", "");
  std::vector<std::string> saved;
  ex.save = [&](std::string record) { saved.push_back(std::move(record)); };
  token_usage u;
  auto r = ex.answer(
      R"({"choices":[{"index":0,"message":{"role":"assistant","content":"yo"},"finish_reason":"stop"}]})", false, u);
  EXPECT_TRUE(saved.empty()) << "the model's on_response may still change it";
  ex.store(r);
  ASSERT_EQ(saved.size(), 1u);
  EXPECT_EQ(member(saved[0], "/id"), R"("resp_e")");
  EXPECT_EQ(member(saved[0], "/key_id"), R"("key_1")");
  EXPECT_EQ(member(saved[0], "/response"), canonical(r));
  EXPECT_EQ(member(saved[0], "/input/0/content/0/text"), R"("hi")");
  // Passthrough: the upstream's usage is read in Responses terms.
  rs::exchange pass(rs::prepare(R"({"model":"m","input":"hi","store":false})", {}, "f", "resp_f", 1), "f", false,
                    "key_1", "");
  pass.save = [&](std::string record) { saved.push_back(std::move(record)); };
  pass.store(pass.answer(R"({"id":"resp_up","output":[],"usage":{"input_tokens":3,"output_tokens":2}})", true, u));
  EXPECT_EQ(u.prompt, 3);
  EXPECT_EQ(u.completion, 2);
  EXPECT_EQ(saved.size(), 1u) << "store: false keeps nothing";
}

TEST(responses_exchange, a_changed_request_remakes_both_upstream_requests) {
  std::string request = R"({"model":"m","input":"hi","temperature":0.9})";
  rs::prior conversation;
  conversation.context = R"([{"type":"message","role":"user","content":[{"type":"input_text","text":"before"}]}])";
  rs::exchange ex(rs::prepare(request, conversation, "g", "resp_g", 7), "g", true, "key_1", "resp_prev", request,
                  conversation);
  EXPECT_EQ(ex.client_request(), request);
  EXPECT_EQ(ex.rebuild(R"({"model":"m2","input":"changed","temperature":0.25,"store":false})"), "");
  EXPECT_EQ(member(ex.chat_request(), "/model"), R"("m2")");
  EXPECT_EQ(member(ex.chat_request(), "/temperature"), "0.25");
  EXPECT_EQ(member(ex.chat_request(), "/messages/0/content"), R"("before")") << "the resolved conversation stays";
  EXPECT_EQ(member(ex.chat_request(), "/messages/1/content"), R"("changed")");
  EXPECT_EQ(member(ex.upstream_request(), "/temperature"), "0.25");
  EXPECT_EQ(member(ex.upstream_request(), "/input/1/content"), R"("changed")") << ex.upstream_request();
  std::vector<std::string> saved;
  ex.save = [&](std::string record) { saved.push_back(std::move(record)); };
  token_usage u;
  auto r = ex.answer(
      R"({"choices":[{"index":0,"message":{"role":"assistant","content":"yo"},"finish_reason":"stop"}]})", false, u);
  EXPECT_EQ(member(r, "/id"), R"("resp_g")") << "the response keeps its id";
  EXPECT_EQ(member(r, "/temperature"), "0.25") << "and echoes the changed request";
  ex.store(r);
  EXPECT_TRUE(saved.empty()) << "store: false set by the hook keeps nothing";
  EXPECT_NE(ex.rebuild(R"({"model":"m"})"), "") << "no input: refused as summarize refuses it";
}

// --- the store -----------------------------------------------------------------------

#include "actors/responses/responses_store.hpp"
#include "storage/database.hpp"

TEST(responses_store, a_conversation_per_key_with_retention) {
  lowart::storage::database db{":memory:"};
  lowart::actors::responses_store store(db);
  auto record = [](const char* id, const char* previous, long long ms, const char* said, const char* answer) {
    std::string prev = previous ? std::string("\"") + previous + "\"" : "null";
    return std::string(R"({"id":")") + id + R"(","key_id":"k1","previous_response_id":)" + prev + R"(,"created_ms":)" +
           std::to_string(ms) + R"(,"input":[{"id":"in_)" + id +
           R"(","type":"message","role":"user","content":[{"type":"input_text","text":")" + said +
           R"("}]}],"response":{"id":")" + id + R"(","object":"response","output":[{"id":"out_)" + id +
           R"(","type":"message","role":"assistant","content":[{"type":"output_text","text":")" + answer + R"("}]}]}})";
  };
  EXPECT_EQ(store.op("save", record("r1", nullptr, 1000, "one", "ONE"), {}).first, 200);
  EXPECT_EQ(store.op("save", record("r2", "r1", 2000, "two", "TWO"), {}).first, 200);
  EXPECT_EQ(store.op("get", "r2", "k1").first, 200);
  EXPECT_EQ(store.op("get", "r2", "k2").first, 404) << "another key";
  EXPECT_EQ(member(store.op("input", "r2", "k1").second, "/0/id"), R"("in_r2")");
  // The conversation up to r2: r1's input and output, then r2's, oldest first.
  auto [status, resolved] = store.op("resolve", R"({"previous_response_id":"r2","references":["out_r1"]})", "k1");
  ASSERT_EQ(status, 200);
  EXPECT_EQ(member(resolved, "/context/0/id"), R"("in_r1")");
  EXPECT_EQ(member(resolved, "/context/1/id"), R"("out_r1")");
  EXPECT_EQ(member(resolved, "/context/2/id"), R"("in_r2")");
  EXPECT_EQ(member(resolved, "/context/3/id"), R"("out_r2")");
  EXPECT_EQ(member(resolved, "/items/out_r1/id"), R"("out_r1")");
  auto [missing, which] = store.op("resolve", R"({"previous_response_id":"r2","references":[]})", "k2");
  EXPECT_EQ(missing, 404);
  EXPECT_EQ(member(which, "/param"), R"("previous_response_id")");
  EXPECT_EQ(store.op("resolve", R"({"previous_response_id":"","references":["out_r1"]})", "k2").first, 404);
  // Retention: what was made before the cutoff goes, with its items.
  EXPECT_EQ(member(store.op("expire", "1500", {}).second, "/deleted"), "1");
  EXPECT_EQ(store.op("get", "r1", "k1").first, 404);
  EXPECT_EQ(
      member(store.op("resolve", R"({"previous_response_id":"r2","references":[]})", "k1").second, "/context/0/id"),
      R"("in_r2")")
      << "an expired start: the conversation begins after it";
  EXPECT_EQ(store.op("delete", "r2", "k2").first, 404);
  EXPECT_EQ(store.op("delete", "r2", "k1").first, 200);
  EXPECT_EQ(store.op("get", "r2", "k1").first, 404);
}
