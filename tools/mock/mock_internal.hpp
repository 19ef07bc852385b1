#pragma once
// What lowart-mock's files share: limits, fault modes, options, statistics, the prompt cache and text
// helpers, defined in mock_state.cpp and mock_text.cpp. A connection's I/O is in mock_connection.hpp,
// the server in mock_upstream.cpp (its top comment describes the whole mock), the endpoints in
// mock_openai.cpp, mock_anthropic.cpp and mock_responses.cpp.

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/json/value.hpp>

#include <array>
#include <atomic>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>

namespace lowart::mock::detail {

namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using request = http::request<http::string_body>;

constexpr std::size_t max_echo_bytes = 200;
constexpr unsigned max_delay_ms = 3'600'000;
constexpr std::size_t max_argument_piece_bytes = 8;
constexpr std::string_view reply_prefix = "mock reply: ";
constexpr std::string_view tool_reply_prefix = "mock reply: tool said ";
constexpr std::string_view default_model = "mock-model";

constexpr std::string_view json_type = "application/json";

// --- fault modes ----------------------------------------------------------------------------------

enum class fault_kind { ok, fail_500, fail_429, fail_529, delay, hang, reset, slow, no_usage, mid_error, flood };

struct fault {
  fault_kind kind = fault_kind::ok;
  unsigned ms = 0;
};

std::optional<fault> parse_fault(std::string_view text);

// --- command line ---------------------------------------------------------------------------------

struct options {
  std::string host = "127.0.0.1";
  std::string port = "18090";
  unsigned threads = 1;
  std::string tls_cert;
  std::string tls_key;
  fault default_fault;
  unsigned stream_chunks = 18;
  unsigned chunk_delay_ms = 0;
};

std::optional<options> parse_options(int argc, char** argv);

// A request's fault mode: its x-mock-mode header (nullopt when that is unknown), else its model when
// that is "mock-<mode>", else `fallback`.
std::optional<fault> resolve_fault(const request& req, std::string_view model, fault fallback);

// --- text and JSON output helpers -------------------------------------------------------------------

inline std::string_view to_view(beast::string_view text) {
  return {text.data(), text.size()};
}
inline std::string_view to_view(const json::string& text) {
  return {text.data(), text.size()};
}

// Whitespace-separated words; eight bytes per step, since prompts in benchmarks can be large.
std::uint64_t count_words(std::string_view text);

std::uint64_t fnv1a(std::string_view text, std::uint64_t hash = 0xcbf29ce484222325ull);

inline void append_uint(std::string& out, std::uint64_t value) {
  std::array<char, 24> digits;
  auto result = std::to_chars(digits.data(), digits.data() + digits.size(), value);
  out.append(digits.data(), result.ptr);
}

// The wire protocol of an endpoint: it decides the error envelope and the stream events.
enum class protocol { openai, anthropic };

void append_error_body(std::string& out, std::string_view message, protocol wire);

// --- statistics -------------------------------------------------------------------------------------

class request_stats {
public:
  void record(std::string_view path, const request& req, std::string_view model);
  void reset();
  void append_json(std::string& out) const;

private:
  // Reuses the slot's capacity so recording a request does not allocate in steady state.
  static void assign(std::optional<std::string>& slot, std::string_view value);
  static void assign_optional(std::optional<std::string>& slot, std::optional<std::string_view> value);
  static void append_optional(std::string& out, const std::optional<std::string>& value);

  mutable std::mutex mutex_;
  std::uint64_t requests_ = 0;
  std::map<std::string, std::uint64_t, std::less<>> by_model_;
  std::optional<std::string> last_authorization_;
  std::optional<std::string> last_body_;
  std::optional<std::string> last_path_;
  std::optional<std::string> last_x_api_key_;
  std::optional<std::string> last_anthropic_version_;
  std::optional<std::string> last_anthropic_beta_;
};

// Anthropic prompt caching, simplified so tests can predict it: a cacheable text is written to the
// cache the first time it is seen and read from it every later time, whatever the request around it.
class prompt_cache {
public:
  // Whether `text` was seen before; remembers it either way.
  bool seen_before(std::string_view text);
  void clear();

private:
  std::mutex mutex_;
  std::unordered_set<std::uint64_t> hashes_;
};

struct server_state {
  explicit server_state(const options& opts) : opts(opts) {}

  const options& opts;
  request_stats stats;
  prompt_cache cache;
  std::atomic<std::uint64_t> next_id{1};
};

// --- request parsing ----------------------------------------------------------------------------------

// Calls f(text) for a message content: the string itself, or each text part of a content array.
template <class F> void for_each_text(const json::value& content, F&& f) {
  if (const auto* text = content.if_string()) {
    f(to_view(*text));
  } else if (const auto* parts = content.if_array()) {
    for (const auto& part : *parts) {
      const auto* object = part.if_object();
      const auto* text = object ? object->if_contains("text") : nullptr;
      if (text && text->is_string()) f(to_view(text->get_string()));
    }
  }
}

// Sets `out` to `prefix` followed by the text of `content` (see for_each_text), that text cut to
// max_echo_bytes without splitting a UTF-8 sequence. A null `content` adds nothing.
void assign_echo(std::string& out, std::string_view prefix, const json::value* content);

// The arguments of a mock tool call, as compact JSON: the tool's declared properties filled in
// from the echo of `content` (strings the text, numbers its word count), else {"text": <echo>}.
void assign_tool_arguments(std::string& out, const json::value* content, const json::object* input_schema = nullptr);

inline const json::string* string_member(const json::object* object, std::string_view key) {
  const auto* value = object ? object->if_contains(key) : nullptr;
  return value ? value->if_string() : nullptr;
}

inline bool has_string_member(const json::object& object, std::string_view key, std::string_view expected) {
  const auto* value = string_member(&object, key);
  return value && to_view(*value) == expected;
}

// The schema of a structured-output request: `parent[key]` is {"type":"json_schema", ...} with
// its schema in `nested` ("json_schema" for Chat's response_format: {"json_schema":{"schema"}})
// or beside the type (nested null: Responses' text.format {"type","name","schema"}); a
// {"type":"json_object"} gives an empty schema. Null when there is no such format.
inline const json::object* structured_format(const json::object& parent, std::string_view key, const char* nested) {
  static const json::object no_schema;
  const auto* format = parent.if_contains(key);
  const auto* object = format ? format->if_object() : nullptr;
  if (!object) return nullptr;
  if (has_string_member(*object, "type", "json_object")) return &no_schema;
  if (!has_string_member(*object, "type", "json_schema")) return nullptr;
  const json::object* holder = object;
  if (nested) {
    const auto* inner = object->if_contains(nested);
    holder = inner ? inner->if_object() : nullptr;
  }
  const auto* schema = holder ? holder->if_contains("schema") : nullptr;
  return schema && schema->is_object() ? &schema->get_object() : &no_schema;
}

// --- stream pieces ----------------------------------------------------------------------------------

// End of the next streamed piece of `text` starting at `begin`: leading whitespace plus one word, or
// everything left when this is the last allowed piece or only whitespace would remain.
std::size_t piece_end(std::string_view text, std::size_t begin, bool last_piece);

// End of the next tool-call arguments piece of `text` starting at `begin`: at most
// max_argument_piece_bytes, cut back so that no UTF-8 sequence is split across two events.
std::size_t argument_piece_end(std::string_view text, std::size_t begin);

} // namespace lowart::mock::detail
