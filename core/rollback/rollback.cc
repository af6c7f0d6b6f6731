#include "core/rollback/rollback.h"

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
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
#include "core/base/time_text.h"
#include "core/rollback/internal.h"
#include "core/rollback/journal.h"
#include "core/sources/snapshot.h"

namespace safepoint::rollback {

namespace {

using namespace internal;  // NOLINT(google-build-using-namespace): this module's own helpers
using nlohmann::json;

constexpr std::size_t kMaxCapturedBytes = 4u << 20;

// ---------------------------------------------------------------------------------------------
// Staging

// Writes the files a rollback needs into the staging directory while the safety point is read
// and verified (unsynced: the caller syncs their file system once, after the last); keeps the
// small reported parts (environment) in memory.
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

// Stages and applies `plan` into the trees without a journal or a pre-rollback safety point: the
// revert path, which restarts from scratch after an interruption.
Status RestoreDirectly(const config::Config& config, const store::Store& store, FileSystem& fs,
                       const Secret& passphrase, const Plan& plan,
                       const store::BackupRequest& current, const std::string& work_dir) {
  BuiltOps built = BuildOps(plan, CollectedPaths(current));
  ApplyContext c{fs, Roots{config.paths.ha_config, config.paths.workspace}};
  c.dirs = {work_dir + "/staging", work_dir + "/moved"};
  c.token = BaseName(ParentOf(work_dir));  // the record's name, the rollback's id
  c.rename_ha_config = SameMount(work_dir, config.paths.ha_config);
  c.rename_workspace = SameMount(work_dir, config.paths.workspace);
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
  SP_RETURN_IF_ERROR(fs.SyncFileSystem(c.dirs.staging));
  SP_RETURN_IF_ERROR(fs.SyncDir(c.dirs.staging));
  SP_RETURN_IF_ERROR(ApplyOps(c, built.ops));
  return fs.RemoveTree(c.dirs.staging);
}

// Restores the trees to the journal's pre-rollback safety point and marks the journal reverted.
Status Revert(const config::Config& base_config, store::Store& store, FileSystem& fs,
              const Secret& passphrase, const std::string& record, Journal& j) {
  const config::Config config = WithRoots(base_config, j);
  FreeReserve(record);  // room for the journal below, when the disk is full
  const Phase was = j.phase;
  j.phase = Phase::kReverting;
  ++j.revert_attempts;
  if (auto st = WriteJournal(fs, record, j); !st) {
    j.phase = was;  // what the journal on disk still says
    --j.revert_attempts;
    return st;
  }
  // A reverting journal never completes: the forward staging only holds space the revert needs.
  SP_RETURN_IF_ERROR(RemoveIfPresent(fs, record + "/staging"));
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
  if (auto st = WriteJournal(fs, record, j); !st) {
    j.phase = Phase::kReverting;  // the next command reverts again, and finds nothing to do
    return st;
  }
  // The trees are what the pre-rollback safety point holds, so it saves nothing any more; kept,
  // every failed attempt would push an older safety point (the one being restored, most likely)
  // out of retention. A failure to delete it only leaves it to retention.
  (void)store.Delete(j.pre_rollback_id);
  return {};
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
      FreeReserve(record);
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
      c.token = j->rollback_id;
      c.recovering = true;
      auto applied = ApplyOps(c, j->ops);
      if (applied) {
        j->phase = Phase::kDone;
        FreeReserve(record);
        SP_RETURN_IF_ERROR(WriteJournal(fs, record, *j));
        SP_RETURN_IF_ERROR(RemoveIfPresent(fs, record + "/staging"));
        notes.push_back("completed the interrupted rollback " + name + " to " + j->id +
                        " (undo: safepoint rollback " + j->pre_rollback_id +
                        " --on-conflict overwrite)");
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
                    ": the trees are as they were before it");
  }
  if (removed_any) SP_RETURN_IF_ERROR(fs.SyncDir(records));
  return notes;
}

}  // namespace

// -----------------------------------------------------------------------------------------------
// Public API

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

// What a rollback starts from: the target safety point, the trees now, the plan, and the
// target's file key (empty for format 1: reading the payload then runs scrypt again).
struct Start {
  manifest::Manifest target;
  store::BackupRequest current;
  Plan plan;
  Secret file_key;
};

