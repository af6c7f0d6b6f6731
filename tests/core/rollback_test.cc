#include "core/rollback/rollback.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "core/config/config.h"
#include "core/rollback/content_diff.h"
#include "core/rollback/fingerprint.h"
#include "core/rollback/internal.h"
#include "core/rollback/journal.h"
#include "core/sources/snapshot.h"
#include "core/store/store.h"
#include "tests/testutil/testutil.h"

namespace safepoint::rollback {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using safepoint::testing::FakeClock;
using safepoint::testing::FaultInjectingFileSystem;
using safepoint::testing::FaultKind;
using safepoint::testing::ReadFile;
using safepoint::testing::TempDir;
using safepoint::testing::WriteFile;
using safepoint::testing::WriteHomeAssistantTree;
using safepoint::testing::WriteSecrets;

constexpr char kPassphrase[] = "correct horse battery staple";

// A directory on another file system than $TMPDIR (tmpfs), for the copy-instead-of-rename path.
class ShmDir {
 public:
  ShmDir() {
    std::string tmpl = "/dev/shm/safepoint-rb-XXXXXX";
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~ShmDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  ShmDir(const ShmDir&) = delete;
  ShmDir& operator=(const ShmDir&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
};

bool SameDev(const std::string& a, const std::string& b) {
  struct stat sa {
  }, sb{};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev;
}

std::string Blob(std::size_t n, std::uint32_t seed) {
  std::string s(n, '\0');
  for (auto& c : s) {
    seed = seed * 1103515245 + 12345;
    c = static_cast<char>(seed >> 24);
  }
  return s;
}

using TreeSnap = std::map<std::string, std::string>;

// The owner as the snapshot records it: "<uid>:<gid>" when running as root, where a rollback
// restores it (docs/rollback.md), else "-".
std::string Owner(const struct stat& st) {
  if (::geteuid() != 0) return "-";
  return std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid);
}

// Every path below `root` as "<prefix>/<rel>" ->
//   files:       "F <mode> <owner> <mtime> <content>" (mtime in whole seconds, as recorded),
//   directories: "D <mode> <owner>",
//   symlinks:    "L <owner> <target>".
// A directory's mtime is left out: it changes whenever an entry in it does, and rollback does
// not restore it (docs/rollback.md: file mode, mtime and owner; directory mode and owner).
void SnapInto(const std::string& root, const std::string& prefix, TreeSnap& out) {
  if (!fs::exists(fs::symlink_status(root))) return;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    struct stat st {};
    ASSERT_EQ(::lstat(it->path().c_str(), &st), 0);
    std::string key = prefix + "/" + it->path().lexically_relative(root).string();
    std::string mode = std::to_string(st.st_mode & 07777);
    if (S_ISLNK(st.st_mode)) {
      out[key] = "L " + Owner(st) + " " + fs::read_symlink(it->path()).string();
    } else if (S_ISDIR(st.st_mode)) {
      out[key] = "D " + mode + " " + Owner(st);
    } else {
      out[key] = "F " + mode + " " + Owner(st) + " " + std::to_string(st.st_mtim.tv_sec) + " " +
                 ReadFile(it->path().string()).value_or("?");
    }
  }
}

// The content of a snapshot's file value ("F <mode> <owner> <mtime> <content>").
std::string ContentOf(const std::string& value) {
  std::size_t pos = 0;
  for (int field = 0; field < 4; ++field) pos = value.find(' ', pos) + 1;
  return value.substr(pos);
}

// Sets the mtime of every regular file below `root` to a distinct time in the past, so that a
// file an update rewrites differs in mtime too, and a rollback must bring the old one back.
void AgeFiles(const std::string& root) {
  std::int64_t t = 1'600'000'000;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.is_symlink() || !e.is_regular_file()) continue;
    const struct timespec times[2] = {{t, 0}, {t, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, e.path().c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << e.path();
    t += 3607;
  }
}

std::string Diff(const TreeSnap& a, const TreeSnap& b) {
  std::string out;
  for (const auto& [k, v] : a) {
    auto it = b.find(k);
    if (it == b.end()) {
      out += "only in first: " + k + "\n";
    } else if (it->second != v) {
      out += "differs: " + k + "\n";
    }
  }
  for (const auto& [k, v] : b) {
    if (a.count(k) == 0) out += "only in second: " + k + "\n";
  }
  return out;
}

class RollbackTest : public ::testing::Test {
 protected:
  void SetUp() override { Init(dir_.Sub("ws")); }

  // Builds the trees and the configuration with the workspace at `ws`.
  void Init(const std::string& ws) {
    ha_ = dir_.Sub("config");
    ws_ = ws;
    backups_ = dir_.Sub("backups");
    WriteHomeAssistantTree(ha_, kPassphrase);
    WriteFile(ha_ + "/custom_components/foo/manifest.json", "{\"version\": \"1.0\"}");
    WriteFile(ha_ + "/www/blob.bin", Blob(300 * 1024 + 3, 7), 0640);
    WriteFile(ha_ + "/readonly.yaml", "locked: true\n", 0444);
    WriteFile(ha_ + "/home-assistant.log", "excluded log line\n");
    WriteFile(ws_ + "/memory/notes.md", "# notes\n");
    WriteFile(ws_ + "/agenda.md", "- backup\n");
    WriteFile(ws_ + "/scratch.txt", "not a source\n");
    fs::create_directories(site_ = dir_.Sub("site-packages"));
    fs::create_directories(site_ + "/requests-2.31.0.dist-info");
    // Old mtimes, and as root an owner whose uid and gid differ from the process's and from
    // each other, so the snapshots compare restored mtimes and owners, not just "now" and root.
    AgeFiles(ha_);
    AgeFiles(ws_);
    if (::geteuid() == 0) {
      ASSERT_EQ(::lchown((ha_ + "/automations.yaml").c_str(), 1001, 2002), 0);
    }
    ::setenv("SAFEPOINT_RB_TEST_VAR", "before", 1);
    WriteConfig("");
  }

  void WriteConfig(const std::string& extra) {
    config_path_ = dir_.Sub("safepoint.yaml");
    WriteFile(config_path_, "paths:\n  ha_config: " + ha_ + "\n  workspace: " + ws_ +
                                "\n  backup_dir: " + backups_ +
                                "\nencryption:\n  scrypt_work_factor: 15\n  max_work_factor: 18\n"
                                "sources:\n  workspace: {include: [\"memory/*.md\", "
                                "\"agenda.md\"]}\n  environment:\n    variables: "
                                "[SAFEPOINT_RB_TEST_VAR]\n    python_site_packages: [" +
                                site_ + "]\n  logs: []\n" + extra);
    auto c = config::LoadConfig(config_path_);
    ASSERT_TRUE(c) << c.error().message;
    config_ = std::move(*c);
    store::Options o;
    o.backup_dir = backups_;
    o.work_factor = 15;
    o.max_work_factor = 18;
    options_ = o;
    store_ = std::make_unique<store::Store>(options_, real_fs_, clock_);
  }

  std::string Backup(const std::string& reason = "before update") {
    auto request = snapshot::Collect(config_, std::nullopt);
    EXPECT_TRUE(request) << request.error().message;
    request->reason = reason;
    auto lock = store_->Lock(store::LockMode::kExclusive);
    EXPECT_TRUE(lock);
    auto m = store_->Backup(*request, pass_);
    EXPECT_TRUE(m) << m.error().message;
    clock_.Advance(std::chrono::seconds(1));
    return m->id;
  }

  // What an update does: changes, adds, deletes; then the service records the fingerprint.
  void Update(const std::string& id) {
    WriteFile(ha_ + "/configuration.yaml", "homeassistant:\n  name: Home 2\n");
    WriteFile(ha_ + "/custom_components/foo/__init__.py", "VERSION = '2.0'\n");
    WriteFile(ha_ + "/custom_components/bar/__init__.py", "NEW = True\n");
    fs::remove(ha_ + "/automations.yaml");
    WriteFile(ws_ + "/memory/update.md", "written by the update\n");
    ASSERT_TRUE(RecordFingerprint(config_, *store_, real_fs_, clock_, pass_, id));
  }

  TreeSnap Snap() const {
    TreeSnap s;
    SnapInto(ha_, "ha", s);
    SnapInto(ws_, "ws", s);
    return s;
  }

  Result<Report> Run(const std::string& id, Policy policy, bool dry_run = false,
                     const store::ProgressFn& progress = {}) {
    auto lock = store_->Lock(store::LockMode::kExclusive);
    EXPECT_TRUE(lock);
    return Rollback(config_, *store_, real_fs_, clock_, pass_, id, policy, dry_run, progress);
  }

  std::size_t StoreCount() const {
    auto l = store_->List();
    return l ? l->size() : 0;
  }

  static const PlanEntry* Find(const Plan& plan, const std::string& path) {
    for (const auto& e : plan.entries) {
      if (e.path == path) return &e;
    }
    return nullptr;
  }

  TempDir dir_;
  std::string ha_, ws_, backups_, site_, config_path_;
  config::Config config_;
  store::Options options_;
  PosixFileSystem real_fs_;
  FakeClock clock_;
  std::unique_ptr<store::Store> store_;
  Secret pass_{std::string_view(kPassphrase)};

  // What the CLI and the service give recovery: the passphrase read from the secrets file.
  [[nodiscard]] PassphraseSource Passphrase() const {
    return [this] { return config::LoadPassphrase(config_); };
  }
};

TEST_F(RollbackTest, DiffClassifiesEveryKindOfChange) {
  const std::string id = Backup();
  Update(id);
  // A person edits a file after the update.
  WriteFile(ha_ + "/.storage/core.entity_registry", "{\"data\": {\"entities\": [1]}}");
  auto plan = MakePlan(config_, *store_, pass_, id, Policy::kAbort);
  ASSERT_TRUE(plan) << plan.error().message;
  EXPECT_TRUE(plan->has_fingerprint);
  auto change = [&](const std::string& p) {
    const auto* e = Find(*plan, p);
    return e == nullptr ? std::string("absent") : std::string(ChangeName(e->change));
  };
  EXPECT_EQ(change("ha_config/configuration.yaml"), "changed_by_update");
  EXPECT_EQ(change("ha_config/custom_components/foo/__init__.py"), "changed_by_update");
  EXPECT_EQ(change("ha_config/.storage/core.entity_registry"), "conflict");
  EXPECT_EQ(change("ha_config/automations.yaml"), "missing");
  EXPECT_EQ(change("ha_config/custom_components/bar"), "added");
  EXPECT_EQ(change("ha_config/custom_components/bar/__init__.py"), "added");
  EXPECT_EQ(change("workspace/memory/update.md"), "added");
  EXPECT_EQ(change("ha_config/link.yaml"), "unchanged");
  EXPECT_EQ(change("ha_config/www/blob.bin"), "unchanged");
  EXPECT_EQ(change("ha_config/home-assistant.log"), "absent");  // excluded: never touched
  EXPECT_EQ(change("workspace/scratch.txt"), "absent");
  EXPECT_TRUE(plan->WouldStop());
  EXPECT_EQ(plan->Conflicts(), std::vector<std::string>{"ha_config/.storage/core.entity_registry"});

  auto j = ToJson(*plan);
  EXPECT_EQ(j["id"], id);
  EXPECT_EQ(j["policy"], "abort");
  EXPECT_EQ(j["fingerprint"], true);
  EXPECT_EQ(j["would_stop"], true);
  EXPECT_EQ(j["summary"]["changed_by_update"], 2);
  EXPECT_EQ(j["summary"]["conflict"], 1);
  EXPECT_EQ(j["summary"]["missing"], 1);
  EXPECT_EQ(j["summary"]["added"], 3);
  EXPECT_EQ(j["entries"].size(), 7u);  // unchanged paths are omitted
  EXPECT_EQ(j["not_restored"], json({"environment/environment.json"}));
  for (const auto& e : j["entries"]) {
    if (e["path"] == "ha_config/.storage/core.entity_registry") {
      EXPECT_EQ(e["action"], "stop");
    }
    if (e["path"] == "ha_config/automations.yaml") {
      EXPECT_EQ(e["action"], "restore");
    }
    if (e["path"] == "workspace/memory/update.md") {
      EXPECT_EQ(e["action"], "move_aside");
    }
  }
  EXPECT_NE(Describe(*plan).find("conflict: ha_config/.storage/core.entity_registry"),
            std::string::npos);
}

TEST_F(RollbackTest, DroppingUnchangedEntriesKeepsWhatThePlanReports) {
  const std::string id = Backup();
  Update(id);
  auto plan = MakePlan(config_, *store_, pass_, id, Policy::kOverwrite);
  ASSERT_TRUE(plan) << plan.error().message;
  const std::size_t unchanged = plan->Count(Change::kUnchanged);
  const std::size_t entries = plan->entries.size();
  ASSERT_GT(unchanged, 0u);
  const json as_json = ToJson(*plan);
  const std::string as_text = Describe(*plan);
  const bool empty = plan->Empty();
  plan->DropUnchanged();
  EXPECT_EQ(plan->entries.size(), entries - unchanged);
  EXPECT_EQ(plan->dropped_unchanged, unchanged);
  EXPECT_EQ(plan->Count(Change::kUnchanged), unchanged);
  EXPECT_EQ(ToJson(*plan), as_json);
  EXPECT_EQ(Describe(*plan), as_text);
  EXPECT_EQ(plan->Empty(), empty);
  for (const auto& e : plan->entries) EXPECT_NE(e.change, Change::kUnchanged) << e.path;
  plan->DropUnchanged();  // a second time changes nothing
  EXPECT_EQ(plan->Count(Change::kUnchanged), unchanged);
  EXPECT_EQ(ToJson(*plan), as_json);
}

TEST_F(RollbackTest, WithoutFingerprintEveryDifferenceIsAConflict) {
  const std::string id = Backup();
  WriteFile(ha_ + "/configuration.yaml", "changed\n");
  auto plan = MakePlan(config_, *store_, pass_, id, Policy::kMerge);
  ASSERT_TRUE(plan);
  EXPECT_FALSE(plan->has_fingerprint);
  const auto* e = Find(*plan, "ha_config/configuration.yaml");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->change, Change::kConflict);
  EXPECT_EQ(e->action, Action::kRestoreBeside);
  EXPECT_EQ(e->beside, "ha_config/configuration.yaml.safepoint-" + id);
}

TEST_F(RollbackTest, AbortStopsOnConflictsAndChangesNothing) {
  const std::string id = Backup();
  Update(id);
  WriteFile(ha_ + "/.storage/core.entity_registry", "edited by hand");
  const TreeSnap before = Snap();
  auto r = Run(id, Policy::kAbort);
  ASSERT_TRUE(r) << r.error().message;
  // The conflicts are data: the report says it stopped, and its plan lists them.
  EXPECT_TRUE(r->stopped);
  EXPECT_EQ(r->plan.Conflicts(),
            std::vector<std::string>{"ha_config/.storage/core.entity_registry"});
  EXPECT_EQ(r->pre_rollback_id, "");
  EXPECT_EQ(r->restored, 0u);
  EXPECT_NE(ConflictMessage(r->plan).find("1 file was changed locally since safety point " + id +
                                          ": ha_config/.storage/core.entity_registry"),
            std::string::npos)
      << ConflictMessage(r->plan);
  EXPECT_EQ(Snap(), before);
  EXPECT_EQ(StoreCount(), 1u);  // no pre-rollback safety point
  EXPECT_TRUE(!fs::exists(backups_ + "/.rollbacks") || fs::is_empty(backups_ + "/.rollbacks"));
}

TEST_F(RollbackTest, OverwriteRestoresExactStateAndMovesAddedFilesAside) {
  // An owner that differs from the process, restored when running as root.
  if (::geteuid() == 0) {
    ASSERT_EQ(::lchown((ha_ + "/automations.yaml").c_str(), 1234, 1234), 0);
  }
  const TreeSnap original = Snap();
  const std::string id = Backup();
  Update(id);
  WriteFile(ha_ + "/.storage/core.entity_registry", "edited by hand");
  fs::remove(ha_ + "/link.yaml");
  fs::create_directories(ha_ + "/link.yaml/sub");  // a directory where a link was
  WriteFile(ha_ + "/link.yaml/sub/x", "in the way");
  fs::remove_all(ha_ + "/blueprints/empty_dir");
  fs::permissions(ha_ + "/www", fs::perms(0700));
  const TreeSnap changed = Snap();

  auto r = Run(id, Policy::kOverwrite);
  ASSERT_TRUE(r) << r.error().message;
  const TreeSnap after = Snap();
  EXPECT_EQ(Diff(original, after), "");
  EXPECT_EQ(after, original);

  // Added paths are kept in the rollback's record, never deleted.
  const std::string moved = r->record_dir + "/moved";
  EXPECT_EQ(ReadFile(moved + "/ha_config/custom_components/bar/__init__.py"), "NEW = True\n");
  EXPECT_EQ(ReadFile(moved + "/workspace/memory/update.md"), "written by the update\n");
  EXPECT_EQ(ReadFile(moved + "/ha_config/link.yaml/sub/x"), "in the way");
  EXPECT_EQ(r->record_dir, backups_ + "/.rollbacks/" + r->rollback_id);
  EXPECT_FALSE(fs::exists(r->record_dir + "/staging"));
  auto text = ReadFile(r->record_dir + "/journal.json");
  ASSERT_TRUE(text);
  auto j = journal::Parse(*text);
  ASSERT_TRUE(j) << j.error().message;
  EXPECT_EQ(j->phase, journal::Phase::kDone);
  EXPECT_EQ(j->id, id);
  EXPECT_EQ(j->pre_rollback_id, r->pre_rollback_id);
  // A finished journal keeps no hash of the safety point's plaintext (issue 10).
  std::size_t placed = 0;
  for (const auto& op : j->ops) {
    if (op.kind != journal::OpKind::kPlaceFile) continue;
    ++placed;
    EXPECT_EQ(op.sha256, "") << op.path;
  }
  EXPECT_GT(placed, 0u);
  EXPECT_EQ(text->find(safepoint::testing::Sha256Hex("homeassistant:\n  name: Home\n")),
            std::string::npos);

  // bar, bar/__init__.py, memory/update.md, and link.yaml (a directory where the safety point
  // has a link) with link.yaml/sub and link.yaml/sub/x
  EXPECT_EQ(r->moved_aside, 6u);
  EXPECT_EQ(r->changed_roots, (std::vector<std::string>{"ha_config", "workspace"}));
  auto m = store_->Show(r->pre_rollback_id);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->reason, "pre-rollback to " + id);
  // Written under the target's key (no second scrypt), and whole: it verifies with the
  // passphrase like any safety point.
  auto target = store_->Show(id);
  ASSERT_TRUE(target);
  EXPECT_EQ(m->key_id, target->key_id);
  EXPECT_EQ(m->kdf, target->kdf);
  auto verified = store_->Verify(r->pre_rollback_id, pass_);
  ASSERT_TRUE(verified) << verified.error().message;
  EXPECT_EQ(verified->entries, m->EntryCount());
  (void)changed;
}

