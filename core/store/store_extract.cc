// Extracting entries of a safety point into a directory, after all of it verified.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "core/store/store.h"
#include "core/store/store_internal.h"

namespace safepoint::store {

using internal::CheckIdArg;

namespace {

bool Selected(const std::string& path, const std::vector<std::string>& paths) {
  if (paths.empty()) return true;
  for (const auto& p : paths) {
    std::string_view want = p;
    while (want.size() > 1 && want.back() == '/') want.remove_suffix(1);
    if (path == want ||
        (path.size() > want.size() && path.starts_with(want) && path[want.size()] == '/')) {
      return true;
    }
  }
  return false;
}

// Creates the directories of `rel` below `root`, refusing any component that is not a real
// directory (a symlink planted in the destination must not redirect the extraction).
Status MakeParents(FileSystem& fs, const std::string& root, const std::string& rel) {
  std::string cur = root;
  std::size_t start = 0;
  for (;;) {
    std::size_t slash = rel.find('/', start);
    if (slash == std::string::npos) return {};
    cur += "/" + rel.substr(start, slash - start);
    struct stat st {};
    if (::lstat(cur.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        return Fail(ErrorCode::kBadInput, cur + " is not a directory (a symlink?); refusing");
      }
    } else if (errno == ENOENT) {
      SP_RETURN_IF_ERROR(fs.MakeDir(cur, 0700));
    } else {
      return tl::unexpected(ErrnoError(errno, "stat", cur));
    }
    start = slash + 1;
  }
}

// What `e` records beyond its content: the owner (when running as root, as GNU tar does), all
// twelve mode bits (links have none) and the mtime (a link's own, not its target's). The owner
// goes first: chown clears setuid and setgid.
// An owner the file system refuses (vfat, NFS root_squash, an id a container does not map) is a
// warning, as in tar -xp: the entry keeps the extract's owner, and its mode and mtime are set.
Status SetOwnerModeAndTime(FileSystem& fs, const std::string& path, const manifest::Entry& e,
                           std::vector<std::string>& warnings) {
  if (::geteuid() == 0) {
    if (auto st = fs.Chown(path, e.uid, e.gid); !st) {
      warnings.push_back(e.path + ": owner " + std::to_string(e.uid) + ":" + std::to_string(e.gid) +
                         " not set: " + st.error().message);
    }
  }
  if (e.type != manifest::EntryType::kSymlink) SP_RETURN_IF_ERROR(fs.Chmod(path, e.mode & 07777));
  return fs.SetMtime(path, e.mtime);
}

// Writes selected entries into a staging dir; nothing is visible in the destination until the
// whole safety point verified.
class StagingVisitor final : public EntryVisitor {
 public:
  StagingVisitor(FileSystem& fs, std::string staging, const std::vector<std::string>& paths,
                 std::vector<std::string>& warnings)
      : fs_(fs), staging_(std::move(staging)), paths_(paths), warnings_(warnings) {}

  Status Begin(const manifest::Entry& e) override {
    active_ = Selected(e.path, paths_);
    if (!active_) return {};
    SP_RETURN_IF_ERROR(MakeParents(fs_, staging_, e.path));
    const std::string path = staging_ + "/" + e.path;
    switch (e.type) {
      case manifest::EntryType::kFile: {
        auto f = fs_.CreateFile(path, 0600);
        if (!f) return tl::unexpected(f.error());
        file_ = std::move(*f);
        break;
      }
      case manifest::EntryType::kSymlink:
        SP_RETURN_IF_ERROR(fs_.Symlink(e.link_target, path));
        break;
      case manifest::EntryType::kDirectory: {
        struct stat st {};
        if (::lstat(path.c_str(), &st) != 0) SP_RETURN_IF_ERROR(fs_.MakeDir(path, 0700));
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
    const std::string path = staging_ + "/" + e.path;
    if (file_) {  // synced with all the others by one syncfs before they are published
      SP_RETURN_IF_ERROR(file_->Close());
      file_.reset();
    }
    // A directory's own attributes are set once it is filled in the destination (Extract).
    if (e.type == manifest::EntryType::kDirectory) return {};
    return SetOwnerModeAndTime(fs_, path, e, warnings_);
  }
  [[nodiscard]] const std::vector<manifest::Entry>& selected() const { return selected_; }

 private:
  FileSystem& fs_;
  std::string staging_;
  const std::vector<std::string>& paths_;
  std::vector<std::string>& warnings_;
  bool active_ = false;
  std::unique_ptr<WritableFile> file_;
  std::vector<manifest::Entry> selected_;
};

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
    SP_RETURN_IF_ERROR(fs_.MakeDir(dest, 0700));
    made_dest = true;
  } else if (!S_ISDIR(st.st_mode)) {
    return Fail(ErrorCode::kBadInput, "--to " + dest + " is not a directory");
  }
  std::string tmpl = dest + "/.safepoint-extract-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    const int err = errno;
    if (made_dest) (void)::rmdir(dest.c_str());
    return tl::unexpected(ErrnoError(err, "mkdtemp", dest));
  }
  const std::string staging = tmpl;
  auto result = [&]() -> Result<std::size_t> {
    std::vector<std::string> ignored;
    StagingVisitor visitor(fs_, staging, paths, warnings != nullptr ? *warnings : ignored);
    auto report = Read(id, passphrase, visitor);
    if (!report) return tl::unexpected(report.error());
    if (visitor.selected().empty()) {
      return Fail(ErrorCode::kNotFound, "no entry of safety point " + id + " matches the paths");
    }
    SP_RETURN_IF_ERROR(fs_.SyncFileSystem(staging));
    // Publish: files and links by rename, directories created.
    std::vector<const manifest::Entry*> made_dirs;
    for (const auto& e : visitor.selected()) {
      SP_RETURN_IF_ERROR(MakeParents(fs_, dest, e.path));
      const std::string from = staging + "/" + e.path;
      const std::string to = dest + "/" + e.path;
      struct stat existing {};
      bool exists = ::lstat(to.c_str(), &existing) == 0;
      if (e.type == manifest::EntryType::kDirectory) {
        if (exists && !S_ISDIR(existing.st_mode)) {
          return Fail(ErrorCode::kBadInput, to + " exists and is not a directory");
        }
        if (!exists) {
          // Writable while it is filled; its owner, mode (all 07777 bits) and mtime are set at
          // the end.
          SP_RETURN_IF_ERROR(fs_.MakeDir(to, 0700));
          made_dirs.push_back(&e);
        }
        continue;
      }
      if (exists && S_ISDIR(existing.st_mode)) {
        return Fail(ErrorCode::kBadInput, to + " exists and is a directory");
      }
      SP_RETURN_IF_ERROR(fs_.Rename(from, to));
    }
    // Children first: filling a directory changes its mtime, setting a child's does not.
    for (auto it = made_dirs.rbegin(); it != made_dirs.rend(); ++it) {
      SP_RETURN_IF_ERROR(SetOwnerModeAndTime(fs_, dest + "/" + (*it)->path, **it,
                                             warnings != nullptr ? *warnings : ignored));
    }
    return visitor.selected().size();
  }();
  (void)fs_.RemoveTree(staging);
  // A failed extract (a wrong passphrase, a damaged safety point) leaves no trace: the directory
  // it made is removed again while nothing was published into it.
  if (!result && made_dest) (void)::rmdir(dest.c_str());
  return result;
}

}  // namespace safepoint::store