Result<Start> LoadAndPlan(const config::Config& config, const store::Store& store,
                          const Secret& passphrase, const std::string& id, Policy policy) {
  LiveCollection live(config);
  Secret key;
  Secret file_key;
  auto target = store.Load(id, passphrase, &key, &file_key);
  if (!target) return tl::unexpected(target.error());
  auto fingerprint = LoadFingerprint(store, id, std::move(key));
  if (!fingerprint) return tl::unexpected(fingerprint.error());
  auto current = live.Take();
  if (!current) return tl::unexpected(current.error());
  auto plan = PlanWith(config, *target, *fingerprint, policy, *current);
  if (!plan) return tl::unexpected(plan.error());
  return Start{std::move(*target), std::move(*current), std::move(*plan), std::move(file_key)};
}

Journal NewJournal(const config::Config& config, const Clock& clock, const std::string& id,
                   Policy policy, const BuiltOps& built) {
  Journal j;
  j.id = id;
  j.policy = config::ConflictPolicyName(policy);
  j.created_at = FormatUtcSecondsTime(clock.Now());
  j.ha_config_root = config.paths.ha_config;
  j.workspace_root = config.paths.workspace;
  j.ops = built.ops;
  j.changed_roots.assign(built.changed_roots.begin(), built.changed_roots.end());
  return j;
}

// The files to stage, keyed by the safety point's path; a merge copy's op names the beside path.
std::map<std::string, Op> FilesToStage(const Plan& plan, const std::vector<Op>& ops) {
  std::map<std::string, const Op*> by_dest;
  for (const auto& op : ops) {
    if (op.kind == OpKind::kPlaceFile) by_dest[op.path] = &op;
  }
  std::map<std::string, Op> to_stage;
  for (const auto& e : plan.entries) {
    if (e.action != Action::kRestore && e.action != Action::kRestoreBeside) continue;
    auto it = by_dest.find(e.action == Action::kRestoreBeside ? e.beside : e.path);
    if (it != by_dest.end()) to_stage.emplace(e.path, *it->second);
  }
  return to_stage;
}

// A dry run's check: decrypts and verifies the whole safety point `id` (nothing is written) and
// returns how its reported parts differ from `current`.
Result<std::vector<std::string>> Verify(const store::Store& store, const Secret& passphrase,
                                        const std::string& id, const Start& start) {
  StagingVisitor visitor(nullptr, "", {});
  auto read = store.Read(id, passphrase, visitor, &start.file_key);
  if (!read) return tl::unexpected(read.error());
  return Differences(visitor.captured(), start.current);
}

// Creates the record of a new rollback (<backup_dir>/.rollbacks/<rollback-id>, whose id goes to
// `j`) with its staging directory; returns the record's path. A record left by a failure is
// removed at the next recovery.
Result<std::string> OpenRecord(FileSystem& fs, const store::Store& store, const Clock& clock,
                               Journal& j) {
  SP_RETURN_IF_ERROR(EnsureRecordsDir(fs, store));
  auto rid = NewRollbackId(store, clock);
  if (!rid) return tl::unexpected(rid.error());
  j.rollback_id = *rid;
  const std::string record = RecordsDir(store) + "/" + *rid;
  SP_RETURN_IF_ERROR(fs.MakeDir(record, 0700));
  if (auto st = fs.MakeDir(record + "/staging", 0700); !st) {
    (void)fs.RemoveTree(record);  // nothing was changed
    return tl::unexpected(st.error());
  }
  return record;
}