// Found by reading the plan: a path whose owner alone changed (an add-on's `chown -R`, a
// container that rewrote ownership) compared as unchanged, so a rollback left the new owner and
// still said the trees were as in the safety point. As root the owner is now compared and set
// back, as a mode is; the pre-rollback safety point undoes it.
TEST_F(RollbackTest, AnOwnerChangedAloneIsRolledBackAsRoot) {
  if (::geteuid() != 0) GTEST_SKIP() << "only root can change and restore an owner";
  const TreeSnap original = Snap();
  const std::string id = Backup();
  ASSERT_EQ(::lchown((ha_ + "/configuration.yaml").c_str(), 1234, 1234), 0);  // a file
  ASSERT_EQ(::lchown((ha_ + "/automations.yaml").c_str(), 0, 0), 0);          // back to root
  ASSERT_EQ(::lchown((ha_ + "/www").c_str(), 1234, 5678), 0);                 // a directory
  ASSERT_EQ(::lchown((ha_ + "/link.yaml").c_str(), 1234, 1234), 0);           // a link itself
  const TreeSnap changed = Snap();
  ASSERT_NE(changed, original);

  auto plan = MakePlan(config_, *store_, pass_, id, Policy::kAbort);
  ASSERT_TRUE(plan) << plan.error().message;
  EXPECT_EQ(plan->Conflicts(),
            (std::vector<std::string>{"ha_config/automations.yaml", "ha_config/configuration.yaml",
                                      "ha_config/link.yaml", "ha_config/www"}));
  // The content diff names what changed.
  ContentDiffRequest request;
  request.id = id;
  request.paths = {"configuration.yaml", "automations.yaml", "www"};
  auto report = ContentDiff(config_, *store_, pass_, request);
  ASSERT_TRUE(report) << report.error().message;
  ASSERT_EQ(report->files.size(), 3u);
  EXPECT_EQ(report->files[0].path, "ha_config/automations.yaml");
  EXPECT_EQ(report->files[0].notes, std::vector<std::string>{"owner 1001:2002 -> 0:0"});
  EXPECT_EQ(report->files[1].path, "ha_config/configuration.yaml");
  EXPECT_EQ(report->files[1].notes, std::vector<std::string>{"owner 0:0 -> 1234:1234"});
  EXPECT_TRUE(report->files[1].hunks.empty());
  EXPECT_EQ(report->files[2].path, "ha_config/www");
  EXPECT_EQ(report->files[2].notes, std::vector<std::string>{"owner 0:0 -> 1234:5678"});
  // Between two safety points likewise (found by the owner campaign: those were "unchanged").
  const std::string second = Backup("after the chown");
  request.other_id = second;
  request.paths = {"configuration.yaml", "www", "link.yaml", "automations.yaml"};
  auto between = ContentDiff(config_, *store_, pass_, request);
  ASSERT_TRUE(between) << between.error().message;
  ASSERT_EQ(between->files.size(), 4u);
  EXPECT_EQ(between->files[0].notes, std::vector<std::string>{"owner 1001:2002 -> 0:0"});
  EXPECT_EQ(between->files[1].notes, std::vector<std::string>{"owner 0:0 -> 1234:1234"});
  EXPECT_EQ(between->files[2].path, "ha_config/link.yaml");
  EXPECT_EQ(between->files[2].notes, std::vector<std::string>{"owner 0:0 -> 1234:1234"});
  EXPECT_EQ(between->files[3].notes, std::vector<std::string>{"owner 0:0 -> 1234:5678"});
  EXPECT_EQ(between->unchanged, 1u);  // www/blob.bin
  ASSERT_TRUE(store_->Delete(second));

  auto r = Run(id, Policy::kOverwrite);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(Diff(original, Snap()), "");
  auto undo = Run(r->pre_rollback_id, Policy::kOverwrite);
  ASSERT_TRUE(undo) << undo.error().message;
  EXPECT_EQ(Diff(changed, Snap()), "");
}

