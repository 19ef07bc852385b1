// The request log (/admin/logs): the usage records read as one row per request, refused
// ones included — who, what, the deployments tried in order, status and error code,
// latency and time to first byte, tokens and cost, the client's address and agent —
// newest first with filters and a cursor, as JSON, CSV or JSON lines; and one request
// with its attempt trace (/admin/logs/{request_id}).
#include "actors/admin/admin_impl.hpp"
#include "actors/admin/admin_util.hpp"

#include <charconv>

namespace lowart::actors {

using namespace admin_util;
using namespace detail;

namespace {

constexpr const char* log_columns =
    "u.ts_ms, u.request_id, u.key_id, u.team_id, u.user_id, u.route, u.model, u.deployment, u.status, u.error_code,"
    " u.stream, u.latency_ms, u.ttfb_ms, u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.cost,"
    " u.usage_source, u.client_ip, u.user_agent, u.attempts";

/// The attempt trace: as recorded, or for a request one deployment answered (nothing
/// recorded), that one attempt from the record itself.
std::string attempts_of(const storage::statement& st) {
  if (!st.is_null(20) && !st.text(20).empty()) return st.text(20);
  if (st.is_null(7) || st.text(7).empty()) return "[]";
  json::object_writer a;
  a.str("deployment", st.text(7))
      .str("outcome", std::to_string(st.integer(8)))
      .num("status", st.integer(8))
      .real("ms", st.real(11));
  return "[" + a.done() + "]";
}

std::string log_json(const storage::statement& st) {
  json::object_writer w;
  w.num("ts_ms", st.integer(0))
      .str("request_id", st.text(1))
      .raw("key_id", optional_text(st, 2))
      .raw("team_id", optional_text(st, 3))
      .raw("user_id", optional_text(st, 4))
      .str("route", st.text(5))
      .raw("model", optional_text(st, 6))
      .raw("deployment", optional_text(st, 7))
      .num("status", st.integer(8))
      .raw("error_code", optional_text(st, 9))
      .boolean("stream", st.integer(10) != 0)
      .real("latency_ms", st.real(11))
      .real("ttfb_ms", st.real(12))
      .num("prompt_tokens", st.integer(13))
      .num("completion_tokens", st.integer(14))
      .num("cached_tokens", st.integer(15))
      .real("cost", st.real(16))
      .str("usage_source", st.text(17))
      .raw("client_ip", optional_text(st, 18))
      .raw("user_agent", optional_text(st, 19))
      .raw("attempts", attempts_of(st));
  return w.done();
}

constexpr const char* csv_header = "ts_ms,request_id,key_id,team_id,user_id,route,model,deployment,status,error_code,"
                                   "stream,latency_ms,ttfb_ms,prompt_tokens,completion_tokens,cached_tokens,cost,"
                                   "usage_source,client_ip,user_agent,attempts\n";

std::string log_csv(const storage::statement& st) {
  std::string line = std::to_string(st.integer(0));
  for (int c : {1, 2, 3, 4, 5, 6, 7})
    (line += ',') += csv_cell(st.text(c));
  line += ',' + std::to_string(st.integer(8)) + ',' + csv_cell(st.text(9)) + ',' + (st.integer(10) ? "true" : "false");
  for (int c : {11, 12})
    line += ',' + real_text(st.real(c));
  for (int c : {13, 14, 15})
    line += ',' + std::to_string(st.integer(c));
  line += ',' + real_text(st.real(16));
  for (int c : {17, 18, 19})
    (line += ',') += csv_cell(st.text(c));
  (line += ',') += csv_cell(attempts_of(st));
  return line + '\n';
}

/// The cursor of a row: "<ts_ms>.<request_id>" (the next page starts after it).
std::string cursor_of(const storage::statement& st) {
  return std::to_string(st.integer(0)) + "." + st.text(1);
}

bool parse_cursor(const std::string& c, std::int64_t& ts, std::string& id) {
  auto dot = c.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 >= c.size()) return false;
  auto [end, ec] = std::from_chars(c.data(), c.data() + dot, ts);
  if (ec != std::errc{} || end != c.data() + dot) return false;
  id = c.substr(dot + 1);
  return true;
}

} // namespace

