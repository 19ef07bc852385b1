#include "actors/responses/responses_store.hpp"

#include "core/json_text.hpp"
#include "storage/database.hpp"

#include <simdjson.h>

#include <vector>

namespace lowart::actors {

namespace {

std::string_view str(simdjson::dom::element e, std::string_view key) {
  std::string_view v;
  if (e[key].get_string().get(v) != simdjson::SUCCESS) return {};
  return v;
}

/// The longest conversation resolve walks back through (previous_response_id links).
constexpr int max_chain = 10'000;

} // namespace

responses_store::responses_store(storage::database& db) : db_(db) {}

std::pair<int, std::string> responses_store::op(const std::string& name, const std::string& a, const std::string& b) {
  if (name == "save") {
    simdjson::dom::parser parser;
    simdjson::dom::element rec, response, input;
    if (parser.parse(a).get(rec) != simdjson::SUCCESS || rec["response"].get(response) != simdjson::SUCCESS ||
        rec["input"].get(input) != simdjson::SUCCESS)
      return {400, R"({"error":"not a response record"})"};
    auto id = std::string(str(rec, "id"));
    auto key = std::string(str(rec, "key_id"));
    if (id.empty() || key.empty()) return {400, R"({"error":"a response record needs id and key_id"})"};
    std::int64_t created = 0;
    if (rec["created_ms"].get_int64().get(created) != simdjson::SUCCESS) created = 0;
    auto previous = str(rec, "previous_response_id");
    auto body = simdjson::minify(response);
    auto items = simdjson::minify(input);
    db_.transaction([&] {
      // A response id is made once; a repeated save (an upstream that reuses ids) replaces it.
      db_.prepare("DELETE FROM response_items WHERE response_id = ?").bind(1, id).step();
      db_.prepare("DELETE FROM responses WHERE id = ?").bind(1, id).step();
      db_.prepare("INSERT INTO responses(id, key_id, previous_id, created_ms, input, body) VALUES (?,?,?,?,?,?)")
          .bind(1, id)
          .bind(2, key)
          .bind_optional(3, previous)
          .bind(4, created)
          .bind(5, items)
          .bind(6, body)
          .step();
      simdjson::dom::array output;
      if (response["output"].get_array().get(output) != simdjson::SUCCESS) return;
      auto st = db_.prepare("INSERT INTO response_items(id, response_id, key_id, body) VALUES (?,?,?,?)"
                            " ON CONFLICT(id) DO UPDATE SET response_id = excluded.response_id,"
                            " key_id = excluded.key_id, body = excluded.body");
      for (auto item : output) {
        auto item_id = str(item, "id");
        if (item_id.empty()) continue;
        st.bind(1, item_id).bind(2, id).bind(3, key).bind(4, simdjson::minify(item)).step();
        st.reset();
      }
    });
    return {200, "{}"};
  }
  if (name == "get" || name == "input") {
    auto st = db_.prepare(name == "get" ? "SELECT body FROM responses WHERE id = ? AND key_id = ?"
                                        : "SELECT input FROM responses WHERE id = ? AND key_id = ?");
    st.bind(1, a).bind(2, b);
    if (!st.step()) return {404, "{}"};
    return {200, st.text(0)};
  }
  if (name == "delete") {
    bool found = false;
    db_.transaction([&] {
      db_.prepare("DELETE FROM responses WHERE id = ? AND key_id = ?").bind(1, a).bind(2, b).step();
      found = db_.changes() > 0;
      if (found) db_.prepare("DELETE FROM response_items WHERE response_id = ?").bind(1, a).step();
    });
    if (!found) return {404, "{}"};
    json::object_writer w;
    w.str("id", a).str("object", "response").boolean("deleted", true);
    return {200, w.done()};
  }
  if (name == "resolve") {
    simdjson::dom::parser parser;
    simdjson::dom::element req;
    if (parser.parse(a).get(req) != simdjson::SUCCESS) return {400, "{}"};
    // The conversation: each response's input, then its output, from the first response on.
    std::vector<std::pair<std::string, std::string>> chain; // (input, body), newest first
    std::string at(str(req, "previous_response_id"));
    simdjson::dom::parser inner;
    for (int hops = 0; !at.empty() && hops < max_chain; ++hops) {
      auto st = db_.prepare("SELECT input, body, previous_id FROM responses WHERE id = ? AND key_id = ?");
      st.bind(1, at).bind(2, b);
      if (!st.step()) {
        if (hops == 0) {
          json::object_writer w;
          w.str("id", at).str("param", "previous_response_id");
          return {404, w.done()};
        }
        break; // an older part expired: the conversation starts after it
      }
      chain.emplace_back(st.text(0), st.text(1));
      at = st.is_null(2) ? std::string() : st.text(2);
    }
    std::string context = "[";
    auto append_items = [&](std::string_view array) {
      if (array.size() <= 2) return;
      if (context.size() > 1) context += ',';
      context.append(array.substr(1, array.size() - 2));
    };
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
      append_items(it->first);
      simdjson::dom::element body, output;
      if (inner.parse(it->second).get(body) == simdjson::SUCCESS && body["output"].get(output) == simdjson::SUCCESS &&
          output.is_array())
        append_items(simdjson::minify(output));
    }
    context += ']';
    json::object_writer items;
    simdjson::dom::array refs;
    if (req["references"].get_array().get(refs) == simdjson::SUCCESS) {
      for (auto ref : refs) {
        std::string_view id;
        if (ref.get_string().get(id) != simdjson::SUCCESS) continue;
        auto st = db_.prepare("SELECT body FROM response_items WHERE id = ? AND key_id = ?");
        st.bind(1, id).bind(2, b);
        if (!st.step()) {
          json::object_writer w;
          w.str("id", id).str("param", "input");
          return {404, w.done()};
        }
        items.raw(id, st.text(0));
      }
    }
    json::object_writer w;
    w.raw("context", context).raw("items", items.done());
    return {200, w.done()};
  }
  if (name == "expire") {
    auto cutoff = static_cast<std::int64_t>(std::atoll(a.c_str()));
    std::int64_t deleted = 0;
    db_.transaction([&] {
      db_.prepare("DELETE FROM response_items WHERE response_id IN (SELECT id FROM responses WHERE created_ms < ?)")
          .bind(1, cutoff)
          .step();
      db_.prepare("DELETE FROM responses WHERE created_ms < ?").bind(1, cutoff).step();
      deleted = db_.changes();
    });
    json::object_writer w;
    w.num("deleted", deleted);
    return {200, w.done()};
  }
  return {400, R"({"error":"unknown responses operation"})"};
}

} // namespace lowart::actors
