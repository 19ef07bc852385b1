#pragma once
#include <string>
#include <string_view>

namespace lowart {

/// A new request id, unique within this process and unlikely to repeat across
/// processes: "req_" + 8 random hex (per process) + 12 hex of a counter.
std::string new_request_id();

/// Whether a client-supplied x-request-id may be kept: 1-128 characters of
/// [A-Za-z0-9._:-]. Anything else is replaced so logs stay parseable.
bool acceptable_request_id(std::string_view id);

} // namespace lowart
