#pragma once
// The one place where a protocol-neutral error kind becomes an HTTP status and an
// error body in the caller's API format (STYLE.md, principle 6).

#include <string>
#include <string_view>

namespace lowart::net {

enum class error_kind {
  bad_request,        ///< 400 malformed JSON, missing field
  unauthorized,       ///< 401 missing or wrong key
  forbidden,          ///< 403 key may not do this
  not_found,          ///< 404 unknown route or model
  method_not_allowed, ///< 405
  payload_too_large,  ///< 413 body over the limit
  headers_too_large,  ///< 431
  rate_limited,       ///< 429
  internal,           ///< 500
  bad_gateway,        ///< 502 upstream unreachable or broken
  unavailable,        ///< 503 draining, storage down
  gateway_timeout,    ///< 504 upstream (or an actor) did not answer in time
};

/// Which envelope an endpoint speaks (jsonrpc: /mcp and the A2A bus at /a2a...).
enum class api_format { openai, anthropic, admin, jsonrpc };

int status_of(error_kind kind);
/// The kind's name ("bad_request", "rate_limited", ...): a refusal's reason code when it has no other.
std::string_view kind_name(error_kind kind);
/// The kind closest to an HTTP status (unknown 4xx: bad_request, unknown 5xx: internal).
error_kind kind_of_status(int status);

/// `{"error":{"message","type","param","code"}}` (OpenAI), `{"type":"error","error":{"type",
/// "message"}}` (Anthropic) or `{"error":{"message","type"}}` (admin).
std::string error_body(api_format format, error_kind kind, std::string_view message, std::string_view code = {},
                       std::string_view param = {});

/// The JSON-RPC 2.0 error code of a kind: -32010 no or bad key, -32011 the key may not,
/// -32000 rate limited, -32600 other client errors, -32603 server-side failures. (The
/// auth codes stay clear of A2A's -32001..-32009 and MCP's own codes.)
int jsonrpc_code(error_kind kind);

/// `{"jsonrpc":"2.0","id":<id_json>,"error":{"code","message","data":{"type","code"?}}}`;
/// `id_json` is the request's id as JSON text ("" or "null" when it has none).
std::string jsonrpc_error_body(std::string_view id_json, error_kind kind, std::string_view message,
                               std::string_view code = {});

/// The id of a JSON-RPC request body as JSON text; "null" when the body is not a JSON
/// object with an id.
std::string jsonrpc_id(std::string_view body);
/// The "method" of a JSON-RPC request object, decoded; "" when there is none (not JSON, a
/// batch, no method).
std::string jsonrpc_method(std::string_view body);

} // namespace lowart::net
