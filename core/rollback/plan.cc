// Planning a rollback: what each path needs, the plan as JSON and as text.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <functional>
#include <future>
#include <iterator>
#include <map>
#include <set>
#include <span>
#include <system_error>
#include <utility>

#include "core/base/io.h"
#include "core/base/json_name.h"
#include "core/base/utf8.h"
#include "core/base/sha256.h"
#include "core/rollback/internal.h"
#include "core/rollback/journal.h"
#include "core/rollback/rollback.h"
#include "core/sources/snapshot.h"

namespace safepoint::rollback {

using nlohmann::json;

namespace {
constexpr std::size_t kConflictsInMessage = 20;
// A plan reads the paths its safety point lists on two threads from this many on.
constexpr std::size_t kReadOnTwoThreadsFrom = 2048;
}  // namespace

namespace internal {

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
  if (*e.current != *e.target) return false;
  // Only root can set an owner back; for anyone else it is not part of what a rollback restores.
  return !e.current_owner || !RunningAsRoot() || *e.current_owner == Owner{e.uid, e.gid};
}

CollectedPaths::CollectedPaths(const store::BackupRequest& current) {
  for (const auto& in : current.entries) {
    if (IsTreeRoot(TopOf(in.header.path))) paths_.emplace_back(in.header.path);
  }
  std::sort(paths_.begin(), paths_.end());
}

namespace {

// The safety point's tree entries, checked, by path (views into the safety point's manifest).
using WantedMap = std::map<std::string_view, const manifest::Entry*, std::less<>>;
struct Wanted {
  WantedMap entries;
  bool has_workspace = false;
};

// Checks the safety point's entries and picks those a rollback writes; the rest go to
// plan.not_restored or plan.warnings.
Result<Wanted> WantedEntries(const config::Config& config, const manifest::Manifest& target,
                             const Roots& roots, Plan& plan) {
  Wanted wanted;
  for (const auto& e : target.entries) {
    SP_RETURN_IF_ERROR(manifest::CheckArchivePath(e.path));
    const std::string top = TopOf(e.path);
    if (!IsTreeRoot(top)) {
      if (e.path != manifest::kInnerName) plan.not_restored.push_back(e.path);
      continue;
    }
    if (e.path == top) {
      if (e.type != EntryType::kDirectory) {
        return Fail(ErrorCode::kCorrupt, "entry " + QuoteName(e.path) + " must be a directory");
      }
      continue;
    }
    if (e.type == EntryType::kSymlink) {
      SP_RETURN_IF_ERROR(manifest::CheckLinkTarget(e.path, e.link_target));
    }
    const std::string abs = roots.Abs(e.path);
    if (IsWithin(abs, config.paths.backup_dir)) {
      plan.warnings.push_back(QuoteName(e.path) + ": inside the backup directory; not restored");
      continue;
    }
    if (!wanted.entries.emplace(e.path, &e).second) {
      return Fail(ErrorCode::kCorrupt, "entry " + QuoteName(e.path) + " appears twice");
    }
    if (top == "workspace") wanted.has_workspace = true;
  }
  return wanted;
}

// Parents: an entry below a non-directory is refused; unlisted parents become implicit dirs.
Result<std::set<std::string, std::less<>>> ImplicitParents(const WantedMap& wanted) {
  std::set<std::string, std::less<>> implicit;
  for (const auto& [path, entry] : wanted) {
    std::size_t slash = path.find('/');
    for (;;) {
      slash = path.find('/', slash + 1);
      if (slash == std::string::npos) break;
      const std::string_view parent = path.substr(0, slash);
      auto it = wanted.find(parent);
      if (it != wanted.end()) {
        if (it->second->type != EntryType::kDirectory) {
          return Fail(ErrorCode::kCorrupt, "entry " + std::string(path) + " lies below " +
                                               std::string(parent) + ", which is not a directory");
        }
      } else {
        implicit.emplace(parent);
      }
    }
  }
  return implicit;
}

// The paths of `part`, each with its current state, appended to `out`.
Status ReadWanted(const Roots& roots, std::span<const WantedMap::value_type* const> part,
                  LiveTreeReader& live, std::vector<PlanEntry>& out) {
  for (const auto* item : part) {
    const manifest::Entry* entry = item->second;
    PlanEntry p;
    p.path = std::string(item->first);
    p.target = StateOf(*entry);
    p.uid = entry->uid;
    p.gid = entry->gid;
    p.mtime = entry->mtime;
    Owner owner;
    auto cur = live.Read(roots.For(TopOf(p.path)), RelOf(p.path), entry, &owner);
    if (!cur) return tl::unexpected(cur.error());
    p.current = std::move(*cur);
    if (p.current) p.current_owner = owner;
    out.push_back(std::move(p));
  }
  return {};
}

// ReadWanted of every path the safety point lists, the second half on another thread with a
// reader of its own: the lstat of each path and the hashing of the changed files are most of a
// large plan's time once the safety point is loaded. An error of the first half comes first.
Status ReadAllWanted(const Roots& roots, const WantedMap& wanted, LiveTreeReader& live,
                     std::vector<PlanEntry>& out) {
  std::vector<const WantedMap::value_type*> items;
  items.reserve(wanted.size());
  for (const auto& item : wanted) items.push_back(&item);
  const std::span<const WantedMap::value_type* const> all(items);
  if (items.size() < kReadOnTwoThreadsFrom) return ReadWanted(roots, all, live, out);
  const std::size_t half = items.size() / 2;
  LiveTreeReader second_live;
  std::vector<PlanEntry> second_out;
  second_out.reserve(items.size() - half);
  auto read_second = [&] { return ReadWanted(roots, all.subspan(half), second_live, second_out); };
  std::future<Status> second;
  try {
    second = std::async(std::launch::async, read_second);
  } catch (const std::system_error&) {
    second = std::async(std::launch::deferred, read_second);  // no thread: one after the other
  }
  Status first = ReadWanted(roots, all.first(half), live, out);
  Status rest = second.get();
  SP_RETURN_IF_ERROR(first);
  SP_RETURN_IF_ERROR(rest);
  live.Count(second_live);
  std::move(second_out.begin(), second_out.end(), std::back_inserter(out));
  return {};
}

// One plan entry per path the safety point lists (`wanted`, `implicit`) or the trees hold now
// (`collected`), with the path's current state, in path order; changes and actions are decided
// later.
Result<std::vector<PlanEntry>> EntriesWithCurrent(
    const Roots& roots, const WantedMap& wanted, const std::set<std::string, std::less<>>& implicit,
    const CollectedPaths& collected, LiveTreeReader& live) {
  std::vector<PlanEntry> entries;
  entries.reserve(wanted.size() + implicit.size());
  auto read_current = [&](const std::string& path,
                          const manifest::Entry* recorded =
                              nullptr) -> Result<std::optional<PathState>> {
    return live.Read(roots.For(TopOf(path)), RelOf(path), recorded);
  };
  SP_RETURN_IF_ERROR(ReadAllWanted(roots, wanted, live, entries));
  for (const auto& path : implicit) {
    PlanEntry p;
    p.path = path;
    p.implicit_dir = true;
    p.target = PathState{EntryType::kDirectory, 0, "", 0755, ""};
    auto cur = read_current(path);
    if (!cur) return tl::unexpected(cur.error());
    p.current = std::move(*cur);
    entries.push_back(std::move(p));
  }
  for (const auto& path : collected.paths()) {
    if (wanted.count(path) != 0 || implicit.count(path) != 0) continue;
    PlanEntry p;
    p.path = std::string(path);
    p.change = Change::kAdded;
    p.action = Action::kMoveAside;
    auto cur = read_current(p.path);
    if (!cur) return tl::unexpected(cur.error());
    if (!*cur) continue;  // vanished since it was listed
    p.current = std::move(*cur);
    entries.push_back(std::move(p));
  }
  std::sort(entries.begin(), entries.end(),
            [](const PlanEntry& a, const PlanEntry& b) { return a.path < b.path; });
  return entries;
}

// How a path the safety point lists differs from it now.
Change ChangeOf(const PlanEntry& p, const std::optional<Fingerprint>& fingerprint) {
  if (!p.current) return Change::kMissing;
  if (SameAsTarget(p)) return Change::kUnchanged;
  if (fingerprint) {
    return fingerprint->Matches(p.path, *p.current, p.current_owner) ? Change::kChangedByUpdate
                                                                     : Change::kConflict;
  }
  return Change::kConflict;
}

// The free path beside `path` where a merge writes the safety point's version: never over a
// listed path, nor over something the pre-rollback point cannot hold.
std::string BesidePath(const std::string& path, const std::string& id, const Roots& roots,
                       const WantedMap& wanted, const CollectedPaths& collected) {
  auto taken = [&](const std::string& b) {
    if (wanted.count(b) != 0) return true;
    if (collected.Contains(b)) return false;  // added: moved aside first
    auto st = ReadPathState(roots.For(TopOf(b)), RelOf(b));
    return !st || st->has_value();
  };
  std::string beside = WithNameAffixes(path, "", ".safepoint-" + id);
  for (int n = 2; taken(beside) && n < 1000; ++n) {
    beside = WithNameAffixes(path, "", ".safepoint-" + id + "-" + std::to_string(n));
  }
  return beside;
}

}  // namespace

LiveCollection::LiveCollection(const config::Config& config) : config_(config) {
  auto walk = [&config] { return sources::CollectFiles(config); };
  try {
    walk_ = std::async(std::launch::async, walk);
  } catch (const std::system_error&) {
    // No thread to be had: the walk runs in Take, after the load, as it would without one.
    walk_ = std::async(std::launch::deferred, walk);
  }
}

LiveCollection::~LiveCollection() {
  if (walk_.valid()) walk_.wait();
}

Result<store::BackupRequest> LiveCollection::Take() {
  auto files = walk_.get();
  SP_RETURN_IF_ERROR(CheckRoot("Home Assistant configuration", config_.paths.ha_config));
  if (!files) return tl::unexpected(files.error());
  return snapshot::CollectWalked(config_, std::move(*files), std::nullopt);
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

  auto wanted = WantedEntries(config, target, roots, plan);
  if (!wanted) return tl::unexpected(wanted.error());
  SP_RETURN_IF_ERROR(CheckRoot("Home Assistant configuration", config.paths.ha_config));
  if (wanted->has_workspace) SP_RETURN_IF_ERROR(CheckRoot("workspace", config.paths.workspace));
  auto implicit = ImplicitParents(wanted->entries);
  if (!implicit) return tl::unexpected(implicit.error());

  const CollectedPaths collected(current);
  LiveTreeReader live;
  auto entries = EntriesWithCurrent(roots, wanted->entries, *implicit, collected, live);
  if (!entries) return tl::unexpected(entries.error());
  plan.files_hashed = live.files_hashed();
  plan.files_trusted = live.files_trusted();

  for (auto& p : *entries) {
    const std::string& path = p.path;
    if (p.change == Change::kAdded) continue;
    p.change = ChangeOf(p, fingerprint);
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
          p.beside = BesidePath(path, target.id, roots, wanted->entries, collected);
        } else {
          p.action = Action::kRestore;
        }
        break;
      case Change::kAdded:
        break;
    }
  }
  plan.entries = std::move(*entries);
  return plan;
}

}  // namespace internal