/// GET /admin/logs?from=&to=&key=&team=&user=&model=&deployment=&route=&status=&error_code=
/// &min_latency_ms=&request_id=&limit=&cursor=&format=json|csv|jsonl (newest first);
/// GET /admin/logs/{request_id}.
admin_result admin_service::impl::logs(const admin_request& req, const std::vector<std::string>& parts) {
  if (req.method != "GET") return method_not_allowed(req);
  if (parts.size() == 3) {
    auto st = db.prepare(std::string("SELECT ") + log_columns +
                         " FROM usage_records u WHERE u.request_id = ? ORDER BY u.ts_ms DESC LIMIT 1");
    st.bind(1, parts[2]);
    if (!st.step()) return not_found("no request with id '" + parts[2] + "' in the log");
    auto row = log_json(st);
    // With log_bodies: the request and the answer as captured (redacted, cut at the cap).
    auto bodies = db.prepare("SELECT request, response FROM request_bodies WHERE request_id = ? AND ts_ms = ?");
    bodies.bind(1, parts[2]).bind(2, st.integer(0));
    std::string request = "null", response = "null";
    if (bodies.step()) {
      request = optional_text(bodies, 0);
      response = optional_text(bodies, 1);
    }
    row.pop_back(); // the closing brace: the bodies go in before it
    row += ",\"request_body\":" + request + ",\"response_body\":" + response + "}";
    return {200, row};
  }
  if (parts.size() != 2) return not_found("no admin endpoint " + req.path);
  auto q = parse_query(req.query);
  std::string format = q.count("format") ? q["format"] : "json";
  if (format != "json" && format != "csv" && format != "jsonl")
    return bad_field("format", "format must be json, csv or jsonl");
  // A page is for the console (up to 1,000); an export up to 50,000 rows.
  std::int64_t max = format == "json" ? 1000 : 50000;
  std::int64_t limit = format == "json" ? 50 : max;
  if (q.count("limit")) {
    char* end = nullptr;
    limit = std::strtoll(q["limit"].c_str(), &end, 10);
    if (!end || *end || limit < 1 || limit > max)
      return bad_field("limit", "limit must be 1 to " + std::to_string(max) + " for format " + format);
  }
  std::string where = " WHERE 1=1";
  std::vector<std::string> texts;
  std::vector<std::int64_t> numbers; // bound first, in the order of `where`
  std::int64_t from = 0, to = 0;
  if (q.count("from")) {
    if (!parse_time_bound(q["from"], from)) return bad_field("from", "from must be unix seconds or YYYY-MM-DD");
    where += " AND u.ts_ms >= ?";
    numbers.push_back(from * 1000);
  }
  if (q.count("to")) {
    if (!parse_time_bound(q["to"], to)) return bad_field("to", "to must be unix seconds or YYYY-MM-DD");
    where += " AND u.ts_ms < ?";
    numbers.push_back(to * 1000);
  }
  if (q.count("status")) {
    std::int64_t lo = 0, hi = 0;
    if (!parse_status_filter(q["status"], lo, hi))
      return bad_field("status", "status must be an HTTP status (429) or a class (4xx)");
    where += " AND u.status BETWEEN ? AND ?";
    numbers.push_back(lo);
    numbers.push_back(hi);
  }
  if (q.count("min_latency_ms")) {
    char* end = nullptr;
    auto ms = std::strtoll(q["min_latency_ms"].c_str(), &end, 10);
    if (!end || *end || q["min_latency_ms"].empty() || ms < 0)
      return bad_field("min_latency_ms", "min_latency_ms must be a whole number of milliseconds");
    where += " AND u.latency_ms >= ?";
    numbers.push_back(ms);
  }
  std::int64_t cursor_ts = 0;
  std::string cursor_id;
  bool cursor = q.count("cursor") > 0;
  if (cursor && !parse_cursor(q["cursor"], cursor_ts, cursor_id))
    return bad_field("cursor", "cursor must be a next_cursor of an earlier page");
  if (cursor) {
    where += " AND (u.ts_ms < ? OR (u.ts_ms = ? AND u.request_id < ?))";
    numbers.push_back(cursor_ts);
    numbers.push_back(cursor_ts);
  }
  std::string text_where;
  for (const auto& [name, column] : std::vector<std::pair<std::string, std::string>>{{"key", "u.key_id"},
                                                                                     {"team", "u.team_id"},
                                                                                     {"user", "u.user_id"},
                                                                                     {"model", "u.model"},
                                                                                     {"deployment", "u.deployment"},
                                                                                     {"route", "u.route"},
                                                                                     {"error_code", "u.error_code"},
                                                                                     {"request_id", "u.request_id"}})
    if (q.count(name)) {
      text_where += " AND " + column + " = ?";
      texts.push_back(q[name]);
    }
  auto st = db.prepare(std::string("SELECT ") + log_columns + " FROM usage_records u" + where + text_where +
                       " ORDER BY u.ts_ms DESC, u.request_id DESC LIMIT ?");
  int at = 1;
  // The cursor's request id sits between the numbers and the texts in `where`.
  for (std::size_t i = 0; i < numbers.size(); ++i) {
    st.bind(at++, numbers[i]);
    if (cursor && i + 1 == numbers.size()) st.bind(at++, cursor_id);
  }
  for (const auto& t : texts)
    st.bind(at++, t);
  st.bind(at, limit + 1);
  std::string body = format == "csv" ? csv_header : "";
  std::vector<std::string> items;
  std::string next;
  std::int64_t rows = 0;
  bool more = false;
  while (st.step()) {
    if (rows == limit) { // one more exists: the page ends at the row before it
      more = true;
      break;
    }
    ++rows;
    if (format == "json")
      items.push_back(log_json(st));
    else if (format == "jsonl")
      (body += log_json(st)) += '\n';
    else
      body += log_csv(st);
    next = cursor_of(st);
  }
  if (format != "json") {
    // An export: the newest `limit` rows (narrow it with from/to for more).
    admin_result res{200, std::move(body)};
    res.content_type = format == "csv" ? "text/csv; charset=utf-8" : "application/x-ndjson";
    return res;
  }
  json::object_writer out;
  out.str("object", "list").raw("data", json::array(items)).boolean("has_more", more);
  if (more)
    out.str("next_cursor", next);
  else
    out.raw("next_cursor", "null");
  return {200, out.done()};
}

} // namespace lowart::actors
