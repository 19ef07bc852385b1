// lowart-mock: an OpenAI-compatible mock upstream for lowart's tests, demo route and benchmarks.
//
// One binary, one io_context, Boost.Beast for request parsing and hand-framed HTTP/1.1 responses
// written from per-connection buffers that are reused across keep-alive requests, so the hot path
// (a small chat completion) does no allocation beyond Beast's request parser and Boost.JSON's
// parse (which mostly lands in a per-connection arena). Boost.JSON is compiled into this file
// (boost/json/src.hpp), so the binary needs no JSON library.
//
// Command line (`--opt value` or `--opt=value`):
//   --listen HOST:PORT      address to listen on (default 127.0.0.1:18090; port 0 picks one)
//   --threads N             threads running the io_context (default 1)
//   --tls-cert FILE --tls-key FILE
//                           serve HTTPS with this PEM certificate chain and private key
//   --mode MODE             fault mode for requests that do not choose one (default ok)
//   --stream-chunks N       at most N content chunks per streamed answer (default 18)
//   --chunk-delay-ms N      pause between SSE events (default 0)
// Prints "lowart-mock listening on HOST:PORT" once ready; SIGINT/SIGTERM exit cleanly.
//
// Endpoints (matched on the path suffix, so any prefix works; the query string is ignored):
//   POST .../chat/completions  reply "mock reply: " + the last message's content (string content or
//                              its concatenated text parts, truncated to 200 bytes at a UTF-8
//                              boundary); JSON, or SSE when "stream" is true (chunked encoding:
//                              role chunk, one word per chunk with its leading whitespace — the last
//                              chunk takes the rest — a finish chunk, a usage chunk when
//                              stream_options.include_usage is true, then [DONE]). Usage counts
//                              whitespace-separated words: prompt = all message contents,
//                              completion = the reply.
//   POST .../embeddings        one embedding of 8 deterministic floats per input (a string, an array
//                              of strings, a token array or an array of token arrays).
//   GET  .../models            one model, "mock-model".
//   GET  .../healthz           200 "ok".
//   GET  .../mock/stats        {"requests","by_model","last_authorization","last_body","last_path"}
//                              over the chat and embeddings requests seen so far; the last_* fields
//                              describe the latest of them (last_authorization is null when that
//                              request had no Authorization header).
//   POST .../mock/reset        clears those statistics.
//   anything else              404 with an OpenAI error envelope.
// Bad JSON or a malformed request gets a 400 envelope (before any fault mode applies). HTTP/1.0
// clients get close-delimited streams, as they cannot take chunked encoding.
//
// Fault modes apply to chat and embeddings requests. A request's mode comes from its x-mock-mode
// header (an unknown value is a 400), else from its model when that is "mock-<mode>", else --mode:
//   ok          answer normally
//   fail-500    500, error type server_error
//   fail-429    429 with retry-after: 1, error type rate_limit_error
//   delay-<ms>  wait <ms> before sending anything, then answer normally
//   hang        never answer; keep the socket until the client closes it
//   reset       abort the connection with a TCP RST: right after reading a non-streaming request,
//               after the role chunk and two content chunks of a streaming one
//   slow-<ms>   stream with <ms> between events (overrides --chunk-delay-ms)
//   no-usage    answer normally but report no usage (no usage object, no usage chunk even
//               when stream_options.include_usage asks for one), like some upstreams
// Every chat and embeddings request counts in the statistics as soon as it has been read.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/json.hpp>
#include <boost/json/src.hpp>

#include <array>
#include <atomic>
#include <bit>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using request = http::request<http::string_body>;

// Completion token: co_await yields (error_code, results...) instead of throwing.
constexpr asio::as_tuple_t<asio::use_awaitable_t<>> use_tuple{};

constexpr std::size_t max_header_bytes = 64 * 1024;
constexpr std::size_t max_body_bytes = 64 * 1024 * 1024;
constexpr std::size_t max_echo_bytes = 200;
constexpr unsigned max_delay_ms = 3'600'000;
constexpr int embedding_dimensions = 8;
constexpr std::string_view reply_prefix = "mock reply: ";
constexpr std::string_view default_model = "mock-model";

constexpr std::string_view json_type = "application/json";
constexpr std::string_view models_body =
    R"({"object":"list","data":[{"id":"mock-model","object":"model","created":0,"owned_by":"lowart-mock"}]})";
constexpr std::string_view not_found_body = R"({"error":{"message":"not found","type":"invalid_request_error"}})";
constexpr std::string_view fail_500_body =
    R"({"error":{"message":"mock failure","type":"server_error","param":null,"code":null}})";
constexpr std::string_view fail_429_body =
    R"({"error":{"message":"mock rate limit","type":"rate_limit_error","param":null,"code":null}})";
