#include "net/ui_files.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>

namespace lowart::net {

namespace {

std::string type_of(const std::string& name) {
  auto ext = std::filesystem::path(name).extension().string();
  if (ext == ".html") return "text/html; charset=utf-8";
  if (ext == ".js" || ext == ".mjs") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".json" || ext == ".map") return "application/json";
  if (ext == ".svg") return "image/svg+xml";
  if (ext == ".png") return "image/png";
  if (ext == ".ico") return "image/x-icon";
  if (ext == ".woff2") return "font/woff2";
  if (ext == ".txt") return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

} // namespace

const ui_file* ui_bundle::find(std::string_view path) const {
  if (path.empty() || path.back() == '/') path = "index.html";
  if (path.find("..") != std::string_view::npos) return nullptr;
  if (auto it = files.find(std::string(path)); it != files.end()) return &it->second;
  // Client-side routes (no extension) get the app itself.
  auto last = path.substr(path.rfind('/') == std::string_view::npos ? 0 : path.rfind('/') + 1);
  if (last.find('.') == std::string_view::npos)
    if (auto it = files.find("index.html"); it != files.end()) return &it->second;
  return nullptr;
}

std::shared_ptr<const ui_bundle> load_ui(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (dir.empty() || !fs::is_regular_file(fs::path(dir) / "index.html", ec)) return nullptr;
  auto bundle = std::make_shared<ui_bundle>();
  bundle->dir = dir;
  std::size_t total = 0;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    auto rel = fs::relative(it->path(), dir, ec).generic_string();
    if (ec || rel.empty()) continue;
    std::ifstream in(it->path(), std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    total += text.str().size();
    if (total > 64 * 1024 * 1024) break;
    ui_file f;
    f.content_type = type_of(rel);
    f.body = text.str();
    f.immutable = rel.rfind("assets/", 0) == 0;
    bundle->files.emplace(std::move(rel), std::move(f));
  }
  return bundle;
}

} // namespace lowart::net