// Decrypts and verifies safety point `id`, writing `to_stage` into `staging` (durably), and
// returns how the captured parts differ from the trees now. Progress: 0-50% of `steps`.
Result<std::vector<std::string>> Stage(const store::Store& store, FileSystem& fs,
                                       const Secret& passphrase, const std::string& id,
                                       const std::string& staging,
                                       std::map<std::string, Op> to_stage, const Start& start,
                                       StepProgress& steps) {
  const std::uint64_t target_bytes = std::max<std::uint64_t>(start.target.TotalBytes(), 1);
  std::uint64_t staged_bytes = 0;
  StagingVisitor visitor(&fs, staging, std::move(to_stage), [&](std::uint64_t n) {
    staged_bytes += n;
    steps.Report(0, 500, std::min(staged_bytes, target_bytes), target_bytes);
  });
  auto read = store.Read(id, passphrase, visitor, &start.file_key);
  if (!read) return tl::unexpected(read.error());
  SP_RETURN_IF_ERROR(fs.SyncFileSystem(staging));
  SP_RETURN_IF_ERROR(fs.SyncDir(staging));
  return Differences(visitor.captured(), start.current);
}

// Ends a rollback that changes nothing (stopped on conflicts under kAbort, or with nothing to
// do) and removes its record.
Report EndUnchanged(FileSystem& fs, const std::string& record, Plan plan, Report report) {
  (void)fs.RemoveTree(record);  // nothing was changed
  report.record_dir.clear();
  if (plan.WouldStop()) {
    report.rollback_id.clear();
    report.stopped = true;
  }
  report.plan = std::move(plan);
  return report;
}

// Backs up the trees as they are (`request`) before a rollback to `id` changes them, under `id`'s
// file key when loading it gave one (no second scrypt). Progress: 50-90% of `steps`.
Result<manifest::Manifest> TakePreRollback(store::Store& store, const Secret& passphrase,
                                           const std::string& id, const Secret& file_key,
                                           store::BackupRequest request, StepProgress& steps) {
  request.reason = std::string(kPreRollbackReason) + id;
  request.update.reset();
  const auto progress = [&](std::uint64_t d, std::uint64_t t) { steps.Report(500, 900, d, t); };
  if (file_key.empty()) return store.Backup(request, passphrase, progress);
  return store.BackupUnderKeyOf(id, file_key, request, progress);
}

// Marks an applied rollback done and removes its staging.
Status MarkDone(FileSystem& fs, const std::string& record, const std::string& staging,
                Journal& j) {
  j.phase = Phase::kDone;
  FreeReserve(record);
  if (auto st = WriteJournal(fs, record, j); !st) {
    return Fail(st.error().code, "the rollback was applied, but recording that failed (" +
                                     st.error().message +
                                     "); the next safepoint command records it");
  }
  return RemoveIfPresent(fs, staging);
}

// Applies the journaled ops (progress: 90-100% of `steps`); on failure reverts the trees to the
// pre-rollback safety point and returns the error, saying whether reverting worked.
Status ApplyOrRevert(const config::Config& config, store::Store& store, FileSystem& fs,
                     const Secret& passphrase, const std::string& record,
                     const std::string& staging, Journal& j, StepProgress& steps) {
  ApplyContext c{fs, Roots{config.paths.ha_config, config.paths.workspace}};
  c.rename_ha_config = j.rename_ha_config;
  c.rename_workspace = j.rename_workspace;
  c.dirs = {staging, record + "/moved"};
  c.token = j.rollback_id;
  c.on_op = [&](std::size_t done, std::size_t total) { steps.Report(900, 1000, done, total); };
  auto applied = ApplyOps(c, j.ops);
  if (applied) return {};
  Error error = applied.error();
  j.error = error.message;
  auto reverted = Revert(config, store, fs, passphrase, record, j);
  if (reverted) {
    error.message += "; the rollback was reverted, the trees are as before";
  } else {
    error.message += "; reverting failed too (" + reverted.error().message +
                     (j.phase == Phase::kReverting
                          ? "); the next safepoint command reverts it (`safepoint recover` "
                            "does only that)"
                          : "); the next safepoint command finishes it");
  }
  return tl::unexpected(std::move(error));
}

// Fills the counts of a rollback that was applied, and runs its restarts: a failure is
// reported, never undone.
void Complete(const config::Config& config, const Journal& j, const BuiltOps& built, Plan plan,
              Report& report) {
  report.plan = std::move(plan);
  report.restored = report.plan.Count(Action::kRestore);
  report.written_beside = report.plan.Count(Action::kRestoreBeside);
  report.moved_aside = built.moved_aside;
  report.changed_roots = j.changed_roots;
  report.restarts = restart::RunAffected(config.restart, RootsOf(j.changed_roots));
  for (const auto& o : report.restarts) {
    if (!o.ok) report.errors.push_back("restart " + o.name + " failed: " + o.error);
  }
}

}  // namespace

