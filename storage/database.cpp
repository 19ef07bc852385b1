// storage::database: one interface over the SQLite and PostgreSQL drivers (sqlite.cpp,
// postgres.cpp), and the embedded migrations it applies on open.
#include "storage/database.hpp"

#include "storage/drivers.hpp"
#include "storage/migrations_embedded.hpp"

#include <chrono>
#include <cstdlib>

namespace lowart::storage {

namespace {

std::int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

} // namespace

database::database(const std::string& target) {
  if (is_postgres_url(target)) {
    dialect_ = storage::dialect::postgres;
    backend_ = drivers::open_postgres(target);
  } else {
    backend_ = drivers::open_sqlite(target, journal_mode_);
  }
  migrate();
}

database::~database() = default;

std::string database::utc_bucket(std::string_view ms_column, std::string_view unit) const {
  std::string col(ms_column);
  bool pg = dialect_ == storage::dialect::postgres;
  std::string format = unit == "minute" ? (pg ? R"(YYYY-MM-DD"T"HH24:MI"Z")" : "%Y-%m-%dT%H:%MZ")
                       : unit == "hour" ? (pg ? R"(YYYY-MM-DD"T"HH24:00"Z")" : "%Y-%m-%dT%H:00Z")
                                        : (pg ? "YYYY-MM-DD" : "%Y-%m-%d");
  if (pg) return "to_char(to_timestamp(" + col + " / 1000) AT TIME ZONE 'UTC', '" + format + "')";
  return "strftime('" + format + "', " + col + " / 1000, 'unixepoch')";
}

void database::migrate() {
  bool pg = dialect_ == storage::dialect::postgres;
  // Replicas may start together: on PostgreSQL one migrates while the others wait.
  if (pg) exec("SELECT pg_advisory_lock(7242001)");
  try {
    exec(pg ? "CREATE TABLE IF NOT EXISTS schema_migrations ("
              " version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
            : "CREATE TABLE IF NOT EXISTS schema_migrations ("
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
        exec(pg ? postgres_sql(m.sql, true) : std::string(m.sql));
        prepare("INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)")
            .bind(1, static_cast<std::int64_t>(version))
            .bind(2, m.name)
            .bind(3, unix_seconds())
            .step();
      });
      schema_version_ = version;
    }
  } catch (...) {
    if (pg) {
      try {
        exec("SELECT pg_advisory_unlock(7242001)");
      } catch (...) {
      }
    }
    throw;
  }
  if (pg) exec("SELECT pg_advisory_unlock(7242001)");
}

} // namespace lowart::storage
