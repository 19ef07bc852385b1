// OpenAI <-> Anthropic translation of SSE streams: the event writers and the two stream
// translators. Requests are in translate_request.cpp, answers, usage and errors in
// translate.cpp, the shared helpers in translate_internal.hpp.
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "net/translate.hpp"
#include "net/translate_internal.hpp"

#include <simdjson.h>

#include <algorithm>
#include <map>
#include <vector>

namespace lowart::net {

using namespace translate_detail;

// --- streams ---------------------------------------------------------------------------

void append_named_event(std::string& out, std::string_view name, std::string_view data) {
  out += "event: ";
  out += name;
  out += "\ndata: ";
  out += data;
  out += "\n\n";
}

void append_data_event(std::string& out, std::string_view data) {
  out += "data: ";
  out += data;
  out += "\n\n";
}

void append_stream_error(std::string& out, protocol client, error_kind kind, std::string_view message,
                         std::string_view code) {
  if (client == protocol::anthropic)
    append_named_event(out, "error", error_body(api_format::anthropic, kind, message));
  else
    append_data_event(out, error_body(api_format::openai, kind, message, code));
}

namespace {

/// An error's type as either protocol names it -> the neutral kind.
error_kind kind_of_type(std::string_view type) {
  if (type == "rate_limit_error" || type == "rate_limit_exceeded") return error_kind::rate_limited;
  if (type == "overloaded_error" || type == "service_unavailable") return error_kind::unavailable;
  if (type == "invalid_request_error") return error_kind::bad_request;
  if (type == "authentication_error") return error_kind::unauthorized;
  if (type == "permission_error") return error_kind::forbidden;
  if (type == "not_found_error") return error_kind::not_found;
  if (type == "request_too_large") return error_kind::payload_too_large;
  if (type == "timeout_error") return error_kind::gateway_timeout;
  return error_kind::internal;
}

/// Anthropic events -> OpenAI chat.completion.chunk events.
class anthropic_to_openai final : public stream_translator {
public:
  explicit anthropic_to_openai(options o) : opt_(std::move(o)), created_(clock::unix_ms() / 1000) {
    id_ = opt_.fallback_id;
  }

  bool feed(std::string_view event, std::string_view data, std::string& out) override {
    if (closed_ || ended_) return true;
    element doc;
    if (!parse(outer_slot(), data, doc) || !doc.is_object()) return false; // not JSON: nothing to translate
    auto type = string_of(doc, "type");
    if (type.empty()) type = event;
    if (type == "message_start") {
      auto message = doc["message"];
      if (auto id = string_of(message, "id"); !id.empty()) id_ = id;
      model_ = string_of(message, "model");
      element u;
      if (message["usage"].get(u) == simdjson::SUCCESS) read_anthropic_usage_element(u, usage_);
      chunk(out, R"({"role":"assistant","content":""})");
    } else if (type == "content_block_start") {
      auto index = block_index(doc);
      auto block = doc["content_block"];
      auto block_type = string_of(block, "type");
      if (opt_.structured && block_type == "tool_use" && string_of(block, "name") == json_output_tool) {
        // The structured output: its input's pieces are the message's text.
        if (tool_of_block_.size() <= index) tool_of_block_.resize(index + 1, -1);
        tool_of_block_[index] = json_block;
        json_seen_ = true;
      } else if (block_type == "tool_use" || block_type == "server_tool_use") {
        if (tool_of_block_.size() <= index) tool_of_block_.resize(index + 1, -1);
        tool_of_block_[index] = tools_++;
        json::object_writer fn;
        fn.str("name", string_of(block, "name")).str("arguments", "");
        json::object_writer call;
        call.num("index", tool_of_block_[index])
            .str("id", string_of(block, "id"))
            .str("type", "function")
            .raw("function", fn.done());
        tool_delta(out, call.done());
      } else if (block_type == "text") {
        if (auto text = string_of(block, "text"); !text.empty()) text_delta(out, text);
      }
    } else if (type == "content_block_delta") {
      auto delta = doc["delta"];
      auto delta_type = string_of(delta, "type");
      if (delta_type == "text_delta") {
        if (auto text = string_of(delta, "text"); !text.empty()) text_delta(out, text);
      } else if (delta_type == "input_json_delta") {
        auto index = block_index(doc);
        auto piece = string_of(delta, "partial_json");
        if (!piece.empty() && index < tool_of_block_.size() && tool_of_block_[index] == json_block) {
          text_delta(out, piece);
        } else if (!piece.empty() && index < tool_of_block_.size() && tool_of_block_[index] >= 0) {
          json::object_writer fn;
          fn.str("arguments", piece);
          json::object_writer call;
          call.num("index", tool_of_block_[index]).raw("function", fn.done());
          tool_delta(out, call.done());
        }
      }
      // thinking_delta and signature_delta: no OpenAI counterpart, dropped.
    } else if (type == "message_delta") {
      element u;
      if (doc["usage"].get(u) == simdjson::SUCCESS) read_anthropic_usage_element(u, usage_);
      auto stop = string_of(doc["delta"], "stop_reason");
      if (!stop.empty()) {
        content_seen_ = true;
        std::string finish = "\"";
        // The forced json_output call ends with tool_use; for the client it is text.
        finish += openai_finish_reason(json_seen_ && tools_ == 0 && stop == "tool_use" ? "end_turn" : stop);
        finish += '"';
        chunk(out, "{}", finish);
      }
    } else if (type == "message_stop") {
      ended_ = true;
      return true;
    } else if (type == "error") {
      errored_ = true;
      content_seen_ = true;
      ended_ = true;
      auto error = doc["error"];
      auto error_type = string_of(error, "type");
      append_data_event(
          out, error_body(api_format::openai, kind_of_type(error_type), string_of(error, "message"), error_type));
      return true;
    }
    // ping and unknown events: nothing to say.
    return false;
  }

