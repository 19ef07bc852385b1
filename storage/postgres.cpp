// The PostgreSQL driver (libpq): statements, the connection with bounded connects and
// keepalives, LISTEN/NOTIFY, and postgres_sql, which turns lowart's SQLite-flavoured SQL
// into PostgreSQL's. The SQLite driver is in sqlite.cpp.
#include "storage/drivers.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <libpq-fe.h>
#include <vector>

namespace lowart::storage {

namespace {

// Parameter types sent with each statement: bigint and double precision for numbers;
// text goes as "unknown", so the server types it from its context (a text value bound
// for a bigint column is then still accepted).
constexpr Oid int8_oid = 20;
constexpr Oid float8_oid = 701;

class pg_backend;

class pg_statement final : public statement_impl {
public:
  pg_statement(pg_backend& db, std::string sql) : db_(db), sql_(std::move(sql)) {}
  ~pg_statement() override { clear_result(); }

  void bind_text(int index, std::string_view text) override { set(index, std::string(text), 0); }
  void bind_int(int index, std::int64_t value) override { set(index, std::to_string(value), int8_oid); }
  void bind_real(int index, double value) override {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", value);
    set(index, buf, float8_oid);
  }
  void bind_null(int index) override { set(index, std::nullopt, 0); }

  bool step() override;
  void reset() override {
    clear_result();
    values_.clear();
    types_.clear();
  }
  std::string text(int column) const override {
    if (!res_ || PQgetisnull(res_, row_, column)) return {};
    return std::string(PQgetvalue(res_, row_, column), static_cast<std::size_t>(PQgetlength(res_, row_, column)));
  }
  std::int64_t integer(int column) const override {
    if (!res_ || PQgetisnull(res_, row_, column)) return 0;
    const char* v = PQgetvalue(res_, row_, column);
    if (v[0] == 't' && v[1] == 0) return 1; // booleans come as t / f
    if (v[0] == 'f' && v[1] == 0) return 0;
    if (std::strpbrk(v, ".eE")) return static_cast<std::int64_t>(std::strtod(v, nullptr)); // numeric sums
    return std::strtoll(v, nullptr, 10);
  }
  double real(int column) const override {
    if (!res_ || PQgetisnull(res_, row_, column)) return 0;
    return std::strtod(PQgetvalue(res_, row_, column), nullptr);
  }
  bool is_null(int column) const override { return !res_ || PQgetisnull(res_, row_, column); }

private:
  void set(int index, std::optional<std::string> value, Oid type) {
    auto i = static_cast<std::size_t>(index - 1);
    if (values_.size() <= i) {
      values_.resize(i + 1);
      types_.resize(i + 1, 0);
    }
    values_[i] = std::move(value);
    types_[i] = type;
  }
  void clear_result() {
    if (res_) PQclear(res_);
    res_ = nullptr;
    row_ = -1;
    rows_ = 0;
  }

  pg_backend& db_;
  std::string sql_;
  std::vector<std::optional<std::string>> values_;
  std::vector<Oid> types_;
  PGresult* res_ = nullptr;
  int row_ = -1;
  int rows_ = 0;
};

/// Drops the server's notices ("relation exists, skipping" and the like) instead of
/// letting libpq print them to stderr beside the JSON log lines.
void quiet(PGconn* conn) {
  PQsetNoticeProcessor(
      conn, [](void*, const char*) {}, nullptr);
}

class pg_backend final : public backend {
public:
  explicit pg_backend(const std::string& url) {
    // Bounded connects: a dead server must not hold the persistence thread for long.
    std::string conninfo = url;
    conninfo += url.find('?') == std::string::npos ? "?" : "&";
    // Keepalives and a TCP user timeout: a server that vanishes without closing the
    // connection (a network partition) fails the statement within seconds instead of
    // holding the persistence thread; statement_timeout bounds a stuck query.
    conninfo += "connect_timeout=3&application_name=lowart&keepalives=1&keepalives_idle=5&keepalives_interval=2"
                "&keepalives_count=3&tcp_user_timeout=10000&options=-c%20statement_timeout%3D15000";
    conninfo_ = std::move(conninfo);
    conn_ = PQconnectdb(conninfo_.c_str());
    if (PQstatus(conn_) != CONNECTION_OK) {
      std::string msg = "cannot connect to PostgreSQL: " + error_text();
      PQfinish(conn_);
      conn_ = nullptr;
      throw database_unavailable(msg);
    }
    quiet(conn_);
  }
  ~pg_backend() override {
    if (conn_) PQfinish(conn_);
    if (listener_) PQfinish(listener_);
  }

