#pragma once
// What a request is, from its target and credential headers alone: the route (the
// metrics label and what serves it), the error envelope it answers in, and the key it
// presents. Pure and Beast-free, so it is unit-tested and fuzzed with the HTTP parser.
//
// The route table below lists every endpoint lowart serves. It is authoritative: the
// session answers a path it does not list with 404 and a method it does not list for
// the path with 405, before authentication, so an endpoint missing here cannot be
// reached. The metrics label, the error envelope, the auth kind and the RBAC resource
// of a request come from its entry; `lowart --routes` prints the table (JSON lines) and
// tests/e2e/tenant_matrix.test.mjs fails when a route has no row there.

#include "net/errors.hpp"

#include <span>
#include <string>
#include <string_view>

namespace lowart::net {

struct route_info {
  std::string_view route = "other"; ///< the metrics label: healthz, readyz, metrics, ui, admin, me, chat,
                                    ///< embeddings, models, messages, count_tokens, responses, jobs, mcp,
                                    ///< a2a, other
  api_format format = api_format::openai;
};

/// The methods of a route, as bits.
enum method_bit : unsigned {
  m_get = 1,
  m_head = 2,
  m_post = 4,
  m_put = 8,
  m_patch = 16,
  m_delete = 32,
};

/// Who may call an endpoint: anyone (probes, the console's files, agent cards), or a key.
enum class auth_kind { none, key };

/// One endpoint. `pattern` is literal except for `{name}` (one non-empty path segment)
/// and a final `{name*}` (the rest of the path, possibly empty or with slashes).
struct route_entry {
  unsigned methods = 0;
  std::string_view pattern;
  std::string_view label; ///< route_info::route
  api_format format = api_format::openai;
  auth_kind auth = auth_kind::key;
  std::string_view resource; ///< the RBAC resource of /admin/* (rbac.hpp), else ""
};

/// Every endpoint lowart serves.
std::span<const route_entry> route_table();

/// The entry serving `path` (without query); nullptr when none does. When several
/// patterns match, the one with the most literal characters wins
/// (/admin/agents/tasks over /admin/agents/{name}).
const route_entry* find_route(std::string_view path);

/// The bit of an HTTP method name; 0 for a method no route serves (OPTIONS, TRACE, ...).
unsigned method_bit_of(std::string_view method);

/// The method names in `methods`, e.g. "GET, POST" with separator ", ".
std::string method_names(unsigned methods, std::string_view separator);

/// One route as a JSON object (a line of `lowart --routes`):
/// {"methods":["GET"],"path":"/admin/keys","route":"admin","format":"admin","auth":"key","resource":"keys"}.
std::string route_json(const route_entry& r);

/// The path of a request target, without its query string.
std::string_view strip_query(std::string_view target);

/// Classifies a path (without query) by its table entry. A path the table does not list
/// is "other" in OpenAI's envelope ("admin" in the admin envelope under /admin, JSON-RPC
/// under /a2a/).
route_info route_of(std::string_view path);

/// route_of for a path no entry serves.
route_info unlisted_route(std::string_view path);

/// The credential a client presents: `Authorization: Bearer X` (X) or `x-api-key: X`;
/// "" when neither (an Authorization header that is not a bearer token presents none).
std::string_view presented_key(bool has_authorization, std::string_view authorization, std::string_view x_api_key);

} // namespace lowart::net
