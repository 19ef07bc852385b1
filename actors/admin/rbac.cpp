#include "actors/admin/rbac.hpp"

namespace lowart::rbac {

bool known_role(std::string_view role) {
  return rank(role) >= 0;
}

int rank(std::string_view role) {
  if (role == "admin") return 3;
  if (role == "operator") return 2;
  if (role == "viewer") return 1;
  if (role == "user") return 0;
  return -1;
}

bool may(std::string_view role, std::string_view method, std::string_view resource) {
  if (role == "admin") return true;
  bool read = method == "GET" || method == "HEAD";
  bool known = resource == "users" || resource == "teams" || resource == "keys" || resource == "providers" ||
               resource == "models" || resource == "prices" || resource == "audit" || resource == "usage" ||
               resource == "logs" || resource == "breakers" || resource == "mcp" || resource == "approvals" ||
               resource == "scripts" || resource == "jobs" || resource == "agents";
  if (!known) return false;
  if (role == "viewer") return read;
  if (role == "operator") {
    if (read) return true;
    return resource == "keys" || resource == "providers" || resource == "models" || resource == "prices" ||
           resource == "mcp" || resource == "approvals" || resource == "scripts" || resource == "jobs" ||
           resource == "agents";
  }
  return false;
}

} // namespace lowart::rbac
