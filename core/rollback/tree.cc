// Path and file helpers of the rollback engine.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <functional>
#include <map>
#include <set>
#include <utility>

#include "core/base/io.h"
#include "core/base/sha256.h"
#include "core/rollback/internal.h"
#include "core/rollback/journal.h"
#include "core/rollback/rollback.h"
#include "core/sources/snapshot.h"

namespace safepoint::rollback::internal {

namespace {
constexpr std::size_t kCopyBuffer = std::size_t{256} * 1024;
}  // namespace

bool LExists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

bool IsRealDir(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool SameMount(const std::string& a, const std::string& b) {
  struct statx sa {
  }, sb{};
  const unsigned mask = STATX_INO | STATX_MNT_ID;
  if (::statx(AT_FDCWD, a.c_str(), 0, mask, &sa) != 0 ||
      ::statx(AT_FDCWD, b.c_str(), 0, mask, &sb) != 0) {
    return false;
  }
  if (sa.stx_dev_major != sb.stx_dev_major || sa.stx_dev_minor != sb.stx_dev_minor) return false;
  // Kernels before 5.8 report no mount id: the device is all they tell.
  return (sa.stx_mask & sb.stx_mask & STATX_MNT_ID) == 0 || sa.stx_mnt_id == sb.stx_mnt_id;
}

std::string ParentOf(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string BaseName(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// `path` with its last component extended by `prefix` and `suffix`, its base name cut so that
// the component stays within NAME_MAX (255 bytes), cut before a UTF-8 continuation byte.
std::string WithNameAffixes(const std::string& path, std::string_view prefix,
                            std::string_view suffix) {
  constexpr std::size_t kNameMax = 255;
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  const std::size_t room = kNameMax - prefix.size() - suffix.size();
  if (base.size() > room) {
    std::size_t cut = room;
    while (cut > 0 && (static_cast<unsigned char>(base[cut]) & 0xC0) == 0x80) --cut;
    base.resize(cut);
  }
  return dir + std::string(prefix) + base + std::string(suffix);
}

// "ha_config" or "workspace" of an archive path.
std::string TopOf(std::string_view archive_path) {
  return std::string(archive_path.substr(0, archive_path.find('/')));
}

std::string RelOf(std::string_view archive_path) {
  auto slash = archive_path.find('/');
  return slash == std::string_view::npos ? std::string()
                                         : std::string(archive_path.substr(slash + 1));
}

bool IsTreeRoot(std::string_view top) { return top == "ha_config" || top == "workspace"; }

// True when `path` equals `dir` or lies below it.
bool IsWithin(const std::string& path, const std::string& dir) {
  return path == dir ||
         (path.size() > dir.size() && path.starts_with(dir) && path[dir.size()] == '/');
}

bool RunningAsRoot() { return ::geteuid() == 0; }

namespace {

// The names in the open directory stream `d` (but "." and ".."), sorted; closes `d`.
std::vector<std::string> SortedNamesAndClose(DIR* d) {
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

Result<std::vector<std::string>> ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return std::vector<std::string>();
    return tl::unexpected(ErrnoError(errno, "open", dir));
  }
  return SortedNamesAndClose(d);
}

// Creates `dir` and its missing parents below `base` (which must exist) through `fs`.
Status MakeDirsBelow(FileSystem& fs, const std::string& base, const std::string& rel_dir) {
  if (!IsRealDir(base)) SP_RETURN_IF_ERROR(fs.MakeDir(base, 0700));
  std::string path = base;
  std::size_t pos = 0;
  while (pos < rel_dir.size()) {
    std::size_t next = rel_dir.find('/', pos);
    if (next == std::string::npos) next = rel_dir.size();
    path += "/" + rel_dir.substr(pos, next - pos);
    pos = next + 1;
    if (!IsRealDir(path)) {
      if (LExists(path)) return Fail(ErrorCode::kIo, path + " is in the way (not a directory)");
      SP_RETURN_IF_ERROR(fs.MakeDir(path, 0700));
    }
  }
  return {};
}

namespace {

// A directory found not to be one while applying is an I/O failure of the apply (exit 9, as
// rollback.md lists), not bad input: the rollback was valid when it started.
Error AsApplyError(Error e) {
  if (e.code == ErrorCode::kBadInput) e.code = ErrorCode::kIo;
  return e;
}

}  // namespace

std::optional<struct stat> LStatIn(const Dir& dir, const std::string& name) {
  struct stat st {};
  if (::fstatat(dir.fd(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return std::nullopt;
  return st;
}

Result<Located> Locate(ApplyContext& c, const std::string& archive_path) {
  const std::string top = TopOf(archive_path);
  auto root = c.root_dirs.find(top);
  if (root == c.root_dirs.end()) {
    auto opened = Dir::Open(c.roots.For(top));
    if (!opened) return tl::unexpected(AsApplyError(opened.error()));
    root = c.root_dirs.emplace(top, std::move(*opened)).first;
  }
  // A descriptor of its own: the root's stays open for the next operation.
  auto dir = Dir::OpenIn(root->second, ".");
  if (!dir) return tl::unexpected(AsApplyError(dir.error()));
  const std::string rel = RelOf(archive_path);
  if (rel.empty()) return Located{std::move(*dir), "."};
  std::size_t pos = 0;
  for (std::size_t slash; (slash = rel.find('/', pos)) != std::string::npos; pos = slash + 1) {
    auto sub = Dir::OpenIn(*dir, rel.substr(pos, slash - pos));
    if (!sub) return tl::unexpected(AsApplyError(sub.error()));
    *dir = std::move(*sub);
  }
  return Located{std::move(*dir), rel.substr(pos)};
}

Result<std::vector<std::string>> ListDirIn(const Dir& dir) {
  // fdopendir takes the descriptor it is given: a second one of the same directory.
  const int fd = ::openat(dir.fd(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return tl::unexpected(ErrnoError(errno, "open", dir.path()));
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    const int err = errno;
    ::close(fd);
    return tl::unexpected(ErrnoError(err, "opendir", dir.path()));
  }
  return SortedNamesAndClose(d);
}

namespace {

Result<std::string> ReadLinkIn(const Dir& dir, const std::string& name) {
  std::string target(256, '\0');
  for (;;) {
    const ssize_t n = ::readlinkat(dir.fd(), name.c_str(), target.data(), target.size());
    if (n < 0) return tl::unexpected(ErrnoError(errno, "readlink", dir.PathOf(name)));
    if (static_cast<std::size_t>(n) < target.size()) {
      target.resize(static_cast<std::size_t>(n));
      return target;
    }
    target.resize(target.size() * 2);
  }
}

}  // namespace

Status CopyFile(FileSystem& fs, const Dir& from_dir, const std::string& from, const Dir& to_dir,
                const std::string& to, mode_t mode) {
  auto in = ReadOnlyFile::OpenAt(from_dir.fd(), from, from_dir.PathOf(from));
  if (!in) return tl::unexpected(in.error());
  auto out = fs.CreateFileAt(to_dir, to, 0600);
  if (!out) return tl::unexpected(out.error());
  auto copied = [&]() -> Status {
    std::vector<std::uint8_t> buf(kCopyBuffer);
    for (;;) {
      ssize_t n = ::read(in->fd(), buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return tl::unexpected(ErrnoError(errno, "read", in->path()));
      }
      if (n == 0) break;
      SP_RETURN_IF_ERROR((*out)->Append({buf.data(), static_cast<std::size_t>(n)}));
    }
    SP_RETURN_IF_ERROR((*out)->Sync());
    return (*out)->Close();
  }();
  if (!copied) {
    // A partial copy (the disk filled up) would only hold on to the space: best effort, the
    // caller's next attempt removes it otherwise.
    out->reset();
    (void)fs.RemoveTreeAt(to_dir, to);
    return copied;
  }
  return fs.ChmodAt(to_dir, to, mode);
}

Status CopyTree(FileSystem& fs, const Dir& from_dir, const std::string& from, const Dir& to_dir,
                const std::string& to) {
  const auto st = LStatIn(from_dir, from);
  if (!st) return tl::unexpected(ErrnoError(errno, "stat", from_dir.PathOf(from)));
  if (S_ISLNK(st->st_mode)) {
    auto target = ReadLinkIn(from_dir, from);
    if (!target) return tl::unexpected(target.error());
    return fs.SymlinkAt(*target, to_dir, to);
  }
  if (S_ISDIR(st->st_mode)) {
    SP_RETURN_IF_ERROR(fs.MakeDirAt(to_dir, to, 0700));
    auto source = Dir::OpenIn(from_dir, from);
    if (!source) return tl::unexpected(source.error());
    auto copy = Dir::OpenIn(to_dir, to);
    if (!copy) return tl::unexpected(copy.error());
    auto names = ListDirIn(*source);
    if (!names) return tl::unexpected(names.error());
    for (const auto& name : *names) SP_RETURN_IF_ERROR(CopyTree(fs, *source, name, *copy, name));
    SP_RETURN_IF_ERROR(fs.SyncDir(copy->path()));
    return fs.ChmodAt(to_dir, to, st->st_mode & 07777);
  }
  if (S_ISREG(st->st_mode)) return CopyFile(fs, from_dir, from, to_dir, to, st->st_mode & 07777);
  // Special files cannot be copied; they stay where they are.
  return Fail(ErrorCode::kIo,
              from_dir.PathOf(from) + " is a special file and cannot be moved across file systems");
}

}  // namespace safepoint::rollback::internal
