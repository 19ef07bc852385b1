#include "storage/database.hpp"

#include "storage/migrations_embedded.hpp"

#include <sqlite3.h>

#include <chrono>
#include <cstdlib>
#include <fcntl.h>
#include <unistd.h>

namespace lowart::storage {

namespace {
[[noreturn]] void raise(sqlite3* db, std::string_view what) {
  throw database_error(std::string(what) + ": " + (db ? sqlite3_errmsg(db) : "no database"));
}
} // namespace

statement::statement(sqlite3* db, std::string_view sql) : db_(db) {
  if (sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr) != SQLITE_OK)
    raise(db, "prepare");
}

statement::~statement() {
  sqlite3_finalize(stmt_);
}

statement& statement::bind(int index, std::string_view text) {
  if (sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT) != SQLITE_OK)
    raise(db_, "bind");
  return *this;
}

statement& statement::bind(int index, std::int64_t value) {
  if (sqlite3_bind_int64(stmt_, index, value) != SQLITE_OK) raise(db_, "bind");
  return *this;
}

statement& statement::bind(int index, double value) {
  if (sqlite3_bind_double(stmt_, index, value) != SQLITE_OK) raise(db_, "bind");
  return *this;
}

statement& statement::bind_null(int index) {
  if (sqlite3_bind_null(stmt_, index) != SQLITE_OK) raise(db_, "bind");
  return *this;
}

statement& statement::bind_optional(int index, std::string_view text) {
  return text.empty() ? bind_null(index) : bind(index, text);
}

bool statement::step() {
  switch (sqlite3_step(stmt_)) {
  case SQLITE_ROW:
    return true;
  case SQLITE_DONE:
    return false;
  default:
    raise(db_, "step");
  }
}

void statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

std::string statement::text(int column) const {
  auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
  return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column))) : std::string{};
}

std::int64_t statement::integer(int column) const {
  return sqlite3_column_int64(stmt_, column);
}
double statement::real(int column) const {
  return sqlite3_column_double(stmt_, column);
}
bool statement::is_null(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

database::database(const std::string& path) {
  // The file holds key hashes and sealed provider keys: readable by its owner only.
  // SQLite gives its -wal and -shm files the same permissions as the database.
  if (path != ":memory:") {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0600);
    if (fd >= 0) ::close(fd);
  }
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr) !=
      SQLITE_OK) {
    std::string msg = "cannot open database '" + path + "'";
    if (db_) {
      msg += std::string(": ") + sqlite3_errmsg(db_);
      sqlite3_close(db_);
      db_ = nullptr;
    }
    throw database_error(msg);
  }
  sqlite3_busy_timeout(db_, 5000);
  {
    auto st = prepare("PRAGMA journal_mode=WAL");
    if (st.step()) journal_mode_ = st.text(0);
  }
  exec("PRAGMA synchronous=NORMAL");
  exec("PRAGMA foreign_keys=ON");
  migrate();
}

database::~database() {
  if (db_) sqlite3_close(db_);
}

void database::exec(std::string_view sql) {
  std::string text(sql);
  char* err = nullptr;
  if (sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw database_error("exec: " + msg);
  }
}

std::int64_t database::changes() const {
  return sqlite3_changes64(db_);
}

void database::migrate() {
  exec("CREATE TABLE IF NOT EXISTS schema_migrations ("
       " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)");
  {
    auto st = prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
    st.step();
    schema_version_ = static_cast<int>(st.integer(0));
  }
  for (const auto& m : embedded::migrations) {
    int version = std::atoi(std::string(m.name.substr(0, m.name.find('_'))).c_str());
    if (version <= schema_version_) continue;
    transaction([&] {
      exec(m.sql);
      auto now =
          std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
      prepare("INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)")
          .bind(1, static_cast<std::int64_t>(version))
          .bind(2, m.name)
          .bind(3, static_cast<std::int64_t>(now))
          .step();
    });
    schema_version_ = version;
  }
}

} // namespace lowart::storage
