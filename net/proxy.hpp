#pragma once
#include "net/session.hpp"

namespace lowart::net {

namespace responses {
class exchange;
}

/// chat: POST /v1/chat/completions (OpenAI); messages: POST /v1/messages (Anthropic);
/// either may be served by an upstream of either protocol (net/translate.hpp).
/// responses: POST /v1/responses, served as the chat request its exchange made
/// (net/responses.hpp), or passed through to upstreams that speak Responses.
enum class proxy_kind { chat, embeddings, messages, responses };

/// Serves one OpenAI-compatible request from an upstream deployment: validates the
/// body, picks the deployment from the route snapshot, leases a pooled connection,
/// relays the answer (SSE chunks as they arrive, one write in flight), meters usage
/// and answers the client. Runs entirely on the session's thread.
/// `{"input_tokens":N}` for an Anthropic count_tokens body, counted with lowart's
/// tokenizer (an estimate: Anthropic's tokenizer is not public); "" for a body that is
/// not a JSON object.
std::string count_tokens_body(const bpe_tokenizer* tok, std::string_view body);

void start_proxy(session_ptr client, request_context&& ctx, proxy_kind kind, std::string&& body,
                 std::shared_ptr<responses::exchange> responses = {});

} // namespace lowart::net
