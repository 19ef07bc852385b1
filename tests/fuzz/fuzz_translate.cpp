// libFuzzer target: every OpenAI <-> Anthropic translation (requests, answers, errors)
// on arbitrary bytes, and both stream translators fed the bytes as SSE. Whatever comes
// in, what a translator writes for valid JSON input must itself be valid JSON.
#include "net/sse.hpp"
#include "net/translate.hpp"

#include <simdjson.h>

#include <cstdint>
#include <cstdlib>
#include <string>

namespace {

bool valid_json(const std::string& text) {
  static simdjson::dom::parser parser;
  simdjson::dom::element doc;
  return parser.parse(text).get(doc) == simdjson::SUCCESS;
}

bool is_object(std::string_view text) {
  static simdjson::dom::parser parser;
  simdjson::dom::element doc;
  return parser.parse(simdjson::padded_string(text)).get(doc) == simdjson::SUCCESS && doc.is_object();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace lowart::net;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  bool object = is_object(in);
  token_usage usage;
  for (auto out : {openai_request_to_anthropic(in), anthropic_request_to_openai(in, true),
                   openai_response_to_anthropic(in, usage), anthropic_response_to_openai(in, usage),
                   translate_error(in, 529, protocol::openai), translate_error(in, 400, protocol::anthropic)}) {
    if (object && !valid_json(out)) std::abort();
  }
  for (auto [from, to] :
       {std::pair{protocol::openai, protocol::anthropic}, std::pair{protocol::anthropic, protocol::openai}}) {
    auto t = make_stream_translator(from, to, {true, 3, "id"});
    sse_parser parser(1 << 16);
    std::string out;
    bool ended = false;
    (void)parser.feed(in, [&](const sse_event& ev) {
      if (ev.has_data && !ended) ended = t->feed(ev.event, ev.data, out);
    });
    t->close(t->usage(), out);
    // Every event written is a data line of valid JSON (or OpenAI's [DONE]).
    sse_parser check(1 << 20);
    (void)check.feed(out, [&](const sse_event& ev) {
      if (ev.data != "[DONE]" && !valid_json(ev.data)) std::abort();
    });
  }
  return 0;
}
