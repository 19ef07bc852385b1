#pragma once
// lowart's own token counts, for answers whose upstream reports no usage.
//
// Completion: the text of every choice (OpenAI: content, refusal, reasoning_content, each
// tool call's name and arguments) or content block (Anthropic: text, thinking, a
// tool_use's name and input JSON), concatenated across all relayed events in the order
// they were relayed, and counted once per segment: a word split across two deltas is one
// word. Prompt: OpenAI's documented message accounting (the cookbook "How to count tokens
// with tiktoken"), with an `estimated` mark on whatever that accounting does not cover.
//
// Pure C++ over JSON text (simdjson), no I/O: unit-tested on generated streams against a
// whole-text count, and used by the proxy on the request's I/O thread.

#include "core/tokenizer.hpp"
#include "net/translate.hpp" // protocol; declares simdjson::dom::element

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lowart::net {

/// A count lowart made, and whether any part of it is an estimate rather than the
/// reference tokenizer's exact count.
struct own_count {
  std::int64_t tokens = 0;
  bool estimated = false;
};

enum class prompt_shape { openai_chat, anthropic_messages, embeddings };

/// Prompt tokens of a request body. OpenAI chat, as the cookbook counts: 3 per message,
/// every string field of it (role, content, name, tool_call_id, ...), 1 more for a name,
/// 3 to prime the reply. Estimates (marked): tool and function definitions (the
/// cookbook's num_tokens_for_tools constants: 7 per function for o200k models, 10 for
/// cl100k ones, 3 per property, 12 at the end), tool calls in the history, content given
/// as parts other than a single text part, and each image part as `image_tokens`.
/// Anthropic bodies count the same way (the system prompt as one message), always marked
/// as an estimate: Anthropic's tokenizer is not public. Embeddings: the inputs' tokens
/// (token-id arrays count their length), exact.
own_count count_prompt(const bpe_tokenizer& tok, prompt_shape shape, simdjson::dom::element doc,
                       std::string_view encoding);
/// An image part's estimate: OpenAI's base cost of a low-detail image.
constexpr std::int64_t image_tokens = 85;

/// The completion of one upstream attempt, as relayed, for counting once at the end.
/// A tool call (its name and arguments, counted as text) marks the count as an estimate:
/// the tokens that frame a call in the model's output are not documented.
///
/// Events are kept raw (one copy of the SSE data) and read only when a count is asked
/// for, so a stream whose upstream does report usage pays a copy and nothing else. Memory
/// is bounded: past `max_events` bytes of held events they are read into per-segment
/// text; past `max_text` bytes of held text, each segment's settled prefix
/// (bpe_tokenizer::count_settled: exact) is counted and dropped. Only a segment with no
/// settled cut within `max_text` (one unbroken run of letters or whitespace) is counted
/// as it stands and then marked estimated.
class completion_text {
public:
  static constexpr std::size_t default_max_events = 256 * 1024;
  static constexpr std::size_t default_max_text = 64 * 1024;

  explicit completion_text(std::size_t max_events = default_max_events, std::size_t max_text = default_max_text)
      : max_events_(max_events), max_text_(max_text) {}

  /// Starts over for an attempt whose upstream speaks `upstream`.
  void reset(protocol upstream);
  /// One relayed SSE event's data (not "[DONE]"). `tok` (may be null) settles text when
  /// the bounds are reached.
  void add_event(std::string_view data, const bpe_tokenizer* tok);
  /// A whole JSON answer (replaces anything held).
  void set_body(std::string_view body);
  /// Tokens of everything relayed so far. May be asked again (more events may follow).
  own_count count(const bpe_tokenizer& tok);
  /// Bytes held (raw events and text), for tests of the bound.
  std::size_t held() const;
  /// No text had to be counted without a settled cut (count() is then the whole texts').
  bool settled_exactly() const { return !estimated_; }

private:
  struct segment {
    std::uint8_t kind = 0;
    std::uint32_t choice = 0;
    std::uint32_t index = 0;
    std::string text;
  };
  void read_events(const bpe_tokenizer* tok);
  void read_document(std::string_view json);
  void read_element(simdjson::dom::element doc);
  void append(std::uint8_t kind, std::uint32_t choice, std::uint32_t index, std::string_view text);
  void settle(const bpe_tokenizer& tok, std::size_t keep);

  std::size_t max_events_;
  std::size_t max_text_;
  bool anthropic_ = false;
  std::string events_; ///< event data not read yet, each followed by '\x1e'
  std::string body_;   ///< a JSON answer not read yet
  std::vector<segment> segments_;
  std::size_t text_bytes_ = 0;                ///< total size of segments_' text
  std::int64_t settled_ = 0;                  ///< tokens of text already counted and dropped
  bool estimated_ = false;                    ///< a segment was counted without a settled cut
  bool calls_ = false;                        ///< a tool call was counted
  std::size_t last_ = 0;                      ///< the segment appended to last (streams append to one at a time)
  const bpe_tokenizer* counted_by_ = nullptr; ///< count() was asked with it, and nothing came since
  own_count last_count_;
};

} // namespace lowart::net
