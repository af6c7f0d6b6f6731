// Extracting entries of a safety point into a directory, after all of it verified.
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/store/store.h"
#include "core/store/store_internal.h"

namespace safepoint::store {

using internal::CheckIdArg;

namespace {

// Everything below works on directories held open (Dir), never on paths through `--to`: a
// local user who can write to the destination could otherwise rename the staging directory or
// swap a directory for a symlink between a check and a write, and make a root extract write,
// chown or chmod outside it.

std::string ParentOf(const std::string& rel) {
  const auto slash = rel.rfind('/');
  return slash == std::string::npos ? std::string() : rel.substr(0, slash);
}

std::string LeafOf(const std::string& rel) {
  const auto slash = rel.rfind('/');
  return slash == std::string::npos ? rel : rel.substr(slash + 1);
}

// Creates the missing directories of `rel`'s parent in the staging directory. It is ours alone
// (0700, held open), so its parts are reached by relative path.
Status MakeStagingParents(FileSystem& fs, const Dir& staging, const std::string& rel) {
  for (std::size_t slash = rel.find('/'); slash != std::string::npos;
       slash = rel.find('/', slash + 1)) {
    const std::string part = rel.substr(0, slash);
    struct stat st {};
    if (::fstatat(staging.fd(), part.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        return Fail(ErrorCode::kBadInput, staging.PathOf(part) + " is not a directory; refusing");
      }
    } else if (errno == ENOENT) {
      SP_RETURN_IF_ERROR(fs.MakeDirAt(staging, part, 0700));
    } else {
      return tl::unexpected(ErrnoError(errno, "stat", staging.PathOf(part)));
    }
  }
  return {};
}

// Opens the directory `parent` (a relative path, "" for `root`) below `root` one component at a
// time, creating missing ones (0700) when `create`. A component that is not a real directory (a
// symlink planted in the destination) is refused; one swapped for a symlink after it was opened
// changes nothing, since what follows is done in the directory opened.
Result<Dir> OpenBelow(FileSystem& fs, const Dir& root, const std::string& parent, bool create) {
  auto cur = Dir::OpenIn(root, ".");
  if (!cur) return cur;
  std::size_t start = 0;
  while (start < parent.size()) {
    std::size_t slash = parent.find('/', start);
    if (slash == std::string::npos) slash = parent.size();
    const std::string name = parent.substr(start, slash - start);
    auto next = Dir::OpenIn(*cur, name);
    if (!next && next.error().code == ErrorCode::kNotFound && create) {
      SP_RETURN_IF_ERROR(fs.MakeDirAt(*cur, name, 0700));
      next = Dir::OpenIn(*cur, name);
    }
    if (!next) return next;
    cur = std::move(next);
    start = slash + 1;
  }
  return cur;
}

// What `e` records beyond its content: the owner (when running as root, as GNU tar does), all
// twelve mode bits (links have none) and the mtime (a link's own, not its target's). The owner
// goes first: chown clears setuid and setgid.
// An owner the file system refuses (vfat, NFS root_squash, an id a container does not map) is a
// warning, as in tar -xp: the entry keeps the extract's owner, and its mode and mtime are set.
Status SetOwnerModeAndTime(FileSystem& fs, const Dir& dir, const std::string& rel,
                           const manifest::Entry& e, std::vector<std::string>& warnings) {
  if (::geteuid() == 0) {
    if (auto st = fs.ChownAt(dir, rel, e.uid, e.gid); !st) {
      warnings.push_back(e.path + ": owner " + std::to_string(e.uid) + ":" + std::to_string(e.gid) +
                         " not set: " + st.error().message);
    }
  }
  if (e.type != manifest::EntryType::kSymlink)
    SP_RETURN_IF_ERROR(fs.ChmodAt(dir, rel, e.mode & 07777));
  return fs.SetMtimeAt(dir, rel, e.mtime);
}

// Writes selected entries into a staging dir; nothing is visible in the destination until the
// whole safety point verified.
class StagingVisitor final : public EntryVisitor {
 public:
  StagingVisitor(FileSystem& fs, const Dir& staging, manifest::PathSelection& selection,
                 std::vector<std::string>& warnings)
      : fs_(fs), staging_(staging), selection_(selection), warnings_(warnings) {}