  void close(const token_usage& usage, std::string& out) override {
    if (closed_) return;
    closed_ = true;
    if (errored_) return; // an OpenAI stream ends right after its error event
    if (opt_.client_wants_usage) {
      json::object_writer w;
      w.str("id", id_)
          .str("object", "chat.completion.chunk")
          .num("created", created_)
          .str("model", model_)
          .raw("choices", "[]")
          .raw("usage", openai_usage_json(usage));
      append_data_event(out, w.done());
    }
    out += "data: [DONE]\n\n";
  }

private:
  static std::size_t block_index(element doc) {
    std::int64_t index = 0;
    if (doc["index"].get_int64().get(index) != simdjson::SUCCESS || index < 0 || index > 4096) index = 0;
    return static_cast<std::size_t>(index);
  }
  void chunk(std::string& out, std::string_view delta, std::string_view finish = "null") {
    std::string choice = R"([{"index":0,"delta":)";
    choice += delta;
    choice += R"(,"logprobs":null,"finish_reason":)";
    choice += finish;
    choice += "}]";
    json::object_writer w;
    w.str("id", id_)
        .str("object", "chat.completion.chunk")
        .num("created", created_)
        .str("model", model_)
        .raw("choices", choice);
    append_data_event(out, w.done());
  }
  void text_delta(std::string& out, std::string_view text) {
    content_seen_ = true;
    json::object_writer d;
    d.str("content", text);
    chunk(out, d.done());
  }
  void tool_delta(std::string& out, const std::string& call) {
    content_seen_ = true;
    chunk(out, R"({"tool_calls":[)" + call + "]}");
  }

  options opt_;
  std::int64_t created_;
  std::string id_;
  std::string model_;
  static constexpr int json_block = -2; ///< in tool_of_block_: the json_output_tool's block
  std::vector<int> tool_of_block_;      ///< Anthropic block index -> OpenAI tool call index
  int tools_ = 0;
  bool json_seen_ = false;
  bool ended_ = false;
};

/// OpenAI chat.completion.chunk events -> Anthropic events.
class openai_to_anthropic final : public stream_translator {
public:
  explicit openai_to_anthropic(options o) : opt_(std::move(o)) {}

