#pragma once

// What the rollback engine's source files share (rollback.cc, plan.cc, apply.cc, tree.cc). Not
// part of any interface: rollback.h is.

#include <sys/stat.h>
#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/fs.h"
#include "core/base/result.h"
#include "core/config/config.h"
#include "core/rollback/journal.h"
#include "core/rollback/rollback.h"
#include "core/sources/sources.h"
#include "core/store/store.h"

namespace safepoint::rollback::internal {

using journal::Journal;
using journal::Op;
using journal::OpKind;
using journal::Phase;
using manifest::EntryType;

// ---- Paths and files (tree.cc) ----

bool LExists(const std::string& path);

bool IsRealDir(const std::string& path);
// Whether rename(2) can move an entry of directory `a` into directory `b`: both on the same
// mount (statx's mount id; two bind mounts of one file system share st_dev but not a mount, and
// rename between them fails with EXDEV). False when either cannot be examined.
bool SameMount(const std::string& a, const std::string& b);

std::string ParentOf(const std::string& path);

std::string BaseName(const std::string& path);

// `path` with its last component extended by `prefix` and `suffix`, its base name cut so that
// the component stays within NAME_MAX (255 bytes), cut before a UTF-8 continuation byte.
std::string WithNameAffixes(const std::string& path, std::string_view prefix,
                            std::string_view suffix);

// "ha_config" or "workspace" of an archive path.
std::string TopOf(std::string_view archive_path);

std::string RelOf(std::string_view archive_path);

bool IsTreeRoot(std::string_view top);

// True when `path` equals `dir` or lies below it.
bool IsWithin(const std::string& path, const std::string& dir);

bool RunningAsRoot();

Result<std::vector<std::string>> ListDir(const std::string& dir);

// Creates `dir` and its missing parents below `base` (which must exist) through `fs`.
Status MakeDirsBelow(FileSystem& fs, const std::string& base, const std::string& rel_dir);

// ---- Planning (plan.cc) ----

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

Status CheckRoot(const std::string& what, const std::string& root);

// lstat(2) of `name` in `dir`; std::nullopt when that fails (errno tells why).
std::optional<struct stat> LStatIn(const Dir& dir, const std::string& name);

// Where an archive path is in the live trees: the directory holding it, held open, and its last
// component ("." for a tree's root itself).
struct Located {
  Dir dir;
  std::string name;
};

// The names in an open directory, sorted.
Result<std::vector<std::string>> ListDirIn(const Dir& dir);

// Copies the regular file `from` in `from_dir` through `fs` into a new file `to` in `to_dir`
// (which must not exist), synced, with `mode`.
Status CopyFile(FileSystem& fs, const Dir& from_dir, const std::string& from, const Dir& to_dir,
                const std::string& to, mode_t mode);

// Copies a file, link or directory tree (never following links) through `fs`, each directory
// read and written through descriptors held open.
Status CopyTree(FileSystem& fs, const Dir& from_dir, const std::string& from, const Dir& to_dir,
                const std::string& to);

bool SameAsTarget(const PlanEntry& e);

// The archive paths below the two trees that a source collection holds: views into its entries
// (which must outlive the set), sorted. One pointer-sized view per path, no copy of it.
class CollectedPaths {
 public:
  explicit CollectedPaths(const store::BackupRequest& current);
  [[nodiscard]] bool Contains(std::string_view path) const {
    return std::binary_search(paths_.begin(), paths_.end(), path);
  }
  [[nodiscard]] const std::vector<std::string_view>& paths() const { return paths_; }

 private:
  std::vector<std::string_view> paths_;
};

// The live trees of `config` (snapshot::Collect), walked on a second thread from construction
// on: loading a safety point keeps one core in scrypt for most of a second, the walk needs
// another, and neither needs the other's result. Only the walk runs beside scrypt; the entries
// a plan reads are made from it in Take, once the load has freed scrypt's memory. Destruction
// waits for the walk.
class LiveCollection {
 public:
  explicit LiveCollection(const config::Config& config);
  LiveCollection(const LiveCollection&) = delete;
  LiveCollection& operator=(const LiveCollection&) = delete;
  ~LiveCollection();

  // The walk's result, after CheckRoot of the configuration root (whose error comes first, as
  // it did when the walk ran after it). Call once.
  Result<store::BackupRequest> Take();

