#include "core/sources/sources.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <tuple>
#include <utility>

#include "core/base/fs.h"
#include "core/base/glob.h"
#include "core/base/io.h"
#include "core/base/utf8.h"

namespace safepoint::sources {
namespace {

namespace fs = std::filesystem;

constexpr int kMaxDepth = 256;

// Lists a directory's entry names (without "." and ".."), sorted by byte value. Takes
// ownership of nothing: `fd` is duplicated for fdopendir.
Result<std::vector<std::string>> ListDir(int fd, const std::string& path_for_errors) {
  const int dup_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) return tl::unexpected(ErrnoError(errno, "dup", path_for_errors));
  DIR* dir = ::fdopendir(dup_fd);
  if (dir == nullptr) {
    const int err = errno;
    ::close(dup_fd);
    return tl::unexpected(ErrnoError(err, "opendir", path_for_errors));
  }
  std::vector<std::string> names;
  while (true) {
    errno = 0;
    const dirent* e = ::readdir(dir);
    if (e == nullptr) {
      const int err = errno;
      if (err != 0) {
        ::closedir(dir);
        return tl::unexpected(ErrnoError(err, "readdir", path_for_errors));
      }
      break;
    }
    const std::string_view name(e->d_name);
    if (name == "." || name == "..") continue;
    names.emplace_back(name);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

const char* SpecialKind(mode_t mode) {
  if (S_ISFIFO(mode)) return "fifo";
  if (S_ISSOCK(mode)) return "socket";
  if (S_ISCHR(mode)) return "character device";
  if (S_ISBLK(mode)) return "block device";
  return "special file";
}

// Why the symlink at `rel` (relative to its root) with `target` cannot be stored, or "" when it
// can. One rule with manifest::CheckLinkTarget, which every reader applies: a stored link's
// target is relative and, resolved lexically from the link's directory, stays inside the root.
std::string LinkProblem(const std::string& rel, const std::string& target) {
  if (target.empty()) return "not backed up: the link target is empty";
  if (target.front() == '/') {
    return "not backed up: link target leaves the backed-up tree (absolute target '" +
           QuoteName(target) + "'; only relative links inside the tree are stored)";
  }
  const fs::path joined = (fs::path(rel).parent_path() / target).lexically_normal();
  const std::string s = joined.string();
  if (s == ".." || s.rfind("../", 0) == 0) {
    return "not backed up: link target leaves the backed-up tree ('" + QuoteName(target) + "')";
  }
  return "";
}

class TreeWalker {
 public:
  TreeWalker(std::string root, std::string archive_prefix, std::string config_key,
             const config::TreeSource& tree, Collection* out)
      : root_(std::move(root)),
        prefix_(std::move(archive_prefix)),
        key_(std::move(config_key)),
        tree_(tree),
        out_(out) {}

  Status Walk(int dir_fd, const std::string& rel, bool included, int depth) {
    if (depth > kMaxDepth) {
      return Fail(ErrorCode::kBadInput,
                  Abs(rel) + ": directories nested deeper than " + std::to_string(kMaxDepth) +
                      " levels cannot be backed up; exclude it (or a directory above it) in "
                      "sources." +
                      key_ + ".exclude");
    }
    auto names = ListDir(dir_fd, Abs(rel));
    if (!names) return tl::unexpected(names.error());
    for (const std::string& name : *names) {
      const std::string child = rel.empty() ? name : rel + "/" + name;
      if (Excluded(child)) continue;
      const bool child_included = included || Included(child);
      struct stat st {};
      if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) continue;  // vanished while walking
        return tl::unexpected(ErrnoError(errno, "stat", Abs(child)));
      }
      if (S_ISDIR(st.st_mode)) {
        if (!child_included && !CouldIncludeBelow(child)) continue;
        if (child_included) {
          SP_RETURN_IF_ERROR(CheckPathLength(child));
          Add(child, st, SourceEntry::Kind::kDirectory, "");
        }
        const int fd =
            ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
          if (errno == ENOENT) continue;
          Error e = ErrnoError(errno, "open directory", Abs(child));
          e.message += " (exclude it in sources." + key_ + ".exclude if it is not needed)";
          return tl::unexpected(std::move(e));
        }
        Fd guard(fd);
        SP_RETURN_IF_ERROR(Walk(fd, child, child_included, depth + 1));
        continue;
      }
      if (!child_included) continue;
      if (S_ISLNK(st.st_mode)) {
        std::string target(static_cast<std::size_t>(st.st_size > 0 ? st.st_size : 0) + 256, '\0');
        const ssize_t len = ::readlinkat(dir_fd, name.c_str(), target.data(), target.size());
        if (len < 0) {
          if (errno == ENOENT) continue;
          return tl::unexpected(ErrnoError(errno, "readlink", Abs(child)));
        }
        target.resize(static_cast<std::size_t>(len));
        // A link leaving the tree could never be restored safely (rollback refuses it), so
        // it is left out here, with the one warning about it.
        if (const std::string problem = LinkProblem(child, target); !problem.empty()) {
          out_->warnings.push_back(QuoteName(prefix_ + "/" + child) + ": " + problem);
          continue;
        }
        SP_RETURN_IF_ERROR(CheckPathLength(child));
        Add(child, st, SourceEntry::Kind::kSymlink, std::move(target));
        continue;
      }
      if (S_ISREG(st.st_mode)) {
        const auto size = static_cast<std::uint64_t>(st.st_size);
        if (size > tree_.max_file_size) {
          out_->warnings.push_back(QuoteName(prefix_ + "/" + child) + ": skipped, " + std::to_string(size) +
                                   " bytes is over sources." + key_ + ".max_file_size (" +
                                   std::to_string(tree_.max_file_size) + " bytes)");
          continue;
        }
        SP_RETURN_IF_ERROR(CheckPathLength(child));
        Add(child, st, SourceEntry::Kind::kFile, "");
        continue;
      }
      out_->warnings.push_back(QuoteName(prefix_ + "/" + child) + ": skipped, " + SpecialKind(st.st_mode) +
                               " (only files, directories and symlinks are backed up)");
    }
    return {};
  }