constexpr std::string_view usage_text = R"(usage: lowart-mock [options]
  --listen HOST:PORT        listen address (default 127.0.0.1:18090)
  --threads N               io threads (default 1)
  --tls-cert FILE           PEM certificate chain: serve HTTPS (needs --tls-key)
  --tls-key FILE            PEM private key
  --mode MODE               default fault mode: ok, fail-500, fail-429, delay-<ms>, hang, reset,
                            slow-<ms> (default ok)
  --stream-chunks N         most content chunks per streamed answer (default 18)
  --chunk-delay-ms N        delay between streamed events (default 0)
)";

// --- fault modes ----------------------------------------------------------------------------------

enum class fault_kind { ok, fail_500, fail_429, delay, hang, reset, slow, no_usage };

struct fault {
  fault_kind kind = fault_kind::ok;
  unsigned ms = 0;
};

std::optional<unsigned> parse_unsigned(std::string_view text, unsigned min, unsigned max) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value < min || value > max) {
    return std::nullopt;
  }
  return value;
}

std::optional<fault> parse_fault(std::string_view text) {
  if (text == "ok") return fault{};
  if (text == "fail-500") return fault{fault_kind::fail_500};
  if (text == "fail-429") return fault{fault_kind::fail_429};
  if (text == "hang") return fault{fault_kind::hang};
  if (text == "reset") return fault{fault_kind::reset};
  if (text == "no-usage") return fault{fault_kind::no_usage};
  for (auto [prefix, kind] : {std::pair{std::string_view{"delay-"}, fault_kind::delay},
                              std::pair{std::string_view{"slow-"}, fault_kind::slow}}) {
    if (text.starts_with(prefix)) {
      if (auto ms = parse_unsigned(text.substr(prefix.size()), 0, max_delay_ms)) return fault{kind, *ms};
      return std::nullopt;
    }
  }
  return std::nullopt;
}

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

std::optional<options> parse_options(int argc, char** argv) {
  options opts;
  auto fail = [](std::string_view message, std::string_view arg) {
    std::fprintf(stderr, "lowart-mock: %.*s: %.*s\n%.*s", static_cast<int>(message.size()), message.data(),
                 static_cast<int>(arg.size()), arg.data(), static_cast<int>(usage_text.size()), usage_text.data());
    return std::nullopt;
  };
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fwrite(usage_text.data(), 1, usage_text.size(), stdout);
      std::exit(0);
    }
    std::string_view name = arg;
    std::string_view value;
    if (auto eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return fail("missing value for", arg);
    }

    if (name == "--listen") {
      auto colon = value.rfind(':');
      if (colon == std::string_view::npos || !parse_unsigned(value.substr(colon + 1), 0, 65535)) {
        return fail("expected HOST:PORT", value);
      }
      std::string_view host = value.substr(0, colon);
      if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
      opts.host = host;
      opts.port = value.substr(colon + 1);
    } else if (name == "--threads") {
      auto threads = parse_unsigned(value, 1, 256);
      if (!threads) return fail("bad thread count", value);
      opts.threads = *threads;
    } else if (name == "--tls-cert") {
      opts.tls_cert = value;
    } else if (name == "--tls-key") {
      opts.tls_key = value;
    } else if (name == "--mode") {
      auto mode = parse_fault(value);
      if (!mode) return fail("unknown mode", value);
      opts.default_fault = *mode;
    } else if (name == "--stream-chunks") {
      auto chunks = parse_unsigned(value, 1, 1'000'000);
      if (!chunks) return fail("bad chunk count", value);
      opts.stream_chunks = *chunks;
    } else if (name == "--chunk-delay-ms") {
      auto delay = parse_unsigned(value, 0, max_delay_ms);
      if (!delay) return fail("bad delay", value);
      opts.chunk_delay_ms = *delay;
    } else {
      return fail("unknown option", name);
    }
  }
  if (opts.tls_cert.empty() != opts.tls_key.empty()) return fail("TLS needs both", "--tls-cert and --tls-key");
  return opts;
}

// --- text and JSON output helpers -------------------------------------------------------------------

std::string_view to_view(beast::string_view text) {
  return {text.data(), text.size()};
}
std::string_view to_view(const json::string& text) {
  return {text.data(), text.size()};
}

// ASCII whitespace: space and \t \n \v \f \r.
bool is_space(char c) {
  auto u = static_cast<unsigned char>(c);
  return u == ' ' || static_cast<unsigned>(u - '\t') < 5u;
}

constexpr std::uint64_t byte_ones = 0x0101010101010101ull;
constexpr std::uint64_t byte_high = byte_ones * 0x80;
constexpr std::uint64_t byte_low7 = byte_ones * 0x7f;

