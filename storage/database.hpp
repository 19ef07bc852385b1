#pragma once
// A thin RAII layer over SQLite3. Not thread-safe by design: one database object is
// owned by exactly one (detached) persistence actor.

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

struct sqlite3;
struct sqlite3_stmt;

namespace lowart::storage {

struct database_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class statement {
public:
  statement(sqlite3* db, std::string_view sql);
  ~statement();
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;

  statement& bind(int index, std::string_view text);
  statement& bind(int index, std::int64_t value);
  statement& bind(int index, double value);
  statement& bind_null(int index);
  /// Binds text or NULL when empty.
  statement& bind_optional(int index, std::string_view text);

  /// Steps once: true while a row is available, false when done. Throws on errors.
  bool step();
  /// Resets for another execution with new bindings.
  void reset();

  std::string text(int column) const;
  std::int64_t integer(int column) const;
  double real(int column) const;
  bool is_null(int column) const;

private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

class database {
public:
  /// Opens (creating) the file, enables WAL (checked), and applies pending migrations.
  explicit database(const std::string& path);
  ~database();
  database(const database&) = delete;
  database& operator=(const database&) = delete;

  void exec(std::string_view sql);
  statement prepare(std::string_view sql) { return statement{db_, sql}; }
  std::int64_t changes() const;

  /// The journal mode SQLite actually chose ("wal" for files, "memory" for :memory:).
  const std::string& journal_mode() const { return journal_mode_; }
  /// Highest applied migration number.
  int schema_version() const { return schema_version_; }

  /// Runs `fn` inside BEGIN IMMEDIATE ... COMMIT, rolling back if it throws.
  template <class Fn> void transaction(Fn&& fn) {
    exec("BEGIN IMMEDIATE");
    try {
      fn();
      exec("COMMIT");
    } catch (...) {
      exec("ROLLBACK");
      throw;
    }
  }

private:
  void migrate();

  sqlite3* db_ = nullptr;
  std::string journal_mode_;
  int schema_version_ = 0;
};

} // namespace lowart::storage