 private:
  [[nodiscard]] std::string Abs(const std::string& rel) const {
    return rel.empty() ? root_ : root_ + "/" + rel;
  }
  // The walk itself goes by directory descriptors, but a file is read, verified and put back by
  // its whole path, which the kernel takes only below PATH_MAX bytes: an entry that would be
  // backed up with a longer one fails here, with a way out, rather than as "File name too long"
  // in the middle of the backup. (What is skipped anyway, with its warning, is not checked.)
  [[nodiscard]] Status CheckPathLength(const std::string& rel) const {
    const std::size_t length = Abs(rel).size();
    if (length < PATH_MAX) return {};
    return Fail(ErrorCode::kBadInput,
                Abs(rel) + ": its path is " + std::to_string(length) + " bytes long, over the " +
                    std::to_string(PATH_MAX - 1) +
                    " bytes a path may have on this system, so it cannot be backed up or "
                    "restored; exclude it (or a directory above it) in sources." +
                    key_ + ".exclude, or shorten its name");
  }
  [[nodiscard]] bool Excluded(const std::string& rel) const {
    for (const auto* list : {&tree_.builtin_exclude, &tree_.exclude}) {
      for (const std::string& p : *list) {
        if (GlobMatch(p, rel)) return true;
      }
    }
    return false;
  }
  [[nodiscard]] bool Included(const std::string& rel) const {
    return std::any_of(tree_.include.begin(), tree_.include.end(),
                       [&](const std::string& p) { return GlobMatch(p, rel); });
  }
  [[nodiscard]] bool CouldIncludeBelow(const std::string& rel) const {
    return std::any_of(tree_.include.begin(), tree_.include.end(),
                       [&](const std::string& p) { return GlobCouldMatchBelow(p, rel); });
  }
  void Add(const std::string& rel, const struct stat& st, SourceEntry::Kind kind,
           std::string target) {
    SourceEntry e;
    e.archive_path = prefix_ + "/" + rel;
    e.kind = kind;
    e.size = kind == SourceEntry::Kind::kDirectory ? 0 : static_cast<std::uint64_t>(st.st_size);
    e.mode = static_cast<std::uint32_t>(st.st_mode & 07777);
    e.mtime = static_cast<std::int64_t>(st.st_mtim.tv_sec);
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    e.link_target = std::move(target);
    out_->entries.push_back(std::move(e));
  }

  std::string root_;
  std::string prefix_;
  std::string key_;
  const config::TreeSource& tree_;
  Collection* out_;
};

// Header value of "Key: value" lines in an RFC 822 style metadata block (stops at the first
// empty line).
std::map<std::string, std::string> ParseMetadataHeaders(std::string_view text) {
  std::map<std::string, std::string> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || line[0] == ' ' || line[0] == '\t') continue;
    std::string key(line.substr(0, colon));
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    out.emplace(std::move(key), std::string(value));  // first occurrence wins
  }
  return out;
}