// For eight bytes at once: 0x80 in each byte of `v` that is_space, 0 elsewhere.
std::uint64_t space_bytes(std::uint64_t v) {
  const std::uint64_t is_blank = v ^ (byte_ones * ' ');
  const std::uint64_t blank = ~(((is_blank & byte_low7) + byte_low7) | is_blank | byte_low7);
  const std::uint64_t low7 = v & byte_low7; // adding below cannot carry into the next byte
  const std::uint64_t from_tab = (low7 + byte_ones * (0x80 - '\t')) & byte_high;
  const std::uint64_t past_cr = (low7 + byte_ones * (0x80 - '\r' - 1)) & byte_high;
  return blank | (from_tab & ~past_cr & ~v & byte_high);
}

// Whitespace-separated words; eight bytes per step, since prompts in benchmarks can be large.
std::uint64_t count_words(std::string_view text) {
  static_assert(std::endian::native == std::endian::little, "count_words loads bytes little-endian");
  std::uint64_t words = 0;
  std::uint64_t carry = 0x80; // whether the byte before the current block is whitespace, as byte 0's 0x80
  std::size_t i = 0;
  for (; i + 8 <= text.size(); i += 8) {
    std::uint64_t block;
    std::memcpy(&block, text.data() + i, sizeof block);
    const std::uint64_t spaces = space_bytes(block);
    const std::uint64_t starts = ((spaces << 8) | carry) & ~spaces & byte_high;
    words += ((starts >> 7) * byte_ones) >> 56; // sums the eight 0/1 bytes (no popcnt instruction needed)
    carry = spaces >> 56;
  }
  for (bool after_space = carry != 0; i < text.size(); ++i) {
    const bool space = is_space(text[i]);
    words += after_space && !space;
    after_space = space;
  }
  return words;
}

void append_uint(std::string& out, std::uint64_t value) {
  std::array<char, 24> digits;
  auto result = std::to_chars(digits.data(), digits.data() + digits.size(), value);
  out.append(digits.data(), result.ptr);
}

void append_json_string(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  std::size_t run = 0; // start of the pending run of bytes that need no escaping
  for (std::size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(text.data() + run, i - run);
    run = i + 1;
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    case '\b':
      out += "\\b";
      break;
    case '\f':
      out += "\\f";
      break;
    default:
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    }
  }
  out.append(text.data() + run, text.size() - run);
  out += '"';
}

void append_error_body(std::string& out, std::string_view message) {
  out += R"({"error":{"message":)";
  append_json_string(out, message);
  out += R"(,"type":"invalid_request_error","param":null,"code":null}})";
}

// --- statistics -------------------------------------------------------------------------------------

class request_stats {
public:
  void record(std::string_view path, std::optional<std::string_view> authorization, std::string_view body,
              std::string_view model) {
    std::lock_guard lock(mutex_);
    ++requests_;
    if (!model.empty()) {
      if (auto it = by_model_.find(model); it != by_model_.end()) {
        ++it->second;
      } else {
        by_model_.emplace(model, 1);
      }
    }
    if (authorization) {
      assign(last_authorization_, *authorization);
    } else {
      last_authorization_.reset();
    }
    assign(last_body_, body);
    assign(last_path_, path);
  }

  void reset() {
    std::lock_guard lock(mutex_);
    requests_ = 0;
    by_model_.clear();
    last_authorization_.reset();
    last_body_.reset();
    last_path_.reset();
  }

  void append_json(std::string& out) const {
    std::lock_guard lock(mutex_);
    out += R"({"requests":)";
    append_uint(out, requests_);
    out += R"(,"by_model":{)";
    bool first = true;
    for (const auto& [model, count] : by_model_) {
      if (!first) out += ',';
      first = false;
      append_json_string(out, model);
      out += ':';
      append_uint(out, count);
    }
    out += R"(},"last_authorization":)";
    append_optional(out, last_authorization_);
    out += R"(,"last_body":)";
    append_optional(out, last_body_);
    out += R"(,"last_path":)";
    append_optional(out, last_path_);
    out += '}';
  }

private:
  // Reuses the slot's capacity so recording a request does not allocate in steady state.
  static void assign(std::optional<std::string>& slot, std::string_view value) {
    if (slot) {
      slot->assign(value);
    } else {
      slot.emplace(value);
    }
  }

  static void append_optional(std::string& out, const std::optional<std::string>& value) {
    if (value) {
      append_json_string(out, *value);
    } else {
      out += "null";
    }
  }

  mutable std::mutex mutex_;
  std::uint64_t requests_ = 0;
  std::map<std::string, std::uint64_t, std::less<>> by_model_;
  std::optional<std::string> last_authorization_;
  std::optional<std::string> last_body_;
  std::optional<std::string> last_path_;
};

struct server_state {
  explicit server_state(const options& opts) : opts(opts) {}