// Found by an owner campaign: the fingerprint recorded no owner, so an owner a person changed
// after the update matched it and was set back silently, even under `abort`, where a mode
// changed the same way stops. The fingerprint now records owners (format 3).
TEST_F(RollbackTest, AnOwnerChangedAfterTheFingerprintIsAConflict) {
  if (::geteuid() != 0) GTEST_SKIP() << "only root can change an owner";
  const std::string id = Backup();
  // The update changes one owner; the fingerprint records it.
  ASSERT_EQ(::lchown((ha_ + "/readonly.yaml").c_str(), 1234, 1234), 0);
  Update(id);
  // A person changes another afterwards.
  ASSERT_EQ(::lchown((ha_ + "/www/blob.bin").c_str(), 4321, 4321), 0);
  const TreeSnap before = Snap();
  auto plan = MakePlan(config_, *store_, pass_, id, Policy::kAbort);
  ASSERT_TRUE(plan) << plan.error().message;
  const auto* by_update = Find(*plan, "ha_config/readonly.yaml");
  ASSERT_NE(by_update, nullptr);
  EXPECT_EQ(by_update->change, Change::kChangedByUpdate);
  EXPECT_EQ(plan->Conflicts(), std::vector<std::string>{"ha_config/www/blob.bin"});
  auto r = Run(id, Policy::kAbort);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->stopped);
  EXPECT_EQ(r->restored, 0u);
  EXPECT_EQ(Snap(), before);
}

TEST_F(RollbackTest, PreRollbackSafetyPointUndoesTheRollbackByteForByte) {
  const std::string id = Backup();
  Update(id);
  WriteFile(ha_ + "/.storage/core.entity_registry", "edited by hand");
  const TreeSnap changed = Snap();
  auto r = Run(id, Policy::kMerge);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_NE(Snap(), changed);
  auto undo = Run(r->pre_rollback_id, Policy::kOverwrite);
  ASSERT_TRUE(undo) << undo.error().message;
  EXPECT_EQ(Diff(changed, Snap()), "");
  // The merge copy the first rollback wrote is moved aside by the undo, not deleted.
  EXPECT_EQ(
      ReadFile(undo->record_dir + "/moved/ha_config/.storage/core.entity_registry.safepoint-" + id),
      "{\"data\": {\"entities\": []}}");
}

TEST_F(RollbackTest, MergeKeepsTheLocalFileAndWritesTheSafetyPointVersionBeside) {
  const std::string id = Backup();
  Update(id);
  WriteFile(ha_ + "/.storage/core.entity_registry", "edited by hand");
  auto r = Run(id, Policy::kMerge);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(ReadFile(ha_ + "/.storage/core.entity_registry"), "edited by hand");
  EXPECT_EQ(ReadFile(ha_ + "/.storage/core.entity_registry.safepoint-" + id),
            "{\"data\": {\"entities\": []}}");
  // Everything that was not a conflict is restored.
  EXPECT_EQ(ReadFile(ha_ + "/configuration.yaml"), "homeassistant:\n  name: Home\n");
  EXPECT_EQ(ReadFile(ha_ + "/automations.yaml"), "- id: lights\n");
  EXPECT_FALSE(fs::exists(ha_ + "/custom_components/bar"));
  EXPECT_EQ(r->written_beside, 1u);
  EXPECT_EQ(r->restored, 3u);  // configuration.yaml, foo/__init__.py, automations.yaml
}

