// The SQLite driver: statements and the connection behind storage::database (WAL,
// owner-only file permissions). The PostgreSQL driver is in postgres.cpp.
#include "storage/drivers.hpp"

#include <sqlite3.h>

#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <unistd.h>

namespace lowart::storage {

namespace {

[[noreturn]] void raise(sqlite3* db, std::string_view what) {
  throw database_error(std::string(what) + ": " + (db ? sqlite3_errmsg(db) : "no database"));
}

class sqlite_statement final : public statement_impl {
public:
  sqlite_statement(sqlite3* db, std::string_view sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr) != SQLITE_OK)
      raise(db, "prepare");
  }
  ~sqlite_statement() override { sqlite3_finalize(stmt_); }

  void bind_text(int index, std::string_view text) override {
    if (sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT) != SQLITE_OK)
      raise(db_, "bind");
  }
  void bind_view(int index, std::string_view text) override {
    if (sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_STATIC) != SQLITE_OK)
      raise(db_, "bind");
  }
  void bind_int(int index, std::int64_t value) override {
    if (sqlite3_bind_int64(stmt_, index, value) != SQLITE_OK) raise(db_, "bind");
  }
  void bind_real(int index, double value) override {
    if (sqlite3_bind_double(stmt_, index, value) != SQLITE_OK) raise(db_, "bind");
  }
  void bind_null(int index) override {
    if (sqlite3_bind_null(stmt_, index) != SQLITE_OK) raise(db_, "bind");
  }
  bool step() override {
    switch (sqlite3_step(stmt_)) {
    case SQLITE_ROW:
      return true;
    case SQLITE_DONE:
      return false;
    default:
      raise(db_, "step");
    }
  }
  void reset() override {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  std::string text(int column) const override {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column))) : std::string{};
  }
  std::int64_t integer(int column) const override { return sqlite3_column_int64(stmt_, column); }
  double real(int column) const override { return sqlite3_column_double(stmt_, column); }
  bool is_null(int column) const override { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

class sqlite_backend final : public backend {
public:
  explicit sqlite_backend(const std::string& path) {
    // The file holds key hashes and sealed provider keys: readable by its owner only.
    // SQLite gives its -wal and -shm files the same permissions as the database.
    if (path != ":memory:") {
      int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0600);
      if (fd >= 0) ::close(fd);
    }
    // No global memory statistics: with them on, every sqlite3_malloc takes a global
    // mutex (a usage flush binds and steps hundreds of rows). Must precede the first open;
    // refused harmlessly should SQLite already be initialised.
    static std::once_flag configured;
    std::call_once(configured, [] { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK) {
      std::string msg = "cannot open database '" + path + "'";
      if (db_) {
        msg += std::string(": ") + sqlite3_errmsg(db_);
        sqlite3_close(db_);
        db_ = nullptr;
      }
      throw database_error(msg);
    }
    sqlite3_busy_timeout(db_, 5000);
  }
  ~sqlite_backend() override {
    if (db_) sqlite3_close(db_);
  }

  std::string journal_mode() {
    sqlite_statement st{db_, "PRAGMA journal_mode=WAL"};
    std::string mode;
    if (st.step()) mode = st.text(0);
    exec("PRAGMA synchronous=NORMAL");
    exec("PRAGMA foreign_keys=ON");
    return mode;
  }

  void exec(std::string_view sql) override {
    std::string text(sql);
    char* err = nullptr;
    if (sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "unknown error";
      sqlite3_free(err);
      throw database_error("exec: " + msg);
    }
  }
  std::unique_ptr<statement_impl> prepare(std::string_view sql) override {
    return std::make_unique<sqlite_statement>(db_, sql);
  }
  std::int64_t changes() const override { return sqlite3_changes64(db_); }
  void begin() override { exec("BEGIN IMMEDIATE"); }
  bool healthy() override { return true; }

private:
  sqlite3* db_ = nullptr;
};

} // namespace

std::unique_ptr<backend> drivers::open_sqlite(const std::string& path, std::string& journal_mode) {
  auto db = std::make_unique<sqlite_backend>(path);
  journal_mode = db->journal_mode();
  return db;
}

} // namespace lowart::storage
