#pragma once
// What a request is, from its target and credential headers alone: the route (the
// metrics label and what serves it), the error envelope it answers in, and the key it
// presents. Pure and Beast-free, so it is unit-tested and fuzzed with the HTTP parser.

#include "net/errors.hpp"

#include <string_view>

namespace lowart::net {

struct route_info {
  std::string_view route = "other"; ///< healthz, readyz, metrics, admin, chat, embeddings, models,
                                    ///< messages, count_tokens, mcp, other
  api_format format = api_format::openai;
};

/// The path of a request target, without its query string.
std::string_view strip_query(std::string_view target);

/// Classifies a path (without query). "/v1" is optional before the OpenAI and Anthropic
/// endpoints.
route_info route_of(std::string_view path);

/// The credential a client presents: `Authorization: Bearer X` (X) or `x-api-key: X`;
/// "" when neither (an Authorization header that is not a bearer token presents none).
std::string_view presented_key(bool has_authorization, std::string_view authorization, std::string_view x_api_key);

} // namespace lowart::net