  const options& opts;
  request_stats stats;
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

struct chat_request {
  std::string_view model; // empty when the request has none; points into the parsed document
  bool stream = false;
  bool include_usage = false;
  std::uint64_t prompt_words = 0;
};

// Reads a parsed chat request into `chat` and writes the reply text into `reply`.
// Returns an error message for a request that cannot be answered, else an empty view.
std::string_view read_chat(const json::value& document, chat_request& chat, std::string& reply) {
  const auto* root = document.if_object();
  if (!root) return "request body must be a JSON object";
  if (const auto* model = root->if_contains("model"); model && model->is_string()) {
    chat.model = to_view(model->get_string());
  }
  if (const auto* stream = root->if_contains("stream"); stream && stream->is_bool()) {
    chat.stream = stream->get_bool();
  }
  if (const auto* stream_options = root->if_contains("stream_options"); stream_options && stream_options->is_object()) {
    const auto* include_usage = stream_options->get_object().if_contains("include_usage");
    chat.include_usage = include_usage && include_usage->is_bool() && include_usage->get_bool();
  }
  const auto* messages = root->if_contains("messages");
  if (!messages || !messages->is_array()) return "'messages' must be an array";

  const json::value* last_content = nullptr;
  for (const auto& message : messages->get_array()) {
    const auto* object = message.if_object();
    if (!object) return "each message must be an object";
    last_content = object->if_contains("content");
    if (last_content) {
      for_each_text(*last_content, [&](std::string_view text) { chat.prompt_words += count_words(text); });
    }
  }

  // Keep one byte past the limit so the cut below can see whether it splits a UTF-8 sequence.
  const std::size_t keep = reply_prefix.size() + max_echo_bytes + 1;
  reply.assign(reply_prefix);
  if (last_content) {
    for_each_text(*last_content, [&](std::string_view text) {
      if (reply.size() < keep) reply.append(text.substr(0, keep - reply.size()));
    });
  }
  if (reply.size() == keep) {
    std::size_t cut = keep - 1;
    while (cut > reply_prefix.size() && (static_cast<unsigned char>(reply[cut]) & 0xc0) == 0x80)
      --cut;
    reply.resize(cut);
  }
  return {};
}

// One embedding input: a seed for its vector and its prompt-token count.
struct embedding_input {
  std::uint64_t seed;
  std::uint64_t tokens;
};

std::uint64_t fnv1a(std::string_view text, std::uint64_t hash = 0xcbf29ce484222325ull) {
  for (char c : text) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::optional<embedding_input> read_token_array(const json::array& tokens) {
  embedding_input input{0x746f6b656e73ull, tokens.size()};
  for (const auto& token : tokens) {
    if (token.is_int64()) {
      input.seed = mix64(input.seed ^ static_cast<std::uint64_t>(token.get_int64()));
    } else if (token.is_uint64()) {
      input.seed = mix64(input.seed ^ token.get_uint64());
    } else {
      return std::nullopt;
    }
  }
  return input;
}

std::optional<embedding_input> read_embedding_input(const json::value& value) {
  if (const auto* text = value.if_string()) return embedding_input{fnv1a(to_view(*text)), count_words(to_view(*text))};
  if (const auto* tokens = value.if_array()) return read_token_array(*tokens);
  return std::nullopt;
}

void append_embedding(std::string& out, std::size_t index, std::uint64_t seed) {
  out += R"({"object":"embedding","index":)";
  append_uint(out, index);
  out += R"(,"embedding":[)";
  for (int i = 0; i < embedding_dimensions; ++i) {
    if (i != 0) out += ',';
    double value = static_cast<double>(mix64(seed + static_cast<std::uint64_t>(i)) >> 11) * 0x1.0p-52 - 1.0;
    std::array<char, 32> digits;
    auto result = std::to_chars(digits.data(), digits.data() + digits.size(), value, std::chars_format::fixed, 6);
    out.append(digits.data(), result.ptr);
  }
  out += "]}";
}

// Writes the embeddings response for a parsed request into `out`, or returns an error message.
std::string_view write_embeddings(const json::value& document, std::string_view& model, std::string& out) {
  const auto* root = document.if_object();
  if (!root) return "request body must be a JSON object";
  if (const auto* name = root->if_contains("model"); name && name->is_string()) model = to_view(name->get_string());
  const auto* input = root->if_contains("input");
  if (!input) return "'input' is required";

  out.assign(R"({"object":"list","data":[)");
  std::uint64_t tokens = 0;
  const auto* list = input->if_array();
  // A string or a flat token array is one input; any other array holds one input per element.
  bool single = !list || (!list->empty() && list->front().is_number());
  if (single) {
    auto one = read_embedding_input(*input);
    if (!one) return "'input' must be a string, an array of strings or token arrays";
    append_embedding(out, 0, one->seed);
    tokens = one->tokens;
  } else {
    if (list->empty()) return "'input' must not be empty";
    for (std::size_t i = 0; i < list->size(); ++i) {
      auto one = read_embedding_input((*list)[i]);
      if (!one) return "'input' must be a string, an array of strings or token arrays";
      if (i != 0) out += ',';
      append_embedding(out, i, one->seed);
      tokens += one->tokens;
    }
  }
  out += R"(],"model":)";
  append_json_string(out, model.empty() ? default_model : model);
  out += R"(,"usage":{"prompt_tokens":)";
  append_uint(out, tokens);
  out += R"(,"total_tokens":)";
  append_uint(out, tokens);
  out += "}}";
  return {};
}

// --- connections ------------------------------------------------------------------------------------

std::string_view reason_phrase(unsigned status) {
  switch (status) {
  case 200:
    return "OK";
  case 400:
    return "Bad Request";
  case 404:
    return "Not Found";
  case 413:
    return "Payload Too Large";
  case 429:
    return "Too Many Requests";
  default:
    return "Internal Server Error";
  }
}

// Per-connection state, reused by every request on the connection.
template <class Stream> struct connection {
  template <class... Args>
  connection(server_state& state, Args&&... args)
      : stream(std::forward<Args>(args)...), state(state), timer(stream.get_executor()) {}

  Stream stream;
  server_state& state;
  asio::steady_timer timer;
  beast::flat_buffer input;
  bool keep_alive = false;                         // of the request being answered
  bool http10 = false;                             // the request was HTTP/1.0: no chunked encoding, explicit keep-alive
  std::string head;                                // status line and headers, or a chunk-size line
  std::string body;                                // response body or one SSE event
  std::string reply;                               // chat reply text
  std::string chunk_prefix;                        // common start of every streamed chunk object
  std::array<unsigned char, 16 * 1024> json_arena; // backs the parsed request document
};

template <class Stream>
void append_head(connection<Stream>& c, unsigned status, std::string_view content_type,
                 std::optional<std::size_t> content_length, std::string_view extra_headers = {}) {
  c.head += "HTTP/1.1 ";
  append_uint(c.head, status);
  c.head += ' ';
  c.head += reason_phrase(status);
  c.head += "\r\nserver: lowart-mock\r\ncontent-type: ";
  c.head += content_type;
  if (content_length) {
    c.head += "\r\ncontent-length: ";
    append_uint(c.head, *content_length);
  }
  if (!c.keep_alive) {
    c.head += "\r\nconnection: close";
  } else if (c.http10) {
    c.head += "\r\nconnection: keep-alive";
  }
  c.head += "\r\n";
  c.head += extra_headers;
  c.head += "\r\n";
}

// Writes c.head followed by `data`; returns whether the write succeeded.
template <class Stream>
asio::awaitable<bool> write_out(connection<Stream>& c, std::string_view data, std::string_view tail = {}) {
  std::array<asio::const_buffer, 3> buffers{asio::buffer(c.head), asio::buffer(data.data(), data.size()),
                                            asio::buffer(tail.data(), tail.size())};
  auto [ec, written] = co_await asio::async_write(c.stream, buffers, use_tuple);
  c.head.clear();
  co_return !ec;
}

// Sends a complete response; returns whether the connection can take another request.
template <class Stream>
asio::awaitable<bool> send(connection<Stream>& c, unsigned status, std::string_view content_type, std::string_view body,
                           std::string_view extra_headers = {}) {
  c.head.clear();
  append_head(c, status, content_type, body.size(), extra_headers);
  co_return co_await write_out(c, body) && c.keep_alive;
}

template <class Stream>
asio::awaitable<bool> send_error(connection<Stream>& c, unsigned status, std::string_view message) {
  c.body.clear();
  append_error_body(c.body, message);
  co_return co_await send(c, status, json_type, c.body);
}

template <class Stream> asio::awaitable<void> pause(connection<Stream>& c, unsigned ms) {
  c.timer.expires_after(std::chrono::milliseconds(ms));
  co_await c.timer.async_wait(use_tuple);
}

// Aborts the connection with a TCP RST instead of an orderly FIN.
template <class Stream> void reset_connection(connection<Stream>& c) {
  beast::error_code ignored;
  auto& socket = c.stream.lowest_layer();
  socket.set_option(asio::socket_base::linger(true, 0), ignored);
  socket.close(ignored);
}

// Reads and discards until the peer closes the connection.
template <class Stream> asio::awaitable<void> wait_for_close(connection<Stream>& c) {
  std::array<char, 512> scratch;
  for (;;) {
    auto [ec, n] = co_await c.stream.async_read_some(asio::buffer(scratch), use_tuple);
    if (ec) co_return;
  }
}

std::optional<fault> resolve_fault(const request& req, std::string_view model, fault fallback) {
  if (auto header = req.find("x-mock-mode"); header != req.end()) return parse_fault(to_view(header->value()));
  if (model.starts_with("mock-")) {
    if (auto from_model = parse_fault(model.substr(5))) return from_model;
  }
  return fallback;
}

// Runs the part of a fault that comes before any answer. Returns the connection verdict when the
// fault settles the request, or nullopt when the normal answer should follow.
template <class Stream> asio::awaitable<std::optional<bool>> run_fault(connection<Stream>& c, fault f, bool streaming) {
  switch (f.kind) {
  case fault_kind::fail_500:
    co_return co_await send(c, 500, json_type, fail_500_body);
  case fault_kind::fail_429:
    co_return co_await send(c, 429, json_type, fail_429_body, "retry-after: 1\r\n");
  case fault_kind::hang:
    co_await wait_for_close(c);
    co_return false;
  case fault_kind::reset:
    if (streaming) break;
    reset_connection(c);
    co_return false;
  case fault_kind::delay:
    co_await pause(c, f.ms);
    break;
  case fault_kind::ok:
  case fault_kind::slow:
  case fault_kind::no_usage:
    break;
  }
  co_return std::nullopt;
}

std::optional<std::string_view> authorization_of(const request& req) {
  if (auto header = req.find(http::field::authorization); header != req.end()) return to_view(header->value());
  return std::nullopt;
}

// End of the next streamed piece of `text` starting at `begin`: leading whitespace plus one word, or
// everything left when this is the last allowed piece or only whitespace would remain.
std::size_t piece_end(std::string_view text, std::size_t begin, bool last_piece) {
  if (last_piece) return text.size();
  std::size_t i = begin;
  while (i < text.size() && is_space(text[i]))
    ++i;
  while (i < text.size() && !is_space(text[i]))
    ++i;
  std::size_t rest = i;
  while (rest < text.size() && is_space(text[rest]))
    ++rest;
  return rest == text.size() ? rest : i;
}

// Sends c.body as one SSE event (as one chunk unless HTTP/1.0), after c.head if it holds the response
// head; `last` also ends the chunked body.
template <class Stream> asio::awaitable<bool> send_event(connection<Stream>& c, bool last) {
  if (c.http10) co_return co_await write_out(c, c.body);
  std::array<char, 16> size_line;
  auto result = std::to_chars(size_line.data(), size_line.data() + size_line.size(), c.body.size(), 16);
  c.head.append(size_line.data(), result.ptr);
  c.head += "\r\n";
  co_return co_await write_out(c, c.body, last ? "\r\n0\r\n\r\n" : "\r\n");
}

template <class Stream>
asio::awaitable<bool> stream_chat(connection<Stream>& c, const chat_request& chat, std::string_view model,
                                  std::uint64_t id, std::time_t created, fault f) {
  const unsigned delay_ms = f.kind == fault_kind::slow ? f.ms : c.state.opts.chunk_delay_ms;
  const std::string_view usage_null = chat.include_usage ? R"(,"usage":null)" : "";
  if (c.http10) c.keep_alive = false; // HTTP/1.0 has no chunked encoding: the close ends the stream

  c.chunk_prefix.assign(R"(data: {"id":"chatcmpl-mock-)");
  append_uint(c.chunk_prefix, id);
  c.chunk_prefix += R"(","object":"chat.completion.chunk","created":)";
  append_uint(c.chunk_prefix, static_cast<std::uint64_t>(created));
  c.chunk_prefix += R"(,"model":)";
  append_json_string(c.chunk_prefix, model);
  c.chunk_prefix += R"(,"choices":[)";

  auto begin_event = [&] { c.body.assign(c.chunk_prefix); };
  auto end_event = [&](std::string_view choice_end) {
    c.body += choice_end;
    c.body += usage_null;
    c.body += "}\n\n";
  };

  c.head.clear();
  append_head(c, 200, "text/event-stream", std::nullopt,
              c.http10 ? "cache-control: no-cache\r\n" : "cache-control: no-cache\r\ntransfer-encoding: chunked\r\n");
  begin_event();
  end_event(R"({"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}])");
  if (!co_await send_event(c, false)) co_return false;

  const std::string_view text = c.reply;
  unsigned pieces = 0;
  for (std::size_t begin = 0; begin < text.size();) {
    std::size_t end = piece_end(text, begin, pieces + 1 == c.state.opts.stream_chunks);
    if (delay_ms > 0) co_await pause(c, delay_ms);
    begin_event();
    c.body += R"({"index":0,"delta":{"content":)";
    append_json_string(c.body, text.substr(begin, end - begin));
    end_event(R"(},"finish_reason":null}])");
    if (!co_await send_event(c, false)) co_return false;
    begin = end;
    ++pieces;
    if (f.kind == fault_kind::reset && (pieces == 2 || begin == text.size())) {
      reset_connection(c);
      co_return false;
    }
  }

  if (delay_ms > 0) co_await pause(c, delay_ms);
  begin_event();
  end_event(R"({"index":0,"delta":{},"finish_reason":"stop"}])");
  if (!co_await send_event(c, false)) co_return false;

  if (chat.include_usage && f.kind != fault_kind::no_usage) {
    const std::uint64_t completion_words = count_words(text);
    if (delay_ms > 0) co_await pause(c, delay_ms);
    begin_event();
    c.body += R"(],"usage":{"prompt_tokens":)";
    append_uint(c.body, chat.prompt_words);
    c.body += R"(,"completion_tokens":)";
    append_uint(c.body, completion_words);
    c.body += R"(,"total_tokens":)";
    append_uint(c.body, chat.prompt_words + completion_words);
    c.body += "}}\n\n";
    if (!co_await send_event(c, false)) co_return false;
  }

  if (delay_ms > 0) co_await pause(c, delay_ms);
  c.body.assign("data: [DONE]\n\n");
  co_return co_await send_event(c, true) && c.keep_alive;
}

