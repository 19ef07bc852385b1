#pragma once
// The storage interface: one database object with two implementations behind it,
// SQLite (the embedded default: a file path) and PostgreSQL (a postgres:// or
// postgresql:// URL, through libpq). Callers write SQL once, with `?` placeholders and
// the common subset of both dialects; the PostgreSQL side numbers the placeholders and
// maps the migrations' types (INTEGER -> BIGINT, REAL -> DOUBLE PRECISION), so the same
// migrations and the same queries run on both.
//
// Not thread-safe by design: one database object is owned by exactly one (detached)
// persistence actor. Calls block; that actor runs on its own thread.

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace lowart::storage {

struct database_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The connection is gone (PostgreSQL down or unreachable): the caller may retry later.
struct database_unavailable : database_error {
  using database_error::database_error;
};

enum class dialect { sqlite, postgres };

/// One backend's prepared statement.
class statement_impl {
public:
  virtual ~statement_impl() = default;
  virtual void bind_text(int index, std::string_view text) = 0;
  /// Text the caller keeps valid until the statement is reset (no copy where the backend can).
  virtual void bind_view(int index, std::string_view text) { bind_text(index, text); }
  virtual void bind_int(int index, std::int64_t value) = 0;
  virtual void bind_real(int index, double value) = 0;
  virtual void bind_null(int index) = 0;
  virtual bool step() = 0;
  virtual void reset() = 0;
  virtual std::string text(int column) const = 0;
  virtual std::int64_t integer(int column) const = 0;
  virtual double real(int column) const = 0;
  virtual bool is_null(int column) const = 0;
};

class statement {
public:
  explicit statement(std::unique_ptr<statement_impl> impl) : impl_(std::move(impl)) {}

  statement& bind(int index, std::string_view text) {
    impl_->bind_text(index, text);
    return *this;
  }
  statement& bind(int index, std::int64_t value) {
    impl_->bind_int(index, value);
    return *this;
  }
  statement& bind(int index, double value) {
    impl_->bind_real(index, value);
    return *this;
  }
  statement& bind_null(int index) {
    impl_->bind_null(index);
    return *this;
  }
  /// Binds text or NULL when empty.
  statement& bind_optional(int index, std::string_view text) {
    return text.empty() ? bind_null(index) : bind(index, text);
  }
  /// Binds text without copying it: it must stay valid until reset() (bulk inserts of
  /// records the caller holds for the whole transaction).
  statement& bind_view(int index, std::string_view text) {
    impl_->bind_view(index, text);
    return *this;
  }
  /// bind_view, or NULL when empty.
  statement& bind_optional_view(int index, std::string_view text) {
    return text.empty() ? bind_null(index) : bind_view(index, text);
  }

  /// Steps once: true while a row is available, false when done. Throws on errors.
  bool step() { return impl_->step(); }
  /// Resets for another execution with new bindings.
  void reset() { impl_->reset(); }

  std::string text(int column) const { return impl_->text(column); }
  std::int64_t integer(int column) const { return impl_->integer(column); }
  double real(int column) const { return impl_->real(column); }
  bool is_null(int column) const { return impl_->is_null(column); }

private:
  std::unique_ptr<statement_impl> impl_;
};

/// One backend's connection.
class backend {
public:
  virtual ~backend() = default;
  virtual void exec(std::string_view sql) = 0;
  virtual std::unique_ptr<statement_impl> prepare(std::string_view sql) = 0;
  virtual std::int64_t changes() const = 0;
  virtual void begin() = 0;
  /// Whether the connection is usable now (PostgreSQL: reconnects, with backoff).
  virtual bool healthy() = 0;
  /// Change notifications (PostgreSQL LISTEN/NOTIFY); SQLite has none.
  virtual void listen(const std::string& /*channel*/) {}
  virtual void notify(const std::string& /*channel*/, const std::string& /*payload*/) {}
  virtual std::vector<std::string> notifications() { return {}; }
};

class database {
public:
  /// Opens `target`: a PostgreSQL URL (postgres://, postgresql://) or an SQLite file
  /// path (created; WAL enabled and checked), then applies pending migrations.
  explicit database(const std::string& target);
  ~database();
  database(const database&) = delete;
  database& operator=(const database&) = delete;

  void exec(std::string_view sql) { backend_->exec(sql); }
  statement prepare(std::string_view sql) { return statement{backend_->prepare(sql)}; }
  std::int64_t changes() const { return backend_->changes(); }

  storage::dialect dialect() const { return dialect_; }
  /// "sqlite" or "postgres".
  const char* kind() const { return dialect_ == storage::dialect::postgres ? "postgres" : "sqlite"; }
  /// The journal mode SQLite actually chose ("wal" for files, "memory" for :memory:);
  /// "" on PostgreSQL.
  const std::string& journal_mode() const { return journal_mode_; }
  /// Highest applied migration number.
  int schema_version() const { return schema_version_; }
  /// Whether the database answers now. PostgreSQL: reconnects when the connection was
  /// lost, at most once per backoff step (100 ms doubling to 5 s); never throws.
  bool healthy() { return backend_->healthy(); }

  /// PostgreSQL: listens on `channel` on a connection of its own (SQLite: nothing).
  void listen(const std::string& channel) { backend_->listen(channel); }
  /// PostgreSQL: NOTIFY `channel` with `payload` (delivered at commit when in a transaction).
  void notify(const std::string& channel, const std::string& payload) { backend_->notify(channel, payload); }
  /// The payloads that arrived since the last call; never blocks. After the listening
  /// connection was lost and came back, one "" stands for "some may have been missed".
  std::vector<std::string> notifications() { return backend_->notifications(); }

  /// SQL that turns a unix-milliseconds column into its UTC date, "YYYY-MM-DD".
  std::string utc_day(std::string_view ms_column) const { return utc_bucket(ms_column, "day"); }
  /// SQL for the UTC "day" (YYYY-MM-DD), "hour" (YYYY-MM-DDTHH:00Z) or "minute"
  /// (YYYY-MM-DDTHH:MMZ) of a unix-milliseconds column, in this database's dialect.
  std::string utc_bucket(std::string_view ms_column, std::string_view unit) const;

  /// Runs `fn` inside a transaction (SQLite: BEGIN IMMEDIATE), rolling back if it throws.
  template <class Fn> void transaction(Fn&& fn) {
    backend_->begin();
    try {
      fn();
      exec("COMMIT");
    } catch (...) {
      try {
        exec("ROLLBACK");
      } catch (...) { // the connection may be gone: the first error is the one to report
      }
      throw;
    }
  }

  /// Whether `target` names a PostgreSQL database.
  static bool is_postgres_url(std::string_view target) {
    return target.starts_with("postgres://") || target.starts_with("postgresql://");
  }

private:
  void migrate();

  std::unique_ptr<backend> backend_;
  storage::dialect dialect_ = storage::dialect::sqlite;
  std::string journal_mode_;
  int schema_version_ = 0;
};

/// The PostgreSQL form of a migration or query written for SQLite: `?` placeholders
/// numbered ($1, $2, ...; not inside quotes) and, when `ddl`, the types mapped.
std::string postgres_sql(std::string_view sql, bool ddl);

} // namespace lowart::storage