TEST_F(RollbackTest, DryRunVerifiesReportsAndChangesNothing) {
  const std::string id = Backup();
  Update(id);
  ::setenv("SAFEPOINT_RB_TEST_VAR", "after", 1);
  fs::rename(site_ + "/requests-2.31.0.dist-info", site_ + "/requests-2.32.3.dist-info");
  const TreeSnap before = Snap();
  auto r = Run(id, Policy::kAbort, /*dry_run=*/true);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(Snap(), before);
  EXPECT_EQ(StoreCount(), 1u);
  EXPECT_TRUE(r->dry_run);
  EXPECT_EQ(r->rollback_id, "");
  EXPECT_FALSE(r->plan.WouldStop());
  EXPECT_EQ(r->plan.Count(Change::kChangedByUpdate), 2u);
  EXPECT_EQ(r->differences,
            (std::vector<std::string>{
                "environment variable SAFEPOINT_RB_TEST_VAR differs from the safety point",
                "python package requests was 2.31.0, now 2.32.3"}));
  ::setenv("SAFEPOINT_RB_TEST_VAR", "before", 1);
}

TEST_F(RollbackTest, UnknownAndMalformedIds) {
  Backup();
  auto r = Run("2020-01-01_00-00-00", Policy::kOverwrite);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
  r = Run("../../etc", Policy::kOverwrite);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kBadInput);
  auto plan = MakePlan(config_, *store_, pass_, "2020-01-01_00-00-00", Policy::kAbort);
  ASSERT_FALSE(plan);
  EXPECT_EQ(plan.error().code, ErrorCode::kNotFound);
}

TEST_F(RollbackTest, CorruptSafetyPointChangesNothing) {
  const std::string id = Backup();
  Update(id);
  auto m = store_->Show(id);
  ASSERT_TRUE(m);
  const std::string payload = store_->DirOf(id) + "/" + m->payload->name;
  {
    std::fstream f(payload, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(m->payload->size - 100));
    f.put('\x5a');
  }
  const TreeSnap before = Snap();
  auto r = Run(id, Policy::kOverwrite);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << r.error().message;
  EXPECT_EQ(Snap(), before);
  EXPECT_EQ(StoreCount(), 1u);
  EXPECT_TRUE(!fs::exists(backups_ + "/.rollbacks") || fs::is_empty(backups_ + "/.rollbacks"));
}

TEST_F(RollbackTest, WrongPassphraseChangesNothing) {
  const std::string id = Backup();
  Update(id);
  const TreeSnap before = Snap();
  auto lock = store_->Lock(store::LockMode::kExclusive);
  ASSERT_TRUE(lock);
  Secret wrong(std::string_view("not the passphrase"));
  auto r = Rollback(config_, *store_, real_fs_, clock_, wrong, id, Policy::kOverwrite, false);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kWrongPassphrase);
  EXPECT_EQ(Snap(), before);
  EXPECT_EQ(StoreCount(), 1u);
}

TEST_F(RollbackTest, MissingOrSymlinkedRootIsRefused) {
  const std::string id = Backup();
  fs::rename(ha_, dir_.Sub("config.real"));
  auto r = Run(id, Policy::kOverwrite);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kBadInput);
  EXPECT_NE(r.error().message.find("is missing"), std::string::npos) << r.error().message;
  fs::create_directory_symlink(dir_.Sub("config.real"), ha_);
  r = Run(id, Policy::kOverwrite);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kBadInput);
  EXPECT_NE(r.error().message.find("is a symlink"), std::string::npos) << r.error().message;
  EXPECT_FALSE(fs::exists(dir_.Sub("config.real") + "/.rollbacks"));
}

// MakePlan walks the live trees on a second thread while the safety point loads: its plan is
// the one made by walking after the load, and a load's error still comes before a root's.
TEST_F(RollbackTest, PlanWalkedBesideTheLoadIsThePlanWalkedAfterIt) {
  const std::string id = Backup();
  Update(id);
  WriteFile(ha_ + "/.storage/core.entity_registry", "edited by hand");
  auto beside = MakePlan(config_, *store_, pass_, id, Policy::kMerge);
  ASSERT_TRUE(beside) << beside.error().message;
  Secret key;
  auto m = store_->Load(id, pass_, &key);
  ASSERT_TRUE(m);
  auto fp = LoadFingerprint(*store_, id, std::move(key));
  ASSERT_TRUE(fp);
  auto after = PlanFor(config_, *m, *fp, Policy::kMerge);
  ASSERT_TRUE(after) << after.error().message;
  EXPECT_EQ(ToJson(*beside), ToJson(*after));
  EXPECT_EQ(Describe(*beside), Describe(*after));
  EXPECT_EQ(beside->Count(Change::kConflict), 1u);

  fs::rename(ha_, dir_.Sub("config.real"));
  Secret wrong(std::string_view("not the passphrase"));
  auto p = MakePlan(config_, *store_, wrong, id, Policy::kMerge);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ErrorCode::kWrongPassphrase) << p.error().message;
  p = MakePlan(config_, *store_, pass_, id, Policy::kMerge);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ErrorCode::kBadInput);
  EXPECT_NE(p.error().message.find("is missing"), std::string::npos) << p.error().message;
}

// A plan of more paths than one thread reads (2,048) reads the second half on another thread:
// changes in either half are found, counted once, and rolled back exactly.
TEST_F(RollbackTest, LargeTreeIsPlannedOnTwoThreadsAndRolledBackExactly) {
  constexpr int kFiles = 3000;
  for (int i = 0; i < kFiles; ++i) {
    const std::string dir = i < kFiles / 2 ? "/many/küche/" : "/many/🌙 nacht/";
    WriteFile(ha_ + dir + std::to_string(i) + ".yaml", "value: " + std::to_string(i) + "\n");
  }
  const TreeSnap before = Snap();
  const std::string id = Backup();
  for (int i = 0; i < kFiles; i += 100) {
    const std::string dir = i < kFiles / 2 ? "/many/küche/" : "/many/🌙 nacht/";
    WriteFile(ha_ + dir + std::to_string(i) + ".yaml", "changed by the update\n");
  }
  fs::remove(ha_ + "/many/🌙 nacht/2999.yaml");
  ASSERT_TRUE(RecordFingerprint(config_, *store_, real_fs_, clock_, pass_, id));
  WriteFile(ha_ + "/many/🌙 nacht/2900.yaml", "edited by hand after the update\n");
  WriteFile(ha_ + "/many/küche/7.yaml", "edited by hand too\n");

  auto plan = MakePlan(config_, *store_, pass_, id, Policy::kOverwrite);
  ASSERT_TRUE(plan) << plan.error().message;
  EXPECT_EQ(plan->Count(Change::kChangedByUpdate), 29u);  // 30 changed, 2900 edited again
  EXPECT_EQ(plan->Count(Change::kConflict), 2u);
  EXPECT_EQ(plan->Count(Change::kMissing), 1u);
  EXPECT_EQ(plan->Count(Change::kAdded), 0u);
  EXPECT_GE(plan->files_hashed + plan->files_trusted, static_cast<std::size_t>(kFiles - 1));
  EXPECT_EQ(plan->Conflicts(), (std::vector<std::string>{"ha_config/many/küche/7.yaml",
                                                         "ha_config/many/🌙 nacht/2900.yaml"}));

  auto r = Run(id, Policy::kOverwrite);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(Diff(before, Snap()), "");
}

TEST_F(RollbackTest, ReadOnlyFileInTheWayIsReplacedByRename) {
  const std::string id = Backup();
  WriteFile(ha_ + "/readonly.yaml.new", "changed by update\n");
  fs::rename(ha_ + "/readonly.yaml.new", ha_ + "/readonly.yaml");
  fs::permissions(ha_ + "/readonly.yaml", fs::perms(0444));
  ASSERT_TRUE(RecordFingerprint(config_, *store_, real_fs_, clock_, pass_, id));
  auto r = Run(id, Policy::kAbort);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(ReadFile(ha_ + "/readonly.yaml"), "locked: true\n");
  EXPECT_EQ(fs::status(ha_ + "/readonly.yaml").permissions(), fs::perms(0444));
}

