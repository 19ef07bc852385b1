#pragma once
// Polling a file for changes without reading it half-written.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <system_error>

namespace lowart {

/// What a poll knows of a file: when it was last written and how long it is.
struct file_stamp {
  std::int64_t mtime = 0;
  std::uintmax_t size = 0;
  bool operator==(const file_stamp&) const = default;
};

/// The stamp of `path`, or nothing when it cannot be read.
inline std::optional<file_stamp> stamp_of(const std::filesystem::path& path) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  if (ec) return std::nullopt;
  auto mtime = std::filesystem::last_write_time(path, ec);
  if (ec) return std::nullopt;
  return file_stamp{mtime.time_since_epoch().count(), size};
}

/// One watched file. Most writers (editors, `echo >`, `fs.writeFile`, `cp`) truncate the
/// file and then write it, so a poll can catch it empty or torn, and an empty script or
/// config is valid: loading it would switch the gateway to nothing for a poll interval.
/// A change is therefore taken once two polls in a row see the same stamp.
class settling_file {
public:
  /// True when the file should be read now: it differs from what was read last and has
  /// not changed since the previous poll.
  bool ready(const file_stamp& now) {
    if (read_ == now) {
      pending_.reset();
      return false;
    }
    if (pending_ != now) {
      pending_ = now;
      return false;
    }
    taken(now);
    return true;
  }

  /// The file was read as it is at `now` (at start-up, or after writing it ourselves).
  void taken(const file_stamp& now) {
    read_ = now;
    pending_.reset();
  }

private:
  std::optional<file_stamp> read_;
  std::optional<file_stamp> pending_;
};

} // namespace lowart
