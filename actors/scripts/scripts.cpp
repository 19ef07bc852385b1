#include "actors/scripts/scripts.hpp"

#include "actors/admin/admin_util.hpp"
#include "actors/messages.hpp"
#include "actors/state.hpp"
#include "core/clock.hpp"
#include "core/file_watch.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"
#include "core/secrets.hpp"
#include "scripting/hooks.hpp"
#include "scripting/lua_sandbox.hpp"

#include <caf/all.hpp>
#include <simdjson.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

namespace lowart::actors {
namespace {

namespace fs = std::filesystem;
using scripting::script_entry;
using scripting::script_table;

constexpr std::size_t max_script_bytes = 1024 * 1024;

bool is_script(const std::string& name) {
  return name.size() > 4 && name.compare(name.size() - 4, 4, ".lua") == 0;
}
bool is_data(const std::string& name) {
  return name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0;
}
/// A plain file name: no directories, no hidden or temporary files.
bool acceptable_name(const std::string& name) {
  if (name.empty() || name.size() > 128 || name.front() == '.') return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) return false;
  return is_script(name) || is_data(name);
}

std::optional<std::string> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// Which hooks a compiled source defines (for listings and the proxy's fast check).
std::vector<std::string> hooks_of(const script_table& limits, const std::string& name, const std::string& source) {
  scripting::limits lim;
  lim.instructions = limits.instructions;
  lim.memory_bytes = limits.memory_bytes;
  scripting::lua_sandbox lua(lim, [](std::string_view) {});
  std::vector<std::string> out;
  if (!lua.compile(name, source).empty()) return out;
  for (const char* hook : {"on_request", "on_response", "on_chunk"})
    if (lua.has(hook)) out.emplace_back(hook);
  return out;
}

class script_loader {
public:
  explicit script_loader(gateway_state& gw) : gw_(gw), dir_(gw.config.scripts.dir) {
    table_.instructions = gw.config.scripts.instructions;
    table_.memory_bytes = gw.config.scripts.memory_bytes;
  }

  /// Compares the directory with what was loaded; loads what changed and has stopped
  /// changing (`at_start`: everything there, at once). Publishes when anything changed.
  void scan(bool at_start = false) {
    std::error_code ec;
    if (!fs::is_directory(dir_, ec)) {
      if (!missing_logged_) {
        log::warn("scripts directory does not exist (created on the first upload)", {{"dir", dir_.string()}});
        missing_logged_ = true;
      }
      if (!table_.by_name.empty() || !table_.files.empty()) {
        table_.by_name.clear();
        table_.files.clear();
        seen_.clear();
        publish();
      }
      return;
    }
    missing_logged_ = false;
    bool changed = false;
    std::set<std::string> present;
    for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
      if (!it->is_regular_file(ec)) continue;
      auto name = it->path().filename().string();
      if (!acceptable_name(name)) continue;
      present.insert(name);
      auto stamp = stamp_of(it->path());
      if (!stamp) continue;
      auto& watch = seen_[name];
      if (at_start)
        watch.taken(*stamp);
      else if (!watch.ready(*stamp))
        continue; // unchanged, or still being written: the next scan looks again
      auto text = read_file(it->path());
      if (!text) continue;
      if (is_script(name))
        offer(name, std::move(*text), "file"); // a refusal is published too: it shows in the listing
      else
        load_data(name, *text);
      changed = true;
    }
    for (auto it = seen_.begin(); it != seen_.end();) {
      if (present.count(it->first)) {
        ++it;
        continue;
      }
      if (table_.by_name.erase(it->first) + table_.files.erase(it->first) > 0) {
        log::warn("script file removed; unloaded", {{"script", it->first}});
        changed = true;
      }
      it = seen_.erase(it);
    }
    if (changed) publish();
  }