  bool feed(std::string_view, std::string_view data, std::string& out) override {
    if (closed_ || ended_) return true;
    if (data == "[DONE]") {
      ended_ = true;
      return true;
    }
    element doc;
    if (!parse(outer_slot(), data, doc) || !doc.is_object()) return false;
    element error;
    if (doc["error"].get(error) == simdjson::SUCCESS && error.is_object()) {
      errored_ = true;
      content_seen_ = true;
      ended_ = true;
      if (!started_) start(out);
      append_named_event(
          out, "error",
          error_body(api_format::anthropic, kind_of_type(string_of(error, "type")), string_of(error, "message")));
      return true;
    }
    if (!started_) {
      id_ = string_of(doc, "id");
      model_ = string_of(doc, "model");
      start(out);
    }
    element u;
    if (doc["usage"].get(u) == simdjson::SUCCESS && u.is_object()) read_openai_usage_element(u, usage_);
    simdjson::dom::array choices;
    if (doc["choices"].get_array().get(choices) != simdjson::SUCCESS || choices.size() == 0) return false;
    element choice = choices.at(0).value_unsafe();
    auto delta = choice["delta"];
    std::string_view text;
    if ((delta["content"].get_string().get(text) == simdjson::SUCCESS ||
         delta["refusal"].get_string().get(text) == simdjson::SUCCESS) &&
        !text.empty()) {
      if (open_ != block::text) {
        close_block(out);
        open_block(out, R"({"type":"text","text":""})", block::text);
      }
      json::object_writer d;
      d.str("type", "text_delta").str("text", text);
      delta_event(out, d.done());
    }
    simdjson::dom::array calls;
    if (delta["tool_calls"].get_array().get(calls) == simdjson::SUCCESS) {
      for (auto call : calls)
        tool_piece(out, call);
    }
    if (auto finish = string_of(choice, "finish_reason"); !finish.empty()) {
      content_seen_ = true;
      stop_ = anthropic_stop_reason(finish);
      finish_blocks(out);
    }
    return false;
  }

  void close(const token_usage& usage, std::string& out) override {
    if (closed_) return;
    closed_ = true;
    if (errored_) return;
    if (!started_) start(out);
    finish_blocks(out);
    json::object_writer delta;
    delta.str("stop_reason", stop_).raw("stop_sequence", "null");
    json::object_writer w;
    w.str("type", "message_delta").raw("delta", delta.done()).raw("usage", anthropic_usage_json(usage));
    append_named_event(out, "message_delta", w.done());
    append_named_event(out, "message_stop", R"({"type":"message_stop"})");
  }

private:
  enum class block { none, text, tool };

  void start(std::string& out) {
    started_ = true;
    json::object_writer usage;
    usage.num("input_tokens", opt_.prompt_tokens).num("output_tokens", 0);
    json::object_writer message;
    message.str("id", id_.empty() ? opt_.fallback_id : id_)
        .str("type", "message")
        .str("role", "assistant")
        .str("model", model_)
        .raw("content", "[]")
        .raw("stop_reason", "null")
        .raw("stop_sequence", "null")
        .raw("usage", usage.done());
    json::object_writer w;
    w.str("type", "message_start").raw("message", message.done());
    append_named_event(out, "message_start", w.done());
  }
  void open_block(std::string& out, std::string_view block_json, block kind) {
    content_seen_ = true;
    json::object_writer w;
    w.str("type", "content_block_start").num("index", next_block_).raw("content_block", block_json);
    append_named_event(out, "content_block_start", w.done());
    open_ = kind;
  }
  void close_block(std::string& out) {
    if (open_ == block::none) return;
    if (open_ == block::tool) calls_[open_tool_].closed = true;
    json::object_writer w;
    w.str("type", "content_block_stop").num("index", next_block_);
    append_named_event(out, "content_block_stop", w.done());
    open_ = block::none;
    open_tool_ = -1;
    ++next_block_;
  }
  void delta_event(std::string& out, const std::string& delta) {
    json::object_writer w;
    w.str("type", "content_block_delta").num("index", next_block_).raw("delta", delta);
    append_named_event(out, "content_block_delta", w.done());
  }