template <class Stream>
asio::awaitable<bool> handle_chat(connection<Stream>& c, const request& req, std::string_view path) {
  json::monotonic_resource arena(c.json_arena.data(), c.json_arena.size());
  boost::system::error_code parse_error;
  json::value document = json::parse(json::string_view(req.body().data(), req.body().size()), parse_error, &arena);
  chat_request chat;
  std::string_view invalid = parse_error ? "request body is not valid JSON" : read_chat(document, chat, c.reply);
  c.state.stats.record(path, authorization_of(req), req.body(), chat.model);
  if (!invalid.empty()) co_return co_await send_error(c, 400, invalid);

  auto f = resolve_fault(req, chat.model, c.state.opts.default_fault);
  if (!f) co_return co_await send_error(c, 400, "unknown x-mock-mode");
  if (auto verdict = co_await run_fault(c, *f, chat.stream)) co_return *verdict;

  const std::string_view model = chat.model.empty() ? default_model : chat.model;
  const std::uint64_t id = c.state.next_id.fetch_add(1, std::memory_order_relaxed);
  const std::time_t created = std::time(nullptr);
  if (chat.stream) co_return co_await stream_chat(c, chat, model, id, created, *f);

  const std::uint64_t completion_words = count_words(c.reply);
  std::string& out = c.body;
  out.assign(R"({"id":"chatcmpl-mock-)");
  append_uint(out, id);
  out += R"(","object":"chat.completion","created":)";
  append_uint(out, static_cast<std::uint64_t>(created));
  out += R"(,"model":)";
  append_json_string(out, model);
  out += R"(,"choices":[{"index":0,"message":{"role":"assistant","content":)";
  append_json_string(out, c.reply);
  out += R"(,"refusal":null},"logprobs":null,"finish_reason":"stop"}])";
  if (f->kind != fault_kind::no_usage) {
    out += R"(,"usage":{"prompt_tokens":)";
    append_uint(out, chat.prompt_words);
    out += R"(,"completion_tokens":)";
    append_uint(out, completion_words);
    out += R"(,"total_tokens":)";
    append_uint(out, chat.prompt_words + completion_words);
    out += "}";
  }
  out += "}";
  co_return co_await send(c, 200, json_type, out);
}