  Status Begin(const manifest::Entry& e) override {
    active_ = selection_.Selects(e.path);
    if (!active_) return {};
    SP_RETURN_IF_ERROR(MakeStagingParents(fs_, staging_, e.path));
    switch (e.type) {
      case manifest::EntryType::kFile: {
        auto f = fs_.CreateFileAt(staging_, e.path, 0600);
        if (!f) return tl::unexpected(f.error());
        file_ = std::move(*f);
        break;
      }
      case manifest::EntryType::kSymlink:
        SP_RETURN_IF_ERROR(fs_.SymlinkAt(e.link_target, staging_, e.path));
        break;
      case manifest::EntryType::kDirectory: {
        struct stat st {};
        if (::fstatat(staging_.fd(), e.path.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
          SP_RETURN_IF_ERROR(fs_.MakeDirAt(staging_, e.path, 0700));
        }
        break;
      }
    }
    selected_.push_back(e);
    return {};
  }
  Status Data(std::span<const std::uint8_t> data) override {
    if (!active_ || !file_) return {};
    return file_->Append(data);
  }
  Status End(const manifest::Entry& e) override {
    if (!active_) return {};
    if (file_) {  // synced with all the others by one syncfs before they are published
      SP_RETURN_IF_ERROR(file_->Close());
      file_.reset();
    }
    // A directory's own attributes are set once it is filled in the destination (Extract).
    if (e.type == manifest::EntryType::kDirectory) return {};
    return SetOwnerModeAndTime(fs_, staging_, e.path, e, warnings_);
  }
  [[nodiscard]] const std::vector<manifest::Entry>& selected() const { return selected_; }

 private:
  FileSystem& fs_;
  const Dir& staging_;
  manifest::PathSelection& selection_;
  std::vector<std::string>& warnings_;
  bool active_ = false;
  std::unique_ptr<WritableFile> file_;
  std::vector<manifest::Entry> selected_;
};

// A directory this extract made must, opened, be owned by this process: one owned by another
// user was put in its place by someone who can write beside it, and is never written into or
// given attributes. A file system that maps owners looks the same (NFS with root_squash makes
// root's directories nobody's) and is refused too, saying so.
Status CheckMadeHere(const Dir& dir) {
  struct stat st {};
  if (::fstat(dir.fd(), &st) != 0) return tl::unexpected(ErrnoError(errno, "stat", dir.path()));
  if (st.st_uid == ::geteuid()) return {};
  return Fail(ErrorCode::kIo,
              dir.path() + " is owned by uid " + std::to_string(st.st_uid) +
                  ", not by this process (uid " + std::to_string(::geteuid()) +
                  "), though the extract made it: another user replaced it, or the file system "
                  "maps owners (NFS with root_squash); refusing. Extract into a directory on a "
                  "local file system");
}

// Makes the staging directory in `dest`, as mkdtemp would, and opens it. One that is not ours
// once opened (replaced in between by another user who can write to `dest`) is refused.
Result<std::pair<std::string, Dir>> MakeStaging(FileSystem& fs, const Dir& dest) {
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::uint8_t random[6];
    if (::getrandom(random, sizeof random, 0) != static_cast<ssize_t>(sizeof random)) {
      return tl::unexpected(ErrnoError(errno, "getrandom", dest.path()));
    }
    std::string name = ".safepoint-extract-";
    for (std::uint8_t r : random) name += kChars[r % (sizeof kChars - 1)];
    if (auto made = fs.MakeDirAt(dest, name, 0700); !made) {
      struct stat st {};
      if (::fstatat(dest.fd(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) continue;  // taken
      return tl::unexpected(made.error());
    }
    auto staging = Dir::OpenIn(dest, name);
    if (!staging) return tl::unexpected(staging.error());
    SP_RETURN_IF_ERROR(CheckMadeHere(*staging));
    return std::make_pair(std::move(name), std::move(*staging));
  }
  return Fail(ErrorCode::kIo, "no free staging directory name in " + dest.path());
}

// Whether `e` can take its place `leaf` in `parent`: nothing of the other kind is in the way (a
// file where a directory goes, a directory where a file or link goes). `*exists` says whether
// something is there.
Status CheckInTheWay(const Dir& parent, const std::string& leaf, const manifest::Entry& e,
                     bool* exists) {
  struct stat existing {};
  *exists = ::fstatat(parent.fd(), leaf.c_str(), &existing, AT_SYMLINK_NOFOLLOW) == 0;
  if (!*exists) return {};
  const bool is_dir = S_ISDIR(existing.st_mode);
  if (e.type == manifest::EntryType::kDirectory && !is_dir) {
    return Fail(ErrorCode::kBadInput, parent.PathOf(leaf) + " exists and is not a directory");
  }
  if (e.type != manifest::EntryType::kDirectory && is_dir) {
    return Fail(ErrorCode::kBadInput, parent.PathOf(leaf) + " exists and is a directory");
  }
  return {};
}

// Calls `visit(parent, leaf, entry)` for each selected entry, in order, with its parent directory
// in `dest` opened (made when `create`; when not, entries below a missing directory are skipped:
// nothing of theirs exists yet). Entries come in tar order: most share the previous one's parent.
template <typename Visit>
Status ForEachPlace(FileSystem& fs, const Dir& dest, const std::vector<manifest::Entry>& selected,
                    bool create, Visit visit) {
  std::string parent_rel;
  std::optional<Dir> parent;
  bool parent_missing = false;
  for (const auto& e : selected) {
    if ((!parent && !parent_missing) || ParentOf(e.path) != parent_rel) {
      parent_rel = ParentOf(e.path);
      parent.reset();
      auto opened = OpenBelow(fs, dest, parent_rel, create);
      parent_missing = !opened && !create && opened.error().code == ErrorCode::kNotFound;
      if (!opened && !parent_missing) return tl::unexpected(opened.error());
      if (opened) parent = std::move(*opened);
    }
    if (parent_missing) continue;
    SP_RETURN_IF_ERROR(visit(*parent, LeafOf(e.path), e));
  }
  return {};
}

// Moves what was staged into `dest`: files and links by rename, directories made (0700, writable
// while they are filled). Everything in the way is found first, so a conflict leaves `dest` as it
// was. Returns the directories made, whose attributes are set at the end.
Result<std::vector<const manifest::Entry*>> Publish(FileSystem& fs, const Dir& staging,
                                                    const Dir& dest,
                                                    const std::vector<manifest::Entry>& selected) {
  SP_RETURN_IF_ERROR(
      ForEachPlace(fs, dest, selected, /*create=*/false,
                   [](const Dir& parent, const std::string& leaf, const manifest::Entry& e) {
                     bool exists = false;
                     return CheckInTheWay(parent, leaf, e, &exists);
                   }));
  std::vector<const manifest::Entry*> made_dirs;
  auto published = ForEachPlace(
      fs, dest, selected, /*create=*/true,
      [&](const Dir& parent, const std::string& leaf, const manifest::Entry& e) -> Status {
        bool exists = false;
        if (auto st = CheckInTheWay(parent, leaf, e, &exists); !st) return st;
        if (e.type != manifest::EntryType::kDirectory) {
          return fs.RenameAt(staging, e.path, parent, leaf);
        }
        if (exists) return {};
        auto made = fs.MakeDirAt(parent, leaf, 0700);
        if (made) made_dirs.push_back(&e);
        return made;
      });
  if (!published) return tl::unexpected(published.error());
  return made_dirs;
}

// Sets the owner, mode and mtime of the directories the extract made, children first (filling a
// directory changes its mtime, setting a child's does not). Each is opened and must still be the
// one made (CheckMadeHere), or it is left alone.
Status SetDirectoryAttributes(FileSystem& fs, const Dir& dest,
                              const std::vector<const manifest::Entry*>& made_dirs,
                              std::vector<std::string>& warnings) {
  for (auto it = made_dirs.rbegin(); it != made_dirs.rend(); ++it) {
    const manifest::Entry& e = **it;
    auto parent = OpenBelow(fs, dest, ParentOf(e.path), /*create=*/false);
    if (!parent) return tl::unexpected(parent.error());
    auto dir = Dir::OpenIn(*parent, LeafOf(e.path));
    if (!dir) return tl::unexpected(dir.error());
    SP_RETURN_IF_ERROR(CheckMadeHere(*dir));
    SP_RETURN_IF_ERROR(SetOwnerModeAndTime(fs, *dir, ".", e, warnings));
  }
  return {};
}

}  // namespace

Result<std::size_t> Store::Extract(const std::string& id, const Secret& passphrase,
                                   const std::string& dest, const std::vector<std::string>& paths,
                                   std::vector<std::string>* warnings) const {
  SP_RETURN_IF_ERROR(CheckIdArg(id));
  for (const auto& p : paths) {
    std::string trimmed = p;
    while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
    if (auto st = manifest::CheckArchivePath(trimmed); !st) {
      return Fail(ErrorCode::kBadInput, st.error().message);
    }
  }
  struct stat st {};
  bool made_dest = false;
  if (::lstat(dest.c_str(), &st) != 0) {
    if (errno != ENOENT) return tl::unexpected(ErrnoError(errno, "stat", dest));
    // Only DIR itself is made: a missing parent is a mistyped path more often than not.
    std::string parent = dest;
    while (parent.size() > 1 && parent.back() == '/') parent.pop_back();
    const auto slash = parent.rfind('/');
    parent = slash == std::string::npos ? "." : parent.substr(0, std::max<std::size_t>(slash, 1));
    if (::stat(parent.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return Fail(ErrorCode::kBadInput, "--to " + dest + ": its parent " + parent +
                                            " is not an existing directory (only DIR itself is "
                                            "created)");
    }
    SP_RETURN_IF_ERROR(fs_.MakeDir(dest, 0700));
    made_dest = true;
  } else if (!S_ISDIR(st.st_mode)) {
    return Fail(ErrorCode::kBadInput, "--to " + dest + " is not a directory");
  }
  auto result = [&]() -> Result<std::size_t> {
    auto dest_dir = Dir::Open(dest);
    if (!dest_dir) return tl::unexpected(dest_dir.error());
    if (made_dest) SP_RETURN_IF_ERROR(CheckMadeHere(*dest_dir));
    auto staging = MakeStaging(fs_, *dest_dir);
    if (!staging) return tl::unexpected(staging.error());
    const std::string& staging_name = staging->first;  // clang 14 captures no structured binding
    const Dir& staging_dir = staging->second;
    auto extracted = [&]() -> Result<std::size_t> {
      std::vector<std::string> ignored;
      std::vector<std::string>& warn = warnings != nullptr ? *warnings : ignored;
      manifest::PathSelection selection(paths);
      StagingVisitor visitor(fs_, staging_dir, selection, warn);
      auto report = Read(id, passphrase, visitor);
      if (!report) return tl::unexpected(report.error());
      SP_RETURN_IF_ERROR(selection.AllMatched("safety point " + id));
      SP_RETURN_IF_ERROR(fs_.SyncFileSystem(dest));
      auto made_dirs = Publish(fs_, staging_dir, *dest_dir, visitor.selected());
      if (!made_dirs) return tl::unexpected(made_dirs.error());
      SP_RETURN_IF_ERROR(SetDirectoryAttributes(fs_, *dest_dir, *made_dirs, warn));
      return visitor.selected().size();
    }();
    (void)fs_.RemoveTreeAt(*dest_dir, staging_name);
    return extracted;
  }();
  // A failed extract (a wrong passphrase, a damaged safety point) leaves no trace: the directory
  // it made is removed again while nothing was published into it.
  if (!result && made_dest) (void)::rmdir(dest.c_str());
  return result;
}

}  // namespace safepoint::store