// Reads up to 64 KiB of a file relative to `dir_fd` without following a final symlink.
std::optional<std::string> ReadSmallAt(int dir_fd, const std::string& name) {
  const int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return std::nullopt;
  Fd guard(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  std::string buf(64 << 10, '\0');
  std::size_t total = 0;
  while (total < buf.size()) {
    const ssize_t r = ::read(fd, buf.data() + total, buf.size() - total);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return std::nullopt;
    if (r == 0) break;
    total += static_cast<std::size_t>(r);
  }
  buf.resize(total);
  return buf;
}

struct Package {
  std::string name;
  std::optional<std::string> version;
  std::string site;
};

std::string LowerCopy(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() > suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// What one site-packages directory holds.
struct SiteScan {
  std::vector<Package> packages;
  std::vector<std::string> warnings;
};

SiteScan ScanSitePackages(const std::string& site) {
  SiteScan scan;
  const int fd = ::open(site.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    scan.warnings.push_back("python site-packages " + site + ": " + std::strerror(errno) +
                            "; no packages recorded from it");
    return scan;
  }
  Fd guard(fd);
  auto names = ListDir(fd, site);
  if (!names) {
    scan.warnings.push_back(names.error().message);
    return scan;
  }
  for (const std::string& name : *names) {
    const bool dist = EndsWith(name, ".dist-info");
    const bool egg = EndsWith(name, ".egg-info");
    if (!dist && !egg) continue;
    struct stat st {};
    if (::fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    std::optional<std::string> meta;
    if (S_ISDIR(st.st_mode)) {
      const int sub = ::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub >= 0) {
        Fd sub_guard(sub);
        meta = ReadSmallAt(sub, dist ? "METADATA" : "PKG-INFO");
      }
    } else if (egg && S_ISREG(st.st_mode)) {
      meta = ReadSmallAt(fd, name);  // an .egg-info file is the PKG-INFO itself
    } else {
      continue;
    }
    Package p;
    p.site = site;
    if (meta) {
      const auto headers = ParseMetadataHeaders(*meta);
      if (auto it = headers.find("Name"); it != headers.end() && !it->second.empty()) {
        p.name = it->second;
      }
      if (auto it = headers.find("Version"); it != headers.end() && !it->second.empty()) {
        p.version = it->second;
      }
    }
    if (p.name.empty() || !p.version) {
      // "name-version.dist-info" or "name-version[-pyX.Y].egg-info"; names never contain '-'
      // here (the installers replace it with '_').
      const std::string stem = name.substr(0, name.size() - (dist ? 10 : 9));
      const std::size_t dash = stem.find('-');
      if (p.name.empty()) p.name = stem.substr(0, dash);
      if (!p.version && dash != std::string::npos) {
        const std::string rest = stem.substr(dash + 1);
        const std::string version = rest.substr(0, rest.find('-'));
        if (!version.empty()) p.version = version;
      }
    }
    if (!meta) {
      scan.warnings.push_back("python package " + site + "/" + name +
                              ": no readable metadata; name and version taken from its name");
    }
    scan.packages.push_back(std::move(p));
  }
  return scan;
}

}  // namespace

Result<Collection> CollectFiles(const config::Config& config) {
  Collection out;
  struct Root {
    const std::string& path;
    const char* name;
    const config::TreeSource& tree;
    bool required;
  };
  const Root roots[] = {
      {config.paths.ha_config, "ha_config", config.sources.ha_config, true},
      {config.paths.workspace, "workspace", config.sources.workspace, false},
  };
  for (const Root& root : roots) {
    const int fd = ::open(root.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (!root.required && err == ENOENT) {
        out.warnings.push_back(std::string(root.name) + " " + root.path +
                               " does not exist; nothing backed up from it");
        continue;
      }
      if (root.required && (err == ENOENT || err == ENOTDIR)) {
        return Fail(ErrorCode::kBadInput, std::string("paths.") + root.name + " " + root.path +
                                              ": " + std::strerror(err));
      }
      return tl::unexpected(ErrnoError(err, "open directory", root.path));
    }
    Fd guard(fd);
    TreeWalker walker(root.path, root.name, root.name, root.tree, &out);
    SP_RETURN_IF_ERROR(walker.Walk(fd, "", false, 0));
  }
  return out;
}

Result<nlohmann::json> CaptureEnvironment(const config::Config& config) {
  nlohmann::json vars = nlohmann::json::object();
  for (const std::string& name : config.sources.environment.variables) {
    const char* v = std::getenv(name.c_str());
    vars[name] = v == nullptr ? nlohmann::json(nullptr) : nlohmann::json(std::string(v));
  }
  std::vector<Package> packages;
  std::vector<std::string> warnings;
  for (const std::string& site : config.sources.environment.python_site_packages) {
    SiteScan scan = ScanSitePackages(site);
    std::move(scan.packages.begin(), scan.packages.end(), std::back_inserter(packages));
    std::move(scan.warnings.begin(), scan.warnings.end(), std::back_inserter(warnings));
  }
  std::sort(packages.begin(), packages.end(), [](const Package& a, const Package& b) {
    return std::forward_as_tuple(LowerCopy(a.name), a.name, a.version, a.site) <
           std::forward_as_tuple(LowerCopy(b.name), b.name, b.version, b.site);
  });
  nlohmann::json pkgs = nlohmann::json::array();
  for (const Package& p : packages) {
    pkgs.push_back({{"name", p.name},
                    {"version", p.version ? nlohmann::json(*p.version) : nlohmann::json(nullptr)},
                    {"site", p.site}});
  }
  try {
    // Values come from the environment and package metadata: replace invalid UTF-8 so that a
    // later dump() cannot throw.
    nlohmann::json out = {{"variables", vars}, {"python_packages", pkgs}, {"warnings", warnings}};
    return nlohmann::json::parse(
        out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  } catch (const nlohmann::json::exception& e) {
    return Fail(ErrorCode::kInternal, std::string("environment capture: ") + e.what());
  }
}

Result<TailResult> TailLinesWithStats(const std::string& path, std::size_t n,
                                      std::size_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    if (errno == ENOENT) return Fail(ErrorCode::kNotFound, path + ": no such file");
    return tl::unexpected(ErrnoError(errno, "open", path));
  }
  Fd guard(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return tl::unexpected(ErrnoError(errno, "stat", path));
  if (!S_ISREG(st.st_mode)) return Fail(ErrorCode::kBadInput, path + ": not a regular file");
  TailResult result;
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (n == 0 || size == 0 || max_bytes == 0) return result;

  // Blocks read so far, last block first; `start` is the file offset where the tail begins.
  std::vector<std::string> blocks;
  std::uint64_t pos = size;
  std::uint64_t start = 0;
  std::size_t newlines = 0;
  bool found = false;
  while (pos > 0 && !found) {
    const std::uint64_t len = std::min<std::uint64_t>(kTailBlockBytes, pos);
    pos -= len;
    std::string block(static_cast<std::size_t>(len), '\0');
    std::size_t got = 0;
    while (got < block.size()) {
      const ssize_t r =
          ::pread(fd, block.data() + got, block.size() - got, static_cast<off_t>(pos + got));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return tl::unexpected(ErrnoError(errno, "read", path));
      ++result.reads;
      if (r == 0) return Fail(ErrorCode::kIo, path + ": file shrank while reading its tail");
      got += static_cast<std::size_t>(r);
      result.bytes_read += static_cast<std::uint64_t>(r);
    }
    for (std::size_t i = block.size(); i-- > 0;) {
      if (block[i] != '\n') continue;
      if (pos + i == size - 1) continue;  // the final newline ends the last line
      if (++newlines == n) {
        start = pos + i + 1;
        found = true;
        break;
      }
    }
    blocks.push_back(std::move(block));
    if (!found && size - pos > max_bytes) break;  // over the cap already
  }
  if (!found) start = pos;
  if (size - start > max_bytes) {
    start = size - max_bytes;
    result.truncated = true;
  }
  result.text.reserve(static_cast<std::size_t>(size - start));
  // Blocks cover [pos, size); append the part at or after `start`, oldest block first.
  std::uint64_t block_start = pos;
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
    const std::uint64_t block_end = block_start + it->size();
    if (block_end > start) {
      const std::uint64_t from = start > block_start ? start - block_start : 0;
      result.text.append(*it, static_cast<std::size_t>(from), std::string::npos);
    }
    block_start = block_end;
  }
  return result;
}

Result<std::string> TailLines(const std::string& path, std::size_t n) {
  auto r = TailLinesWithStats(path, n);
  if (!r) return tl::unexpected(std::move(r.error()));
  return std::move(r->text);
}

Result<LogCapture> CaptureLogs(const config::Config& config) {
  LogCapture out;
  std::set<std::string> used;
  for (const config::LogSource& log : config.sources.logs) {
    auto tail = TailLinesWithStats(log.path, log.lines);
    if (!tail) {
      out.warnings.push_back("log " + log.path + " skipped: " + tail.error().message);
      continue;
    }
    const fs::path p(log.path);
    std::string name = p.filename().string();
    for (int i = 2; used.count(name) != 0; ++i) {
      name = p.stem().string() + "-" + std::to_string(i) + p.extension().string();
    }
    used.insert(name);
    LogTail t;
    t.path = log.path;
    t.archive_path = "logs/" + name;
    t.lines = log.lines;
    t.text = std::move(tail->text);
    t.truncated = tail->truncated;
    if (t.truncated) {
      out.warnings.push_back("log " + log.path + ": last " + std::to_string(log.lines) +
                             " lines are longer than " + std::to_string(kDefaultTailMaxBytes) +
                             " bytes; kept the last " + std::to_string(kDefaultTailMaxBytes));
    }
    out.logs.push_back(std::move(t));
  }
  return out;
}

}  // namespace safepoint::sources
