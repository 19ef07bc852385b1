#pragma once
// Checks of a model request's well-known fields before it costs an upstream round trip:
// the types and ranges the vendors' APIs refuse anyway (OpenAI's chat completions,
// Anthropic's messages). Unknown fields are not looked at: they pass through untouched.
// Pure and Beast-free (unit-tested).

#include <simdjson.h>

#include <string>

namespace lowart::net {

struct request_problem {
  std::string param;   ///< "" when the request is fine
  std::string message; ///< in the vendor's words where it has some
  explicit operator bool() const { return !param.empty(); }
};

/// `anthropic`: the body is an Anthropic Messages request, else an OpenAI chat request.
request_problem check_chat_request(simdjson::dom::object body, bool anthropic);

} // namespace lowart::net
