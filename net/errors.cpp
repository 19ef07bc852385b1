#include "net/errors.hpp"

#include "core/json_text.hpp"

#include <simdjson.h>

namespace lowart::net {

namespace {

struct kind_info {
  int status;
  const char* openai_type;
  const char* anthropic_type;
};

kind_info info(error_kind kind) {
  switch (kind) {
  case error_kind::bad_request:
    return {400, "invalid_request_error", "invalid_request_error"};
  case error_kind::unauthorized:
    return {401, "invalid_request_error", "authentication_error"};
  case error_kind::forbidden:
    return {403, "permission_error", "permission_error"};
  case error_kind::not_found:
    return {404, "invalid_request_error", "not_found_error"};
  case error_kind::method_not_allowed:
    return {405, "invalid_request_error", "invalid_request_error"};
  case error_kind::payload_too_large:
    return {413, "invalid_request_error", "request_too_large"};
  case error_kind::headers_too_large:
    return {431, "invalid_request_error", "invalid_request_error"};
  case error_kind::rate_limited:
    return {429, "rate_limit_error", "rate_limit_error"};
  case error_kind::internal:
    return {500, "server_error", "api_error"};
  case error_kind::bad_gateway:
    return {502, "upstream_error", "api_error"};
  case error_kind::unavailable:
    return {503, "service_unavailable", "overloaded_error"};
  case error_kind::gateway_timeout:
    return {504, "timeout_error", "timeout_error"};
  }
  return {500, "server_error", "api_error"};
}

} // namespace

int status_of(error_kind kind) {
  return info(kind).status;
}

std::string error_body(api_format format, error_kind kind, std::string_view message, std::string_view code,
                       std::string_view param) {
  auto i = info(kind);
  std::string out;
  out.reserve(96 + message.size());
  switch (format) {
  case api_format::openai:
    out += "{\"error\":{\"message\":";
    json::append_quoted(out, message);
    out += ",\"type\":\"";
    out += i.openai_type;
    out += "\",\"param\":";
    out += param.empty() ? std::string("null") : json::quoted(param);
    out += ",\"code\":";
    out += code.empty() ? std::string("null") : json::quoted(code);
    out += "}}";
    break;
  case api_format::anthropic:
    out += "{\"type\":\"error\",\"error\":{\"type\":\"";
    out += i.anthropic_type;
    out += "\",\"message\":";
    json::append_quoted(out, message);
    out += "}}";
    break;
  case api_format::admin:
    out += "{\"error\":{\"message\":";
    json::append_quoted(out, message);
    out += ",\"type\":\"";
    out += code.empty() ? i.openai_type : std::string(code);
    out += "\"}}";
    break;
  case api_format::jsonrpc:
    return jsonrpc_error_body("null", kind, message, code);
  }
  return out;
}

int jsonrpc_code(error_kind kind) {
  switch (kind) {
  case error_kind::unauthorized:
    return -32010;
  case error_kind::forbidden:
    return -32011;
  case error_kind::rate_limited:
    return -32000;
  case error_kind::internal:
  case error_kind::bad_gateway:
  case error_kind::unavailable:
  case error_kind::gateway_timeout:
    return -32603;
  default:
    return -32600;
  }
}

std::string jsonrpc_error_body(std::string_view id_json, error_kind kind, std::string_view message,
                               std::string_view code) {
  json::object_writer data;
  data.str("type", info(kind).anthropic_type);
  if (!code.empty()) data.str("code", code);
  json::object_writer error;
  error.num("code", jsonrpc_code(kind)).str("message", message).raw("data", data.done());
  json::object_writer out;
  out.str("jsonrpc", "2.0").raw("id", id_json.empty() ? std::string_view("null") : id_json).raw("error", error.done());
  return out.done();
}

std::string jsonrpc_id(std::string_view body) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element doc, id;
  if (body.empty() || parser.parse(body.data(), body.size(), true).get(doc) != simdjson::SUCCESS ||
      doc["id"].get(id) != simdjson::SUCCESS)
    return "null";
  if (!id.is_string() && !id.is_number()) return "null"; // JSON-RPC ids are strings or numbers
  return simdjson::minify(id);
}

std::string jsonrpc_method(std::string_view body) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view method;
  if (body.empty() || parser.parse(body.data(), body.size(), true).get(doc) != simdjson::SUCCESS ||
      doc["method"].get_string().get(method) != simdjson::SUCCESS)
    return {};
  return std::string(method); // escapes decoded: "message\/stream" is message/stream
}

std::string_view kind_name(error_kind kind) {
  switch (kind) {
  case error_kind::bad_request:
    return "bad_request";
  case error_kind::unauthorized:
    return "unauthorized";
  case error_kind::forbidden:
    return "forbidden";
  case error_kind::not_found:
    return "not_found";
  case error_kind::method_not_allowed:
    return "method_not_allowed";
  case error_kind::payload_too_large:
    return "payload_too_large";
  case error_kind::headers_too_large:
    return "headers_too_large";
  case error_kind::rate_limited:
    return "rate_limited";
  case error_kind::internal:
    return "internal";
  case error_kind::bad_gateway:
    return "bad_gateway";
  case error_kind::unavailable:
    return "unavailable";
  case error_kind::gateway_timeout:
    return "gateway_timeout";
  }
  return "error";
}

error_kind kind_of_status(int status) {
  switch (status) {
  case 400:
    return error_kind::bad_request;
  case 401:
    return error_kind::unauthorized;
  case 403:
    return error_kind::forbidden;
  case 404:
    return error_kind::not_found;
  case 413:
    return error_kind::payload_too_large;
  case 429:
    return error_kind::rate_limited;
  case 502:
    return error_kind::bad_gateway;
  case 503:
  case 529:
    return error_kind::unavailable;
  case 504:
    return error_kind::gateway_timeout;
  default:
    return status >= 500 ? error_kind::internal : error_kind::bad_request;
  }
}

} // namespace lowart::net
