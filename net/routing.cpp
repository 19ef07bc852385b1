#include "net/routing.hpp"

namespace lowart::net {

std::string_view strip_query(std::string_view target) {
  return target.substr(0, target.find('?'));
}

route_info route_of(std::string_view path) {
  auto under_v1 = [&](std::string_view suffix) {
    return path == suffix ||
           (path.size() == suffix.size() + 3 && path.rfind("/v1", 0) == 0 && path.substr(3) == suffix);
  };
  if (path == "/healthz") return {"healthz"};
  if (path == "/readyz") return {"readyz"};
  if (path == "/metrics") return {"metrics"};
  if (path.rfind("/admin/", 0) == 0 || path == "/admin") return {"admin", api_format::admin};
  if (under_v1("/chat/completions")) return {"chat"};
  if (under_v1("/embeddings")) return {"embeddings"};
  if (under_v1("/models")) return {"models"};
  // Anthropic's endpoints answer in Anthropic's envelope, from the first refusal on.
  if (under_v1("/messages")) return {"messages", api_format::anthropic};
  if (under_v1("/messages/count_tokens")) return {"count_tokens", api_format::anthropic};
  if (path == "/a2a" || path.rfind("/a2a/", 0) == 0 || path == "/.well-known/agent-card.json" || under_v1("/agents") ||
      path.rfind("/v1/agents/", 0) == 0)
    return {"a2a"};
  if (under_v1("/jobs") || path.rfind("/v1/jobs/", 0) == 0 || under_v1("/images/generations")) return {"jobs"};
  if (path == "/mcp" || path == "/v1/mcp/tools" || path == "/v1/mcp/tools/call" ||
      (path.rfind("/v1/mcp/calls/", 0) == 0 && path.size() > 14))
    return {"mcp"};
  return {};
}

std::string_view presented_key(bool has_authorization, std::string_view authorization, std::string_view x_api_key) {
  if (has_authorization) {
    if (authorization.size() > 7 &&
        (authorization.substr(0, 7) == "Bearer " || authorization.substr(0, 7) == "bearer "))
      return authorization.substr(7);
    return {};
  }
  return x_api_key;
}

} // namespace lowart::net
