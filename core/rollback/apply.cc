// Journal operations: built from a plan, applied to the trees (and applied again by recovery).
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
#include "core/rollback/internal.h"
#include "core/rollback/journal.h"
#include "core/sources/snapshot.h"

namespace safepoint::rollback::internal {

Op MakeOp(OpKind kind, const std::string& path) {
  Op op;
  op.kind = kind;
  op.path = path;
  return op;
}

namespace {

// Writes the file or link of plan entry `e` at `dest`. Files are staged under consecutive
// numbers: a file takes `*staged`, then counts it up.
Op PlaceOp(const PlanEntry& e, const std::string& dest, std::size_t* staged) {
  Op op;
  op.path = dest;
  op.uid = e.uid;
  op.gid = e.gid;
  if (e.target->type == EntryType::kFile) {
    op.kind = OpKind::kPlaceFile;
    op.staged = std::to_string((*staged)++);
    op.sha256 = e.target->sha256;
    op.size = e.target->size;
    op.mode = e.target->mode;
    op.mtime = e.mtime;
  } else {
    op.kind = OpKind::kPlaceLink;
    op.link_target = e.target->link_target;
  }
  return op;
}

// A place operation with what it needs on the trees' file system while it runs (the copy of the
// new file beside the old one) and what it gives back when it is done (the file it replaces).
struct Placing {
  Op op;
  std::uint64_t needs = 0;
  std::uint64_t frees = 0;
};

// Orders file and link placements so that a nearly full file system can take them: first the
// ones that free space (the new file no larger than the one it replaces), the smallest first;
// then the ones that take space, those replacing the largest files first. For steps that each
// need some room while they run and leave a gain or a loss, this order gets through whenever
// any order would. It matters when the new files are copied in (the record on another file
// system); renamed in from staging, they need no room of their own. Ties keep path order.
std::vector<Op> OrderForSpace(std::vector<Placing> places) {
  std::stable_sort(places.begin(), places.end(), [](const Placing& a, const Placing& b) {
    const bool a_frees = a.needs <= a.frees;
    const bool b_frees = b.needs <= b.frees;
    if (a_frees != b_frees) return a_frees;
    return a_frees ? a.needs < b.needs : a.frees > b.frees;
  });
  std::vector<Op> out;
  out.reserve(places.size());
  for (auto& p : places) out.push_back(std::move(p.op));
  return out;
}

}  // namespace

// Turns a plan into journal operations: moves aside, directories (parents first), files and
// links (ordered for space: OrderForSpace), then directory attributes (children first).
BuiltOps BuildOps(const Plan& plan, const CollectedPaths& collected) {
  BuiltOps out;
  std::vector<Op> moves, dirs, attrs;
  std::vector<Placing> places;
  std::vector<std::string> moved;  // top-most paths moved aside so far (sorted input order)
  auto under_moved = [&](const std::string& path) {
    return std::any_of(moved.begin(), moved.end(), [&](const std::string& m) {
      return path.size() > m.size() && path.starts_with(m) && path[m.size()] == '/';
    });
  };
  auto move_aside = [&](const std::string& path) {
    ++out.moved_aside;
    if (under_moved(path)) return;
    moves.push_back(MakeOp(OpKind::kMoveAside, path));
    moved.push_back(path);
    out.changed_roots.insert(TopOf(path));
  };
  std::size_t staged = 0;
  // `replaces`: the live file at `dest` stays until the new one is renamed over it.
  auto place = [&](const PlanEntry& e, const std::string& dest, bool replaces) {
    Placing p{PlaceOp(e, dest, &staged), 0, 0};
    if (p.op.kind == OpKind::kPlaceFile) p.needs = p.op.size;
    if (replaces && e.current && e.current->type == EntryType::kFile) p.frees = e.current->size;
    places.push_back(std::move(p));
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
        place(e, e.beside, false);
        break;
      case Action::kRestore: {
        const bool want_dir = e.target->type == EntryType::kDirectory;
        const bool have_dir = e.current && e.current->type == EntryType::kDirectory;
        bool moved_aside = false;
        if (e.current) {
          // Kept in the record rather than lost: a type change involving a directory, or a
          // path the pre-rollback safety point does not hold (excluded, special, unsafe link).
          if (want_dir != have_dir || (!want_dir && !collected.Contains(e.path))) {
            move_aside(e.path);
            moved_aside = true;
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
          place(e, e.path, !moved_aside);
        }
        break;
      }
    }
  }
  std::reverse(attrs.begin(), attrs.end());
  std::vector<Op> placed = OrderForSpace(std::move(places));
  for (auto* list : {&moves, &dirs, &placed, &attrs}) {
    for (auto& op : *list) out.ops.push_back(std::move(op));
  }
  return out;
}

std::string TempBeside(const std::string& token) { return ".safepoint-tmp-" + token; }

std::string MovingBeside(const std::string& abs, const std::string& token) {
  // One name per path, not per directory: a replay of an earlier move in the same directory
  // removes its own leftover, and must never take a later move's half-copied source for it.
  return ".safepoint-moving-" + token + "-" + Sha256Hex(abs).substr(0, 16);
}

Status RemoveIfPresent(FileSystem& fs, const std::string& path) {
  if (LExists(path)) return fs.RemoveTree(path);
  return {};
}

namespace {

Status RemoveIfPresentIn(FileSystem& fs, const Dir& dir, const std::string& name) {
  if (LStatIn(dir, name)) return fs.RemoveTreeAt(dir, name);
  return {};
}

}  // namespace

// A staged file must match what the journal expects (checked during recovery only).
Result<bool> StagedIsIntact(const std::string& staged, const Op& op) {
  auto hash = HashFile(staged);
  if (!hash) return false;
  struct stat st {};
  if (::lstat(staged.c_str(), &st) != 0) return false;
  return *hash == op.sha256 && static_cast<std::uint64_t>(st.st_size) == op.size;
}

Status ApplyMoveAside(ApplyContext& c, const Op& op) {
  auto at = Locate(c, op.path);
  // A parent gone: so is the path (a replay finds it moved already).
  if (!at) return at.error().code == ErrorCode::kNotFound ? Status{} : tl::unexpected(at.error());
  const std::string dest = c.dirs.moved + "/" + op.path;
  // Across mounts the source is first renamed beside itself, so a replay can tell a
  // half-removed source from a path restored after the move. The checks hold whichever way the
  // move started (mounts can change between an interruption and the replay).
  const std::string moving = MovingBeside(c.roots.Abs(op.path), c.token);
  if (LExists(dest)) return RemoveIfPresentIn(c.fs, at->dir, moving);
  const bool started = LStatIn(at->dir, moving).has_value();
  if (!started && !LStatIn(at->dir, at->name)) return {};
  SP_RETURN_IF_ERROR(MakeDirsBelow(c.fs, c.dirs.moved, ParentOf("./" + op.path).substr(2)));
  auto record = Dir::OpenFollowing(ParentOf(dest));
  if (!record) return tl::unexpected(record.error());
  if (!started) {
    if (c.RenameFor(op.path, at->dir.path(), c.dirs.moved)) {
      SP_RETURN_IF_ERROR(c.fs.RenameAt(at->dir, at->name, *record, BaseName(dest)));
      c.touched_dirs.insert(at->dir.path());
      c.touched_dirs.insert(record->path());
      return {};
    }
    SP_RETURN_IF_ERROR(c.fs.RenameAt(at->dir, at->name, at->dir, moving));
    SP_RETURN_IF_ERROR(c.fs.SyncDir(at->dir.path()));
  }
  const std::string partial = BaseName(dest) + ".partial";
  SP_RETURN_IF_ERROR(RemoveIfPresentIn(c.fs, *record, partial));
  if (auto st = CopyTree(c.fs, at->dir, moving, *record, partial); !st) {
    (void)RemoveIfPresentIn(c.fs, *record, partial);  // its space back to the revert (best effort)
    return st;
  }
  SP_RETURN_IF_ERROR(c.fs.SyncDir(record->path()));
  SP_RETURN_IF_ERROR(c.fs.RenameAt(*record, partial, *record, BaseName(dest)));
  SP_RETURN_IF_ERROR(c.fs.SyncDir(record->path()));
  SP_RETURN_IF_ERROR(c.fs.RemoveTreeAt(at->dir, moving));
  c.touched_dirs.insert(at->dir.path());
  return {};
}

Status ApplyMakeDir(ApplyContext& c, const Op& op) {
  auto at = Locate(c, op.path);
  if (!at) return tl::unexpected(at.error());
  if (const auto st = LStatIn(at->dir, at->name); st && S_ISDIR(st->st_mode)) return {};
  SP_RETURN_IF_ERROR(c.fs.MakeDirAt(at->dir, at->name, op.mode));
  // mkdir applies the umask and ignores setgid: the mode is set exactly afterwards.
  SP_RETURN_IF_ERROR(c.fs.ChmodAt(at->dir, at->name, op.mode));
  c.touched_dirs.insert(at->dir.path());
  return {};
}

namespace {

// Renamed into place before an interruption: the file then has the op's content, mode and
// owner (staging set them). Otherwise staging is gone, and the file may differ in its mode or
// owner alone: not done, so not taken for done.
bool AlreadyPlaced(const ApplyContext& c, const Located& at, const Op& op) {
  auto state = ReadPathState(c.roots.For(TopOf(op.path)), RelOf(op.path));
  if (!state || !*state || (*state)->type != EntryType::kFile || (*state)->sha256 != op.sha256 ||
      (*state)->mode != (op.mode & 07777)) {
    return false;
  }
  if (!RunningAsRoot()) return true;
  const auto st = LStatIn(at.dir, at.name);
  return st && st->st_uid == op.uid && st->st_gid == op.gid;
}

}  // namespace

Status ApplyPlaceFile(ApplyContext& c, const Op& op) {
  auto at = Locate(c, op.path);
  if (!at) return tl::unexpected(at.error());
  const std::string staged = c.dirs.staging + "/" + op.staged;
  if (!LExists(staged)) {
    if (AlreadyPlaced(c, *at, op)) return {};
    return Fail(ErrorCode::kCorrupt, "staged copy of " + op.path + " is missing");
  }
  if (c.recovering) {
    auto intact = StagedIsIntact(staged, op);
    if (!intact || !*intact) {
      return Fail(ErrorCode::kCorrupt, "staged copy of " + op.path + " is damaged");
    }
  }
  auto staging = Dir::OpenFollowing(c.dirs.staging);
  if (!staging) return tl::unexpected(staging.error());
  if (c.RenameFor(op.path, at->dir.path(), c.dirs.staging)) {
    SP_RETURN_IF_ERROR(c.fs.RenameAt(*staging, op.staged, at->dir, at->name));
  } else {
    const std::string tmp = TempBeside(c.token);
    SP_RETURN_IF_ERROR(RemoveIfPresentIn(c.fs, at->dir, tmp));
    SP_RETURN_IF_ERROR(CopyFile(c.fs, *staging, op.staged, at->dir, tmp, op.mode));
    if (RunningAsRoot()) {
      // chown clears setuid and setgid, so the mode is set again after it.
      SP_RETURN_IF_ERROR(c.fs.ChownAt(at->dir, tmp, op.uid, op.gid));
      SP_RETURN_IF_ERROR(c.fs.ChmodAt(at->dir, tmp, op.mode));
    }
    SP_RETURN_IF_ERROR(c.fs.SetMtimeAt(at->dir, tmp, op.mtime));
    SP_RETURN_IF_ERROR(c.fs.RenameAt(at->dir, tmp, at->dir, at->name));
  }
  c.touched_dirs.insert(at->dir.path());
  return {};
}

Status ApplyPlaceLink(ApplyContext& c, const Op& op) {
  auto at = Locate(c, op.path);
  if (!at) return tl::unexpected(at.error());
  auto state = ReadPathState(c.roots.For(TopOf(op.path)), RelOf(op.path));
  if (state && *state && (*state)->type == EntryType::kSymlink &&
      (*state)->link_target == op.link_target) {
    // The right link already (placed before an interruption, or its owner alone changed).
    if (!RunningAsRoot()) return {};
    const auto st = LStatIn(at->dir, at->name);
    if (st && st->st_uid == op.uid && st->st_gid == op.gid) return {};
    return c.fs.ChownAt(at->dir, at->name, op.uid, op.gid);
  }
  const std::string tmp = TempBeside(c.token);
  SP_RETURN_IF_ERROR(RemoveIfPresentIn(c.fs, at->dir, tmp));
  SP_RETURN_IF_ERROR(c.fs.SymlinkAt(op.link_target, at->dir, tmp));
  if (RunningAsRoot()) SP_RETURN_IF_ERROR(c.fs.ChownAt(at->dir, tmp, op.uid, op.gid));
  SP_RETURN_IF_ERROR(c.fs.RenameAt(at->dir, tmp, at->dir, at->name));
  c.touched_dirs.insert(at->dir.path());
  return {};
}

Status ApplySetAttrs(ApplyContext& c, const Op& op) {
  auto at = Locate(c, op.path);
  if (!at) return tl::unexpected(at.error());
  if (RunningAsRoot()) SP_RETURN_IF_ERROR(c.fs.ChownAt(at->dir, at->name, op.uid, op.gid));
  return c.fs.ChmodAt(at->dir, at->name, op.mode);
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

}  // namespace safepoint::rollback::internal