template <class Stream>
asio::awaitable<bool> handle_embeddings(connection<Stream>& c, const request& req, std::string_view path) {
  json::monotonic_resource arena(c.json_arena.data(), c.json_arena.size());
  boost::system::error_code parse_error;
  json::value document = json::parse(json::string_view(req.body().data(), req.body().size()), parse_error, &arena);
  std::string_view model;
  std::string_view invalid = parse_error ? "request body is not valid JSON" : write_embeddings(document, model, c.body);
  c.state.stats.record(path, authorization_of(req), req.body(), model);
  if (!invalid.empty()) co_return co_await send_error(c, 400, invalid);

  auto f = resolve_fault(req, model, c.state.opts.default_fault);
  if (!f) co_return co_await send_error(c, 400, "unknown x-mock-mode");
  if (auto verdict = co_await run_fault(c, *f, false)) co_return *verdict;
  co_return co_await send(c, 200, json_type, c.body);
}

// Answers one request; returns whether the connection can take another.
template <class Stream> asio::awaitable<bool> handle_request(connection<Stream>& c, const request& req) {
  const std::string_view target = to_view(req.target());
  const std::string_view path = target.substr(0, target.find('?'));
  if (req.method() == http::verb::post) {
    if (path.ends_with("/chat/completions")) co_return co_await handle_chat(c, req, path);
    if (path.ends_with("/embeddings")) co_return co_await handle_embeddings(c, req, path);
    if (path.ends_with("/mock/reset")) {
      c.state.stats.reset();
      co_return co_await send(c, 200, json_type, R"({"reset":true})");
    }
  } else if (req.method() == http::verb::get) {
    if (path.ends_with("/models")) co_return co_await send(c, 200, json_type, models_body);
    if (path.ends_with("/healthz")) co_return co_await send(c, 200, "text/plain", "ok");
    if (path.ends_with("/mock/stats")) {
      c.body.clear();
      c.state.stats.append_json(c.body);
      co_return co_await send(c, 200, json_type, c.body);
    }
  }
  co_return co_await send(c, 404, json_type, not_found_body);
}

