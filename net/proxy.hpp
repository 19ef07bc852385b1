#pragma once
#include "net/session.hpp"

namespace lowart::net {

enum class proxy_kind { chat, embeddings };

/// Serves one OpenAI-compatible request from an upstream deployment: validates the
/// body, picks the deployment from the route snapshot, leases a pooled connection,
/// relays the answer (SSE chunks as they arrive, one write in flight), meters usage
/// and answers the client. Runs entirely on the session's thread.
void start_proxy(session_ptr client, request_context&& ctx, proxy_kind kind, std::string&& body);

} // namespace lowart::net