  /// A new source for script `name`: "" when it is now active, else why it was refused
  /// (the previous version stays active; the error is kept for the listing).
  std::string offer(const std::string& name, std::string source, std::string_view origin) {
    auto old = table_.by_name.find(name);
    auto sha = secrets::sha256_hex(source);
    if (old != table_.by_name.end() && old->second->sha256 == sha && old->second->error.empty()) return {};
    auto next = std::make_shared<script_entry>(old != table_.by_name.end() ? *old->second : script_entry{});
    next->name = name;
    std::string error = source.size() > max_script_bytes ? "the script is larger than 1 MiB"
                                                         : scripting::check_compiles(table_, name, source);
    if (!error.empty()) {
      next->error = error;
      next->error_at_ms = clock::unix_ms();
      log::error("script refused; the previous version stays active",
                 {{"script", name}, {"error", error}, {"active_version", next->version}});
      metrics::script_reloads(name, "refused").inc();
    } else {
      next->source = std::move(source);
      next->sha256 = sha;
      next->version = ++versions_;
      next->loaded_at_ms = clock::unix_ms();
      next->origin = std::string(origin);
      next->error.clear();
      next->error_at_ms = 0;
      next->hooks = hooks_of(table_, name, next->source);
      log::info("script loaded", {{"script", name}, {"version", next->version}, {"origin", origin}});
      metrics::script_reloads(name, "ok").inc();
    }
    table_.by_name[name] = std::move(next);
    return error;
  }

  bool load_data(const std::string& name, const std::string& text) {
    table_.files[name] = std::make_shared<const std::string>(text);
    log::info("script data file loaded", {{"file", name}, {"bytes", text.size()}});
    return true;
  }

  void publish() { gw_.scripts.publish(std::make_shared<const script_table>(table_)); }

  admin_result handle(const std::string& method, const std::string& path, const std::string& body) {
    using namespace admin_util;
    auto name = path.size() > 15 ? path.substr(15) : std::string{};
    if (path != "/admin/scripts" && path.rfind("/admin/scripts/", 0) != 0) return not_found("no such admin resource");
    if (name.empty()) {
      if (method != "GET") return error(405, "invalid_request_error", "use GET for /admin/scripts");
      std::vector<std::string> items;
      for (const auto& [n, e] : table_.by_name)
        items.push_back(describe(*e, false));
      std::vector<std::string> files;
      for (const auto& [n, text] : table_.files) {
        json::object_writer w;
        w.str("name", n).num("bytes", static_cast<long long>(text->size()));
        files.push_back(w.done());
      }
      json::object_writer w;
      w.str("object", "list")
          .str("dir", dir_.string())
          .raw("data", json::array(items))
          .raw("files", json::array(files));
      return {200, w.done()};
    }
    if (!acceptable_name(name))
      return bad_field("name", "a script is a file name ending in .lua (or .json for data) of letters, digits, . _ -");
    if (method == "GET") {
      if (auto it = table_.by_name.find(name); it != table_.by_name.end()) return {200, describe(*it->second, true)};
      if (auto it = table_.files.find(name); it != table_.files.end()) {
        json::object_writer w;
        w.str("name", name).str("source", *it->second);
        return {200, w.done()};
      }
      return not_found("no script named " + name);
    }
    if (method == "PUT" || method == "POST") {
      if (body.empty()) return bad_field("body", "send the script's source as the request body");
      if (is_data(name)) {
        simdjson::dom::parser parser;
        simdjson::dom::element doc;
        if (parser.parse(body).get(doc) != simdjson::SUCCESS) return bad_field("body", name + " is not valid JSON");
      } else if (auto refused = offer(name, body, "upload"); !refused.empty()) {
        publish(); // the refusal shows in the listing
        return error(400, "invalid_request_error", "script refused, the previous version stays active: " + refused);
      }
      std::error_code ec;
      fs::create_directories(dir_, ec);
      auto final_path = dir_ / name;
      auto temp = dir_ / ("." + name + ".upload");
      {
        std::ofstream out(temp, std::ios::binary | std::ios::trunc);
        out << body;
        out.close();
        if (!out) return error(500, "storage_error", "cannot write " + temp.string());
      }
      fs::rename(temp, final_path, ec);
      if (ec) return error(500, "storage_error", "cannot write " + final_path.string() + ": " + ec.message());
      // What is on disk now is what is loaded: the next scan does not load it again.
      if (auto stamp = stamp_of(final_path)) seen_[name].taken(*stamp);
      if (is_data(name)) load_data(name, body);
      publish();
      if (is_data(name)) {
        json::object_writer w;
        w.str("name", name).num("bytes", static_cast<long long>(body.size()));
        return {200, w.done()};
      }
      return {200, describe(*table_.by_name.at(name), false)};
    }
    if (method == "DELETE") {
      bool known = table_.by_name.count(name) || table_.files.count(name);
      std::error_code ec;
      fs::remove(dir_ / name, ec);
      if (!known && ec) return not_found("no script named " + name);
      table_.by_name.erase(name);
      table_.files.erase(name);
      seen_.erase(name);
      publish();
      log::info("script deleted", {{"script", name}});
      return {200, R"({"deleted":true})"};
    }
    return error(405, "invalid_request_error", "use GET, PUT or DELETE for /admin/scripts/{name}");
  }

private:
  std::string describe(const script_entry& e, bool with_source) {
    json::object_writer w;
    w.str("name", e.name)
        .boolean("active", !e.source.empty())
        .num("version", e.version)
        .str("sha256", e.sha256)
        .num("loaded_at", e.loaded_at_ms / 1000)
        .str("origin", e.origin)
        .raw("hooks", json::string_array(e.hooks));
    if (e.error.empty())
      w.raw("error", "null");
    else
      w.str("error", e.error).num("error_at", e.error_at_ms / 1000);
    if (with_source) {
      // A script whose every version was refused has no active source: show the file.
      std::string source = e.source;
      if (source.empty())
        if (auto text = read_file(dir_ / e.name)) source = std::move(*text);
      w.str("source", source);
    }
    return w.done();
  }

