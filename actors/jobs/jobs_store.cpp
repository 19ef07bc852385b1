#include "actors/jobs/jobs_store.hpp"

#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/json_text.hpp"
#include "storage/database.hpp"

#include <simdjson.h>

#include <vector>

namespace lowart::actors {

std::string job_record::to_json() const {
  json::object_writer w;
  w.str("id", id)
      .str("prompt_id", prompt_id)
      .str("key_id", key_id)
      .str("team_id", team_id)
      .str("model", model)
      .str("status", status)
      .real("progress", progress)
      .str("error", error)
      .raw("input", input)
      .raw("workflow", workflow)
      .str("deployment", deployment)
      .str("backend", backend)
      .boolean("submitted", submitted)
      .raw("files", files)
      .num("images", images)
      .str("webhook", webhook)
      .str("webhook_state", webhook_state)
      .real("cost", cost)
      .num("attempts", attempts)
      .str("request_id", request_id)
      .num("created_ms", created_ms)
      .num("updated_ms", updated_ms)
      .num("finished_ms", finished_ms);
  return w.done();
}

std::optional<job_record> job_record::from_json(std::string_view text) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(text);
  simdjson::dom::object o;
  if (parser.parse(padded).get_object().get(o) != simdjson::SUCCESS) return std::nullopt;
  job_record r;
  auto str = [&](const char* k, std::string& out) {
    std::string_view s;
    if (o[k].get_string().get(s) == simdjson::SUCCESS) out = std::string(s);
  };
  auto raw = [&](const char* k, std::string& out) {
    simdjson::dom::element e;
    if (o[k].get(e) == simdjson::SUCCESS) out = simdjson::minify(e);
  };
  auto num = [&](const char* k, std::int64_t& out) {
    std::int64_t v = 0;
    if (o[k].get_int64().get(v) == simdjson::SUCCESS) out = v;
  };
  auto real = [&](const char* k, double& out) {
    double v = 0;
    if (o[k].get_double().get(v) == simdjson::SUCCESS) out = v;
  };
  str("id", r.id);
  str("prompt_id", r.prompt_id);
  str("key_id", r.key_id);
  str("team_id", r.team_id);
  str("model", r.model);
  str("status", r.status);
  real("progress", r.progress);
  str("error", r.error);
  raw("input", r.input);
  raw("workflow", r.workflow);
  str("deployment", r.deployment);
  str("backend", r.backend);
  bool submitted = false;
  if (o["submitted"].get_bool().get(submitted) == simdjson::SUCCESS) r.submitted = submitted;
  raw("files", r.files);
  num("images", r.images);
  str("webhook", r.webhook);
  str("webhook_state", r.webhook_state);
  real("cost", r.cost);
  num("attempts", r.attempts);
  str("request_id", r.request_id);
  num("created_ms", r.created_ms);
  num("updated_ms", r.updated_ms);
  num("finished_ms", r.finished_ms);
  if (r.id.empty()) return std::nullopt;
  return r;
}

namespace {
constexpr const char* columns =
    "id, prompt_id, key_id, team_id, model, status, progress, error, input, workflow, deployment, backend,"
    " submitted, files, images, webhook, webhook_state, cost, attempts, request_id, created_ms, updated_ms,"
    " finished_ms";

/// Saving a job replaces its row (portable: SQLite and PostgreSQL both take ON CONFLICT).
const std::string upsert_tail = [] {
  std::string out = " ON CONFLICT(id) DO UPDATE SET ";
  std::string_view cols = columns;
  bool first = true;
  while (!cols.empty()) {
    auto comma = cols.find(',');
    auto name = cols.substr(0, comma);
    while (!name.empty() && name.front() == ' ')
      name.remove_prefix(1);
    cols = comma == std::string_view::npos ? std::string_view{} : cols.substr(comma + 1);
    if (name == "id") continue;
    if (!first) out += ", ";
    first = false;
    out.append(name).append(" = excluded.").append(name);
  }
  return out;
}();

/// Concatenated SQL (appends into one reserved string: GCC 12 warns falsely about the
/// operator+ chain of a literal and a constant).
std::string sql(std::string_view a, std::string_view b, std::string_view c = {}) {
  std::string out;
  out.reserve(a.size() + b.size() + c.size());
  out.append(a).append(b).append(c);
  return out;
}

job_record read_row(const storage::statement& st) {
  job_record r;
  r.id = st.text(0);
  r.prompt_id = st.text(1);
  r.key_id = st.text(2);
  r.team_id = st.text(3);
  r.model = st.text(4);
  r.status = st.text(5);
  r.progress = st.is_null(6) ? -1 : st.real(6);
  r.error = st.text(7);
  r.input = st.text(8);
  r.workflow = st.text(9);
  r.deployment = st.text(10);
  r.backend = st.text(11);
  r.submitted = st.integer(12) != 0;
  r.files = st.text(13);
  r.images = st.integer(14);
  r.webhook = st.text(15);
  r.webhook_state = st.text(16);
  r.cost = st.real(17);
  r.attempts = st.integer(18);
  r.request_id = st.text(19);
  r.created_ms = st.integer(20);
  r.updated_ms = st.integer(21);
  r.finished_ms = st.is_null(22) ? 0 : st.integer(22);
  return r;
}

std::string records_json(storage::statement& st) {
  std::vector<std::string> items;
  while (st.step())
    items.push_back(read_row(st).to_json());
  return json::array(items);
}
} // namespace

