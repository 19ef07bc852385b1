#include "net/usage_count.hpp"

#include <simdjson.h>

#include <algorithm>

namespace lowart::net {

namespace {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::object;

/// This module's parser per thread (a document lives until its parser parses again, and
/// the proxy's own parser may hold one).
simdjson::dom::parser& thread_parser() {
  thread_local simdjson::dom::parser parser;
  return parser;
}

/// Parses `text` where it is (room for simdjson's padding is made at its end).
bool parse_in_place(std::string& text, element& doc) {
  text.reserve(text.size() + simdjson::SIMDJSON_PADDING);
  return thread_parser().parse(text.data(), text.size(), false).get(doc) == simdjson::SUCCESS;
}

/// Parses `text` through a reused padded buffer.
bool parse(std::string_view text, element& doc) {
  auto& parser = thread_parser();
  thread_local std::string buf;
  if (buf.capacity() > 1024 * 1024 && text.size() < 64 * 1024) {
    std::string().swap(buf); // after a huge answer
    parser = simdjson::dom::parser{};
  }
  buf.reserve(text.size() + simdjson::SIMDJSON_PADDING);
  buf.assign(text);
  return parser.parse(buf.data(), buf.size(), false).get(doc) == simdjson::SUCCESS;
}

std::string_view string_at(element e, std::string_view key) {
  std::string_view s;
  return e[key].get_string().get(s) == simdjson::SUCCESS ? s : std::string_view{};
}

std::uint32_t index_at(element e, std::string_view key, std::uint32_t fallback) {
  std::int64_t v = 0;
  if (e[key].get_int64().get(v) != simdjson::SUCCESS || v < 0 || v > 1'000'000) return fallback;
  return static_cast<std::uint32_t>(v);
}

// Segment kinds: one text per kind, choice and index.
enum kind : std::uint8_t {
  content,
  refusal,
  reasoning,
  tool_name,
  tool_arguments,
  function_name,
  function_arguments,
  block_text, ///< Anthropic: text, thinking or a tool_use's input JSON of block `index`
  block_name, ///< Anthropic: a tool_use block's name
};

} // namespace

// --- prompt ------------------------------------------------------------------------------------

own_count count_prompt(const bpe_tokenizer& tok, prompt_shape shape, element doc, std::string_view encoding) {
  own_count out;
  auto n = [&](std::string_view text) { out.tokens += static_cast<std::int64_t>(tok.count(text)); };
  std::string_view s;
  if (shape == prompt_shape::embeddings) {
    array inputs;
    if (doc["input"].get_string().get(s) == simdjson::SUCCESS) {
      n(s);
    } else if (doc["input"].get_array().get(inputs) == simdjson::SUCCESS) {
      for (auto in : inputs) {
        array ids;
        if (in.get_string().get(s) == simdjson::SUCCESS)
          n(s);
        else if (in.is_int64())
          ++out.tokens; // the input is already token ids
        else if (in.get_array().get(ids) == simdjson::SUCCESS)
          out.tokens += static_cast<std::int64_t>(ids.size());
      }
    }
    return out;
  }
  const bool anthropic = shape == prompt_shape::anthropic_messages;
  out.estimated = anthropic; // Anthropic's tokenizer is not public
  // A content value: a string, or an array of parts (OpenAI) / blocks (Anthropic).
  auto content = [&](element c) {
    if (c.get_string().get(s) == simdjson::SUCCESS) return n(s);
    array parts;
    if (c.get_array().get(parts) != simdjson::SUCCESS) return;
    if (parts.size() != 1) out.estimated = true; // how parts are joined is not documented
    for (auto part : parts) {
      auto type = string_at(part, "type");
      element inner;
      if (type == "text" || (type.empty() && part["text"].is_string())) {
        n(string_at(part, "text"));
        continue;
      }
      out.estimated = true;
      if (type == "image_url" || type == "image" || type == "input_image") {
        out.tokens += image_tokens;
      } else if (type == "refusal") {
        n(string_at(part, "refusal"));
      } else if (type == "tool_use" || type == "server_tool_use") {
        n(string_at(part, "name"));
        if (part["input"].get(inner) == simdjson::SUCCESS) n(simdjson::minify(inner));
      } else if (type == "tool_result" && part["content"].get(inner) == simdjson::SUCCESS) {
        array blocks;
        if (inner.get_string().get(s) == simdjson::SUCCESS)
          n(s);
        else if (inner.get_array().get(blocks) == simdjson::SUCCESS)
          for (auto b : blocks)
            n(string_at(b, "text"));
      }
      // audio, files, documents: not counted (their cost is not documented in tokens).
    }
  };
  // Tool definitions, as the cookbook's num_tokens_for_tools counts them.
  auto definitions = [&](array tools) {
    if (tools.size() == 0) return;
    out.estimated = true;
    const std::int64_t func_init = encoding == "cl100k_base" ? 10 : 7, prop_init = 3, prop_key = 3, enum_init = -3,
                       enum_item = 3, func_end = 12;
    auto trimmed = [](std::string_view d) { return d.ends_with('.') ? d.substr(0, d.size() - 1) : d; };
    for (auto t : tools) {
      element f = t;
      if (element inner; t["function"].get(inner) == simdjson::SUCCESS) f = inner;
      out.tokens += func_init;
      std::string line(string_at(f, "name"));
      line += ':';
      line += trimmed(string_at(f, "description"));
      n(line);
      object props;
      if ((anthropic ? f["input_schema"] : f["parameters"])["properties"].get_object().get(props) !=
              simdjson::SUCCESS ||
          props.size() == 0)
        continue;
      out.tokens += prop_init;
      for (auto [key, p] : props) {
        out.tokens += prop_key;
        array items;
        if (p["enum"].get_array().get(items) == simdjson::SUCCESS) {
          out.tokens += enum_init;
          for (auto item : items) {
            out.tokens += enum_item;
            n(item.get_string().get(s) == simdjson::SUCCESS ? std::string(s) : simdjson::minify(item));
          }
        }
        line.assign(key);
        line += ':';
        line += string_at(p, "type");
        line += ':';
        line += trimmed(string_at(p, "description"));
        n(line);
      }
    }
    out.tokens += func_end;
  };
  array list;
  if (doc["tools"].get_array().get(list) == simdjson::SUCCESS) definitions(list);
  if (!anthropic && doc["functions"].get_array().get(list) == simdjson::SUCCESS) definitions(list);
  element system;
  if (anthropic && doc["system"].get(system) == simdjson::SUCCESS) {
    out.tokens += 3;
    content(system);
  }
  array messages;
  if (doc["messages"].get_array().get(messages) != simdjson::SUCCESS) return out;
  for (auto m : messages) {
    out.tokens += 3;
    object fields;
    if (m.get_object().get(fields) != simdjson::SUCCESS) continue;
    for (auto [key, value] : fields) {
      if (value.get_string().get(s) == simdjson::SUCCESS) {
        n(s);
        if (key == "name") out.tokens += 1;
      } else if (key == "content") {
        content(value);
      } else if (key == "tool_calls" || key == "function_call") {
        // The history's calls: their name and arguments (the framing is not documented).
        out.estimated = true;
        auto call = [&](element c) {
          element f = c;
          if (element inner; c["function"].get(inner) == simdjson::SUCCESS) f = inner;
          n(string_at(f, "name"));
          n(string_at(f, "arguments"));
        };
        array calls;
        if (value.get_array().get(calls) == simdjson::SUCCESS)
          for (auto c : calls)
            call(c);
        else
          call(value);
      }
    }
  }
  out.tokens += 3; // every reply is primed with <|start|>assistant<|message|>
  return out;
}

// --- completion --------------------------------------------------------------------------------

void completion_text::reset(protocol upstream) {
  anthropic_ = upstream == protocol::anthropic;
  events_.clear();
  body_.clear();
  segments_.clear();
  text_bytes_ = 0;
  settled_ = 0;
  estimated_ = calls_ = false;
  last_ = 0;
  counted_by_ = nullptr;
}

void completion_text::add_event(std::string_view data, const bpe_tokenizer* tok) {
  counted_by_ = nullptr;
  if (data.empty()) return;
  if (events_.capacity() < 2048) events_.reserve(2048); // one allocation for a typical answer, not one per doubling
  events_ += data;
  events_ += '\x1e'; // valid JSON cannot hold it raw
  if (events_.size() > max_events_) read_events(tok);
}

void completion_text::set_body(std::string_view body) {
  events_.clear();
  segments_.clear();
  text_bytes_ = 0;
  counted_by_ = nullptr;
  body_.assign(body);
}

std::size_t completion_text::held() const {
  return events_.size() + body_.size() + text_bytes_;
}

void completion_text::append(std::uint8_t kind, std::uint32_t choice, std::uint32_t index, std::string_view text) {
  if (text.empty()) return;
  // A call's name and arguments are what the vendor counts, less its undocumented framing.
  if (kind == tool_name || kind == function_name || kind == block_name) calls_ = true;
  auto same = [&](const segment& s) { return s.kind == kind && s.choice == choice && s.index == index; };
  if (last_ >= segments_.size() || !same(segments_[last_])) {
    auto it = std::find_if(segments_.begin(), segments_.end(), same);
    if (it == segments_.end()) {
      segments_.push_back(segment{kind, choice, index, {}});
      it = segments_.end() - 1;
    }
    last_ = static_cast<std::size_t>(it - segments_.begin());
  }
  segments_[last_].text += text;
  text_bytes_ += text.size();
}

void completion_text::read_document(std::string_view json) {
  element doc;
  if (!json.empty() && parse(json, doc)) read_element(doc);
}

void completion_text::read_element(element doc) {
  std::string_view s;
  if (anthropic_) {
    auto type = string_at(doc, "type");
    auto index = index_at(doc, "index", 0);
    if (type == "content_block_delta") {
      element delta;
      if (doc["delta"].get(delta) != simdjson::SUCCESS) return;
      if (delta["text"].get_string().get(s) == simdjson::SUCCESS ||
          delta["partial_json"].get_string().get(s) == simdjson::SUCCESS ||
          delta["thinking"].get_string().get(s) == simdjson::SUCCESS)
        append(block_text, 0, index, s);
    } else if (type == "content_block_start") {
      element block;
      if (doc["content_block"].get(block) != simdjson::SUCCESS) return;
      append(block_name, 0, index, string_at(block, "name"));
      if (block["text"].get_string().get(s) == simdjson::SUCCESS ||
          block["thinking"].get_string().get(s) == simdjson::SUCCESS)
        append(block_text, 0, index, s);
    } else if (type == "message") {
      // A whole answer: its blocks, a tool_use's input as compact JSON.
      array blocks;
      if (doc["content"].get_array().get(blocks) != simdjson::SUCCESS) return;
      std::uint32_t i = 0;
      for (auto b : blocks) {
        element input;
        append(block_name, 0, i, string_at(b, "name"));
        if (b["text"].get_string().get(s) == simdjson::SUCCESS ||
            b["thinking"].get_string().get(s) == simdjson::SUCCESS)
          append(block_text, 0, i, s);
        else if (b["input"].get(input) == simdjson::SUCCESS)
          append(block_text, 0, i, simdjson::minify(input));
        ++i;
      }
    }
    return;
  }
  // One pass over each object's fields (a key lookup scans the keys: several per event
  // cost as much as the parse).
  object root;
  if (doc.get_object().get(root) != simdjson::SUCCESS) return;
  array choices;
  bool found = false;
  for (auto [key, value] : root)
    if (key == "choices") found = value.get_array().get(choices) == simdjson::SUCCESS;
  if (!found) return;
  std::uint32_t position = 0;
  for (auto c : choices) {
    object fields;
    if (c.get_object().get(fields) != simdjson::SUCCESS) continue;
    std::uint32_t choice = position++;
    object message;
    bool has_message = false;
    for (auto [key, value] : fields) {
      if (key == "index") {
        std::int64_t v = 0;
        if (value.get_int64().get(v) == simdjson::SUCCESS && v >= 0 && v <= 1'000'000)
          choice = static_cast<std::uint32_t>(v);
      } else if ((key == "delta" || key == "message") && !has_message) {
        has_message = value.get_object().get(message) == simdjson::SUCCESS;
      }
    }
    if (!has_message) continue;
    std::string_view text, refused, reasoning_content, reasoning_text;
    array calls;
    element call_fn;
    bool has_calls = false, has_fn = false;
    auto str = [](element v) {
      std::string_view out;
      return v.get_string().get(out) == simdjson::SUCCESS ? out : std::string_view{};
    };
    for (auto [key, value] : message) {
      if (key == "content") {
        text = str(value);
      } else if (key == "refusal") {
        refused = str(value);
      } else if (key == "reasoning_content") {
        reasoning_content = str(value);
      } else if (key == "reasoning") {
        reasoning_text = str(value);
      } else if (key == "tool_calls") {
        has_calls = value.get_array().get(calls) == simdjson::SUCCESS;
      } else if (key == "function_call" && value.is_object()) {
        call_fn = value;
        has_fn = true;
      }
    }
    append(content, choice, 0, text);
    append(refusal, choice, 0, refused);
    append(reasoning, choice, 0, reasoning_content.empty() ? reasoning_text : reasoning_content);
    if (has_calls) {
      std::uint32_t k = 0;
      for (auto call : calls) {
        auto index = index_at(call, "index", k++);
        element fn;
        if (call["function"].get(fn) != simdjson::SUCCESS) continue;
        append(tool_name, choice, index, string_at(fn, "name"));
        append(tool_arguments, choice, index, string_at(fn, "arguments"));
      }
    }
    if (has_fn) {
      append(function_name, choice, 0, string_at(call_fn, "name"));
      append(function_arguments, choice, 0, string_at(call_fn, "arguments"));
    }
  }
}

void completion_text::read_events(const bpe_tokenizer* tok) {
  if (!events_.empty()) {
    // One parse for all held events, as the elements of one JSON array: a parse has a
    // fixed cost that dominated parsing them one by one. An event that is not JSON spoils
    // the array; then each is parsed on its own.
    thread_local std::string batch;
    batch.clear();
    batch.reserve(events_.size() + 2 + simdjson::SIMDJSON_PADDING);
    batch += '[';
    std::size_t n = 0;
    auto each = [&](auto&& f) {
      std::string_view rest = events_;
      while (!rest.empty()) {
        auto end = rest.find('\x1e');
        f(rest.substr(0, end));
        rest.remove_prefix(end == std::string_view::npos ? rest.size() : end + 1);
      }
    };
    each([&](std::string_view e) {
      if (n++) batch += ',';
      batch += e;
    });
    batch += ']';
    element doc;
    array all;
    if (parse_in_place(batch, doc) && doc.get_array().get(all) == simdjson::SUCCESS && all.size() == n) {
      for (auto e : all)
        read_element(e);
    } else {
      each([&](std::string_view e) { read_document(e); });
    }
    if (batch.capacity() > 2 * max_events_ + 4096) std::string().swap(batch);
  }
  events_.clear();
  if (!body_.empty()) {
    read_document(body_);
    body_.clear();
  }
  if (tok && text_bytes_ > max_text_) settle(*tok, max_text_ / 2);
}

void completion_text::settle(const bpe_tokenizer& tok, std::size_t keep) {
  // Largest segments first, until what is held is under `keep`.
  while (text_bytes_ > keep) {
    auto it = std::max_element(segments_.begin(), segments_.end(),
                               [](const segment& a, const segment& b) { return a.text.size() < b.text.size(); });
    if (it == segments_.end() || it->text.size() <= bpe_tokenizer::settle_margin) return;
    std::size_t used = 0;
    settled_ += static_cast<std::int64_t>(tok.count_settled(it->text, used));
    if (used == 0 || it->text.size() - used > max_text_ / 2) {
      // No cut that later text cannot move: count what is there as it stands.
      settled_ += static_cast<std::int64_t>(tok.count(std::string_view(it->text).substr(used)));
      used = it->text.size();
      estimated_ = true;
    }
    it->text.erase(0, used);
    text_bytes_ -= used;
  }
}

own_count completion_text::count(const bpe_tokenizer& tok) {
  if (counted_by_ == &tok) return last_count_;
  if (!events_.empty() || !body_.empty()) read_events(&tok);
  own_count out;
  out.tokens = settled_;
  out.estimated = estimated_ || calls_;
  for (const auto& s : segments_)
    out.tokens += static_cast<std::int64_t>(tok.count(s.text));
  counted_by_ = &tok;
  last_count_ = out;
  return out;
}

} // namespace lowart::net
