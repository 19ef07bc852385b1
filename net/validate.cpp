#include "net/validate.hpp"

#include <string_view>

namespace lowart::net {
namespace {

using simdjson::dom::element;

/// The field, when present and not null.
bool field(simdjson::dom::object body, std::string_view name, element& out) {
  return body[name].get(out) == simdjson::SUCCESS && !out.is_null();
}

request_problem integer_at_least(simdjson::dom::object body, std::string_view name, std::int64_t min) {
  element e;
  if (!field(body, name, e)) return {};
  std::int64_t v = 0;
  if (!e.is_int64() && !e.is_uint64())
    return {std::string(name), "Invalid type for '" + std::string(name) + "': expected an integer."};
  if (e.get_int64().get(v) != simdjson::SUCCESS || v < min)
    return {std::string(name),
            "Invalid '" + std::string(name) + "': must be an integer of at least " + std::to_string(min) + "."};
  return {};
}

request_problem number_in(simdjson::dom::object body, std::string_view name, double lo, double hi) {
  element e;
  if (!field(body, name, e)) return {};
  double v = 0;
  if (e.get_double().get(v) != simdjson::SUCCESS)
    return {std::string(name), "Invalid type for '" + std::string(name) + "': expected a number."};
  if (v < lo || v > hi) {
    auto bound = [](double x) {
      auto s = std::to_string(x);
      s.erase(s.find_last_not_of('0') + 1);
      if (s.back() == '.') s.pop_back();
      return s;
    };
    return {std::string(name),
            "Invalid '" + std::string(name) + "': must be between " + bound(lo) + " and " + bound(hi) + "."};
  }
  return {};
}

request_problem boolean(simdjson::dom::object body, std::string_view name) {
  element e;
  if (field(body, name, e) && !e.is_bool())
    return {std::string(name), "Invalid type for '" + std::string(name) + "': expected a boolean."};
  return {};
}

} // namespace

request_problem check_chat_request(simdjson::dom::object body, bool anthropic) {
  element messages;
  if (body["messages"].get(messages) != simdjson::SUCCESS)
    return {"messages", "Missing required parameter: 'messages'."};
  simdjson::dom::array list;
  if (messages.get_array().get(list) != simdjson::SUCCESS)
    return {"messages", "Invalid type for 'messages': expected an array of message objects."};
  std::size_t i = 0;
  for (auto m : list) {
    if (!m.is_object())
      return {"messages", "Invalid type for 'messages[" + std::to_string(i) + "]': expected an object."};
    ++i;
  }
  if (!anthropic && i == 0) return {"messages", "Invalid 'messages': empty array. Expected at least one message."};
  if (auto p = integer_at_least(body, "max_tokens", 1)) return p;
  if (auto p = boolean(body, "stream")) return p;
  if (auto p = number_in(body, "temperature", 0, anthropic ? 1 : 2)) return p;
  if (auto p = number_in(body, "top_p", 0, 1)) return p;
  if (anthropic) {
    if (auto p = integer_at_least(body, "top_k", 0)) return p;
    return {};
  }
  if (auto p = integer_at_least(body, "max_completion_tokens", 1)) return p;
  if (auto p = integer_at_least(body, "n", 1)) return p;
  if (auto p = number_in(body, "presence_penalty", -2, 2)) return p;
  if (auto p = number_in(body, "frequency_penalty", -2, 2)) return p;
  if (auto p = boolean(body, "parallel_tool_calls")) return p;
  return {};
}

} // namespace lowart::net