// Fails renames into one directory, as a read-only directory does for an unprivileged user.
class DeniedDirFileSystem final : public FileSystem {
 public:
  explicit DeniedDirFileSystem(std::string dir) : dir_(std::move(dir)) {}
  Result<std::unique_ptr<WritableFile>> CreateFile(const std::string& p, mode_t m) override {
    if (Denied(p)) return Fail(ErrorCode::kIo, "create " + p + ": Permission denied");
    return real_.CreateFile(p, m);
  }
  Status Rename(const std::string& from, const std::string& to) override {
    if (Denied(to)) return Fail(ErrorCode::kIo, "rename " + to + ": Permission denied");
    return real_.Rename(from, to);
  }
  Result<std::unique_ptr<WritableFile>> CreateFileAt(const Dir& d, const std::string& rel,
                                                     mode_t m) override {
    const std::string p = d.PathOf(rel);
    if (Denied(p)) return Fail(ErrorCode::kIo, "create " + p + ": Permission denied");
    return FileSystem::CreateFileAt(d, rel, m);
  }
  Status RenameAt(const Dir& from_dir, const std::string& from, const Dir& to_dir,
                  const std::string& to) override {
    const std::string p = to_dir.PathOf(to);
    if (Denied(p)) return Fail(ErrorCode::kIo, "rename " + p + ": Permission denied");
    return FileSystem::RenameAt(from_dir, from, to_dir, to);
  }
  Status SyncDir(const std::string& p) override { return real_.SyncDir(p); }
  Status MakeDir(const std::string& p, mode_t m) override { return real_.MakeDir(p, m); }
  Status Remove(const std::string& p) override { return real_.Remove(p); }
  Status RemoveTree(const std::string& p) override { return real_.RemoveTree(p); }
  Status Symlink(const std::string& t, const std::string& p) override {
    return real_.Symlink(t, p);
  }
  Status Chmod(const std::string& p, mode_t m) override { return real_.Chmod(p, m); }
  Status Chown(const std::string& p, uid_t u, gid_t g) override { return real_.Chown(p, u, g); }
  Status SetMtime(const std::string& p, std::int64_t t) override { return real_.SetMtime(p, t); }

 private:
  bool Denied(const std::string& p) const { return p.rfind(dir_ + "/", 0) == 0; }
  std::string dir_;
  PosixFileSystem real_;
};

TEST_F(RollbackTest, UnwritableDirectoryFailsClearlyAndReverts) {
  const std::string id = Backup();
  Update(id);
  const TreeSnap before = Snap();
  DeniedDirFileSystem denied(ha_ + "/custom_components/foo");
  auto lock = store_->Lock(store::LockMode::kExclusive);
  ASSERT_TRUE(lock);
  store::Store store(options_, denied, clock_);
  auto r = Rollback(config_, store, denied, clock_, pass_, id, Policy::kAbort, false);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kIo);
  EXPECT_NE(r.error().message.find("Permission denied"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("the rollback was reverted"), std::string::npos)
      << r.error().message;
  EXPECT_EQ(Diff(before, Snap()), "");
  // Its pre-rollback safety point, the trees as they are again, is deleted: kept, each failed
  // attempt would push an older one (the target) out of retention.
  auto listed = store_->List();
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().id, id);
  // The journal says so, and a later recovery has nothing to do.
  auto records = fs::directory_iterator(backups_ + "/.rollbacks");
  const std::string record = records->path().string();
  auto j = journal::Parse(*ReadFile(record + "/journal.json"));
  ASSERT_TRUE(j);
  EXPECT_EQ(j->phase, journal::Phase::kReverted);
  auto notes = Recover(config_, *store_, real_fs_, Passphrase());
  ASSERT_TRUE(notes);
  EXPECT_TRUE(notes->empty());
  EXPECT_EQ(Snap(), before);
}

TEST_F(RollbackTest, UnsafeEntriesAreRefusedByThePlan) {
  auto m = store_->Load(Backup(), pass_);
  ASSERT_TRUE(m);
  auto with = [&](manifest::Entry e) {
    manifest::Manifest crafted = *m;
    crafted.entries.push_back(std::move(e));
    return PlanFor(config_, crafted, std::nullopt, Policy::kOverwrite);
  };
  manifest::Entry e;
  e.type = manifest::EntryType::kFile;
  e.mode = 0644;
  e.sha256 = std::string(64, '0');
  for (const char* bad : {"ha_config/../x", "/etc/passwd", "ha_config/a/../../x", "workspace/./x",
                          "other/x", "ha_config//x"}) {
    e.path = bad;
    auto p = with(e);
    ASSERT_FALSE(p) << bad;
    EXPECT_EQ(p.error().code, ErrorCode::kCorrupt) << bad;
  }
  manifest::Entry link;
  link.type = manifest::EntryType::kSymlink;
  for (const char* target : {"../../etc", "/etc/passwd", "a/../../.."}) {
    link.path = "ha_config/evil";
    link.link_target = target;
    auto p = with(link);
    ASSERT_FALSE(p) << target;
    EXPECT_EQ(p.error().code, ErrorCode::kCorrupt) << target;
  }
  // A file below a symlink entry would be written through the link.
  link.link_target = "www";
  e.path = "ha_config/evil/x";
  manifest::Manifest crafted = *m;
  crafted.entries.push_back(link);
  crafted.entries.push_back(e);
  auto p = PlanFor(config_, crafted, std::nullopt, Policy::kOverwrite);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(p.error().message.find("not a directory"), std::string::npos);
  // Duplicates are refused.
  crafted = *m;
  crafted.entries.push_back(crafted.entries[1]);
  p = PlanFor(config_, crafted, std::nullopt, Policy::kOverwrite);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ErrorCode::kCorrupt);
}

TEST_F(RollbackTest, LiveSymlinkInAPathIsNeverFollowed) {
  const std::string id = Backup();
  // The update replaced a directory by a link to a place outside the tree.
  const std::string outside = dir_.Sub("outside");
  fs::create_directories(outside);
  fs::remove_all(ha_ + "/custom_components");
  fs::create_directory_symlink(outside, ha_ + "/custom_components");
  auto r = Run(id, Policy::kOverwrite);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(fs::is_empty(outside));
  EXPECT_FALSE(fs::is_symlink(ha_ + "/custom_components"));
  EXPECT_EQ(ReadFile(ha_ + "/custom_components/foo/__init__.py"), "VERSION = '1.0'\n");
  EXPECT_TRUE(fs::is_symlink(r->record_dir + "/moved/ha_config/custom_components"));
}

TEST_F(RollbackTest, FailedRestartIsReportedAndTheRestoreStands) {
  WriteConfig(
      "restart:\n"
      "  - name: home-assistant\n"
      "    command: [/bin/sh, -c, \"echo restarting; echo broken >&2; exit 3\"]\n"
      "    timeout: 10s\n"
      "    when_changed: [ha_config]\n"
      "  - name: agent\n"
      "    command: [/bin/sh, -c, \"echo should not run\"]\n"
      "    when_changed: [workspace]\n");
  const std::string id = Backup();
  WriteFile(ha_ + "/configuration.yaml", "broken: [\n");
  ASSERT_TRUE(RecordFingerprint(config_, *store_, real_fs_, clock_, pass_, id));
  auto r = Run(id, Policy::kAbort);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(ReadFile(ha_ + "/configuration.yaml"), "homeassistant:\n  name: Home\n");
  ASSERT_EQ(r->restarts.size(), 1u);
  EXPECT_EQ(r->restarts[0].name, "home-assistant");
  EXPECT_EQ(r->restarts[0].exit_code, 3);
  EXPECT_EQ(r->restarts[0].output_tail, (std::vector<std::string>{"restarting", "broken"}));
  EXPECT_EQ(r->errors,
            std::vector<std::string>{"restart home-assistant failed: exited with status 3"});
  auto j = ToJson(*r);
  EXPECT_EQ(j["restarts"][0]["exit_code"], 3);
  EXPECT_EQ(j["errors"].size(), 1u);
  EXPECT_EQ(j["pre_rollback_id"], r->pre_rollback_id);
  EXPECT_EQ(j["plan"]["summary"]["changed_by_update"], 1);
}

TEST_F(RollbackTest, NothingToDoTakesNoPreRollbackSafetyPoint) {
  const std::string id = Backup();
  auto r = Run(id, Policy::kAbort);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->plan.Empty());
  EXPECT_EQ(r->pre_rollback_id, "");
  EXPECT_EQ(StoreCount(), 1u);
}

// Recovery runs once per operation: a caller that recovered under the lock it holds says so and
// Rollback leaves the records alone; by default Rollback recovers first.
TEST_F(RollbackTest, RecoversFirstUnlessTheCallerDid) {
  const std::string id = Backup();
  // A record without a journal: a rollback interrupted before it changed anything.
  const std::string unfinished = backups_ + "/.rollbacks/2000-01-01_00-00-00";
  fs::create_directories(unfinished);
  {
    auto lock = store_->Lock(store::LockMode::kExclusive);
    ASSERT_TRUE(lock);
    auto r = Rollback(config_, *store_, real_fs_, clock_, pass_, id, Policy::kAbort, false, {},
                      Recovery::kDoneByCaller);
    ASSERT_TRUE(r) << r.error().message;
  }
  EXPECT_TRUE(fs::exists(unfinished));
  auto r = Run(id, Policy::kAbort);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(fs::exists(unfinished));
}