  // --- tool calls -------------------------------------------------------------------------
  // OpenAI numbers tool calls and may interleave their pieces (index 0, 1, 0, 2, ...);
  // Anthropic's blocks do not interleave. Tool call i is the i-th tool_use block: the
  // open call's pieces go out at once, a piece of another call waits until that call's
  // block may open — when the open call's arguments are complete JSON (or at the end).
  struct tool_call {
    std::string id;
    std::string name;
    std::vector<std::string> held; ///< pieces that arrived before its block could open
    int depth = 0;                 ///< JSON nesting of the arguments so far
    bool in_string = false, escaped = false, started = false, complete = false;
    bool opened = false, closed = false;

    void scan(std::string_view piece) {
      for (char c : piece) {
        if (in_string) {
          if (escaped)
            escaped = false;
          else if (c == '\\')
            escaped = true;
          else if (c == '"')
            in_string = false;
        } else if (c == '"') {
          in_string = true;
        } else if (c == '{' || c == '[') {
          started = true;
          ++depth;
        } else if ((c == '}' || c == ']') && depth > 0 && --depth == 0) {
          complete = started;
        }
      }
    }
  };

  void tool_piece(std::string& out, element call) {
    std::int64_t index = 0;
    if (call["index"].get_int64().get(index) != simdjson::SUCCESS) index = 0;
    if (index < 0 || index > 4096) return;
    auto& c = calls_[index];
    if (c.id.empty()) c.id = string_of(call, "id");
    if (c.name.empty()) c.name = string_of(call["function"], "name");
    // A piece after its block closed (its arguments were complete) has no block to go to.
    if (auto args = string_of(call["function"], "arguments"); !args.empty() && !c.closed) {
      c.scan(args);
      if (open_ == block::tool && open_tool_ == index) {
        input_delta(out, args);
      } else {
        c.held.emplace_back(args);
        held_bytes_ += args.size();
      }
    }
    // Open the next call's block whenever the open one is done with (or holding the
    // others grew too large: then the open one ends early and loses what comes later).
    for (;;) {
      if (open_ == block::tool && !calls_[open_tool_].complete && held_bytes_ < (1u << 20)) return;
      auto next = std::find_if(calls_.begin(), calls_.end(), [](const auto& kv) { return !kv.second.opened; });
      if (next == calls_.end()) return;
      close_block(out);
      open_call(out, next->first, next->second);
    }
  }
  void open_call(std::string& out, std::int64_t index, tool_call& c) {
    json::object_writer b;
    b.str("type", "tool_use")
        .str("id", c.id.empty() ? "toolu_" + std::to_string(next_block_) : c.id)
        .str("name", c.name)
        .raw("input", "{}");
    open_block(out, b.done(), block::tool);
    open_tool_ = index;
    c.opened = true;
    for (const auto& piece : c.held) {
      input_delta(out, piece);
      held_bytes_ -= piece.size();
    }
    c.held.clear();
  }
  /// The end: the open block closes, calls still waiting get their blocks in order.
  void finish_blocks(std::string& out) {
    close_block(out);
    for (auto& [index, c] : calls_) {
      if (c.opened) continue;
      open_call(out, index, c);
      close_block(out);
    }
  }
  void input_delta(std::string& out, std::string_view piece) {
    json::object_writer d;
    d.str("type", "input_json_delta").str("partial_json", piece);
    delta_event(out, d.done());
  }
  std::map<std::int64_t, tool_call> calls_; ///< by OpenAI index
  std::size_t held_bytes_ = 0;
  // --- end of tool calls ------------------------------------------------------------------

  options opt_;
  std::string id_;
  std::string model_;
  bool started_ = false;
  bool ended_ = false;
  block open_ = block::none;
  std::int64_t open_tool_ = -1;
  int next_block_ = 0;
  std::string stop_ = "end_turn";
};

} // namespace

std::unique_ptr<stream_translator> make_stream_translator(protocol from, protocol to,
                                                          stream_translator::options options) {
  if (from == protocol::anthropic && to == protocol::openai)
    return std::make_unique<anthropic_to_openai>(std::move(options));
  if (from == protocol::openai && to == protocol::anthropic)
    return std::make_unique<openai_to_anthropic>(std::move(options));
  return nullptr; // same protocol: relayed as is
}

} // namespace lowart::net
