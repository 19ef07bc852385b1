#include "net/routing.hpp"

#include "core/json_text.hpp"

#include <array>
#include <vector>

namespace lowart::net {

namespace {

// (not every method has an endpoint of its own: clang would warn about the unused ones)
[[maybe_unused]] constexpr unsigned get = m_get, head = m_head, post = m_post, put = m_put, patch = m_patch,
                                    del = m_delete;
constexpr unsigned probe = m_get | m_head;
constexpr unsigned edit = m_get | m_put | m_patch | m_delete; // one admin record: read, change, remove
constexpr auto openai = api_format::openai;
constexpr auto anthropic = api_format::anthropic;
constexpr auto admin = api_format::admin;
constexpr auto jsonrpc = api_format::jsonrpc;
constexpr auto none = auth_kind::none;
constexpr auto key = auth_kind::key;

/// A route outside /admin (no RBAC resource).
constexpr route_entry at(unsigned methods, std::string_view pattern, std::string_view label, api_format format = openai,
                         auth_kind auth = key) {
  return {methods, pattern, label, format, auth, {}};
}

/// A route under /admin: the admin envelope, a key, and its RBAC resource.
constexpr route_entry admin_route(unsigned methods, std::string_view pattern, std::string_view resource) {
  return {methods, pattern, "admin", admin, key, resource};
}

// Every endpoint lowart serves, by family. The OpenAI and Anthropic endpoints also
// answer without their "/v1" prefix (SDKs configured with a bare base URL).
constexpr std::array table{
    // Probes, metrics and the web console: public.
    at(probe, "/healthz", "healthz", openai, none),
    at(probe, "/readyz", "readyz", openai, none),
    at(probe, "/metrics", "metrics", openai, none),
    at(probe, "/ui", "ui", openai, none),
    at(probe, "/ui/{file*}", "ui", openai, none),
    // OpenAI- and Anthropic-compatible endpoints.
    at(post, "/v1/chat/completions", "chat"),
    at(post, "/chat/completions", "chat"),
    at(post, "/v1/embeddings", "embeddings"),
    at(post, "/embeddings", "embeddings"),
    at(get, "/v1/models", "models"),
    at(get, "/models", "models"),
    at(post, "/v1/messages", "messages", anthropic),
    at(post, "/messages", "messages", anthropic),
    at(post, "/v1/messages/count_tokens", "count_tokens", anthropic),
    at(post, "/messages/count_tokens", "count_tokens", anthropic),
    // The Responses API; a stored response belongs to the key that made it.
    at(post, "/v1/responses", "responses"),
    at(post, "/responses", "responses"),
    at(get | del, "/v1/responses/{id}", "responses"),
    at(get | del, "/responses/{id}", "responses"),
    at(get, "/v1/responses/{id}/input_items", "responses"),
    at(get, "/responses/{id}/input_items", "responses"),
    // Background jobs (a job belongs to the key that made it).
    at(get | post, "/v1/jobs", "jobs"),
    at(get | post, "/jobs", "jobs"),
    at(get | del, "/v1/jobs/{id}", "jobs"),
    at(get, "/v1/jobs/{id}/files/{file}", "jobs"),
    at(post, "/v1/images/generations", "jobs"),
    at(post, "/images/generations", "jobs"),
    // Tools: the REST surface and lowart's own MCP endpoint (GET /mcp: no SSE stream).
    at(get, "/v1/mcp/tools", "mcp"),
    at(post, "/v1/mcp/tools/call", "mcp"),
    at(get, "/v1/mcp/calls/{id}", "mcp"),
    at(post | del, "/mcp", "mcp", jsonrpc),
    // The agent bus: public cards, JSON-RPC for senders, the agents' own API.
    at(get, "/.well-known/agent-card.json", "a2a", openai, none),
    at(get, "/a2a/{name}/.well-known/agent-card.json", "a2a", openai, none),
    at(post, "/a2a", "a2a", jsonrpc),
    at(post, "/a2a/{name}", "a2a", jsonrpc),
    at(get | post, "/v1/agents", "a2a"),
    at(get | del, "/v1/agents/{name}", "a2a"),
    at(get, "/v1/agents/{name}/tasks", "a2a"),
    at(post, "/v1/agents/{name}/tasks/{id}/ack", "a2a"),
    at(post, "/v1/agents/{name}/tasks/{id}/status", "a2a"),
    // Self-service: a key's own keys and usage.
    at(get, "/v1/me", "me"),
    at(get | post, "/v1/me/keys", "me"),
    at(del, "/v1/me/keys/{id}", "me"),
    at(get, "/v1/me/usage", "me"),
    // The admin API (rbac.hpp decides who may use which resource).
    admin_route(get | post, "/admin/teams", "teams"),
    admin_route(edit, "/admin/teams/{id}", "teams"),
    admin_route(get | post, "/admin/users", "users"),
    admin_route(edit, "/admin/users/{id}", "users"),
    admin_route(get | post, "/admin/keys", "keys"),
    admin_route(edit, "/admin/keys/{id}", "keys"),
    admin_route(post, "/admin/keys/{id}/rotate", "keys"),
    admin_route(get | post, "/admin/providers", "providers"),
    admin_route(edit, "/admin/providers/{name}", "providers"),
    admin_route(get | post, "/admin/models", "models"),
    admin_route(edit, "/admin/models/{name}", "models"),
    admin_route(get, "/admin/prices", "prices"),
    admin_route(edit, "/admin/prices/{model}", "prices"),
    admin_route(get, "/admin/audit", "audit"),
    admin_route(get, "/admin/usage", "usage"),
    admin_route(get, "/admin/logs", "logs"),
    admin_route(get, "/admin/logs/{request_id}", "logs"),
    admin_route(get, "/admin/breakers", "breakers"),
    admin_route(get, "/admin/mcp", "mcp"),
    admin_route(post, "/admin/mcp/register", "mcp"),
    admin_route(del, "/admin/mcp/{name}", "mcp"),
    admin_route(get | post, "/admin/mcp/policies", "mcp"),
    admin_route(del, "/admin/mcp/policies/{id}", "mcp"),
    admin_route(get, "/admin/approvals", "approvals"),
    admin_route(get, "/admin/approvals/{id}", "approvals"),
    admin_route(post, "/admin/approvals/{id}/approve", "approvals"),
    admin_route(post, "/admin/approvals/{id}/deny", "approvals"),
    admin_route(get, "/admin/scripts", "scripts"),
    admin_route(get | put | post | del, "/admin/scripts/{name}", "scripts"),
    admin_route(get, "/admin/jobs", "jobs"),
    admin_route(get | del, "/admin/jobs/{id}", "jobs"),
    admin_route(get, "/admin/jobs/{id}/files/{file}", "jobs"),
    admin_route(get | post, "/admin/agents", "agents"),
    admin_route(get, "/admin/agents/tasks", "agents"),
    admin_route(get, "/admin/agents/dead-letters", "agents"),
    admin_route(post, "/admin/agents/dead-letters/{id}/replay", "agents"),
    admin_route(get | del, "/admin/agents/{name}", "agents"),
};

/// How many literal characters of `pattern` match `path`; -1 when it does not match.
int match(std::string_view pattern, std::string_view path) {
  std::size_t i = 0, j = 0;
  int literal = 0;
  while (i < pattern.size()) {
    if (pattern[i] == '{') {
      auto close = pattern.find('}', i);
      if (close == std::string_view::npos) return -1;
      if (pattern[close - 1] == '*') return literal; // the rest of the path, whatever it is
      auto end = path.find('/', j);
      if (end == std::string_view::npos) end = path.size();
      if (end == j) return -1; // a parameter is never empty
      j = end;
      i = close + 1;
      continue;
    }
    if (j >= path.size() || pattern[i] != path[j]) return -1;
    ++i;
    ++j;
    ++literal;
  }
  return j == path.size() ? literal : -1;
}

constexpr std::array<std::pair<unsigned, std::string_view>, 6> method_table{
    {{m_get, "GET"}, {m_head, "HEAD"}, {m_post, "POST"}, {m_put, "PUT"}, {m_patch, "PATCH"}, {m_delete, "DELETE"}}};

std::string_view format_name(api_format f) {
  switch (f) {
  case api_format::openai:
    return "openai";
  case api_format::anthropic:
    return "anthropic";
  case api_format::admin:
    return "admin";
  case api_format::jsonrpc:
    return "jsonrpc";
  }
  return "openai";
}

} // namespace

std::span<const route_entry> route_table() {
  return table;
}

namespace {
const route_entry* scan_routes(std::string_view path) {
  const route_entry* best = nullptr;
  int best_literal = -1;
  for (const auto& r : table) {
    // Most paths differ from most patterns in their first characters: a cheap test first.
    if (r.pattern.size() > 1 && (path.size() < 2 || path[1] != r.pattern[1])) continue;
    if (int n = match(r.pattern, path); n > best_literal) {
      best = &r;
      best_literal = n;
    }
  }
  return best;
}
} // namespace

const route_entry* find_route(std::string_view path) {
  // A connection (and a thread) asks for the same few paths again and again: the last
  // answer is kept per thread, so the scan of the table runs when the path changes. The
  // table is constant, so a kept answer never goes stale.
  thread_local std::string last_path;
  thread_local const route_entry* last_entry = nullptr;
  thread_local bool known = false;
  if (known && path == last_path) return last_entry;
  last_entry = scan_routes(path);
  if (path.size() <= 256) { // ids in paths vary; a long one is not worth keeping
    last_path.assign(path);
    known = true;
  } else {
    known = false;
  }
  return last_entry;
}

unsigned method_bit_of(std::string_view method) {
  for (const auto& [bit, name] : method_table)
    if (name == method) return bit;
  return 0;
}

std::string method_names(unsigned methods, std::string_view separator) {
  std::string out;
  for (const auto& [bit, name] : method_table)
    if (methods & bit) {
      if (!out.empty()) out += separator;
      out += name;
    }
  return out;
}

std::string route_json(const route_entry& r) {
  std::vector<std::string> methods;
  for (const auto& [bit, name] : method_table)
    if (r.methods & bit) methods.emplace_back(name);
  json::object_writer w;
  w.raw("methods", json::string_array(methods))
      .str("path", r.pattern)
      .str("route", r.label)
      .str("format", format_name(r.format))
      .str("auth", r.auth == auth_kind::none ? "public" : "key")
      .str_or_null("resource", r.resource);
  return w.done();
}

std::string_view strip_query(std::string_view target) {
  return target.substr(0, target.find('?'));
}

route_info unlisted_route(std::string_view path) {
  if (path.rfind("/admin/", 0) == 0 || path == "/admin") return {"admin", api_format::admin};
  if (path.rfind("/a2a/", 0) == 0) return {"other", api_format::jsonrpc}; // the bus answers in JSON-RPC
  return {};
}

route_info route_of(std::string_view path) {
  if (const auto* r = find_route(path)) return {r->label, r->format};
  return unlisted_route(path);
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
