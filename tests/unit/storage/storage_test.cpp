#include "storage/database.hpp"

#include <gtest/gtest.h>

#include <filesystem>

using namespace lowart::storage;

namespace {
std::string temp_db(const char* name) {
  auto path = std::filesystem::path(::testing::TempDir()) / name;
  std::filesystem::remove(path);
  std::filesystem::remove(path.string() + "-wal");
  std::filesystem::remove(path.string() + "-shm");
  return path.string();
}
} // namespace

TEST(database, file_databases_use_wal_and_reach_the_latest_schema) {
  auto path = temp_db("lowart_storage_wal.db");
  database db{path};
  EXPECT_EQ(db.journal_mode(), "wal");
  EXPECT_GE(db.schema_version(), 1);
  auto st = db.prepare("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('virtual_keys','usage_records','audit_log')");
  ASSERT_TRUE(st.step());
  EXPECT_EQ(st.integer(0), 3);
}

TEST(database, migrations_apply_once_across_reopen) {
  auto path = temp_db("lowart_storage_reopen.db");
  int version = 0;
  {
    database db{path};
    version = db.schema_version();
    db.exec("INSERT INTO audit_log(ts_ms, actor, action) VALUES (1, 'test', 'x')");
  }
  database again{path};
  EXPECT_EQ(again.schema_version(), version);
  auto rows = again.prepare("SELECT COUNT(*) FROM schema_migrations");
  ASSERT_TRUE(rows.step());
  EXPECT_EQ(rows.integer(0), version);
  auto audit = again.prepare("SELECT actor FROM audit_log");
  ASSERT_TRUE(audit.step());
  EXPECT_EQ(audit.text(0), "test");
}

TEST(database, memory_databases_report_their_real_journal_mode) {
  database db{":memory:"};
  EXPECT_EQ(db.journal_mode(), "memory");
}

TEST(database, failed_transaction_rolls_back) {
  database db{":memory:"};
  EXPECT_THROW(db.transaction([&] {
    db.exec("INSERT INTO audit_log(ts_ms, actor, action) VALUES (1, 'a', 'b')");
    db.exec("INSERT INTO no_such_table VALUES (1)");
  }),
               database_error);
  auto st = db.prepare("SELECT COUNT(*) FROM audit_log");
  ASSERT_TRUE(st.step());
  EXPECT_EQ(st.integer(0), 0);
}

TEST(database, unopenable_path_gives_a_clear_error) {
  try {
    database db{"/nonexistent-dir/sub/x.db"};
    FAIL() << "expected an error";
  } catch (const database_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/sub/x.db"), std::string::npos);
  }
}

TEST(database, a_new_database_file_is_readable_by_its_owner_only) {
  auto path = temp_db("lowart_storage_mode.db");
  database db{path};
  auto perms = std::filesystem::status(path).permissions();
  using p = std::filesystem::perms;
  EXPECT_EQ(perms & (p::group_all | p::others_all), p::none);
}
