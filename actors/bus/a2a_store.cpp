#include "actors/bus/a2a_store.hpp"

#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "storage/database.hpp"

#include <simdjson.h>

#include <vector>

namespace lowart::actors {

a2a_store::a2a_store(storage::database& db, std::string owner) : db_(db), owner_(std::move(owner)) {}
a2a_store::~a2a_store() = default;

namespace {
std::string field(const std::string& json, const char* key) {
  simdjson::dom::parser parser;
  std::string_view v;
  if (parser.parse(json)[key].get_string().get(v) != simdjson::SUCCESS) return {};
  return std::string(v);
}
std::string rows(storage::statement& st) {
  std::vector<std::string> items;
  while (st.step())
    items.push_back(st.text(0));
  return json::array(items);
}
} // namespace

std::pair<int, std::string> a2a_store::op(const std::string& name, const std::string& a) {
  if (name == "agent_put") {
    auto agent = field(a, "name");
    if (agent.empty()) return {400, "{}"};
    bool had = db_.prepare("SELECT 1 FROM a2a_agents WHERE name = ?").bind(1, agent).step();
    db_.prepare("INSERT INTO a2a_agents(name, body, created_at) VALUES (?,?,?) ON CONFLICT(name) DO UPDATE SET"
                " body = excluded.body")
        .bind(1, agent)
        .bind(2, a)
        .bind(3, clock::unix_seconds())
        .step();
    return {had ? 200 : 201, a};
  }
  if (name == "agent_delete") {
    db_.prepare("DELETE FROM a2a_agents WHERE name = ?").bind(1, a).step();
    return {db_.changes() ? 200 : 404, "{}"};
  }
  if (name == "agents") {
    auto st = db_.prepare("SELECT body FROM a2a_agents ORDER BY name");
    return {200, rows(st)};
  }
  if (name == "task_put") {
    auto id = field(a, "id");
    if (id.empty()) return {400, "{}"};
    db_.prepare("INSERT INTO a2a_tasks(id, agent, state, delivery, sender_key, updated_ms, body, owner)"
                " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET agent = excluded.agent,"
                " state = excluded.state, delivery = excluded.delivery, sender_key = excluded.sender_key,"
                " updated_ms = excluded.updated_ms, body = excluded.body")
        .bind(1, id)
        .bind(2, field(a, "agent"))
        .bind(3, field(a, "state"))
        .bind(4, field(a, "delivery"))
        .bind(5, field(a, "sender_key"))
        .bind(6, clock::unix_ms())
        .bind(7, a)
        .bind(8, owner_)
        .step();
    return {200, "{}"};
  }
  if (name == "task_get") {
    auto st = db_.prepare("SELECT body FROM a2a_tasks WHERE id = ?");
    st.bind(1, a);
    if (!st.step()) return {404, "{}"};
    return {200, st.text(0)};
  }
  if (name == "tasks_live") {
    auto st =
        db_.prepare("SELECT body FROM a2a_tasks WHERE delivery IN ('queued', 'retry', 'delivered', 'acked', 'waiting')"
                    " AND (owner = ?1 OR owner = '' OR ?1 = '') ORDER BY updated_ms");
    st.bind(1, owner_);
    return {200, rows(st)};
  }
  if (name == "dead_letters") {
    auto st = db_.prepare("SELECT body FROM a2a_tasks WHERE delivery = 'dead' ORDER BY updated_ms DESC LIMIT 1000");
    return {200, rows(st)};
  }
  return {400, R"({"error":"unknown a2a operation"})"};
}

} // namespace lowart::actors
