// The OpenAI Responses API: the Response object, usage, Chat Completions answers as
// Response objects, and the exchange the proxy drives. Summary and preparation of requests
// are in responses_request.cpp, the stream converter in responses_stream.cpp, the helpers
// they share in responses_internal.hpp.
#include "net/responses.hpp"

#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "net/responses_internal.hpp"

#include <simdjson.h>

namespace lowart::net::responses {

using namespace detail;

std::string response_frame::render(std::string_view status, std::string_view output, std::string_view usage,
                                   std::string_view error, std::string_view incomplete,
                                   std::string_view model_override) const {
  json::object_writer w;
  w.str("id", id)
      .str("object", "response")
      .num("created_at", created_at)
      .str("status", status)
      .boolean("background", false)
      .raw("error", error)
      .raw("incomplete_details", incomplete)
      .raw("instructions", instructions)
      .raw("max_output_tokens", max_output_tokens)
      .raw("max_tool_calls", "null")
      .str("model", model_override.empty() ? std::string_view(model) : model_override)
      .raw("output", output)
      .raw("parallel_tool_calls", parallel_tool_calls)
      .raw("previous_response_id", previous_response_id)
      .raw("reasoning", reasoning)
      .str("service_tier", "default")
      .raw("store", store)
      .raw("temperature", temperature)
      .raw("text", text)
      .raw("tool_choice", tool_choice)
      .raw("tools", tools)
      .raw("top_p", top_p)
      .raw("truncation", truncation)
      .raw("usage", usage)
      .raw("user", user)
      .raw("metadata", metadata);
  return w.done();
}

void read_usage(std::string_view usage_json, token_usage& out) {
  element u;
  if (!parse(event_slot, usage_json, u) || !u.is_object()) return;
  std::int64_t v = 0;
  if (u["input_tokens"].get_int64().get(v) == simdjson::SUCCESS) out.prompt = v;
  if (u["output_tokens"].get_int64().get(v) == simdjson::SUCCESS) out.completion = v;
  if (u.at_pointer("/input_tokens_details/cached_tokens").get_int64().get(v) == simdjson::SUCCESS) out.cached = v;
  out.present = true;
}

std::string usage_json(const token_usage& u, std::int64_t reasoning_tokens) {
  json::object_writer in, outd, w;
  in.num("cached_tokens", u.cached);
  outd.num("reasoning_tokens", reasoning_tokens);
  w.num("input_tokens", u.prompt)
      .raw("input_tokens_details", in.done())
      .num("output_tokens", u.completion)
      .raw("output_tokens_details", outd.done())
      .num("total_tokens", u.prompt + u.completion);
  return w.done();
}

std::string chat_answer_to_response(std::string_view chat, const response_frame& frame, std::string_view id_base) {
  element doc;
  if (!parse(event_slot, chat, doc) || !doc.is_object())
    return frame.render("failed", "[]", "null",
                        R"({"code":"server_error","message":"the upstream answer is not JSON"})");
  element choice;
  std::string finish;
  array_writer output;
  if (doc["choices"].at(0).get(choice) == simdjson::SUCCESS) {
    finish = std::string(str(choice, "finish_reason"));
    auto status = finish == "length" || finish == "content_filter" ? "incomplete" : "completed";
    element message = choice["message"].value_unsafe();
    std::string_view text;
    bool has_message = choice["message"].error() == simdjson::SUCCESS;
    if (has_message && message["content"].get_string().get(text) == simdjson::SUCCESS && !text.empty())
      output.add(message_item("msg_" + std::string(id_base), text, status));
    else if (has_message && message["refusal"].get_string().get(text) == simdjson::SUCCESS && !text.empty()) {
      json::object_writer part;
      part.str("type", "refusal").str("refusal", text);
      json::object_writer w;
      w.str("id", "msg_" + std::string(id_base))
          .str("type", "message")
          .str("status", status)
          .raw("content", "[" + part.done() + "]")
          .str("role", "assistant");
      output.add(w.done());
    }
    simdjson::dom::array calls;
    if (has_message && message["tool_calls"].get_array().get(calls) == simdjson::SUCCESS) {
      std::size_t i = 0;
      for (auto call : calls)
        output.add(call_item("fc_" + std::string(id_base) + "_" + std::to_string(i++), "completed",
                             str(call["function"].value_unsafe(), "arguments"), str(call, "id"),
                             str(call["function"].value_unsafe(), "name")));
    }
  }
  token_usage u;
  std::int64_t reasoning = 0;
  element usage;
  if (doc["usage"].get(usage) == simdjson::SUCCESS) read_chat_usage(usage, u, reasoning);
  auto status = finish == "length" || finish == "content_filter" ? "incomplete" : "completed";
  return frame.render(status, output.done(), u.present ? usage_json(u, reasoning) : std::string("null"), "null",
                      incomplete_for(finish), str(doc, "model"));
}

std::string output_of(std::string_view response) {
  element doc, output;
  if (!parse(event_slot, response, doc) || doc["output"].get(output) != simdjson::SUCCESS || !output.is_array())
    return "[]";
  return minified(output);
}

// --- the exchange --------------------------------------------------------------------

exchange::exchange(prepared p, std::string id_base, bool store, std::string key_id, std::string previous_id,
                   std::string request, prior conversation)
    : prepared_(std::move(p)), request_(std::move(request)), conversation_(std::move(conversation)),
      base_(std::move(id_base)), store_(store), key_id_(std::move(key_id)), previous_id_(std::move(previous_id)) {}

std::string exchange::rebuild(std::string request) {
  auto summary = summarize(request);
  if (!summary.problem.empty()) return summary.problem;
  auto id = prepared_.frame.id;
  auto created = prepared_.frame.created_at;
  prepared_ = prepare(request, conversation_, base_, std::move(id), created);
  store_ = summary.store;
  request_ = std::move(request);
  return {};
}

void exchange::keep(std::string_view response) {
  if (!store_ || !save) return;
  element doc;
  if (!parse(event_slot, response, doc) || str(doc, "id").empty()) return;
  json::object_writer w;
  w.str("id", str(doc, "id"))
      .str("key_id", key_id_)
      .str_or_null("previous_response_id", previous_id_)
      .num("created_ms", clock::unix_ms())
      .raw("input", prepared_.input)
      .raw("response", response);
  save(w.done());
}

std::string exchange::answer(std::string_view body, bool passthrough, token_usage& usage) {
  if (passthrough) {
    element doc, u;
    if (parse(event_slot, body, doc) && doc["usage"].get(u) == simdjson::SUCCESS && u.is_object()) {
      usage = {};
      read_usage(minified(u), usage);
    }
    std::string answer(body);
    if (!previous_id_.empty() && parse(event_slot, answer, doc) && doc.is_object())
      json::set_member(answer, "previous_response_id", json::quoted(previous_id_));
    return answer;
  }
  return chat_answer_to_response(body, prepared_.frame, base_);
}

void exchange::convert(std::string& pending, bool end, bool passthrough) {
  if (!stream_) {
    stream_ = std::make_unique<stream_converter>(prepared_.frame, base_);
    stream_->previous_id = previous_id_;
    stream_->on_final = [this](const std::string& response) { keep(response); };
  }
  std::string out;
  out.reserve(pending.size() * 2 + 256);
  stream_->convert(pending, end, passthrough, out);
  pending = std::move(out);
}

bool exchange::event_usage(std::string_view data, token_usage& usage) {
  if (data.find("\"usage\"") == std::string_view::npos) return false;
  element doc, u;
  if (!parse(event_slot, data, doc) || doc.at_pointer("/response/usage").get(u) != simdjson::SUCCESS || !u.is_object())
    return false;
  usage = {};
  read_usage(minified(u), usage);
  return usage.present;
}

} // namespace lowart::net::responses
