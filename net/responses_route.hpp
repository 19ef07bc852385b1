#pragma once
// The Responses API at the edge: POST /v1/responses (its conversation looked up, then
// served by the proxy like a chat request), and the stored responses of the caller's key
// (GET and DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items).

#include "net/session.hpp"

namespace lowart::net {

/// Serves one request of the "responses" route; the key is already checked (ctx.who).
void serve_responses(session_ptr client, request_context&& ctx, downstream_request& req);

} // namespace lowart::net