struct jobs_store::impl {
  impl(storage::database& d, gateway_state& s) : db(d), gw(s) {}
  storage::database& db;
  gateway_state& gw;
  /// This replica in a fleet ("" for a gateway on its own: every job is its own).
  std::string owner() const { return gw.fleet ? gw.config.cluster.replica_id : std::string(); }
};

jobs_store::jobs_store(storage::database& db, gateway_state& state) : impl_(std::make_unique<impl>(db, state)) {}
jobs_store::~jobs_store() = default;

std::pair<int, std::string> jobs_store::op(const std::string& name, const std::string& a, const std::string& b) {
  auto& db = impl_->db;
  if (name == "save") {
    auto r = job_record::from_json(a);
    if (!r) return {400, R"({"error":"bad job record"})"};
    auto st = db.prepare(
        sql("INSERT INTO jobs(", columns, ", owner) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)") +
        upsert_tail); // the owner is set once, by the replica that took the job
    st.bind(24, impl_->owner());
    st.bind(1, r->id).bind(2, r->prompt_id).bind(3, r->key_id).bind(4, r->team_id).bind(5, r->model).bind(6, r->status);
    if (r->progress < 0)
      st.bind_null(7);
    else
      st.bind(7, r->progress);
    st.bind(8, r->error)
        .bind(9, r->input)
        .bind(10, r->workflow)
        .bind(11, r->deployment)
        .bind(12, r->backend)
        .bind(13, static_cast<std::int64_t>(r->submitted))
        .bind(14, r->files)
        .bind(15, r->images)
        .bind(16, r->webhook)
        .bind(17, r->webhook_state)
        .bind(18, r->cost)
        .bind(19, r->attempts)
        .bind(20, r->request_id)
        .bind(21, r->created_ms)
        .bind(22, r->updated_ms);
    if (r->finished_ms)
      st.bind(23, r->finished_ms);
    else
      st.bind_null(23);
    st.step();
    return {200, "{}"};
  }
  if (name == "get") {
    auto st = db.prepare(sql("SELECT ", columns, " FROM jobs WHERE id = ?1 AND (?2 = '' OR key_id = ?2)"));
    st.bind(1, a).bind(2, b);
    if (!st.step()) return {404, "{}"};
    return {200, read_row(st).to_json()};
  }
  if (name == "list") {
    auto limit = std::max<std::int64_t>(1, std::min<std::int64_t>(1000, std::atoll(b.c_str())));
    auto st = db.prepare(
        sql("SELECT ", columns, " FROM jobs WHERE ?1 = '' OR key_id = ?1 ORDER BY created_ms DESC, id LIMIT ?2"));
    st.bind(1, a).bind(2, limit);
    return {200, records_json(st)};
  }
  if (name == "live") {
    auto st = db.prepare(sql("SELECT ", columns,
                             " FROM jobs WHERE (status IN ('queued', 'running') OR webhook_state = 'pending')"
                             " AND (owner = ?1 OR owner = '' OR ?1 = '') ORDER BY created_ms"));
    st.bind(1, impl_->owner());
    return {200, records_json(st)};
  }
  if (name == "expire") {
    std::vector<std::string> ids;
    db.transaction([&] {
      auto st = db.prepare("SELECT id FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled')"
                           " AND finished_ms < ? AND webhook_state != 'pending'");
      st.bind(1, static_cast<std::int64_t>(std::atoll(a.c_str())));
      while (st.step())
        ids.push_back(st.text(0));
      for (const auto& id : ids)
        db.prepare("DELETE FROM jobs WHERE id = ?").bind(1, id).step();
    });
    return {200, json::string_array(ids)};
  }
  return {400, R"({"error":"unknown jobs operation"})"};
}

} // namespace lowart::actors