  void listen(const std::string& channel) override {
    channel_ = channel;
    open_listener();
  }

  void notify(const std::string& channel, const std::string& payload) override {
    PGresult* res = run("SELECT pg_notify($1, $2)", {channel, payload}, {0, 0});
    PQclear(res);
  }

  std::vector<std::string> notifications() override {
    std::vector<std::string> out;
    if (channel_.empty()) return out;
    if (!listener_ || PQstatus(listener_) != CONNECTION_OK) {
      auto now = std::chrono::steady_clock::now();
      if (now < listener_retry_) return out;
      if (!open_listener()) {
        listener_retry_ = now + std::chrono::seconds(1);
        return out;
      }
      out.emplace_back(); // back after a loss: whatever was sent meanwhile is unknown
      return out;
    }
    if (!PQconsumeInput(listener_)) { // the connection broke: reopened on a later call
      PQfinish(listener_);
      listener_ = nullptr;
      return out;
    }
    while (PGnotify* n = PQnotifies(listener_)) {
      out.emplace_back(n->extra ? n->extra : "");
      PQfreemem(n);
    }
    return out;
  }

  /// Runs a statement; the result is the caller's (PQclear).
  PGresult* run(const std::string& sql, const std::vector<std::optional<std::string>>& values,
                const std::vector<Oid>& types) {
    if (!conn_ || PQstatus(conn_) != CONNECTION_OK)
      throw database_unavailable("PostgreSQL connection lost: " + (conn_ ? error_text() : std::string("closed")));
    std::vector<const char*> ptrs(values.size());
    for (std::size_t i = 0; i < values.size(); ++i)
      ptrs[i] = values[i] ? values[i]->c_str() : nullptr;
    PGresult* res = PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), types.data(), ptrs.data(),
                                 nullptr, nullptr, 0);
    auto status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
      const char* n = PQcmdTuples(res);
      changes_ = n && *n ? std::strtoll(n, nullptr, 10) : 0;
      return res;
    }
    std::string msg = res ? PQresultErrorMessage(res) : error_text();
    if (res) PQclear(res);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' '))
      msg.pop_back();
    if (PQstatus(conn_) != CONNECTION_OK) throw database_unavailable("PostgreSQL connection lost: " + msg);
    throw database_error(msg);
  }

  void exec(std::string_view sql) override {
    if (!conn_ || PQstatus(conn_) != CONNECTION_OK) throw database_unavailable("PostgreSQL connection lost");
    // Several statements (migrations) need the simple protocol.
    PGresult* res = PQexec(conn_, std::string(sql).c_str());
    auto status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
      PQclear(res);
      return;
    }
    std::string msg = res ? PQresultErrorMessage(res) : error_text();
    if (res) PQclear(res);
    if (PQstatus(conn_) != CONNECTION_OK) throw database_unavailable("PostgreSQL connection lost: " + msg);
    throw database_error("exec: " + msg);
  }
  std::unique_ptr<statement_impl> prepare(std::string_view sql) override {
    return std::make_unique<pg_statement>(*this, postgres_sql(sql, false));
  }
  std::int64_t changes() const override { return changes_; }
  void begin() override { exec("BEGIN"); }

  bool healthy() override {
    if (conn_ && PQstatus(conn_) == CONNECTION_OK) return true;
    auto now = std::chrono::steady_clock::now();
    if (now < next_attempt_) return false;
    if (conn_) {
      PQreset(conn_);
    } else {
      conn_ = PQconnectdb(conninfo_.c_str());
    }
    if (PQstatus(conn_) == CONNECTION_OK) {
      backoff_ = std::chrono::milliseconds(100);
      quiet(conn_);
      return true;
    }
    next_attempt_ = now + backoff_;
    backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(5000));
    return false;
  }

  std::string error_text() const {
    std::string msg = conn_ ? PQerrorMessage(conn_) : "no connection";
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' '))
      msg.pop_back();
    return msg;
  }