TEST_F(RollbackTest, ProgressCoversStagingThePreRollbackSafetyPointAndApplying) {
  const std::string id = Backup();
  Update(id);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> seen;
  auto r = Run(id, Policy::kOverwrite, false,
               [&](std::uint64_t done, std::uint64_t total) { seen.emplace_back(done, total); });
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_FALSE(seen.empty());
  bool staging = false, pre_rollback = false, applying = false;
  for (std::size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].second, 1000u);
    if (i > 0) {
      EXPECT_GT(seen[i].first, seen[i - 1].first) << "at report " << i;
    }
    staging |= seen[i].first > 0 && seen[i].first <= 500;
    pre_rollback |= seen[i].first > 500 && seen[i].first <= 900;
    applying |= seen[i].first > 900 && seen[i].first < 1000;
  }
  EXPECT_TRUE(staging);
  EXPECT_TRUE(pre_rollback);
  EXPECT_TRUE(applying);
  EXPECT_EQ(seen.back().first, 1000u);
}

TEST_F(RollbackTest, FingerprintIsWrittenAtomicallyAndReadBack) {
  const std::string id = Backup();
  auto missing =
      RecordFingerprint(config_, *store_, real_fs_, clock_, pass_, "2020-01-01_00-00-00");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
  auto none = LoadFingerprint(*store_, id, Secret());
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(RecordFingerprint(config_, *store_, real_fs_, clock_, pass_, id));
  auto load = [&] {
    Secret key;
    auto m = store_->Load(id, pass_, &key);
    EXPECT_TRUE(m);
    EXPECT_EQ(key.size(), 32u);
    return LoadFingerprint(*store_, id, std::move(key));
  };
  auto f = load();
  ASSERT_TRUE(f && *f);
  EXPECT_EQ((*f)->id, id);
  EXPECT_TRUE((*f)->is_keyed);
  // Format 3: keyed, owners included. The recorded states and owners match exactly; any other
  // state, owner, path or key does not.
  EXPECT_TRUE((*f)->with_owners);
  auto owner_of = [](const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
    return std::optional<rollback::Owner>(rollback::Owner{st.st_uid, st.st_gid});
  };
  const auto config_owner = owner_of(ha_ + "/configuration.yaml");
  const auto link_owner = owner_of(ha_ + "/link.yaml");
  PathState config_state;
  config_state.type = manifest::EntryType::kFile;
  config_state.size = std::string("homeassistant:\n  name: Home\n").size();
  config_state.sha256 = safepoint::testing::Sha256Hex("homeassistant:\n  name: Home\n");
  config_state.mode = 0644;
  EXPECT_TRUE((*f)->Matches("ha_config/configuration.yaml", config_state, config_owner));
  EXPECT_FALSE((*f)->Matches("ha_config/configuration.yaml", config_state));
  EXPECT_FALSE((*f)->Matches("ha_config/configuration.yaml", config_state,
                             rollback::Owner{config_owner->uid + 1, config_owner->gid}));
  EXPECT_FALSE((*f)->Matches("ha_config/configuration.yaml", config_state,
                             rollback::Owner{config_owner->uid, config_owner->gid + 1}));
  PathState link_state;
  link_state.type = manifest::EntryType::kSymlink;
  link_state.link_target = "configuration.yaml";
  EXPECT_TRUE((*f)->Matches("ha_config/link.yaml", link_state, link_owner));
  EXPECT_FALSE((*f)->Matches("ha_config/automations.yaml", config_state, config_owner));
  PathState other = config_state;
  other.mode = 0600;
  EXPECT_FALSE((*f)->Matches("ha_config/configuration.yaml", other, config_owner));
  other = config_state;
  other.sha256[0] = other.sha256[0] == '0' ? '1' : '0';
  EXPECT_FALSE((*f)->Matches("ha_config/configuration.yaml", other, config_owner));
  link_state.link_target = "configuration.yaml2";
  EXPECT_FALSE((*f)->Matches("ha_config/link.yaml", link_state, link_owner));
  auto wrong_key = LoadFingerprint(*store_, id, Secret(std::string(32, 'k')));
  ASSERT_TRUE(wrong_key && *wrong_key);
  EXPECT_FALSE((*wrong_key)->Matches("ha_config/configuration.yaml", config_state, config_owner));
  // A keyed fingerprint without its key is refused, not read as "nothing matches".
  auto keyless = LoadFingerprint(*store_, id, Secret());
  ASSERT_FALSE(keyless);
  EXPECT_EQ(keyless.error().code, ErrorCode::kCorrupt);
  EXPECT_FALSE(fs::exists(store_->DirOf(id) + "/fingerprint.json.tmp"));
  // No content, path or plaintext hash is in it.
  const std::string text = *ReadFile(store_->DirOf(id) + "/fingerprint.json");
  EXPECT_EQ(text.find("Home"), std::string::npos);
  EXPECT_EQ(text.find("configuration"), std::string::npos);
  EXPECT_EQ(text.find(config_state.sha256), std::string::npos);
  EXPECT_EQ((*f)->size(), ParseFingerprint(text)->size());
  // A format that is not an integer in range is corrupt, never converted.
  const std::string format = "\"format\": 3";
  ASSERT_NE(text.find(format), std::string::npos);
  for (const char* number :
       {"22222222222222222222222222222.0", "3.0", "-3", "4294967299", "4", "0"}) {
    std::string bad = text;
    bad.replace(bad.find(format), format.size(), "\"format\":" + std::string(number));
    ASSERT_FALSE(ParseFingerprint(bad)) << number;
    EXPECT_EQ(ParseFingerprint(bad).error().code, ErrorCode::kCorrupt) << number;
  }
  // A crash while writing leaves the old fingerprint or the new one, never a torn file.
  FaultInjectingFileSystem crash(3);
  EXPECT_FALSE(RecordFingerprint(config_, *store_, crash, clock_, pass_, id));
  auto again = load();
  ASSERT_TRUE(again && *again);
}

TEST(Journal, RoundTripsAndRejectsUnsafePaths) {
  journal::Journal j;
  j.rollback_id = "2026-01-02_03-04-05";
  j.id = "2026-01-01_00-00-00";
  j.pre_rollback_id = "2026-01-02_03-04-05";
  j.policy = "merge";
  j.created_at = "2026-01-02T03:04:05Z";
  j.ha_config_root = "/config";
  j.workspace_root = "/config/.openclaw/workspace";
  j.rename_workspace = false;
  j.changed_roots = {"ha_config"};
  journal::Op op;
  op.kind = journal::OpKind::kPlaceFile;
  op.path = "ha_config/a.yaml";
  op.staged = "0";
  op.sha256 = std::string(64, 'a');
  op.size = 3;
  op.mode = 0644;
  op.mtime = 12;
  j.ops.push_back(op);
  journal::Op link;
  link.kind = journal::OpKind::kPlaceLink;
  link.path = "ha_config/l";
  link.link_target = "a.yaml";
  j.ops.push_back(link);
  auto back = journal::Parse(journal::ToJson(j).dump());
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, j);
  auto bad = journal::ToJson(j);
  bad["ops"][0]["path"] = "ha_config/../../etc/passwd";
  EXPECT_EQ(journal::Parse(bad.dump()).error().code, ErrorCode::kCorrupt);
  bad = journal::ToJson(j);
  bad["ops"][0]["path"] = "state/entities.json";
  EXPECT_EQ(journal::Parse(bad.dump()).error().code, ErrorCode::kCorrupt);
  bad = journal::ToJson(j);
  bad["ops"][1]["link_target"] = "../../x";
  EXPECT_EQ(journal::Parse(bad.dump()).error().code, ErrorCode::kCorrupt);
  bad = journal::ToJson(j);
  bad["ops"][0]["staged"] = "../../x";
  EXPECT_EQ(journal::Parse(bad.dump()).error().code, ErrorCode::kCorrupt);
  // Numbers that do not fit their field (a float beyond 2^64, a negative owner, a size past
  // 2^64) are corrupt, never converted: the journal fuzzer's input "float-format" was one.
  const std::string good = journal::ToJson(j).dump();
  const std::string format = "\"format\":" + std::to_string(journal::kFormat);
  ASSERT_NE(good.find(format), std::string::npos);
  for (const char* number : {"2222222222222222222222222222222.0", "1e400", "3.5", "-1"}) {
    std::string text = good;
    text.replace(text.find(format), format.size(), "\"format\":" + std::string(number));
    EXPECT_EQ(journal::Parse(text).error().code, ErrorCode::kCorrupt) << number;
  }
  bad = journal::ToJson(j);
  bad["ops"][0]["uid"] = -1;
  EXPECT_EQ(journal::Parse(bad.dump()).error().code, ErrorCode::kCorrupt);
  bad = journal::ToJson(j);
  bad["ops"][0]["mode"] = 4294967296u;
  EXPECT_EQ(journal::Parse(bad.dump()).error().code, ErrorCode::kCorrupt);
  bad = journal::ToJson(j);
  bad["ops"][0]["size"] = 1.5e30;
  EXPECT_EQ(journal::Parse(bad.dump()).error().code, ErrorCode::kCorrupt);
  bad = journal::ToJson(j);
  bad["ops"][0]["mtime"] = -5;  // a signed field takes a negative number
  EXPECT_TRUE(journal::Parse(bad.dump())) << "negative mtime";
  EXPECT_EQ(journal::Parse("{").error().code, ErrorCode::kCorrupt);
}