Result<Report> Rollback(const config::Config& config, store::Store& store, FileSystem& fs,
                        const Clock& clock, const Secret& passphrase, const std::string& id,
                        Policy policy, bool dry_run, const store::ProgressFn& progress,
                        Recovery recovery) {
  // An interrupted rollback is finished first, so its record and the trees are consistent.
  if (!dry_run && recovery == Recovery::kRecoverFirst) {
    RecoverState rs;
    rs.passphrase = &passphrase;
    auto recovered = RecoverImpl(config, store, fs, rs);
    if (!recovered) return tl::unexpected(recovered.error());
  }
  auto start = LoadAndPlan(config, store, passphrase, id, policy);
  if (!start) return tl::unexpected(start.error());
  Plan& plan = start->plan;
  Report report;
  report.id = id;
  report.policy = policy;
  report.dry_run = dry_run;

  if (dry_run) {
    auto differences = Verify(store, passphrase, id, *start);
    if (!differences) return tl::unexpected(differences.error());
    report.differences = std::move(*differences);
    report.plan = std::move(plan);
    return report;
  }

  BuiltOps built = BuildOps(plan, CollectedPaths(start->current));
  Journal j = NewJournal(config, clock, id, policy, built);

  // 1. Stage and verify everything before touching the trees.
  auto opened = OpenRecord(fs, store, clock, j);
  if (!opened) return tl::unexpected(opened.error());
  const std::string record = *opened;
  const std::string staging = record + "/staging";
  report.rollback_id = j.rollback_id;
  report.record_dir = record;
  auto discard = [&](Error e) -> Result<Report> {
    // Nothing was changed yet (a leftover record goes at the next recovery), so a pre-rollback
    // safety point holds the trees as they are: deleted, as after a revert (DiscardUnchanged).
    return DiscardUnchanged(fs, store, record, j.pre_rollback_id, std::move(e));
  };
  j.rename_ha_config = SameMount(staging, config.paths.ha_config);
  j.rename_workspace = SameMount(staging, config.paths.workspace);
  // One scale for the three steps: staging (decrypting everything) 0-50%, the pre-rollback
  // safety point 50-90%, applying 90-100%.
  StepProgress steps(progress);
  auto differences =
      Stage(store, fs, passphrase, id, staging, FilesToStage(plan, built.ops), *start, steps);
  if (!differences) return discard(differences.error());
  report.differences = std::move(*differences);

  // 2. Conflicts under the abort policy stop here; so does a rollback with nothing to do.
  if (plan.WouldStop() || built.ops.empty()) {
    return EndUnchanged(fs, record, std::move(plan), std::move(report));
  }

  // 3. The pre-rollback safety point: `safepoint rollback <it> --on-conflict overwrite` undoes
  // this rollback (the files it writes are not recorded as its own, so they would conflict).
  // What the plan was made from goes first (back to the system too), before the backup's own
  // memory.
  std::vector<manifest::Entry>().swap(start->target.entries);
  plan.DropUnchanged();
  ::malloc_trim(0);
  auto pre =
      TakePreRollback(store, passphrase, id, start->file_key, std::move(start->current), steps);
  if (!pre) return discard(pre.error());
  j.pre_rollback_id = pre->id;
  report.pre_rollback_id = pre->id;

  // 4. From the journal on, Recover completes or reverts a crash; no reserve: fails untouched.
  j.phase = Phase::kApplying;
  if (auto st = MakeReserve(record, j); !st) return discard(st.error());
  if (auto st = WriteJournal(fs, record, j); !st) return discard(st.error());
  SP_RETURN_IF_ERROR(ApplyOrRevert(config, store, fs, passphrase, record, staging, j, steps));
  SP_RETURN_IF_ERROR(MarkDone(fs, record, staging, j));
  steps.Report(900, 1000, 1, 1);

  // 5. Restarts.
  Complete(config, j, built, std::move(plan), report);
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

}  // namespace safepoint::rollback
