#pragma once
// Redaction of captured request and response bodies (the request log's log_bodies): the
// string values of JSON members whose name is on a list become "[redacted]", at any depth,
// in text that need not be whole JSON — a body cut at the capture limit, a stream's SSE
// events, JSON held as a string inside JSON (tool arguments: \"password\":\"...\").

#include <string>
#include <string_view>
#include <vector>

namespace lowart {

/// `fields` are compared without case. Values that are not strings (numbers, objects)
/// are left; a string value cut off by the end of `text` is redacted to its end.
std::string redact_json_text(std::string_view text, const std::vector<std::string>& fields);

} // namespace lowart