using namespace internal;  // NOLINT(google-build-using-namespace): this module's own helpers

std::string ConflictMessage(const Plan& plan) {
  auto conflicts = plan.Conflicts();
  std::string msg = std::to_string(conflicts.size()) +
                    (conflicts.size() == 1 ? " file was" : " files were") +
                    " changed locally since safety point " + plan.id + ": ";
  for (std::size_t i = 0; i < conflicts.size() && i < kConflictsInMessage; ++i) {
    msg += (i == 0 ? "" : ", ") + QuoteName(conflicts[i]);
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
  return static_cast<std::size_t>(
             std::count_if(entries.begin(), entries.end(),
                           [&](const PlanEntry& e) { return e.change == change; })) +
         (change == Change::kUnchanged ? dropped_unchanged : 0);
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

void Plan::DropUnchanged() {
  const std::size_t before = entries.size();
  std::erase_if(entries, [](const PlanEntry& e) { return e.change == Change::kUnchanged; });
  dropped_unchanged += before - entries.size();
  entries.shrink_to_fit();
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
  internal::LiveCollection live(config);
  Secret key;
  auto m = store.Load(id, passphrase, &key);
  if (!m) return tl::unexpected(m.error());
  auto fp = LoadFingerprint(store, id, std::move(key));
  if (!fp) return tl::unexpected(fp.error());
  auto current = live.Take();
  if (!current) return tl::unexpected(current.error());
  return internal::PlanWith(config, *m, *fp, policy, *current);
}

namespace {

// Names in a list of strings, as text (QuoteName): exact ones are in `entries`.
std::vector<std::string> Quoted(const std::vector<std::string>& names) {
  std::vector<std::string> out;
  out.reserve(names.size());
  for (const auto& n : names) out.push_back(QuoteName(n));
  return out;
}

}  // namespace

json ToJson(const Plan& plan) {
  json entries = json::array();
  for (const auto& e : plan.entries) {
    if (e.change == Change::kUnchanged) continue;
    json j = json::object();
    PutName(j, "path", e.path);  // "path_b64" when the name is not UTF-8
    j["change"] = ChangeName(e.change);
    j["action"] = ActionName(e.action);
    const auto& shown = e.target ? e.target : e.current;
    if (shown) j["type"] = manifest::EntryTypeName(shown->type);
    if (!e.beside.empty()) PutName(j, "beside", e.beside);
    entries.push_back(std::move(j));
  }
  return {
      {"id", plan.id},
      {"policy", config::ConflictPolicyName(plan.policy)},
      {"fingerprint", plan.has_fingerprint},
      {"would_stop", plan.WouldStop()},
      {"summary",
       {{"unchanged", plan.Count(Change::kUnchanged)},
        {"changed_by_update", plan.Count(Change::kChangedByUpdate)},
        {"conflict", plan.Count(Change::kConflict)},
        {"missing", plan.Count(Change::kMissing)},
        {"added", plan.Count(Change::kAdded)}}},
      {"files_read", {{"hashed", plan.files_hashed}, {"unchanged_by_stamp", plan.files_trusted}}},
      {"entries", entries},
      {"conflicts", Quoted(plan.Conflicts())},
      {"not_restored", Quoted(plan.not_restored)},
      {"warnings", plan.warnings}};
}

std::string Describe(const Plan& plan) {
  std::string out;
  for (const auto& e : plan.entries) {
    if (e.change == Change::kUnchanged || e.implicit_dir) continue;
    std::string line = "  " + std::string(ChangeName(e.change)) + ": " + QuoteName(e.path);
    switch (e.action) {
      case Action::kRestore:
        line += " (restore)";
        break;
      case Action::kRestoreBeside:
        line += " (keep local, restore beside as " + QuoteName(e.beside) + ")";
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
      out += (i == 0 ? "" : ", ") + QuoteName(plan.not_restored[i]);
    }
    out += "\n";
  }
  return out;
}

}  // namespace safepoint::rollback