// ---------------------------------------------------------------------------------------------
// Crash safety: fail at every mutating step, recover with the real file system, and require the
// trees to be exactly the rolled-back state or exactly the state before, never a mix.

class RollbackCrashTest : public RollbackTest, public ::testing::WithParamInterface<bool> {
 protected:
  void SetUp() override {
    if (GetParam()) {
      if (shm_.path().empty() || SameDev(shm_.path(), dir_.path())) {
        GTEST_SKIP() << "no second file system for the cross-device case";
      }
      Init(shm_.path() + "/ws");
    } else {
      Init(dir_.Sub("ws"));
    }
    id_ = Backup();
    Update(id_);
    WriteFile(ha_ + "/.storage/core.entity_registry", "edited by hand");
    fs::remove_all(ha_ + "/blueprints/empty_dir");
    original_ = Snap();
    // The template every run starts from.
    template_ = dir_.Sub("template");
    fs::create_directories(template_);
    Copy(ha_, template_ + "/ha");
    Copy(ws_, template_ + "/ws");
    Copy(backups_, template_ + "/backups");
    // The reference run.
    auto r = Run(id_, Policy::kMerge);
    ASSERT_TRUE(r) << r.error().message;
    target_ = Snap();
    ASSERT_NE(target_, original_);
  }

  static void Copy(const std::string& from, const std::string& to) {
    ASSERT_EQ(std::system(("rm -rf '" + to + "' && cp -a '" + from + "' '" + to + "'").c_str()), 0);
  }

  void Reset() {
    Copy(template_ + "/ha", ha_);
    Copy(template_ + "/ws", ws_);
    Copy(template_ + "/backups", backups_);
  }

  // Runs a rollback that fails from the n-th operation on; returns whether it failed.
  bool RunFaulty(std::uint64_t n, FaultKind kind, std::uint64_t* ops = nullptr) {
    FaultInjectingFileSystem faulty(n, kind);
    store::Store store(options_, faulty, clock_);
    auto lock = store_->Lock(store::LockMode::kExclusive);
    EXPECT_TRUE(lock);
    auto r = Rollback(config_, store, faulty, clock_, pass_, id_, Policy::kMerge, false);
    if (ops != nullptr) *ops = faulty.ops();
    if (n == 0) {
      EXPECT_TRUE(r) << r.error().message;
    }
    return !r;
  }

  // Recovers with the real file system and checks the outcome; returns true for "rolled back".
  // `check_pre_deleted`: a rollback that failed before its journal said "applying" deleted its
  // pre-rollback safety point itself, which a crash (every later operation failing) prevents.
  bool RecoverAndCheck(const std::string& what, bool check_pre_deleted = false) {
    auto lock = store_->Lock(store::LockMode::kExclusive);
    EXPECT_TRUE(lock);
    EXPECT_TRUE(store_->CleanLeftovers());
    auto notes = Recover(config_, *store_, real_fs_, Passphrase());
    EXPECT_TRUE(notes) << what << ": " << notes.error().message;
    const TreeSnap now = Snap();
    const bool is_target = now == target_;
    const bool is_original = now == original_;
    EXPECT_TRUE(is_target || is_original) << what << ":\nvs target:\n"
                                          << Diff(target_, now) << "vs original:\n"
                                          << Diff(original_, now);
    if (is_target) CheckNothingLost(what);
    if (is_original && check_pre_deleted) CheckPreRollbackPointDeleted(what);
    // A second recovery has nothing left to do.
    auto again = Recover(config_, *store_, real_fs_, Passphrase());
    EXPECT_TRUE(again && again->empty()) << what;
    return is_target;
  }

  // Reverted: the pre-rollback safety point, which holds the trees as they are again, is deleted
  // (kept, each failed attempt would push the target out of retention), by the failed run
  // itself or by the recovery that finished its revert. Only the target is left.
  void CheckPreRollbackPointDeleted(const std::string& what) {
    auto listed = store_->List();
    ASSERT_TRUE(listed) << what;
    std::vector<std::string> ids;
    for (const auto& l : *listed) ids.push_back(l.id);
    EXPECT_EQ(ids, std::vector<std::string>{id_}) << what;
  }

  // Rolled back: every original file is in the pre-rollback safety point (same path and hash)
  // or in the record's moved/ directory.
  void CheckNothingLost(const std::string& what) {
    std::string record;
    for (const auto& e : fs::directory_iterator(backups_ + "/.rollbacks")) record = e.path();
    auto j = journal::Parse(ReadFile(record + "/journal.json").value_or(""));
    ASSERT_TRUE(j) << what;
    auto pre = store_->Load(j->pre_rollback_id, pass_);
    ASSERT_TRUE(pre) << what;
    std::map<std::string, std::string> hashes;
    for (const auto& e : pre->entries) hashes[e.path] = e.sha256;
    for (const auto& [key, value] : original_) {
      if (value[0] != 'F') continue;
      const std::string content = ContentOf(value);
      std::string archive = (key.starts_with("ha/") ? "ha_config/" : "workspace/") + key.substr(3);
      auto it = hashes.find(archive);
      if (it != hashes.end() && it->second == safepoint::testing::Sha256Hex(content)) continue;
      if (ReadFile(record + "/moved/" + archive) == content) continue;
      // Files outside the source selection are never touched.
      auto t = target_.find(key);
      if (t != target_.end() && t->second == value) continue;
      ADD_FAILURE() << what << ": " << key << " is lost";
    }
  }

  ShmDir shm_;
  std::string id_;
  std::string template_;
  TreeSnap original_;
  TreeSnap target_;
};

// The crash points of the rollback above, as docs/reliability.md quotes them (as root, the way
// CI runs; without root no owner is set, so there are fewer steps). A rollback that gains or
// loses a step fails here until the page is updated.
struct CrashFigures {
  std::uint64_t points;
  int completed;
  int reverted;
};
CrashFigures ExpectedCrashFigures(bool cross_device) {
  if (::geteuid() == 0) return cross_device ? CrashFigures{101, 40, 61} : CrashFigures{92, 31, 61};
  return cross_device ? CrashFigures{96, 39, 57} : CrashFigures{87, 30, 57};
}

TEST_P(RollbackCrashTest, CrashAtEveryStepCompletesOrRevertsExactly) {
  Reset();
  std::uint64_t total = 0;
  ASSERT_FALSE(RunFaulty(0, FaultKind::kCrash, &total));
  ASSERT_EQ(Snap(), target_);
  const CrashFigures expected = ExpectedCrashFigures(GetParam());
  ASSERT_EQ(total, expected.points);
  int completed = 0;
  int reverted = 0;
  for (std::uint64_t n = 1; n <= total; ++n) {
    Reset();
    ASSERT_TRUE(RunFaulty(n, FaultKind::kCrash)) << "crash at " << n << " did not fail";
    (RecoverAndCheck("crash at op " + std::to_string(n)) ? completed : reverted)++;
    if (HasFailure()) break;
  }
  std::printf("[ crash points ] rollback%s: %llu exercised (%d completed, %d reverted)\n",
              GetParam() ? " (cross-device)" : "", static_cast<unsigned long long>(total),
              completed, reverted);
  EXPECT_EQ(completed, expected.completed);
  EXPECT_EQ(reverted, expected.reverted);
}

TEST_P(RollbackCrashTest, DiskFullAtEveryWriteCompletesOrRevertsWhenSpaceReturns) {
  Reset();
  std::uint64_t total = 0;
  ASSERT_FALSE(RunFaulty(0, FaultKind::kNoSpace, &total));
  ASSERT_EQ(total, ExpectedCrashFigures(GetParam()).points);
  int failed = 0;
  for (std::uint64_t n = 1; n <= total; ++n) {
    Reset();
    if (RunFaulty(n, FaultKind::kNoSpace)) ++failed;
    RecoverAndCheck("disk full at op " + std::to_string(n), /*check_pre_deleted=*/true);
    if (HasFailure()) break;
  }
  std::printf("[ crash points ] rollback disk full%s: %llu exercised (%d failed)\n",
              GetParam() ? " (cross-device)" : "", static_cast<unsigned long long>(total), failed);
  EXPECT_GT(failed, 0);
}

TEST_P(RollbackCrashTest, LostStagingIsRevertedFromThePreRollbackSafetyPoint) {
  Reset();
  std::uint64_t total = 0;
  ASSERT_FALSE(RunFaulty(0, FaultKind::kCrash, &total));
  // Find the last crash point at which the journal says "applying" with files still staged.
  bool found = false;
  for (std::uint64_t n = total; n >= 1 && !found; --n) {
    Reset();
    ASSERT_TRUE(RunFaulty(n, FaultKind::kCrash));
    for (const auto& e : fs::directory_iterator(backups_ + "/.rollbacks")) {
      auto text = ReadFile(e.path().string() + "/journal.json");
      if (!text) continue;
      auto j = journal::Parse(*text);
      const std::string staging = e.path().string() + "/staging";
      if (j && j->phase == journal::Phase::kApplying && fs::exists(staging) &&
          !fs::is_empty(staging) && Snap() != original_) {
        fs::remove_all(staging);
        found = true;
      }
    }
  }
  ASSERT_TRUE(found);
  EXPECT_FALSE(RecoverAndCheck("staging removed"));
  EXPECT_EQ(Snap(), original_);
}

