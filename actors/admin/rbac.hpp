#pragma once
// Who may do what on the admin API. One table, checked at the HTTP edge before any
// actor is asked (a refusal costs no round trip) — and the admin service checks the
// finer rules (an operator may not mint admin keys) itself.
//
//   resource            GET                       POST/PUT/PATCH/DELETE
//   users, teams        admin, operator, viewer   admin
//   keys                admin, operator, viewer   admin, operator
//   providers, models   admin, operator, viewer   admin, operator
//   prices              admin, operator, viewer   admin, operator
//   audit, usage,       admin, operator, viewer   (none)
//   breakers
//   anything else       admin                     admin
// Plain users (role "user") have no /admin access; they use /v1/me.

#include <string_view>

namespace lowart::rbac {

/// True for the four roles a key may carry.
bool known_role(std::string_view role);

/// Whether `role` may call `method` on the admin `resource` (the path segment after
/// "/admin/", e.g. "keys").
bool may(std::string_view role, std::string_view method, std::string_view resource);

/// Rank for "may grant": admin 3, operator 2, viewer 1, user 0, unknown -1.
int rank(std::string_view role);

} // namespace lowart::rbac
