#include "net/responses_route.hpp"

#include "actors/runtime.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "core/secrets.hpp"
#include "net/proxy.hpp"
#include "net/responses.hpp"
#include "net/worker.hpp"

#include <boost/asio/post.hpp>
#include <simdjson.h>

#include <cctype>

namespace lowart::net {

namespace {

/// Asks the store and answers on the session's thread: then(status, json).
template <class Then>
void ask_store(const session_ptr& client, std::string op, std::string a, std::string b, Then then) {
  auto held = std::make_shared<session_ref>(client);
  client->worker().runtime.responses(
      std::move(op), std::move(a), std::move(b), [held, then = std::move(then)](int status, std::string body) mutable {
        auto self = held->ptr;
        asio::post(self->executor(), [self, then = std::move(then), status, body = std::move(body)]() mutable {
          then(status, std::move(body));
        });
      });
}

/// The value of `name` in a query string ("" when absent); values are taken as they are
/// (ids, numbers and words need no decoding).
std::string query_value(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    auto amp = query.find('&');
    auto pair = query.substr(0, amp);
    auto eq = pair.find('=');
    if (pair.substr(0, eq) == name)
      return eq == std::string_view::npos ? std::string() : std::string(pair.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return {};
}

/// The input items of a response as OpenAI lists them: newest first by default, `limit`
/// (1..100, default 20) after the item `after`.
std::string item_page(const std::string& items, std::string_view query, std::string& problem) {
  simdjson::dom::parser parser;
  simdjson::dom::array all;
  if (parser.parse(items).get_array().get(all) != simdjson::SUCCESS) all = {};
  std::vector<std::pair<std::string, std::string>> list; // (id, item)
  for (auto it : all) {
    std::string_view id;
    if (it["id"].get_string().get(id) != simdjson::SUCCESS) id = {};
    list.emplace_back(std::string(id), simdjson::minify(it));
  }
  auto order = query_value(query, "order");
  if (!order.empty() && order != "asc" && order != "desc") {
    problem = "order";
    return {};
  }
  if (order != "asc") std::reverse(list.begin(), list.end());
  long limit = 20;
  if (auto l = query_value(query, "limit"); !l.empty()) {
    char* end = nullptr;
    limit = std::strtol(l.c_str(), &end, 10);
    if (*end || limit < 1 || limit > 100) {
      problem = "limit";
      return {};
    }
  }
  std::size_t from = 0;
  if (auto after = query_value(query, "after"); !after.empty()) {
    auto at = std::find_if(list.begin(), list.end(), [&](const auto& e) { return e.first == after; });
    from = at == list.end() ? list.size() : static_cast<std::size_t>(at - list.begin()) + 1;
  }
  std::vector<std::string> data;
  for (std::size_t i = from; i < list.size() && data.size() < static_cast<std::size_t>(limit); ++i)
    data.push_back(list[i].second);
  auto last = from + data.size();
  json::object_writer w;
  w.str("object", "list")
      .raw("data", json::array(data))
      .str_or_null("first_id", data.empty() ? std::string_view{} : std::string_view(list[from].first))
      .str_or_null("last_id", data.empty() ? std::string_view{} : std::string_view(list[last - 1].first))
      .boolean("has_more", last < list.size());
  return w.done();
}

/// The client's headers for Lua hooks (credentials left out), as session.cpp makes them.
std::string hook_headers(const downstream_request& req) {
  json::object_writer headers;
  for (const auto& field : req) {
    std::string name(field.name_string());
    for (auto& c : name)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (name == "authorization" || name == "x-api-key" || name == "cookie" || name == "proxy-authorization") continue;
    headers.str(name, field.value());
  }
  return headers.done();
}

void not_found(session& client, request_context& ctx, const std::string& id) {
  client.respond_error(ctx, error_kind::not_found, "Response with id '" + id + "' not found.", "response_not_found", {},
                       "response_id");
}

void store_failed(session& client, request_context& ctx, int status) {
  client.respond_error(ctx, status == 504 ? error_kind::gateway_timeout : error_kind::unavailable,
                       "stored responses cannot be read now (the database does not answer); retry shortly",
                       "storage_unavailable");
}

/// POST /v1/responses once the conversation is known.
void create(session_ptr client, request_context&& ctx, std::string body, responses::request_summary summary,
            const responses::prior& prior) {
  auto base = secrets::random_hex(16);
  auto prepared = responses::prepare(body, prior, base, "resp_" + base, clock::unix_seconds());
  auto chat = prepared.chat;
  auto ex =
      std::make_shared<responses::exchange>(std::move(prepared), base, summary.store, std::string(ctx.who->key_id()),
                                            summary.previous_response_id, std::move(body), prior);
  ex->save = [rt = &client->worker().runtime](std::string record) { rt->responses_save(std::move(record)); };
  start_proxy(std::move(client), std::move(ctx), proxy_kind::responses, std::move(chat), std::move(ex));
}

void post(session_ptr client, request_context&& ctx, downstream_request& req) {
  auto summary = responses::summarize(req.body());
  if (!summary.problem.empty()) {
    client->respond_error(ctx, error_kind::bad_request, summary.problem,
                          summary.param.empty() ? "invalid_json" : "invalid_request_error", {}, summary.param);
    return;
  }
  ctx.model = summary.model;
  if (auto routes = client->worker().state.routes.load(); routes && routes->any_script)
    ctx.headers_json = hook_headers(req);
  if (summary.previous_response_id.empty() && summary.references.empty()) {
    create(std::move(client), std::move(ctx), std::move(req.body()), std::move(summary), {});
    return;
  }
  json::object_writer q;
  q.str("previous_response_id", summary.previous_response_id).raw("references", json::string_array(summary.references));
  auto key = std::string(ctx.who->key_id());
  auto shared = std::make_shared<request_context>(std::move(ctx));
  ask_store(client, "resolve", q.done(), key,
            [client, shared, body = std::move(req.body()), summary = std::move(summary)](int status,
                                                                                         std::string answer) mutable {
              auto& ctx = *shared;
              simdjson::dom::parser parser;
              simdjson::dom::element doc;
              bool parsed = parser.parse(answer).get(doc) == simdjson::SUCCESS;
              if (status == 404 && parsed) {
                std::string_view id, param;
                if (doc["id"].get_string().get(id) != simdjson::SUCCESS) id = {};
                if (doc["param"].get_string().get(param) != simdjson::SUCCESS) param = {};
                client->respond_error(
                    ctx, error_kind::not_found,
                    param == "previous_response_id" ? "Previous response with id '" + std::string(id) + "' not found."
                                                    : "Item with id '" + std::string(id) + "' not found.",
                    param == "previous_response_id" ? "previous_response_not_found" : "item_not_found", {}, param);
                return;
              }
              if (status != 200 || !parsed) return store_failed(*client, ctx, status);
              responses::prior prior;
              simdjson::dom::element context;
              if (doc["context"].get(context) == simdjson::SUCCESS) prior.context = simdjson::minify(context);
              simdjson::dom::object items;
              if (doc["items"].get_object().get(items) == simdjson::SUCCESS)
                for (auto field : items)
                  prior.items.emplace_back(std::string(field.key), simdjson::minify(field.value));
              create(client, std::move(ctx), std::move(body), std::move(summary), prior);
            });
}

} // namespace

void serve_responses(session_ptr client, request_context&& ctx, downstream_request& req) {
  std::string_view path = ctx.path;
  path = path.substr(0, path.find('?'));
  if (path.rfind("/v1", 0) == 0) path.remove_prefix(3);
  // "/responses", "/responses/{id}" or "/responses/{id}/input_items" (the route table let nothing else in)
  if (path == "/responses") return post(std::move(client), std::move(ctx), req);
  auto rest = path.substr(std::string_view("/responses/").size());
  auto slash = rest.find('/');
  auto id = std::string(rest.substr(0, slash));
  bool items = slash != std::string_view::npos;
  std::string query;
  if (auto q = req.target().find('?'); q != std::string_view::npos) query = std::string(req.target().substr(q + 1));
  auto key = std::string(ctx.who->key_id());
  std::string op = items ? "input" : ctx.method == "DELETE" ? "delete" : "get";
  auto shared = std::make_shared<request_context>(std::move(ctx));
  ask_store(client, op, id, key, [client, shared, id, items, query](int status, std::string body) {
    auto& ctx = *shared;
    if (status == 404) return not_found(*client, ctx, id);
    if (status != 200) return store_failed(*client, ctx, status);
    if (!items) return client->respond(ctx, 200, "application/json", body);
    std::string problem;
    auto page = item_page(body, query, problem);
    if (!problem.empty())
      return client->respond_error(ctx, error_kind::bad_request, "Invalid value for '" + problem + "'.",
                                   "invalid_request_error", {}, problem);
    client->respond(ctx, 200, "application/json", page);
  });
}

} // namespace lowart::net