bool is_protocol_error(const beast::error_code& ec) {
  return ec.category() == beast::error_code(http::error::bad_target).category() && ec != http::error::end_of_stream &&
         ec != http::error::partial_message;
}

template <class Stream> asio::awaitable<void> serve(connection<Stream>& c) {
  static constexpr std::string_view continue_line = "HTTP/1.1 100 Continue\r\n\r\n";
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(max_header_bytes);
    parser.body_limit(max_body_bytes);
    auto [ec, n] = co_await http::async_read_header(c.stream, c.input, parser, use_tuple);
    if (!ec && !parser.is_done()) {
      if (beast::iequals(parser.get()[http::field::expect], "100-continue")) {
        std::tie(ec, std::ignore) = co_await asio::async_write(c.stream, asio::buffer(continue_line), use_tuple);
      }
      if (!ec) std::tie(ec, std::ignore) = co_await http::async_read(c.stream, c.input, parser, use_tuple);
    }
    if (ec) {
      if (is_protocol_error(ec)) {
        c.keep_alive = false;
        c.http10 = false;
        co_await send_error(c, ec == http::error::body_limit ? 413 : 400, "malformed HTTP request: " + ec.message());
      }
      break;
    }
    const request& req = parser.get();
    c.keep_alive = req.keep_alive();
    c.http10 = req.version() == 10;
    if (!co_await handle_request(c, req)) break;
  }
  beast::error_code ignored;
  c.stream.lowest_layer().shutdown(tcp::socket::shutdown_send, ignored);
}

