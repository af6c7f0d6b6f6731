#include "core/rollback/path_args.h"

#include <optional>
#include <string_view>

#include "core/base/paths.h"
#include "core/base/utf8.h"
#include "core/format/manifest.h"

namespace safepoint::rollback {

namespace {

// `typed` without empty and "." components ("./a//b/" -> "a/b", "/a/./b" -> "/a/b"; "/" stays);
// nullopt when a component is "..".
std::optional<std::string> Tidied(std::string_view typed) {
  std::string out = typed.starts_with('/') ? "/" : "";
  std::size_t start = 0;
  while (start <= typed.size()) {
    std::size_t slash = typed.find('/', start);
    if (slash == std::string_view::npos) slash = typed.size();
    const std::string_view part = typed.substr(start, slash - start);
    start = slash + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") return std::nullopt;
    if (!out.empty() && out.back() != '/') out += '/';
    out += part;
  }
  return out;
}

// `abs` relative to the directory `dir` ("" for the directory itself); nullopt outside it.
std::optional<std::string> Below(const std::string& abs, const std::string& dir) {
  if (abs == dir) return std::string();
  if (dir == "/") return abs.substr(1);
  if (abs.size() > dir.size() && abs.starts_with(dir) && abs[dir.size()] == '/') {
    return abs.substr(dir.size() + 1);
  }
  return std::nullopt;
}

// An absolute (tidied) path inside ha_config or the workspace in archive form: as written, else
// with the symlinks of its directories resolved, else (a link outside the trees that leads into
// one) with its own.
std::optional<std::string> ArchiveOfAbsolute(const std::string& abs, const config::Config& config) {
  // The workspace lies inside ha_config by default (and ha_config's backup leaves it out), so
  // the longer directory is tried first.
  std::pair<const std::string*, std::string_view> trees[] = {
      {&config.paths.ha_config, "ha_config"}, {&config.paths.workspace, "workspace"}};
  if (config.paths.workspace.size() > config.paths.ha_config.size()) {
    std::swap(trees[0], trees[1]);
  }
  auto in_a_tree = [&](const std::string& p) -> std::optional<std::string> {
    for (const auto& [dir, root] : trees) {
      if (dir->empty()) continue;
      if (auto rel = Below(p, *dir)) {
        return rel->empty() ? std::string(root) : std::string(root) + "/" + *rel;
      }
    }
    return std::nullopt;
  };
  if (auto found = in_a_tree(abs)) return found;
  if (abs == "/") return std::nullopt;
  const std::size_t slash = abs.rfind('/');
  const std::string parent = ResolvedPath(slash == 0 ? "/" : abs.substr(0, slash));
  if (auto found = in_a_tree((parent == "/" ? "" : parent) + abs.substr(slash))) return found;
  return in_a_tree(ResolvedPath(abs));  // a link outside the trees to a place inside
}

bool IsFormatRoot(std::string_view top) {
  for (std::string_view root : {"ha_config", "workspace", "state", "environment", "logs"}) {
    if (top == root) return true;
  }
  return false;
}

}  // namespace

Result<std::vector<std::string>> ArchivePathsOf(const std::vector<std::string>& paths,
                                                const config::Config* config) {
  std::vector<std::string> out;
  for (const std::string& typed : paths) {
    auto bad = [&](const std::string& why) {
      return Fail(ErrorCode::kBadInput, "path " + QuoteNameInText(typed) + ": " + why);
    };
    const auto tidy = Tidied(typed);
    if (!tidy) return bad("'..' is not allowed; name the path inside the backed-up trees");
    if (typed.empty()) return bad("empty");
    std::string archive;
    if (!tidy->empty() && tidy->front() == '/') {
      if (config == nullptr) {
        return bad(
            "must be relative to the backed-up trees (\"configuration.yaml\" or "
            "\"ha_config/.storage/core.config_entries\")");
      }
      auto found = ArchiveOfAbsolute(*tidy, *config);
      if (!found) {
        return bad("lies outside ha_config (" + config->paths.ha_config + ") and the workspace (" +
                   config->paths.workspace + ")");
      }
      archive = std::move(*found);
    } else {
      // "." (and "./") is the configuration directory itself.
      archive = tidy->empty()                                    ? "ha_config"
                : IsFormatRoot(tidy->substr(0, tidy->find('/'))) ? *tidy
                                                                 : "ha_config/" + *tidy;
    }
    if (archive.size() > 4096) return bad("longer than 4096 bytes");
    if (auto st = manifest::CheckArchivePath(archive); !st) return bad(st.error().message);
    out.push_back(std::move(archive));
  }
  return out;
}

}  // namespace safepoint::rollback