  gateway_state& gw_;
  fs::path dir_;
  script_table table_;
  std::map<std::string, settling_file> seen_; ///< name -> what was read of it, and a change still settling
  std::int64_t versions_ = 0;
  bool missing_logged_ = false;
};

struct scripts_state {
  static inline const char* name = "scripts";
  std::unique_ptr<script_loader> loader;
};

using scripts_actor = caf::stateful_actor<scripts_state>;

caf::behavior scripts(scripts_actor* self, gateway_state* gw, std::shared_ptr<script_loader> loaded) {
  self->state.loader = std::make_unique<script_loader>(std::move(*loaded));
  auto every = std::chrono::milliseconds(gw->config.scripts.poll_ms);
  self->delayed_send(self, every, tick_atom::value);
  return {
      [=](tick_atom) {
        try {
          self->state.loader->scan();
        } catch (const std::exception& e) {
          log::error("scripts scan failed", {{"error", e.what()}});
        }
        self->delayed_send(self, every, tick_atom::value);
      },
      [=](admin_atom, const std::string& method, const std::string& path, const std::string&, const std::string& body,
          const std::string&, const std::string&, const std::string&,
          const std::string&) -> caf::result<std::int32_t, std::string, std::string> {
        admin_result r;
        try {
          r = self->state.loader->handle(method, path, body);
        } catch (const std::exception& e) {
          r = admin_util::error(500, "storage_error", e.what());
        }
        return {static_cast<std::int32_t>(r.status), std::move(r.body), std::move(r.content_type)};
      },
  };
}

} // namespace

caf::actor spawn_scripts(caf::actor_system& sys, gateway_state& state, bool detached) {
  auto loader = std::make_shared<script_loader>(state);
  loader->scan(true);
  loader->publish();
  if (detached) return sys.spawn<caf::detached>(scripts, &state, std::move(loader));
  return sys.spawn(scripts, &state, std::move(loader));
}

} // namespace lowart::actors
