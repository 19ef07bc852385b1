#pragma once
// Translation between the OpenAI Chat Completions and the Anthropic Messages protocols:
// request bodies, JSON answers, error envelopes and SSE streams, in both directions.
//
// Pure functions and small state machines over JSON text: no I/O, no Beast, no actors,
// so they are unit-tested on recorded streams and fuzzed directly. Parsing uses simdjson
// (thread-local parser); output is written as text. docs/translation.md "Protocol translation" lists
// what maps to what and what is dropped.

#include "net/errors.hpp"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace simdjson::dom {
class element;
}

namespace lowart::net {

enum class protocol { openai, anthropic };

/// Token usage in OpenAI's terms: `prompt` counts every input token, cache reads and
/// cache writes included (Anthropic's input_tokens + cache_read + cache_creation).
struct token_usage {
  std::int64_t prompt = 0;
  std::int64_t completion = 0;
  std::int64_t cached = 0;         ///< input tokens read from a prompt cache
  std::int64_t cache_creation = 0; ///< input tokens written to a prompt cache (Anthropic)
  bool present = false;

  /// Anthropic's input_tokens: what was neither read from nor written to the cache.
  std::int64_t uncached_input() const { return std::max<std::int64_t>(0, prompt - cached - cache_creation); }
};

/// Reads the `usage` object of an OpenAI answer or chunk.
void read_openai_usage(const simdjson::dom::element& usage, token_usage& out);
/// Reads an Anthropic `usage` object. Fields are cumulative: present ones replace what
/// an earlier event said (message_start, then message_delta), absent ones are kept.
void read_anthropic_usage(const simdjson::dom::element& usage, token_usage& out);

/// The tool a structured-output request (`response_format` json_schema or json_object)
/// becomes on an Anthropic upstream, which has no response_format: the model is made to
/// call it with the JSON as its input, and the answer's translation turns that call back
/// into the message's text.
inline constexpr std::string_view json_output_tool = "json_output";

/// Client request body -> upstream request body. `body` must be a JSON object (the
/// proxy validated it). Never fails: what the target cannot express is dropped, and a
/// body the upstream will refuse is left for the upstream to refuse. `structured` is set
/// when a response_format became the json_output_tool (pass it on to the answer's
/// translation).
std::string openai_request_to_anthropic(std::string_view body, int default_max_tokens = 4096,
                                        bool* structured = nullptr);
/// `include_usage`: ask for the usage chunk on streams (stream_options.include_usage).
std::string anthropic_request_to_openai(std::string_view body, bool include_usage);

/// Upstream JSON answer -> client JSON answer; `usage` receives the upstream's usage.
std::string openai_response_to_anthropic(std::string_view body, token_usage& usage);
/// `structured`: the request asked for structured output (openai_request_to_anthropic
/// said so): a json_output_tool call is the message's text, not a tool call.
std::string anthropic_response_to_openai(std::string_view body, token_usage& usage, bool structured = false);

/// An upstream error body (any shape) answered with `status` -> the client protocol's
/// error envelope, keeping the upstream's message.
std::string translate_error(std::string_view body, int status, protocol to);

/// Stop reasons: OpenAI finish_reason <-> Anthropic stop_reason.
std::string_view anthropic_stop_reason(std::string_view finish_reason);
std::string_view openai_finish_reason(std::string_view stop_reason);

/// Turns one upstream SSE stream into the client protocol's stream, event by event.
class stream_translator {
public:
  struct options {
    bool client_wants_usage = false; ///< OpenAI client asked for stream_options.include_usage
    std::int64_t prompt_tokens = 0;  ///< for Anthropic's message_start, before usage is known
    std::string fallback_id;         ///< message id when the upstream gives none
    bool structured = false;         ///< Anthropic -> OpenAI: json_output_tool calls are text
  };
  virtual ~stream_translator() = default;

  /// Consumes one upstream event (`event` is its SSE event name, may be empty) and
  /// appends client events to `out`. Returns true once the upstream's end marker
  /// ([DONE], message_stop) or an error event was seen: the caller then settles usage
  /// and calls close().
  virtual bool feed(std::string_view event, std::string_view data, std::string& out) = 0;
  /// Appends the closing events (final usage, stop reason, end marker). Idempotent.
  virtual void close(const token_usage& usage, std::string& out) = 0;

  /// The upstream's usage so far (present once it reported any).
  const token_usage& usage() const { return usage_; }
  /// Content (text, a tool call or a stop reason) has been translated: the preamble
  /// may no longer be held back.
  bool content_seen() const { return content_seen_; }
  /// The upstream sent an error event, already translated into `out`.
  bool errored() const { return errored_; }

protected:
  token_usage usage_;
  bool content_seen_ = false;
  bool errored_ = false;
  bool closed_ = false;
};

std::unique_ptr<stream_translator> make_stream_translator(protocol from, protocol to,
                                                          stream_translator::options options);

/// Appends one Anthropic-style event (`event: name`, `data: json`).
void append_named_event(std::string& out, std::string_view name, std::string_view data);
/// Appends one OpenAI-style event (`data: json`).
void append_data_event(std::string& out, std::string_view data);

/// The error event a stream ends with, in the client's protocol.
void append_stream_error(std::string& out, protocol client, error_kind kind, std::string_view message,
                         std::string_view code);

} // namespace lowart::net
