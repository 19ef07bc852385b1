#pragma once
// The two database drivers behind storage::database: SQLite (sqlite.cpp) and PostgreSQL
// (postgres.cpp). Internal to lowart_storage.

#include "storage/database.hpp"

#include <memory>
#include <string>

namespace lowart::storage::drivers {

/// Opens (creating it if needed) the SQLite database at `path`; `journal_mode` is what it
/// runs in (WAL unless the file system refuses it).
std::unique_ptr<backend> open_sqlite(const std::string& path, std::string& journal_mode);

/// Connects to the PostgreSQL server of `url`.
std::unique_ptr<backend> open_postgres(const std::string& url);

} // namespace lowart::storage::drivers