 private:
  const config::Config& config_;
  std::future<Result<sources::Collection>> walk_;
};

// The plan, given the current source collection (so Rollback collects only once).
Result<Plan> PlanWith(const config::Config& config, const manifest::Manifest& target,
                      const std::optional<Fingerprint>& fingerprint, Policy policy,
                      const store::BackupRequest& current);

// ---- Journal operations (apply.cc) ----

struct BuiltOps {
  std::vector<Op> ops;
  std::set<std::string> changed_roots;
  // Paths whose live version goes into the record: added ones, and those in the way of a type
  // change (a directory that becomes a file...), each path below them included.
  std::size_t moved_aside = 0;
};

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
  std::string token;  // the rollback's id: names what TempBeside and MovingBeside make
  bool recovering = false;
  std::set<std::string> touched_dirs;
  std::map<std::string, Dir> root_dirs;  // "ha_config", "workspace": opened by Locate
  // Called after each applied op with (ops done, ops total); may be empty.
  std::function<void(std::size_t, std::size_t)> on_op;

  // Whether `archive_path` (in directory `abs_dir` of its tree) moves to or from `record_dir` by
  // rename: its tree's root is on the record's mount, and so is the directory itself (a file
  // system mounted inside the tree, a bind mount of the same disk among them, is not).
  [[nodiscard]] bool RenameFor(const std::string& archive_path, const std::string& abs_dir,
                               const std::string& record_dir) const {
    const bool root = TopOf(archive_path) == "workspace" ? rename_workspace : rename_ha_config;
    return root && SameMount(record_dir, abs_dir);
  }
};

// Opens the directory holding `archive_path` one component at a time, never through a symlink,
// from its tree's root, which is opened once per apply (never through a symlink either: the
// rollback refused a root that is one) and held in `c`: swapping the root or a directory of the
// tree for a symlink while a rollback runs fails the operation (the rollback reverts) instead of
// leading its writes out of the tree. An apply writes only in the directories this opens.
// Errors: kNotFound when a directory on the way is missing, kIo otherwise (one that is not a
// directory, a symlink among them, says so).
Result<Located> Locate(ApplyContext& c, const std::string& archive_path);

// Fails a rollback that changed nothing with `e`: its record is removed, and so is its
// pre-rollback safety point when it took one (kept, each failed attempt would push the target
// out of retention). Both best effort: the next recovery removes the record, retention the point.
Result<Report> DiscardUnchanged(FileSystem& fs, store::Store& store, const std::string& record,
                                const std::string& pre_rollback_id, Error e);

Op MakeOp(OpKind kind, const std::string& path);

// Turns a plan into journal operations: moves aside, directories (parents first), files and
// links, then directory attributes (children first).
BuiltOps BuildOps(const Plan& plan, const CollectedPaths& collected);

// The name an apply gives a file or link in the directory it goes to before renaming it over its
// path (one name per directory: it lives within one operation), and (across mounts) the name it
// gives a path `abs` it moves aside, in the same directory, before copying it (one name per
// path: it outlives an interruption until the copy is done). Both hold `token` (the rollback's
// id), so no file of the user's is taken for one.
std::string TempBeside(const std::string& token);
std::string MovingBeside(const std::string& abs, const std::string& token);

Status RemoveIfPresent(FileSystem& fs, const std::string& path);

// A staged file must match what the journal expects (checked during recovery only).
Result<bool> StagedIsIntact(const std::string& staged, const Op& op);

Status ApplyMoveAside(ApplyContext& c, const Op& op);

Status ApplyMakeDir(ApplyContext& c, const Op& op);

Status ApplyPlaceFile(ApplyContext& c, const Op& op);

Status ApplyPlaceLink(ApplyContext& c, const Op& op);

Status ApplySetAttrs(ApplyContext& c, const Op& op);

// Applies (or, when recovering, re-applies) every operation, then fsyncs the touched dirs.
Status ApplyOps(ApplyContext& c, const std::vector<Op>& ops);

// ---- Reporting (differences.cc) ----

// What the reported parts of the safety point (`captured`: its environment/, logs/ and state/
// entries) say differs now, in `current`. One line each; values are never shown.
std::vector<std::string> Differences(const std::map<std::string, std::string>& captured,
                                     const store::BackupRequest& current);

// ---- Records (records.cc) ----

// <backup_dir>/.rollbacks
std::string RecordsDir(const store::Store& store);
// Writes the record's journal atomically; a finished one without the staged files' SHA-256.
Status WriteJournal(FileSystem& fs, const std::string& record, const Journal& j);
// The reserve: room for the journal `j` (its size and 64 KiB more) allocated beside it before
// the journal is first written. A rollback that fails for want of space must still be able to
// write "reverting" into its journal, or the next command would complete a rollback it was
// told had failed; FreeReserve gives the room back for that first (a missing reserve is fine).
Status MakeReserve(const std::string& record, const Journal& j);
void FreeReserve(const std::string& record);
Status EnsureRecordsDir(FileSystem& fs, const store::Store& store);
// A new record id: the local time, with -2, -3 ... on a clash.
Result<std::string> NewRollbackId(const store::Store& store, const Clock& clock);

}  // namespace safepoint::rollback::internal
