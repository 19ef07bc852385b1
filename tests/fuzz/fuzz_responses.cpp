// libFuzzer target: the Responses API translation on arbitrary bytes — the request summary
// and preparation (the bytes as the request, as a stored conversation and as a referenced
// item), Chat answers to Response objects, and the stream converter fed the bytes as Chat
// chunks and as passed-through Responses events. What it writes for valid JSON input must
// itself be valid JSON, and every event it writes carries valid JSON.
#include "net/responses.hpp"
#include "net/sse.hpp"

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

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace rs = lowart::net::responses;
  using lowart::net::sse_event;
  using lowart::net::sse_parser;
  std::string in(reinterpret_cast<const char*>(data), size);
  bool json = valid_json(in);
  auto summary = rs::summarize(in);
  if (summary.problem.empty()) {
    rs::prior prior;
    prior.context = in.front() == '[' ? in : "[]";
    prior.items = {{"msg_x", in}};
    auto p = rs::prepare(in, prior, "f", "resp_f", 0);
    for (const auto* out : {&p.input, &p.chat, &p.upstream})
      if (!valid_json(*out)) std::abort();
  }
  rs::response_frame frame;
  frame.id = "resp_f";
  auto answer = rs::chat_answer_to_response(in, frame, "f");
  if (json && !valid_json(answer)) std::abort();
  for (bool passthrough : {false, true}) {
    rs::stream_converter conv(frame, "f");
    conv.previous_id = "resp_p";
    std::string out;
    conv.convert(in, false, passthrough, out);
    conv.convert("data: [DONE]\n\n", true, passthrough, out);
    if (!conv.finished()) std::abort(); // an ended stream always ends its response
    sse_parser check(1 << 20);
    (void)check.feed(out, [&](const sse_event& ev) {
      if (ev.has_data && !passthrough && !valid_json(ev.data)) std::abort();
    });
  }
  return 0;
}