private:
  bool open_listener() {
    if (listener_) PQfinish(listener_);
    listener_ = PQconnectdb(conninfo_.c_str());
    if (PQstatus(listener_) != CONNECTION_OK) {
      PQfinish(listener_);
      listener_ = nullptr;
      return false;
    }
    quiet(listener_);
    // The channel is lowart's own constant: quoted as an identifier all the same.
    char* quoted = PQescapeIdentifier(listener_, channel_.c_str(), channel_.size());
    std::string sql = std::string("LISTEN ") + (quoted ? quoted : "lowart");
    PQfreemem(quoted);
    PGresult* res = PQexec(listener_, sql.c_str());
    bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
    if (res) PQclear(res);
    if (!ok) {
      PQfinish(listener_);
      listener_ = nullptr;
    }
    return ok;
  }

  std::string conninfo_;
  PGconn* conn_ = nullptr;
  PGconn* listener_ = nullptr; ///< LISTEN connection (PostgreSQL notifications)
  std::string channel_;
  std::chrono::steady_clock::time_point listener_retry_{};
  std::int64_t changes_ = 0;
  std::chrono::steady_clock::time_point next_attempt_{};
  std::chrono::milliseconds backoff_{100};
};

bool pg_statement::step() {
  if (!res_) {
    res_ = db_.run(sql_, values_, types_);
    rows_ = PQntuples(res_);
    row_ = -1;
  }
  if (row_ + 1 >= rows_) {
    row_ = rows_;
    return false;
  }
  ++row_;
  return true;
}

bool word_at(std::string_view s, std::size_t i, std::string_view word) {
  auto ident = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  if (s.substr(i, word.size()) != word) return false;
  if (i > 0 && ident(s[i - 1])) return false;
  auto end = i + word.size();
  return end >= s.size() || !ident(s[end]);
}

} // namespace

std::string postgres_sql(std::string_view sql, bool ddl) {
  std::string out;
  out.reserve(sql.size() + 16);
  int n = 0;
  char quote = 0;
  for (std::size_t i = 0; i < sql.size(); ++i) {
    char c = sql[i];
    if (quote) {
      out += c;
      if (c == quote) quote = 0;
      continue;
    }
    if (c == '\'' || c == '"') {
      quote = c;
      out += c;
      continue;
    }
    if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') { // a comment, to the end of the line
      auto end = sql.find('\n', i);
      if (end == std::string_view::npos) end = sql.size();
      out.append(sql.substr(i, end - i));
      i = end - 1;
      continue;
    }
    if (c == '?') {
      out += '$';
      if (i + 1 < sql.size() && std::isdigit(static_cast<unsigned char>(sql[i + 1]))) { // ?NNN: numbered already
        while (i + 1 < sql.size() && std::isdigit(static_cast<unsigned char>(sql[i + 1])))
          out += sql[++i];
      } else {
        out += std::to_string(++n);
      }
      continue;
    }
    if (ddl) {
      if (word_at(sql, i, "INTEGER PRIMARY KEY")) {
        out += "BIGSERIAL PRIMARY KEY";
        i += std::string_view("INTEGER PRIMARY KEY").size() - 1;
        continue;
      }
      if (word_at(sql, i, "INTEGER")) {
        out += "BIGINT";
        i += 6;
        continue;
      }
      if (word_at(sql, i, "REAL")) {
        out += "DOUBLE PRECISION";
        i += 3;
        continue;
      }
    }
    out += c;
  }
  return out;
}

std::unique_ptr<backend> drivers::open_postgres(const std::string& url) {
  return std::make_unique<pg_backend>(url);
}

} // namespace lowart::storage