// Found by a campaign of real kills: recovery took a file op whose staged copy was gone for done
// when the live file had the op's content, though its mode (or owner) still differed, and
// "completed" the rollback with the old mode. Such an op is now not done: recovery reverts.
TEST(ApplyRecovery, AFileWithTheRightContentButNotItsModeIsNotTakenForPlaced) {
  TempDir dir;
  const std::string ha = dir.Sub("ha");
  const std::string staging = dir.Sub("staging");
  const std::string moved = dir.Sub("moved");
  WriteFile(ha + "/zz_mode_only.yaml", "same: true\n", 0600);
  journal::Op op;
  op.kind = journal::OpKind::kPlaceFile;
  op.path = "ha_config/zz_mode_only.yaml";
  op.staged = "1";  // not in staging: lost
  op.sha256 = safepoint::testing::Sha256Hex("same: true\n");
  op.size = 11;
  op.mode = 0644;
  op.uid = ::geteuid();
  op.gid = ::getegid();
  PosixFileSystem fs;
  internal::ApplyContext c{fs, internal::Roots{ha, dir.Sub("ws")}};
  c.dirs = {staging, moved};
  c.recovering = true;
  auto applied = internal::ApplyOps(c, {op});
  ASSERT_FALSE(applied);
  EXPECT_EQ(applied.error().code, ErrorCode::kCorrupt);
  EXPECT_EQ(applied.error().message, "staged copy of ha_config/zz_mode_only.yaml is missing");
  // With the op's mode too, it was renamed into place before the interruption: done.
  ASSERT_EQ(::chmod((ha + "/zz_mode_only.yaml").c_str(), 0644), 0);
  EXPECT_TRUE(internal::ApplyOps(c, {op}));
  if (::geteuid() == 0) {
    // As root the owner counts as well.
    ASSERT_EQ(::chown((ha + "/zz_mode_only.yaml").c_str(), 1001, 2002), 0);
    EXPECT_FALSE(internal::ApplyOps(c, {op}));
  }
}

// Moving aside across mounts renames the path beside itself first. Interrupted after that
// rename, the replay runs the earlier moves of the same directory again, and each removes its
// own leftover beside-name: with one beside-name per directory (a review of this session's
// change) that was the later move's half-copied source, and the file was lost.
TEST(ApplyRecovery, AReplayNeverTakesALaterMovesSourceForAnEarlierOnesLeftover) {
  TempDir dir;
  const std::string ha = dir.Sub("ha");
  const std::string moved = dir.Sub("moved");
  WriteFile(ha + "/packages/a_first.yaml", "first\n");
  WriteFile(ha + "/packages/b_second.yaml", "second\n");
  PosixFileSystem fs;
  internal::ApplyContext c{fs, internal::Roots{ha, dir.Sub("ws")}};
  c.rename_ha_config = false;  // as across mounts: renamed beside, copied, removed
  c.dirs = {dir.Sub("staging"), moved};
  c.token = "2026-12-06_04-00-00";
  const journal::Op first =
      internal::MakeOp(journal::OpKind::kMoveAside, "ha_config/packages/a_first.yaml");
  const journal::Op second =
      internal::MakeOp(journal::OpKind::kMoveAside, "ha_config/packages/b_second.yaml");
  ASSERT_TRUE(internal::ApplyOps(c, {first}));
  // The interruption: the second move had renamed its source beside itself, nothing more.
  const std::string source = ha + "/packages/b_second.yaml";
  const std::string beside = ha + "/packages/" + internal::MovingBeside(source, c.token);
  ASSERT_EQ(::rename(source.c_str(), beside.c_str()), 0);
  c.recovering = true;
  ASSERT_TRUE(internal::ApplyOps(c, {first, second}));
  EXPECT_EQ(ReadFile(moved + "/ha_config/packages/a_first.yaml"), "first\n");
  EXPECT_EQ(ReadFile(moved + "/ha_config/packages/b_second.yaml"), "second\n");
  EXPECT_TRUE(fs::is_empty(ha + "/packages"));  // no beside-name left either
}

// Found by the hostile-tree campaign: an apply reached each path by name from ha_config's root,
// so a directory of the tree swapped for a symlink while a rollback ran (by anything that can
// write to ha_config) led its later writes out of the tree: 90 files landed elsewhere in the
// campaign's repro. The swap is made between two operations, by the progress hook, so it hits
// whichever way the apply reaches its paths; each kind of operation, run right after it, must
// refuse the symlink and leave the place it points to exactly as it was.
TEST(ApplyRace, ADirectorySwappedForASymlinkMidRollbackLeadsNoWriteOutOfTheTree) {
  struct Case {
    const char* what;
    journal::OpKind kind;
    const char* name;  // in ha_config/packages
    bool rename;       // the record on the tree's mount (rename) or not (copy)
  };
  const Case cases[] = {
      {"place a file by rename", journal::OpKind::kPlaceFile, "new.yaml", true},
      {"place a file by copy", journal::OpKind::kPlaceFile, "new.yaml", false},
      {"place a link", journal::OpKind::kPlaceLink, "link", true},
      {"make a directory", journal::OpKind::kMakeDir, "newdir", true},
      {"set a directory's mode", journal::OpKind::kSetAttrs, "victimdir", true},
      {"move aside by rename", journal::OpKind::kMoveAside, "keep.yaml", true},
      {"move aside by copy", journal::OpKind::kMoveAside, "keep.yaml", false},
  };
  // The swapped directory: one in the tree, or the tree's root itself (found by a race campaign
  // on this change: the root was opened by its path for each operation, and followed).
  for (const bool root : {false, true}) {
    for (const Case& k : cases) {
      SCOPED_TRACE(std::string(k.what) + (root ? ", the root swapped" : ""));
      TempDir dir;
      const std::string ha = dir.Sub("ha");
      const std::string outside = dir.Sub("outside");
      for (const std::string& d : {ha + "/packages", outside, outside + "/packages"}) {
        WriteFile(d + "/keep.yaml", "kept: " + d + "\n", 0600);
        fs::create_directories(d + "/victimdir");
        fs::permissions(d + "/victimdir", fs::perms::owner_all);
      }
      const std::string staging = dir.Sub("staging");
      WriteFile(staging + "/0", "new: true\n", 0644);
      TreeSnap before;
      SnapInto(outside, "outside", before);

      PosixFileSystem fs;
      internal::ApplyContext c{fs, internal::Roots{ha, dir.Sub("ws")}};
      c.rename_ha_config = k.rename;
      c.dirs = {staging, dir.Sub("moved")};
      c.token = "2026-12-06_04-00-00";
      journal::Op op = internal::MakeOp(k.kind, std::string("ha_config/packages/") + k.name);
      op.mode = 0777;
      op.link_target = "target";
      op.staged = "0";
      op.sha256 = safepoint::testing::Sha256Hex("new: true\n");
      op.size = 10;
      op.mtime = 1'600'000'000;
      op.uid = ::geteuid();
      op.gid = ::getegid();
      journal::Op first = internal::MakeOp(journal::OpKind::kPlaceLink, "ha_config/packages/first");
      first.link_target = "first-target";
      const std::string swapped = root ? ha : ha + "/packages";
      c.on_op = [&](std::size_t done, std::size_t) {
        if (done != 1) return;
        fs::rename(swapped, swapped + "-real");
        fs::create_directory_symlink(outside, swapped);
      };
      auto st = internal::ApplyOps(c, {first, op});
      TreeSnap after;
      SnapInto(outside, "outside", after);
      EXPECT_EQ(Diff(before, after), "");
      if (root) {
        // The root was opened once, before the swap: the operations went on in it, wherever it
        // was renamed to, and never through the symlink.
        EXPECT_TRUE(st) << st.error().message;
        EXPECT_EQ(fs::read_symlink(ha + "-real/packages/first"), "first-target");
        continue;
      }
      EXPECT_FALSE(st);
      if (!st) {
        // An apply failure (exit 9), so the rollback reverts.
        EXPECT_EQ(st.error().code, ErrorCode::kIo);
        EXPECT_EQ(st.error().message, ha + "/packages is not a directory (a symlink?); refusing");
      }
      // What the first operation placed before the swap is where it belongs.
      EXPECT_EQ(fs::read_symlink(ha + "/packages-real/first"), "first-target");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, RollbackCrashTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "CrossDevice" : "SameDevice";
                         });

}  // namespace
}  // namespace safepoint::rollback