asio::awaitable<void> serve_plain(tcp::socket socket, server_state& state) {
  connection<tcp::socket> c(state, std::move(socket));
  co_await serve(c);
}

asio::awaitable<void> serve_tls(tcp::socket socket, server_state& state, ssl::context& tls) {
  connection<ssl::stream<tcp::socket>> c(state, std::move(socket), tls);
  auto [ec] = co_await c.stream.async_handshake(ssl::stream_base::server, use_tuple);
  if (!ec) co_await serve(c);
}

asio::awaitable<void> accept_loop(asio::io_context& ioc, tcp::acceptor& acceptor, server_state& state,
                                  ssl::context* tls) {
  asio::steady_timer backoff(ioc);
  for (;;) {
    // With several threads each connection gets a strand; with one, the io_context executor is enough.
    asio::any_io_executor executor = state.opts.threads > 1 ? asio::any_io_executor(asio::make_strand(ioc))
                                                            : asio::any_io_executor(ioc.get_executor());
    auto [ec, socket] = co_await acceptor.async_accept(executor, use_tuple);
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) { // e.g. out of file descriptors: back off instead of spinning
      backoff.expires_after(std::chrono::milliseconds(50));
      co_await backoff.async_wait(use_tuple);
      continue;
    }
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    if (tls) {
      asio::co_spawn(executor, serve_tls(std::move(socket), state, *tls), asio::detached);
    } else {
      asio::co_spawn(executor, serve_plain(std::move(socket), state), asio::detached);
    }
  }
}

} // namespace

int main(int argc, char** argv) {
  std::optional<options> parsed = parse_options(argc, argv);
  if (!parsed) return 2;
  const options& opts = *parsed;
  try {
    server_state state(opts);
    std::optional<ssl::context> tls;
    if (!opts.tls_cert.empty()) {
      tls.emplace(ssl::context::tls_server);
      tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                       ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      tls->use_certificate_chain_file(opts.tls_cert);
      tls->use_private_key_file(opts.tls_key, ssl::context::pem);
    }

    asio::io_context ioc(static_cast<int>(opts.threads));
    tcp::resolver resolver(ioc);
    const tcp::endpoint endpoint = resolver.resolve(opts.host, opts.port, tcp::resolver::passive).begin()->endpoint();
    tcp::acceptor acceptor(ioc);
    acceptor.open(endpoint.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(endpoint);
    acceptor.listen(asio::socket_base::max_listen_connections);

    const tcp::endpoint bound = acceptor.local_endpoint();
    const std::string address = bound.address().to_string();
    std::printf(bound.address().is_v6() ? "lowart-mock listening on [%s]:%u\n" : "lowart-mock listening on %s:%u\n",
                address.c_str(), static_cast<unsigned>(bound.port()));
    std::fflush(stdout);

    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&](const beast::error_code&, int) { ioc.stop(); });
    asio::co_spawn(ioc, accept_loop(ioc, acceptor, state, tls ? &*tls : nullptr), asio::detached);

    std::vector<std::thread> workers;
    for (unsigned i = 1; i < opts.threads; ++i)
      workers.emplace_back([&ioc] { ioc.run(); });
    ioc.run();
    for (auto& worker : workers)
      worker.join();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lowart-mock: %s\n", e.what());
    return 1;
  }
  return 0;
}
