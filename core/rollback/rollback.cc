#include "core/rollback/rollback.h"

#include <dirent.h>
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
#include "core/rollback/journal.h"
#include "core/sources/snapshot.h"

namespace safepoint::rollback {

namespace {

using journal::Journal;
using journal::Op;
using journal::OpKind;
using journal::Phase;
using manifest::EntryType;
using nlohmann::json;

constexpr std::string_view kRecordsDir = ".rollbacks";
constexpr std::size_t kCopyBuffer = std::size_t{256} * 1024;
constexpr std::size_t kMaxCapturedBytes = 4u << 20;
constexpr std::size_t kConflictsInMessage = 20;

// ---------------------------------------------------------------------------------------------
// Small helpers

bool LExists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

bool IsRealDir(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
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

std::string IsoUtc(std::chrono::system_clock::time_point t) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string LocalStamp(std::chrono::system_clock::time_point t) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  ::localtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d_%H-%M-%S", &tm);
  return buf;
}

bool RunningAsRoot() { return ::geteuid() == 0; }

Result<std::vector<std::string>> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return names;
    return tl::unexpected(ErrnoError(errno, "open", dir));
  }
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
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

// Copies a regular file through `fs` into a new file `to` (which must not exist), synced.
Status CopyFile(FileSystem& fs, const std::string& from, const std::string& to, mode_t mode) {
  auto in = ReadOnlyFile::Open(from);
  if (!in) return tl::unexpected(in.error());
  auto out = fs.CreateFile(to, 0600);
  if (!out) return tl::unexpected(out.error());
  std::vector<std::uint8_t> buf(kCopyBuffer);
  for (;;) {
    ssize_t n = ::read(in->fd(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return tl::unexpected(ErrnoError(errno, "read", from));
    }
    if (n == 0) break;
    SP_RETURN_IF_ERROR((*out)->Append({buf.data(), static_cast<std::size_t>(n)}));
  }
  SP_RETURN_IF_ERROR((*out)->Sync());
  SP_RETURN_IF_ERROR((*out)->Close());
  return fs.Chmod(to, mode);
}

// Copies a file, link or directory tree (never following links) through `fs`.
Status CopyTree(FileSystem& fs, const std::string& from, const std::string& to) {
  struct stat st {};
  if (::lstat(from.c_str(), &st) != 0) return tl::unexpected(ErrnoError(errno, "stat", from));
  if (S_ISLNK(st.st_mode)) {
    auto state = ReadPathState(ParentOf(from), BaseName(from));
    if (!state) return tl::unexpected(state.error());
    if (!*state) return Fail(ErrorCode::kIo, from + " vanished while it was copied");
    return fs.Symlink((*state)->link_target, to);
  }
  if (S_ISDIR(st.st_mode)) {
    SP_RETURN_IF_ERROR(fs.MakeDir(to, 0700));
    auto names = ListDir(from);
    if (!names) return tl::unexpected(names.error());
    for (const auto& name : *names)
      SP_RETURN_IF_ERROR(CopyTree(fs, from + "/" + name, to + "/" + name));
    SP_RETURN_IF_ERROR(fs.SyncDir(to));
    return fs.Chmod(to, st.st_mode & 07777);
  }
  if (S_ISREG(st.st_mode)) return CopyFile(fs, from, to, st.st_mode & 07777);
  // Special files cannot be copied; they stay where they are.
  return Fail(ErrorCode::kIo, from + " is a special file and cannot be moved across file systems");
}

// ---------------------------------------------------------------------------------------------
// Planning

struct Roots {
  std::string ha_config;
  std::string workspace;
  [[nodiscard]] const std::string& For(std::string_view top) const {
    return top == "workspace" ? workspace : ha_config;
  }
  [[nodiscard]] std::string Abs(std::string_view archive_path) const {
    std::string rel = RelOf(archive_path);
    const std::string& root = For(TopOf(archive_path));
    return rel.empty() ? root : root + "/" + rel;
  }
};

Status CheckRoot(const std::string& what, const std::string& root) {
  struct stat st {};
  if (::lstat(root.c_str(), &st) != 0) {
    return Fail(ErrorCode::kBadInput,
                "the " + what + " directory " + root + " is missing; refusing to restore into it");
  }
  if (S_ISLNK(st.st_mode)) {
    return Fail(ErrorCode::kBadInput, "the " + what + " directory " + root +
                                          " is a symlink; refusing to restore through it");
  }
  if (!S_ISDIR(st.st_mode)) {
    return Fail(ErrorCode::kBadInput, "the " + what + " path " + root + " is not a directory");
  }
  return {};
}

bool SameAsTarget(const PlanEntry& e) {
  if (!e.current) return false;
  if (e.implicit_dir) return e.current->type == EntryType::kDirectory;
  return *e.current == *e.target;
}

// The plan, given the current source collection (so Rollback collects only once).
Result<Plan> PlanWith(const config::Config& config, const manifest::Manifest& target,
                      const std::optional<Fingerprint>& fingerprint, Policy policy,
                      const store::BackupRequest& current) {
  Plan plan;
  plan.id = target.id;
  plan.policy = policy;
  plan.has_fingerprint = fingerprint.has_value();
  const Roots roots{config.paths.ha_config, config.paths.workspace};

  // The safety point's tree entries, checked.
  std::map<std::string, const manifest::Entry*> wanted;
  bool has_workspace = false;
  for (const auto& e : target.entries) {
    SP_RETURN_IF_ERROR(manifest::CheckArchivePath(e.path));
    const std::string top = TopOf(e.path);
    if (!IsTreeRoot(top)) {
      if (e.path != manifest::kInnerName) plan.not_restored.push_back(e.path);
      continue;
    }
    if (e.path == top) {
      if (e.type != EntryType::kDirectory) {
        return Fail(ErrorCode::kCorrupt, "entry " + e.path + " must be a directory");
      }
      continue;
    }
    if (e.type == EntryType::kSymlink) {
      SP_RETURN_IF_ERROR(manifest::CheckLinkTarget(e.path, e.link_target));
    }
    const std::string abs = roots.Abs(e.path);
    if (IsWithin(abs, config.paths.backup_dir)) {
      plan.warnings.push_back(e.path + ": inside the backup directory; not restored");
      continue;
    }
    if (!wanted.emplace(e.path, &e).second) {
      return Fail(ErrorCode::kCorrupt, "entry " + e.path + " appears twice");
    }
    if (top == "workspace") has_workspace = true;
  }
  SP_RETURN_IF_ERROR(CheckRoot("Home Assistant configuration", config.paths.ha_config));
  if (has_workspace) SP_RETURN_IF_ERROR(CheckRoot("workspace", config.paths.workspace));

  // Parents: an entry below a non-directory is refused; unlisted parents become implicit dirs.
  std::set<std::string> implicit;
  for (const auto& [path, entry] : wanted) {
    std::size_t slash = path.find('/');
    for (;;) {
      slash = path.find('/', slash + 1);
      if (slash == std::string::npos) break;
      std::string parent = path.substr(0, slash);
      auto it = wanted.find(parent);
      if (it != wanted.end()) {
        if (it->second->type != EntryType::kDirectory) {
          return Fail(ErrorCode::kCorrupt,
                      "entry " + path + " lies below " + parent + ", which is not a directory");
        }
      } else {
        implicit.insert(parent);
      }
    }
  }

  std::set<std::string> collected;
  for (const auto& in : current.entries) {
    if (IsTreeRoot(TopOf(in.header.path))) collected.insert(in.header.path);
  }

  std::map<std::string, PlanEntry> entries;
  auto read_current = [&](const std::string& path) -> Result<std::optional<PathState>> {
    return ReadPathState(roots.For(TopOf(path)), RelOf(path));
  };
  for (const auto& [path, entry] : wanted) {
    PlanEntry p;
    p.path = path;
    p.target = StateOf(*entry);
    p.uid = entry->uid;
    p.gid = entry->gid;
    p.mtime = entry->mtime;
    auto cur = read_current(path);
    if (!cur) return tl::unexpected(cur.error());
    p.current = std::move(*cur);
    entries.emplace(path, std::move(p));
  }
  for (const auto& path : implicit) {
    PlanEntry p;
    p.path = path;
    p.implicit_dir = true;
    p.target = PathState{EntryType::kDirectory, 0, "", 0755, ""};
    auto cur = read_current(path);
    if (!cur) return tl::unexpected(cur.error());
    p.current = std::move(*cur);
    entries.emplace(path, std::move(p));
  }
  for (const auto& path : collected) {
    if (entries.count(path) != 0) continue;
    PlanEntry p;
    p.path = path;
    p.change = Change::kAdded;
    p.action = Action::kMoveAside;
    auto cur = read_current(path);
    if (!cur) return tl::unexpected(cur.error());
    if (!*cur) continue;  // vanished since it was listed
    p.current = std::move(*cur);
    entries.emplace(path, std::move(p));
  }

  for (auto& [path, p] : entries) {
    if (p.change == Change::kAdded) continue;
    if (!p.current) {
      p.change = Change::kMissing;
    } else if (SameAsTarget(p)) {
      p.change = Change::kUnchanged;
    } else if (fingerprint) {
      p.change =
          fingerprint->Matches(path, *p.current) ? Change::kChangedByUpdate : Change::kConflict;
    } else {
      p.change = Change::kConflict;
    }
    switch (p.change) {
      case Change::kUnchanged:
        p.action = Action::kNone;
        break;
      case Change::kMissing:
      case Change::kChangedByUpdate:
        p.action = Action::kRestore;
        break;
      case Change::kConflict:
        if (policy == Policy::kAbort) {
          p.action = Action::kStop;
        } else if (policy == Policy::kMerge && p.target->type != EntryType::kDirectory &&
                   p.current->type != EntryType::kDirectory) {
          p.action = Action::kRestoreBeside;
          // Never over a listed path, nor over something the pre-rollback point cannot hold.
          auto taken = [&](const std::string& b) {
            if (wanted.count(b) != 0) return true;
            if (collected.count(b) != 0) return false;  // added: moved aside first
            auto st = read_current(b);
            return !st || st->has_value();
          };
          std::string beside = WithNameAffixes(path, "", ".safepoint-" + target.id);
          for (int n = 2; taken(beside) && n < 1000; ++n) {
            beside = WithNameAffixes(path, "", ".safepoint-" + target.id + "-" + std::to_string(n));
          }
          p.beside = beside;
        } else {
          p.action = Action::kRestore;
        }
        break;
      case Change::kAdded:
        break;
    }
  }
  for (auto& [path, p] : entries) plan.entries.push_back(std::move(p));
  return plan;
}

// ---------------------------------------------------------------------------------------------
// Operations

Op MakeOp(OpKind kind, const std::string& path) {
  Op op;
  op.kind = kind;
  op.path = path;
  return op;
}

struct BuiltOps {
  std::vector<Op> ops;
  std::set<std::string> changed_roots;
};

// Turns a plan into journal operations: moves aside, directories (parents first), files and
// links, then directory attributes (children first).
BuiltOps BuildOps(const Plan& plan, const std::set<std::string>& collected) {
  BuiltOps out;
  std::vector<Op> moves, dirs, places, attrs;
  std::vector<std::string> moved;  // top-most paths moved aside so far (sorted input order)
  auto under_moved = [&](const std::string& path) {
    return std::any_of(moved.begin(), moved.end(), [&](const std::string& m) {
      return path.size() > m.size() && path.starts_with(m) && path[m.size()] == '/';
    });
  };
  auto move_aside = [&](const std::string& path) {
    if (under_moved(path)) return;
    moves.push_back(MakeOp(OpKind::kMoveAside, path));
    moved.push_back(path);
    out.changed_roots.insert(TopOf(path));
  };
  std::size_t staged = 0;
  auto place = [&](const PlanEntry& e, const std::string& dest) {
    Op op;
    op.path = dest;
    op.uid = e.uid;
    op.gid = e.gid;
    if (e.target->type == EntryType::kFile) {
      op.kind = OpKind::kPlaceFile;
      op.staged = std::to_string(staged++);
      op.sha256 = e.target->sha256;
      op.size = e.target->size;
      op.mode = e.target->mode;
      op.mtime = e.mtime;
    } else {
      op.kind = OpKind::kPlaceLink;
      op.link_target = e.target->link_target;
    }
    places.push_back(std::move(op));
    out.changed_roots.insert(TopOf(dest));
  };
  for (const auto& e : plan.entries) {
    switch (e.action) {
      case Action::kNone:
      case Action::kStop:
        break;
      case Action::kMoveAside:
        move_aside(e.path);
        break;
      case Action::kRestoreBeside:
        place(e, e.beside);
        break;
      case Action::kRestore: {
        const bool want_dir = e.target->type == EntryType::kDirectory;
        const bool have_dir = e.current && e.current->type == EntryType::kDirectory;
        if (e.current) {
          // Kept in the record rather than lost: a type change involving a directory, or a
          // path the pre-rollback safety point does not hold (excluded, special, unsafe link).
          if (want_dir != have_dir || (!want_dir && collected.count(e.path) == 0)) {
            move_aside(e.path);
          }
        }
        if (want_dir) {
          if (!have_dir) {
            Op op = MakeOp(OpKind::kMakeDir, e.path);
            op.mode = e.implicit_dir ? 0755u : 0700u;
            dirs.push_back(std::move(op));
            out.changed_roots.insert(TopOf(e.path));
          }
          if (!e.implicit_dir) {
            Op op = MakeOp(OpKind::kSetAttrs, e.path);
            op.mode = e.target->mode;
            op.uid = e.uid;
            op.gid = e.gid;
            attrs.push_back(std::move(op));
            out.changed_roots.insert(TopOf(e.path));
          }
        } else {
          place(e, e.path);
        }
        break;
      }
    }
  }
  std::reverse(attrs.begin(), attrs.end());
  for (auto* list : {&moves, &dirs, &places, &attrs}) {
    for (auto& op : *list) out.ops.push_back(std::move(op));
  }
  return out;
}

// Where an apply takes staged files from and puts moved-aside paths.
struct ApplyDirs {
  std::string staging;
  std::string moved;
};

struct ApplyContext {
  ApplyContext(FileSystem& file_system, Roots r) : fs(file_system), roots(std::move(r)) {}
  FileSystem& fs;
  Roots roots;
  bool rename_ha_config = true;
  bool rename_workspace = true;
  ApplyDirs dirs;
  bool recovering = false;
  std::set<std::string> touched_dirs;
  // Called after each applied op with (ops done, ops total); may be empty.
  std::function<void(std::size_t, std::size_t)> on_op;

  [[nodiscard]] bool RenameFor(const std::string& archive_path) const {
    return TopOf(archive_path) == "workspace" ? rename_workspace : rename_ha_config;
  }
};

std::string TempBeside(const std::string& abs) {
  return WithNameAffixes(abs, ".", ".safepoint-tmp");
}

Status RemoveIfPresent(FileSystem& fs, const std::string& path) {
  if (LExists(path)) return fs.RemoveTree(path);
  return {};
}

// A staged file must match what the journal expects (checked during recovery only).
Result<bool> StagedIsIntact(const std::string& staged, const Op& op) {
  auto hash = HashFile(staged);
  if (!hash) return false;
  struct stat st {};
  if (::lstat(staged.c_str(), &st) != 0) return false;
  return *hash == op.sha256 && static_cast<std::uint64_t>(st.st_size) == op.size;
}

Status ApplyMoveAside(ApplyContext& c, const Op& op) {
  const std::string abs = c.roots.Abs(op.path);
  const std::string dest = c.dirs.moved + "/" + op.path;
  // Across file systems the source is first renamed beside itself, so a replay can tell a
  // half-removed source from a path restored after the move.
  const std::string moving = WithNameAffixes(abs, ".", ".safepoint-moving");
  if (LExists(dest)) {
    if (!c.RenameFor(op.path)) SP_RETURN_IF_ERROR(RemoveIfPresent(c.fs, moving));
    return {};
  }
  if (c.RenameFor(op.path)) {
    if (!LExists(abs)) return {};
    SP_RETURN_IF_ERROR(MakeDirsBelow(c.fs, c.dirs.moved, ParentOf("./" + op.path).substr(2)));
    SP_RETURN_IF_ERROR(c.fs.Rename(abs, dest));
    c.touched_dirs.insert(ParentOf(abs));
    c.touched_dirs.insert(ParentOf(dest));
    return {};
  }
  if (!LExists(moving)) {
    if (!LExists(abs)) return {};
    SP_RETURN_IF_ERROR(c.fs.Rename(abs, moving));
    SP_RETURN_IF_ERROR(c.fs.SyncDir(ParentOf(abs)));
  }
  SP_RETURN_IF_ERROR(MakeDirsBelow(c.fs, c.dirs.moved, ParentOf("./" + op.path).substr(2)));
  const std::string partial = dest + ".partial";
  SP_RETURN_IF_ERROR(RemoveIfPresent(c.fs, partial));
  SP_RETURN_IF_ERROR(CopyTree(c.fs, moving, partial));
  SP_RETURN_IF_ERROR(c.fs.SyncDir(ParentOf(partial)));
  SP_RETURN_IF_ERROR(c.fs.Rename(partial, dest));
  SP_RETURN_IF_ERROR(c.fs.SyncDir(ParentOf(dest)));
  SP_RETURN_IF_ERROR(c.fs.RemoveTree(moving));
  c.touched_dirs.insert(ParentOf(abs));
  return {};
}

Status ApplyMakeDir(ApplyContext& c, const Op& op) {
  const std::string abs = c.roots.Abs(op.path);
  if (IsRealDir(abs)) return {};
  SP_RETURN_IF_ERROR(c.fs.MakeDir(abs, op.mode));
  // mkdir applies the umask and ignores setgid: the mode is set exactly afterwards.
  SP_RETURN_IF_ERROR(c.fs.Chmod(abs, op.mode));
  c.touched_dirs.insert(ParentOf(abs));
  return {};
}

Status ApplyPlaceFile(ApplyContext& c, const Op& op) {
  const std::string abs = c.roots.Abs(op.path);
  const std::string staged = c.dirs.staging + "/" + op.staged;
  if (!LExists(staged)) {
    // Renamed into place before an interruption, or staging is gone.
    auto state = ReadPathState(c.roots.For(TopOf(op.path)), RelOf(op.path));
    if (state && *state && (*state)->type == EntryType::kFile && (*state)->sha256 == op.sha256) {
      return {};
    }
    return Fail(ErrorCode::kCorrupt, "staged copy of " + op.path + " is missing");
  }
  if (c.recovering) {
    auto intact = StagedIsIntact(staged, op);
    if (!intact || !*intact) {
      return Fail(ErrorCode::kCorrupt, "staged copy of " + op.path + " is damaged");
    }
  }
  if (c.RenameFor(op.path)) {
    SP_RETURN_IF_ERROR(c.fs.Rename(staged, abs));
  } else {
    const std::string tmp = TempBeside(abs);
    SP_RETURN_IF_ERROR(RemoveIfPresent(c.fs, tmp));
    SP_RETURN_IF_ERROR(CopyFile(c.fs, staged, tmp, op.mode));
    if (RunningAsRoot()) {
      // chown clears setuid and setgid, so the mode is set again after it.
      SP_RETURN_IF_ERROR(c.fs.Chown(tmp, op.uid, op.gid));
      SP_RETURN_IF_ERROR(c.fs.Chmod(tmp, op.mode));
    }
    SP_RETURN_IF_ERROR(c.fs.SetMtime(tmp, op.mtime));
    SP_RETURN_IF_ERROR(c.fs.Rename(tmp, abs));
  }
  c.touched_dirs.insert(ParentOf(abs));
  return {};
}

Status ApplyPlaceLink(ApplyContext& c, const Op& op) {
  const std::string abs = c.roots.Abs(op.path);
  auto state = ReadPathState(c.roots.For(TopOf(op.path)), RelOf(op.path));
  if (state && *state && (*state)->type == EntryType::kSymlink &&
      (*state)->link_target == op.link_target) {
    return {};
  }
  const std::string tmp = TempBeside(abs);
  SP_RETURN_IF_ERROR(RemoveIfPresent(c.fs, tmp));
  SP_RETURN_IF_ERROR(c.fs.Symlink(op.link_target, tmp));
  if (RunningAsRoot()) SP_RETURN_IF_ERROR(c.fs.Chown(tmp, op.uid, op.gid));
  SP_RETURN_IF_ERROR(c.fs.Rename(tmp, abs));
  c.touched_dirs.insert(ParentOf(abs));
  return {};
}

Status ApplySetAttrs(ApplyContext& c, const Op& op) {
  const std::string abs = c.roots.Abs(op.path);
  if (RunningAsRoot()) SP_RETURN_IF_ERROR(c.fs.Chown(abs, op.uid, op.gid));
  return c.fs.Chmod(abs, op.mode);
}

// Applies (or, when recovering, re-applies) every operation, then fsyncs the touched dirs.
Status ApplyOps(ApplyContext& c, const std::vector<Op>& ops) {
  std::size_t done = 0;
  for (const auto& op : ops) {
    if (c.on_op) c.on_op(done++, ops.size());
    switch (op.kind) {
      case OpKind::kMoveAside:
        SP_RETURN_IF_ERROR(ApplyMoveAside(c, op));
        break;
      case OpKind::kMakeDir:
        SP_RETURN_IF_ERROR(ApplyMakeDir(c, op));
        break;
      case OpKind::kPlaceFile:
        SP_RETURN_IF_ERROR(ApplyPlaceFile(c, op));
        break;
      case OpKind::kPlaceLink:
        SP_RETURN_IF_ERROR(ApplyPlaceLink(c, op));
        break;
      case OpKind::kSetAttrs:
        SP_RETURN_IF_ERROR(ApplySetAttrs(c, op));
        break;
    }
  }
  for (const auto& dir : c.touched_dirs) {
    if (IsRealDir(dir)) SP_RETURN_IF_ERROR(c.fs.SyncDir(dir));
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Staging

// Writes the files a rollback needs into the staging directory while the safety point is read
// and verified; keeps the small reported parts (environment) in memory.
class StagingVisitor final : public store::EntryVisitor {
 public:
  StagingVisitor(FileSystem* fs, std::string staging_dir, std::map<std::string, Op> to_stage,
                 std::function<void(std::uint64_t)> on_bytes = {})
      : fs_(fs),
        staging_dir_(std::move(staging_dir)),
        to_stage_(std::move(to_stage)),
        on_bytes_(std::move(on_bytes)) {}

  Status Begin(const manifest::Entry& entry) override {
    current_ = nullptr;
    capture_ = nullptr;
    if (fs_ != nullptr) {
      auto it = to_stage_.find(entry.path);
      if (it != to_stage_.end()) {
        current_ = &it->second;
        auto file = fs_->CreateFile(staging_dir_ + "/" + current_->staged, 0600);
        if (!file) return tl::unexpected(file.error());
        file_ = std::move(*file);
      }
    }
    if (entry.path.starts_with("environment/") || entry.path.starts_with("logs/") ||
        entry.path.starts_with("state/")) {
      capture_ = &captured_[entry.path];
    }
    return {};
  }

  Status Data(std::span<const std::uint8_t> data) override {
    if (on_bytes_) on_bytes_(data.size());
    if (file_) SP_RETURN_IF_ERROR(file_->Append(data));
    if (capture_ != nullptr && capture_->size() < kMaxCapturedBytes) {
      capture_->append(reinterpret_cast<const char*>(data.data()),
                       std::min(data.size(), kMaxCapturedBytes - capture_->size()));
    }
    return {};
  }

  Status End(const manifest::Entry& entry) override {
    if (file_) {
      SP_RETURN_IF_ERROR(file_->Sync());
      SP_RETURN_IF_ERROR(file_->Close());
      file_.reset();
      const std::string path = staging_dir_ + "/" + current_->staged;
      // chown clears setuid and setgid: the owner first, then the mode, all 07777 bits of it.
      if (RunningAsRoot()) SP_RETURN_IF_ERROR(fs_->Chown(path, entry.uid, entry.gid));
      SP_RETURN_IF_ERROR(fs_->Chmod(path, entry.mode & 07777));
      SP_RETURN_IF_ERROR(fs_->SetMtime(path, entry.mtime));
    }
    return {};
  }

  [[nodiscard]] const std::map<std::string, std::string>& captured() const { return captured_; }

 private:
  FileSystem* fs_;
  std::string staging_dir_;
  std::map<std::string, Op> to_stage_;
  std::function<void(std::uint64_t)> on_bytes_;
  const Op* current_ = nullptr;
  std::unique_ptr<WritableFile> file_;
  std::map<std::string, std::string> captured_;
  std::string* capture_ = nullptr;
};

// What the reported parts of the safety point say differs now.
std::vector<std::string> Differences(const std::map<std::string, std::string>& captured,
                                     const store::BackupRequest& current) {
  std::vector<std::string> out;
  std::string now_env;
  for (const auto& e : current.entries) {
    if (e.header.path == "environment/environment.json" && e.content) now_env = *e.content;
  }
  for (const auto& [path, content] : captured) {
    if (path == "environment/environment.json") {
      try {
        json then = json::parse(content);
        json now = now_env.empty() ? json::object() : json::parse(now_env);
        std::set<std::string> names;
        for (const auto* j : {&then, &now}) {
          if (j->contains("variables") && (*j)["variables"].is_object()) {
            for (const auto& [k, v] : (*j)["variables"].items()) names.insert(k);
          }
        }
        for (const auto& name : names) {
          json a = then.value("variables", json::object()).value(name, json());
          json b = now.value("variables", json::object()).value(name, json());
          // Values are not shown: an allow-listed variable may still hold something private.
          if (a != b)
            out.push_back("environment variable " + name + " differs from the safety point");
        }
        auto packages = [](const json& j) {
          std::map<std::string, std::string> m;
          if (!j.contains("python_packages") || !j["python_packages"].is_array()) return m;
          for (const auto& p : j["python_packages"]) {
            if (!p.is_object() || !p.contains("name") || !p["name"].is_string()) continue;
            const auto& v = p.value("version", json());
            m[p["name"].get<std::string>()] = v.is_string() ? v.get<std::string>() : "?";
          }
          return m;
        };
        auto a = packages(then);
        auto b = packages(now);
        for (const auto& [name, version] : a) {
          auto it = b.find(name);
          if (it == b.end()) {
            out.push_back("python package " + name + " " + version + " is no longer installed");
          } else if (it->second != version) {
            out.push_back("python package " + name + " was " + version + ", now " + it->second);
          }
        }
        for (const auto& [name, version] : b) {
          if (a.count(name) == 0) {
            out.push_back("python package " + name + " " + version + " was installed since");
          }
        }
      } catch (const json::exception&) {
        out.emplace_back("environment/environment.json could not be compared");
      }
    } else if (path.starts_with("logs/")) {
      auto lines = std::count(content.begin(), content.end(), '\n');
      out.push_back(path + ": " + std::to_string(lines) +
                    " log lines kept in the safety point (logs are never written back)");
    } else if (path == snapshot::kZigbee2MqttBackupPath) {
      out.push_back(path +
                    ": Zigbee2MQTT's own backup kept in the safety point (not written back; "
                    "restore it in Zigbee2MQTT after `safepoint extract`)");
    } else if (path.starts_with("state/")) {
      out.push_back(path + ": entity states recorded in the safety point (" +
                    std::to_string(content.size()) +
                    " bytes); live states come from the devices and are not written back");
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Records and journals

std::string RecordsDir(const store::Store& store) {
  return store.options().backup_dir + "/" + std::string(kRecordsDir);
}

Status WriteJournal(FileSystem& fs, const std::string& record, const Journal& j) {
  if (j.phase == Phase::kDone || j.phase == Phase::kReverted) {
    // Finished: no recovery checks a staged file again, so the SHA-256 of the safety point's
    // plaintext (which would confirm a guessed secrets.yaml without scrypt) is not kept.
    Journal finished = j;
    for (auto& op : finished.ops) op.sha256.clear();
    return WriteFileAtomically(fs, record + "/" + std::string(journal::kFileName),
                               journal::ToJson(finished).dump(1) + "\n", 0600);
  }
  return WriteFileAtomically(fs, record + "/" + std::string(journal::kFileName),
                             journal::ToJson(j).dump(1) + "\n", 0600);
}

Status EnsureRecordsDir(FileSystem& fs, const store::Store& store) {
  const std::string dir = RecordsDir(store);
  if (IsRealDir(dir)) return {};
  if (LExists(dir)) return Fail(ErrorCode::kIo, dir + " is not a directory");
  SP_RETURN_IF_ERROR(fs.MakeDir(dir, 0700));
  return fs.SyncDir(store.options().backup_dir);
}

Result<std::string> NewRollbackId(const store::Store& store, const Clock& clock) {
  const std::string base = LocalStamp(clock.Now());
  for (int n = 1; n <= 999; ++n) {
    std::string id = n == 1 ? base : base + "-" + std::to_string(n);
    if (!LExists(RecordsDir(store) + "/" + id)) return id;
  }
  return Fail(ErrorCode::kBusy, "more than 999 rollbacks in one second");
}

bool SameDevice(const std::string& a, const std::string& b) {
  struct stat sa {
  }, sb{};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev;
}

config::Config WithRoots(const config::Config& config, const Journal& j) {
  config::Config c = config;
  c.paths.ha_config = j.ha_config_root;
  c.paths.workspace = j.workspace_root;
  return c;
}

std::set<config::SourceRoot> RootsOf(const std::vector<std::string>& names) {
  std::set<config::SourceRoot> out;
  for (const auto& n : names) {
    out.insert(n == "workspace" ? config::SourceRoot::kWorkspace : config::SourceRoot::kHaConfig);
  }
  return out;
}

std::set<std::string> CollectedPaths(const store::BackupRequest& current) {
  std::set<std::string> out;
  for (const auto& e : current.entries) out.insert(e.header.path);
  return out;
}

// Stages and applies `plan` into the trees without a journal or a pre-rollback safety point: the
// revert path, which restarts from scratch after an interruption.
Status RestoreDirectly(const config::Config& config, const store::Store& store, FileSystem& fs,
                       const Secret& passphrase, const Plan& plan,
                       const store::BackupRequest& current, const std::string& work_dir) {
  BuiltOps built = BuildOps(plan, CollectedPaths(current));
  ApplyContext c{fs, Roots{config.paths.ha_config, config.paths.workspace}};
  c.dirs = {work_dir + "/staging", work_dir + "/moved"};
  c.rename_ha_config = SameDevice(work_dir, config.paths.ha_config);
  c.rename_workspace = SameDevice(work_dir, config.paths.workspace);
  SP_RETURN_IF_ERROR(fs.MakeDir(c.dirs.staging, 0700));
  SP_RETURN_IF_ERROR(fs.MakeDir(c.dirs.moved, 0700));
  std::map<std::string, Op> to_stage;
  for (const auto& op : built.ops) {
    if (op.kind != OpKind::kPlaceFile) continue;
    // The op's path may be a merge copy; staging is keyed by the safety point's path.
    to_stage.emplace(op.path, op);
  }
  StagingVisitor visitor(&fs, c.dirs.staging, std::move(to_stage));
  auto read = store.Read(plan.id, passphrase, visitor);
  if (!read) return tl::unexpected(read.error());
  SP_RETURN_IF_ERROR(fs.SyncDir(c.dirs.staging));
  SP_RETURN_IF_ERROR(ApplyOps(c, built.ops));
  return fs.RemoveTree(c.dirs.staging);
}

// Restores the trees to the journal's pre-rollback safety point and marks the journal reverted.
Status Revert(const config::Config& base_config, store::Store& store, FileSystem& fs,
              const Secret& passphrase, const std::string& record, Journal& j) {
  const config::Config config = WithRoots(base_config, j);
  j.phase = Phase::kReverting;
  ++j.revert_attempts;
  SP_RETURN_IF_ERROR(WriteJournal(fs, record, j));
  const std::string work = record + "/revert-" + std::to_string(j.revert_attempts);
  SP_RETURN_IF_ERROR(RemoveIfPresent(fs, work));
  SP_RETURN_IF_ERROR(fs.MakeDir(work, 0700));
  auto pre = store.Load(j.pre_rollback_id, passphrase);
  if (!pre) return tl::unexpected(pre.error());
  SP_RETURN_IF_ERROR(CheckRoot("Home Assistant configuration", config.paths.ha_config));
  auto current = snapshot::Collect(config, std::nullopt);
  if (!current) return tl::unexpected(current.error());
  auto plan = PlanWith(config, *pre, std::nullopt, Policy::kOverwrite, *current);
  if (!plan) return tl::unexpected(plan.error());
  SP_RETURN_IF_ERROR(RestoreDirectly(config, store, fs, passphrase, *plan, *current, work));
  j.phase = Phase::kReverted;
  SP_RETURN_IF_ERROR(WriteJournal(fs, record, j));
  return RemoveIfPresent(fs, record + "/staging");
}

struct RecoverState {
  const Secret* passphrase = nullptr;
  const PassphraseSource* source = nullptr;  // asked once, only when a revert needs it
  std::optional<Secret> loaded;
};

Result<const Secret*> PassphraseFor(RecoverState& s) {
  if (s.passphrase != nullptr) return s.passphrase;
  if (!s.loaded) {
    if (s.source == nullptr || !*s.source) {
      return Fail(ErrorCode::kInternal, "recovery needs the passphrase and was given none");
    }
    auto p = (*s.source)();
    if (!p) return tl::unexpected(p.error());
    s.loaded = std::move(*p);
  }
  return &*s.loaded;
}

Result<std::vector<std::string>> RecoverImpl(const config::Config& config, store::Store& store,
                                             FileSystem& fs, RecoverState& state) {
  std::vector<std::string> notes;
  const std::string records = RecordsDir(store);
  auto names = ListDir(records);
  if (!names) return tl::unexpected(names.error());
  bool removed_any = false;
  for (const auto& name : *names) {
    const std::string record = records + "/" + name;
    if (!IsRealDir(record)) continue;
    const std::string journal_path = record + "/" + std::string(journal::kFileName);
    if (!LExists(journal_path)) {
      // Interrupted before its journal existed: nothing in the trees was changed.
      SP_RETURN_IF_ERROR(fs.RemoveTree(record));
      removed_any = true;
      notes.push_back("removed the unfinished rollback " + name +
                      " (interrupted before it changed anything)");
      continue;
    }
    auto text = ReadFileBounded(journal_path, 1u << 30);
    if (!text) return tl::unexpected(text.error());
    auto j = journal::Parse(*text);
    if (!j) return Fail(ErrorCode::kCorrupt, journal_path + ": " + j.error().message);
    if (j->phase == Phase::kDone || j->phase == Phase::kReverted) {
      SP_RETURN_IF_ERROR(RemoveIfPresent(fs, record + "/staging"));
      for (int n = 1; n <= j->revert_attempts; ++n) {
        SP_RETURN_IF_ERROR(
            RemoveIfPresent(fs, record + "/revert-" + std::to_string(n) + "/staging"));
      }
      continue;
    }
    if (j->phase == Phase::kApplying) {
      ApplyContext c{fs, Roots{j->ha_config_root, j->workspace_root}};
      c.rename_ha_config = j->rename_ha_config;
      c.rename_workspace = j->rename_workspace;
      c.dirs = {record + "/staging", record + "/moved"};
      c.recovering = true;
      auto applied = ApplyOps(c, j->ops);
      if (applied) {
        j->phase = Phase::kDone;
        SP_RETURN_IF_ERROR(WriteJournal(fs, record, *j));
        SP_RETURN_IF_ERROR(RemoveIfPresent(fs, record + "/staging"));
        notes.push_back("completed the interrupted rollback " + name + " to " + j->id +
                        " (undo: safepoint rollback " + j->pre_rollback_id + ")");
        for (const auto& o : restart::RunAffected(config.restart, RootsOf(j->changed_roots))) {
          notes.push_back("restart " + o.name + ": " + (o.ok ? "ok" : o.error));
        }
        continue;
      }
      if (applied.error().code != ErrorCode::kCorrupt) return tl::unexpected(applied.error());
      j->error = "staging was incomplete: " + applied.error().message;
    }
    // Reverting (or staging was gone): back to the pre-rollback safety point.
    auto pass = PassphraseFor(state);
    if (!pass) return tl::unexpected(pass.error());
    SP_RETURN_IF_ERROR(Revert(config, store, fs, **pass, record, *j));
    notes.push_back("reverted the interrupted rollback " + name + " to " + j->id +
                    ": the trees are back at safety point " + j->pre_rollback_id);
  }
  if (removed_any) SP_RETURN_IF_ERROR(fs.SyncDir(records));
  return notes;
}


}  // namespace

// -----------------------------------------------------------------------------------------------
// Public API

std::string ConflictMessage(const Plan& plan) {
  auto conflicts = plan.Conflicts();
  std::string msg = std::to_string(conflicts.size()) +
                    (conflicts.size() == 1 ? " file was" : " files were") +
                    " changed locally since safety point " + plan.id + ": ";
  for (std::size_t i = 0; i < conflicts.size() && i < kConflictsInMessage; ++i) {
    msg += (i == 0 ? "" : ", ") + conflicts[i];
  }
  if (conflicts.size() > kConflictsInMessage) {
    msg += " and " + std::to_string(conflicts.size() - kConflictsInMessage) + " more";
  }
  msg += "; nothing was changed (use --on-conflict overwrite or merge)";
  return msg;
}

std::string_view ChangeName(Change change) {
  switch (change) {
    case Change::kUnchanged:
      return "unchanged";
    case Change::kChangedByUpdate:
      return "changed_by_update";
    case Change::kConflict:
      return "conflict";
    case Change::kMissing:
      return "missing";
    case Change::kAdded:
      return "added";
  }
  return "?";
}

std::string_view ActionName(Action action) {
  switch (action) {
    case Action::kNone:
      return "none";
    case Action::kRestore:
      return "restore";
    case Action::kRestoreBeside:
      return "restore_beside";
    case Action::kMoveAside:
      return "move_aside";
    case Action::kStop:
      return "stop";
  }
  return "?";
}

std::size_t Plan::Count(Change change) const {
  return static_cast<std::size_t>(std::count_if(
      entries.begin(), entries.end(), [&](const PlanEntry& e) { return e.change == change; }));
}

std::size_t Plan::Count(Action action) const {
  return static_cast<std::size_t>(std::count_if(
      entries.begin(), entries.end(), [&](const PlanEntry& e) { return e.action == action; }));
}

std::vector<std::string> Plan::Conflicts() const {
  std::vector<std::string> out;
  for (const auto& e : entries) {
    if (e.change == Change::kConflict) out.push_back(e.path);
  }
  return out;
}

bool Plan::Empty() const {
  return std::all_of(entries.begin(), entries.end(),
                     [](const PlanEntry& e) { return e.action == Action::kNone; });
}

Result<Plan> PlanFor(const config::Config& config, const manifest::Manifest& target,
                     const std::optional<Fingerprint>& fingerprint, Policy policy) {
  SP_RETURN_IF_ERROR(CheckRoot("Home Assistant configuration", config.paths.ha_config));
  auto current = snapshot::Collect(config, std::nullopt);
  if (!current) return tl::unexpected(current.error());
  return PlanWith(config, target, fingerprint, policy, *current);
}

Result<Plan> MakePlan(const config::Config& config, const store::Store& store,
                      const Secret& passphrase, const std::string& id, Policy policy) {
  Secret key;
  auto m = store.Load(id, passphrase, &key);
  if (!m) return tl::unexpected(m.error());
  auto fp = LoadFingerprint(store, id, std::move(key));
  if (!fp) return tl::unexpected(fp.error());
  return PlanFor(config, *m, *fp, policy);
}

namespace {

// Maps the progress of one step onto its share [from, to] of a 0-1000 scale, never going back.
class StepProgress {
 public:
  explicit StepProgress(const store::ProgressFn& fn) : fn_(fn) {}
  void Report(std::uint64_t from, std::uint64_t to, std::uint64_t done, std::uint64_t total) {
    if (!fn_) return;
    const std::uint64_t at = total == 0 ? to : from + (to - from) * std::min(done, total) / total;
    if (reported_ && at <= last_) return;
    reported_ = true;
    last_ = at;
    fn_(at, 1000);
  }

 private:
  const store::ProgressFn& fn_;
  bool reported_ = false;
  std::uint64_t last_ = 0;
};

}  // namespace

Result<Report> Rollback(const config::Config& config, store::Store& store, FileSystem& fs,
                        const Clock& clock, const Secret& passphrase, const std::string& id,
                        Policy policy, bool dry_run, const store::ProgressFn& progress) {
  // An interrupted rollback is finished first, so its record and the trees are consistent.
  if (!dry_run) {
    RecoverState rs;
    rs.passphrase = &passphrase;
    auto recovered = RecoverImpl(config, store, fs, rs);
    if (!recovered) return tl::unexpected(recovered.error());
  }
  Secret key;
  auto target = store.Load(id, passphrase, &key);
  if (!target) return tl::unexpected(target.error());
  auto fingerprint = LoadFingerprint(store, id, std::move(key));
  if (!fingerprint) return tl::unexpected(fingerprint.error());
  SP_RETURN_IF_ERROR(CheckRoot("Home Assistant configuration", config.paths.ha_config));
  auto current = snapshot::Collect(config, std::nullopt);
  if (!current) return tl::unexpected(current.error());
  auto plan = PlanWith(config, *target, *fingerprint, policy, *current);
  if (!plan) return tl::unexpected(plan.error());

  Report report;
  report.id = id;
  report.policy = policy;
  report.dry_run = dry_run;

  if (dry_run) {
    StagingVisitor visitor(nullptr, "", {});
    auto read = store.Read(id, passphrase, visitor);
    if (!read) return tl::unexpected(read.error());
    report.differences = Differences(visitor.captured(), *current);
    report.plan = std::move(*plan);
    return report;
  }

  const std::set<std::string> collected = CollectedPaths(*current);
  BuiltOps built = BuildOps(*plan, collected);
  Journal j;
  j.id = id;
  j.policy = config::ConflictPolicyName(policy);
  j.created_at = IsoUtc(clock.Now());
  j.ha_config_root = config.paths.ha_config;
  j.workspace_root = config.paths.workspace;
  j.ops = built.ops;
  j.changed_roots.assign(built.changed_roots.begin(), built.changed_roots.end());

  // 1. Stage and verify everything before touching the trees.
  SP_RETURN_IF_ERROR(EnsureRecordsDir(fs, store));
  auto rid = NewRollbackId(store, clock);
  if (!rid) return tl::unexpected(rid.error());
  j.rollback_id = *rid;
  const std::string record = RecordsDir(store) + "/" + *rid;
  report.rollback_id = *rid;
  report.record_dir = record;
  auto discard = [&](Error e) -> Result<Report> {
    // Nothing was changed yet; a leftover record is removed at the next recovery anyway.
    (void)fs.RemoveTree(record);
    return tl::unexpected(std::move(e));
  };
  SP_RETURN_IF_ERROR(fs.MakeDir(record, 0700));
  const std::string staging = record + "/staging";
  if (auto st = fs.MakeDir(staging, 0700); !st) return discard(st.error());
  j.rename_ha_config = SameDevice(staging, config.paths.ha_config);
  j.rename_workspace = SameDevice(staging, config.paths.workspace);
  std::map<std::string, const Op*> by_dest;
  for (const auto& op : built.ops) {
    if (op.kind == OpKind::kPlaceFile) by_dest[op.path] = &op;
  }
  // Staging is keyed by the safety point's path; a merge copy's op names the beside path.
  std::map<std::string, Op> to_stage;
  for (const auto& e : plan->entries) {
    if (e.action != Action::kRestore && e.action != Action::kRestoreBeside) continue;
    auto it = by_dest.find(e.action == Action::kRestoreBeside ? e.beside : e.path);
    if (it != by_dest.end()) to_stage.emplace(e.path, *it->second);
  }
  // One scale for the three steps: staging (decrypting everything) 0-50%, the pre-rollback
  // safety point 50-90%, applying 90-100%.
  StepProgress steps(progress);
  const std::uint64_t target_bytes = std::max<std::uint64_t>(target->TotalBytes(), 1);
  std::uint64_t staged_bytes = 0;
  StagingVisitor visitor(&fs, staging, std::move(to_stage), [&](std::uint64_t n) {
    staged_bytes += n;
    steps.Report(0, 500, std::min(staged_bytes, target_bytes), target_bytes);
  });
  auto read = store.Read(id, passphrase, visitor);
  if (!read) return discard(read.error());
  if (auto st = fs.SyncDir(staging); !st) return discard(st.error());
  report.differences = Differences(visitor.captured(), *current);

  // 2. Conflicts under the abort policy stop here.
  if (plan->WouldStop()) {
    (void)fs.RemoveTree(record);  // nothing was changed
    report.rollback_id.clear();
    report.record_dir.clear();
    report.stopped = true;
    report.plan = std::move(*plan);
    return report;
  }
  if (built.ops.empty()) {
    (void)fs.RemoveTree(record);
    report.record_dir.clear();
    report.plan = std::move(*plan);
    return report;
  }

  // 3. The pre-rollback safety point: `safepoint rollback <it>` undoes this rollback.
  store::BackupRequest pre_request = *current;
  pre_request.reason = "pre-rollback to " + id;
  pre_request.update.reset();
  auto pre = store.Backup(pre_request, passphrase, [&](std::uint64_t done, std::uint64_t total) {
    steps.Report(500, 900, done, total);
  });
  if (!pre) return discard(pre.error());
  j.pre_rollback_id = pre->id;
  report.pre_rollback_id = pre->id;

  // 4. From the journal on, a crash is completed or reverted by Recover.
  j.phase = Phase::kApplying;
  if (auto st = WriteJournal(fs, record, j); !st) return discard(st.error());
  ApplyContext c{fs, Roots{config.paths.ha_config, config.paths.workspace}};
  c.rename_ha_config = j.rename_ha_config;
  c.rename_workspace = j.rename_workspace;
  c.dirs = {staging, record + "/moved"};
  c.on_op = [&](std::size_t done, std::size_t total) { steps.Report(900, 1000, done, total); };
  if (auto applied = ApplyOps(c, j.ops); !applied) {
    Error error = applied.error();
    j.error = error.message;
    auto reverted = Revert(config, store, fs, passphrase, record, j);
    if (reverted) {
      error.message += "; the rollback was reverted, the trees are as before";
    } else {
      error.message += "; reverting failed too (" + reverted.error().message +
                       "); the next safepoint command finishes it";
    }
    return tl::unexpected(std::move(error));
  }
  j.phase = Phase::kDone;
  SP_RETURN_IF_ERROR(WriteJournal(fs, record, j));
  SP_RETURN_IF_ERROR(RemoveIfPresent(fs, staging));
  steps.Report(900, 1000, 1, 1);

  report.plan = std::move(*plan);
  report.restored = report.plan.Count(Action::kRestore);
  report.written_beside = report.plan.Count(Action::kRestoreBeside);
  report.moved_aside = report.plan.Count(Action::kMoveAside);
  report.changed_roots = j.changed_roots;

  // 5. Restarts; a failure is reported, never undone.
  report.restarts = restart::RunAffected(config.restart, RootsOf(j.changed_roots));
  for (const auto& o : report.restarts) {
    if (!o.ok) report.errors.push_back("restart " + o.name + " failed: " + o.error);
  }
  return report;
}

Result<std::vector<std::string>> Recover(const config::Config& config, store::Store& store,
                                         FileSystem& fs, const PassphraseSource& passphrase) {
  RecoverState state;
  state.source = &passphrase;
  return RecoverImpl(config, store, fs, state);
}

Status RecoverInterrupted(const config::Config& config, store::Store& store, FileSystem& fs,
                          const PassphraseSource& passphrase) {
  auto notes = Recover(config, store, fs, passphrase);
  if (!notes) return tl::unexpected(notes.error());
  return {};
}

json ToJson(const Plan& plan) {
  json entries = json::array();
  for (const auto& e : plan.entries) {
    if (e.change == Change::kUnchanged) continue;
    json j = {{"path", e.path}, {"change", ChangeName(e.change)}, {"action", ActionName(e.action)}};
    const auto& shown = e.target ? e.target : e.current;
    if (shown) j["type"] = manifest::EntryTypeName(shown->type);
    if (!e.beside.empty()) j["beside"] = e.beside;
    entries.push_back(std::move(j));
  }
  return {{"id", plan.id},
          {"policy", config::ConflictPolicyName(plan.policy)},
          {"fingerprint", plan.has_fingerprint},
          {"would_stop", plan.WouldStop()},
          {"summary",
           {{"unchanged", plan.Count(Change::kUnchanged)},
            {"changed_by_update", plan.Count(Change::kChangedByUpdate)},
            {"conflict", plan.Count(Change::kConflict)},
            {"missing", plan.Count(Change::kMissing)},
            {"added", plan.Count(Change::kAdded)}}},
          {"entries", entries},
          {"conflicts", plan.Conflicts()},
          {"not_restored", plan.not_restored},
          {"warnings", plan.warnings}};
}

json ToJson(const Report& r) {
  json restarts = json::array();
  for (const auto& o : r.restarts) restarts.push_back(restart::ToJson(o));
  return {{"rollback_id", r.rollback_id},
          {"id", r.id},
          {"pre_rollback_id", r.pre_rollback_id},
          {"policy", config::ConflictPolicyName(r.policy)},
          {"dry_run", r.dry_run},
          {"record_dir", r.record_dir},
          {"restored", r.restored},
          {"written_beside", r.written_beside},
          {"moved_aside", r.moved_aside},
          {"changed_roots", r.changed_roots},
          {"differences", r.differences},
          {"restarts", restarts},
          {"errors", r.errors},
          {"plan", ToJson(r.plan)}};
}

std::string Describe(const Plan& plan) {
  std::string out;
  for (const auto& e : plan.entries) {
    if (e.change == Change::kUnchanged || e.implicit_dir) continue;
    std::string line = "  " + std::string(ChangeName(e.change)) + ": " + e.path;
    switch (e.action) {
      case Action::kRestore:
        line += " (restore)";
        break;
      case Action::kRestoreBeside:
        line += " (keep local, restore beside as " + e.beside + ")";
        break;
      case Action::kMoveAside:
        line += " (move aside)";
        break;
      case Action::kStop:
        line += " (stops the rollback)";
        break;
      case Action::kNone:
        break;
    }
    out += line + "\n";
  }
  for (const auto& w : plan.warnings) out += "  warning: " + w + "\n";
  out += "safety point " + plan.id + ": " + std::to_string(plan.Count(Change::kUnchanged)) +
         " unchanged, " + std::to_string(plan.Count(Change::kChangedByUpdate)) +
         " changed by the update, " + std::to_string(plan.Count(Change::kConflict)) +
         " conflicts, " + std::to_string(plan.Count(Change::kMissing)) + " missing, " +
         std::to_string(plan.Count(Change::kAdded)) + " added" +
         (plan.has_fingerprint ? "" : " (no post-update fingerprint: every change is a conflict)") +
         "\n";
  if (!plan.not_restored.empty()) {
    out += "not written back (reported only): ";
    for (std::size_t i = 0; i < plan.not_restored.size(); ++i) {
      out += (i == 0 ? "" : ", ") + plan.not_restored[i];
    }
    out += "\n";
  }
  return out;
}

}  // namespace safepoint::rollback
