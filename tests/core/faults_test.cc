// Crash and fault injection for the writers that store_test (backup) and rollback_test
// (rollback) do not cover: delete, prune, the leftover cleanup and the post-update fingerprint.
//
// Each test first runs the writer through a counting FaultInjectingFileSystem to learn how many
// mutating operations (create, write, fsync, close, rename, mkdir, remove) it performs, then
// crashes at each of them in turn on a fresh copy of the same store, "restarts" with the real
// file system (CleanLeftovers, as every writing command does first) and checks the invariants:
//   - every visible safety point is whole and verifies; none is half deleted;
//   - the newest verified safety point survives a prune;
//   - repeating the interrupted operation reaches exactly the state an uninterrupted run reaches;
//   - a fingerprint is the old one, the new one or absent (if there was none), never torn;
//   - the user's files are never touched.
// Each test prints "[ crash points ] <writer>: N exercised" and asserts that N is the figure
// docs/reliability.md quotes (kDeletePoints and the others below): a writer that gains or loses a
// step fails here until the page is updated.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/rollback/fingerprint.h"
#include "core/sources/snapshot.h"
#include "core/store/store.h"
#include "tests/testutil/testutil.h"

namespace safepoint {
namespace {

namespace fs = std::filesystem;
using testing::FakeClock;
using testing::FaultInjectingFileSystem;
using testing::FaultKind;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;
using testing::WriteHomeAssistantTree;
using testing::WriteSecrets;

constexpr char kPassphrase[] = "faults test passphrase 9c2e";
constexpr int kSafetyPoints = 5;
// The crash points docs/reliability.md quotes for each writer.
constexpr std::uint64_t kDeletePoints = 3;
constexpr std::uint64_t kPrunePoints = 9;
constexpr std::uint64_t kCleanupPoints = 4;
constexpr std::uint64_t kFingerprintPoints = 6;

// Every path below `root` -> "F <mode> <content>", "D <mode>" or "L <target>".
std::map<std::string, std::string> Snap(const std::string& root) {
  std::map<std::string, std::string> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    struct stat st {};
    EXPECT_EQ(::lstat(it->path().c_str(), &st), 0);
    const std::string key = it->path().lexically_relative(root).string();
    const std::string mode = std::to_string(st.st_mode & 07777);
    if (S_ISLNK(st.st_mode)) {
      out[key] = "L " + fs::read_symlink(it->path()).string();
    } else if (S_ISDIR(st.st_mode)) {
      out[key] = "D " + mode;
    } else {
      out[key] = "F " + mode + " " + ReadFile(it->path().string()).value_or("?");
    }
  }
  return out;
}

// Names in the backup dir that are not safety points (leftovers of interrupted writers).
std::vector<std::string> Leftovers(const std::string& backup_dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(backup_dir)) {
    const std::string name = e.path().filename();
    if (name.starts_with(".tmp-") || name.starts_with(".del-")) out.push_back(name);
  }
  return out;
}

class Faults : public ::testing::Test {
 protected:
  void SetUp() override {
    ha_ = dir_.Sub("config");
    WriteHomeAssistantTree(ha_, kPassphrase);
    WriteFile(dir_.Sub("ws/memory/notes.md"), "# notes\n");
    template_ = dir_.Sub("template");
    work_ = dir_.Sub("backups");
    config_path_ = dir_.Sub("safepoint.yaml");
    WriteFile(config_path_, "paths:\n  ha_config: " + ha_ + "\n  workspace: " + dir_.Sub("ws") +
                                "\n  backup_dir: " + work_ +
                                "\nencryption:\n  scrypt_work_factor: 15\n  max_work_factor: 18\n"
                                "sources:\n  workspace: {include: [\"memory/*.md\"]}\n"
                                "  environment:\n    variables: []\n"
                                "    python_site_packages: []\n  logs: []\n");
    auto c = config::LoadConfig(config_path_);
    ASSERT_TRUE(c) << c.error().message;
    config_ = std::move(*c);
    options_.backup_dir = template_;
    options_.work_factor = 15;
    options_.max_work_factor = 18;
    // The template store: kSafetyPoints safety points, one a day.
    store::Store store(options_, real_fs_, clock_);
    ASSERT_TRUE(store.Prepare());
    auto lock = store.Lock(store::LockMode::kExclusive);
    ASSERT_TRUE(lock);
    for (int i = 0; i < kSafetyPoints; ++i) {
      auto request = snapshot::Collect(config_, std::nullopt);
      ASSERT_TRUE(request) << request.error().message;
      request->reason = "day " + std::to_string(i);
      auto m = store.Backup(*request, pass_);
      ASSERT_TRUE(m) << m.error().message;
      ids_.push_back(m->id);
      clock_.Advance(std::chrono::hours(24));
    }
    user_files_ = Snap(ha_);
  }

  // A fresh copy of the template store at work_, and a Store on it through `fs`.
  std::unique_ptr<store::Store> FreshStore(FileSystem& fs) {
    std::error_code ec;
    fs::remove_all(work_, ec);
    fs::copy(template_, work_, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
    fs::permissions(work_, fs::perms::owner_all, fs::perm_options::replace);
    store::Options o = options_;
    o.backup_dir = work_;
    return std::make_unique<store::Store>(o, fs, clock_);
  }

  // The ids listed in the work store after cleaning leftovers with the real file system; checks
  // that each verifies (when `verify`) and that no leftover survives the cleanup.
  std::vector<std::string> RecoverAndList(const std::string& where, bool verify) {
    store::Options o = options_;
    o.backup_dir = work_;
    store::Store store(o, real_fs_, clock_);
    auto lock = store.Lock(store::LockMode::kExclusive);
    EXPECT_TRUE(lock) << where;
    EXPECT_TRUE(store.CleanLeftovers()) << where;
    EXPECT_EQ(Leftovers(work_), std::vector<std::string>{}) << where;
    std::vector<std::string> ids;
    auto list = store.List();
    EXPECT_TRUE(list) << where;
    if (!list) return ids;
    for (const auto& l : *list) {
      EXPECT_TRUE(l.manifest.has_value()) << where << ": " << l.id << ": " << l.problem;
      if (verify) {
        auto v = store.Verify(l.id, pass_);
        EXPECT_TRUE(v) << where << ": " << l.id << " does not verify: " << v.error().message;
      }
      ids.push_back(l.id);
    }
    return ids;
  }

  TempDir dir_;
  std::string ha_, template_, work_, config_path_;
  config::Config config_;
  store::Options options_;
  PosixFileSystem real_fs_;
  FakeClock clock_;
  std::vector<std::string> ids_;  // oldest first
  std::map<std::string, std::string> user_files_;
  Secret pass_{std::string_view(kPassphrase)};
};

TEST_F(Faults, CrashAtEveryStepOfDeleteLeavesTheSafetyPointWholeOrGone) {
  const std::string victim = ids_[2];
  FaultInjectingFileSystem counter;
  {
    auto store = FreshStore(counter);
    ASSERT_TRUE(store->Delete(victim));
  }
  const std::uint64_t points = counter.ops();
  ASSERT_EQ(points, kDeletePoints);  // rename, fsync of the backup dir, removal
  std::vector<std::string> expected = ids_;
  expected.erase(expected.begin() + 2);
  int whole = 0, gone = 0;
  for (std::uint64_t n = 1; n <= points; ++n) {
    const std::string where = "delete, crash at op " + std::to_string(n);
    FaultInjectingFileSystem faulty(n, FaultKind::kCrash);
    auto store = FreshStore(faulty);
    EXPECT_FALSE(store->Delete(victim)) << where;
    EXPECT_TRUE(faulty.tripped()) << where;
    // Only a crash before the rename leaves the safety point; after it the id is gone for good.
    std::vector<std::string> ids = RecoverAndList(where, /*verify=*/n == 1);
    if (ids.size() == ids_.size()) {
      EXPECT_EQ(ids, ids_) << where;
      ++whole;
      store::Options o = options_;
      o.backup_dir = work_;
      store::Store retry(o, real_fs_, clock_);
      ASSERT_TRUE(retry.Delete(victim)) << where;
      ids = RecoverAndList(where, false);
    } else {
      ++gone;
    }
    EXPECT_EQ(ids, expected) << where;
    EXPECT_EQ(Snap(ha_), user_files_) << where << ": the user's files changed";
  }
  EXPECT_EQ(whole, 1);  // only the crash at the rename itself
  EXPECT_EQ(gone, 2);
  std::printf("[ crash points ] delete: %llu exercised (%d whole, %d gone)\n",
              static_cast<unsigned long long>(points), whole, gone);
}

TEST_F(Faults, CrashAtEveryStepOfPruneKeepsTheNewestAndRepeatingFinishesIt) {
  store::Retention retention;
  retention.keep_last = 2;
  retention.keep_daily = 0;
  // What an uninterrupted prune leaves: the two newest.
  const std::vector<std::string> expected(ids_.end() - 2, ids_.end());
  FaultInjectingFileSystem counter;
  {
    auto store = FreshStore(counter);
    auto report = store->Prune(retention, pass_);
    ASSERT_TRUE(report) << report.error().message;
    ASSERT_EQ(report->deleted, std::vector<std::string>(ids_.begin(), ids_.end() - 2));
    ASSERT_EQ(report->protected_id, ids_.back());
  }
  ASSERT_EQ(RecoverAndList("uninterrupted prune", false), expected);
  const std::uint64_t points = counter.ops();
  ASSERT_EQ(points, kPrunePoints);  // three deletions
  for (std::uint64_t n = 1; n <= points; ++n) {
    const std::string where = "prune, crash at op " + std::to_string(n);
    FaultInjectingFileSystem faulty(n, FaultKind::kCrash);
    auto store = FreshStore(faulty);
    EXPECT_FALSE(store->Prune(retention, pass_)) << where;
    EXPECT_TRUE(faulty.tripped()) << where;
    // Deletions go oldest first: what is left is a suffix of the history, always with the newest.
    std::vector<std::string> ids = RecoverAndList(where, /*verify=*/true);
    ASSERT_FALSE(ids.empty()) << where;
    EXPECT_EQ(ids.back(), ids_.back()) << where;
    EXPECT_GE(ids.size(), expected.size()) << where;
    EXPECT_TRUE(std::equal(ids.begin(), ids.end(), ids_.end() - static_cast<long>(ids.size())))
        << where;
    // The next prune (next start, next schedule) finishes the job exactly.
    store::Options o = options_;
    o.backup_dir = work_;
    store::Store retry(o, real_fs_, clock_);
    auto report = retry.Prune(retention, pass_);
    ASSERT_TRUE(report) << where << ": " << report.error().message;
    EXPECT_EQ(RecoverAndList(where + ", repeated", false), expected);
    EXPECT_EQ(Snap(ha_), user_files_) << where << ": the user's files changed";
  }
  std::printf("[ crash points ] prune: %llu exercised\n", static_cast<unsigned long long>(points));
}

TEST_F(Faults, CrashAtEveryStepOfTheLeftoverCleanupIsFinishedByTheNextOne) {
  // Leftovers of three interrupted writers: a staged backup and two half-deleted safety points.
  auto make_leftovers = [&] {
    fs::copy(work_ + "/" + ids_[0], work_ + "/.tmp-" + ids_[0], fs::copy_options::recursive);
    fs::copy(work_ + "/" + ids_[1], work_ + "/.del-" + ids_[1], fs::copy_options::recursive);
    fs::copy(work_ + "/" + ids_[2], work_ + "/.del-" + ids_[2], fs::copy_options::recursive);
  };
  FaultInjectingFileSystem counter;
  {
    auto store = FreshStore(counter);
    make_leftovers();
    ASSERT_TRUE(store->CleanLeftovers());
  }
  const std::uint64_t points = counter.ops();
  ASSERT_EQ(points, kCleanupPoints);  // three removals and the fsync of the backup dir
  for (std::uint64_t n = 1; n <= points; ++n) {
    const std::string where = "cleanup, crash at op " + std::to_string(n);
    FaultInjectingFileSystem faulty(n, FaultKind::kCrash);
    auto store = FreshStore(faulty);
    make_leftovers();
    EXPECT_FALSE(store->CleanLeftovers()) << where;
    // The safety points themselves are untouched; the next cleanup removes the rest.
    EXPECT_EQ(RecoverAndList(where, n == 1), ids_) << where;
    EXPECT_EQ(Snap(ha_), user_files_) << where << ": the user's files changed";
  }
  std::printf("[ crash points ] cleanup: %llu exercised\n",
              static_cast<unsigned long long>(points));
}

class FingerprintFaults : public Faults, public ::testing::WithParamInterface<bool> {};

TEST_P(FingerprintFaults, CrashAtEveryStepLeavesTheOldOrTheNewFingerprint) {
  const bool had_one = GetParam();
  const std::string id = ids_.back();
  const std::string path = work_ + "/" + id + "/" + std::string(rollback::kFingerprintName);
  auto record = [&](FileSystem& fs, store::Store& store) {
    auto lock = store.Lock(store::LockMode::kExclusive);
    EXPECT_TRUE(lock);
    return rollback::RecordFingerprint(config_, store, fs, clock_, pass_, id);
  };
  auto load = [&](const store::Store& store) {
    Secret key;
    auto m = store.Load(id, pass_, &key);
    EXPECT_TRUE(m);
    return rollback::LoadFingerprint(store, id, std::move(key));
  };
  // The old fingerprint (recorded before the update) goes into the template when wanted.
  std::optional<std::string> old_text;
  if (had_one) {
    auto store = FreshStore(real_fs_);
    ASSERT_TRUE(record(real_fs_, *store));
    old_text = ReadFile(path);
    ASSERT_TRUE(old_text);
    fs::copy_file(path, template_ + "/" + id + "/" + std::string(rollback::kFingerprintName));
  }
  // The update changes the tree; the new fingerprint must describe it.
  WriteFile(ha_ + "/configuration.yaml", "homeassistant:\n  name: Home 2\n");
  WriteFile(ha_ + "/custom_components/bar/__init__.py", "NEW = True\n");
  const auto updated_files = Snap(ha_);
  FaultInjectingFileSystem counter;
  std::string new_paths;
  {
    auto store = FreshStore(counter);
    ASSERT_TRUE(record(counter, *store));
    auto f = load(*store);
    ASSERT_TRUE(f && *f);
    new_paths = rollback::ToJson(**f)["entries"].dump();
  }
  const std::uint64_t points = counter.ops();
  ASSERT_EQ(points, kFingerprintPoints);  // create, write, fsync, close, rename, fsync of the dir
  int old_kept = 0, new_written = 0;
  for (std::uint64_t n = 1; n <= points; ++n) {
    const std::string where = std::string(had_one ? "replace" : "first") +
                              " fingerprint, crash at op " + std::to_string(n);
    FaultInjectingFileSystem faulty(n, FaultKind::kCrash);
    auto store = FreshStore(faulty);
    EXPECT_FALSE(record(faulty, *store)) << where;
    auto f = load(*store);
    ASSERT_TRUE(f) << where << ": torn fingerprint: " << f.error().message;
    if (!f->has_value()) {
      EXPECT_FALSE(had_one) << where << ": the old fingerprint is lost";
      ++old_kept;
    } else if (ReadFile(path) == old_text) {
      ++old_kept;
    } else {
      EXPECT_EQ(rollback::ToJson(**f)["entries"].dump(), new_paths) << where;
      ++new_written;
    }
    // The safety point itself still verifies with a stale temp file beside it, and recording
    // again (the next failed update) replaces everything.
    auto v = store->Verify(id, pass_);
    EXPECT_TRUE(v) << where << ": " << v.error().message;
    ASSERT_TRUE(record(real_fs_, *store)) << where;
    EXPECT_FALSE(fs::exists(path + ".tmp")) << where;
    auto again = load(*store);
    ASSERT_TRUE(again && *again) << where;
    EXPECT_EQ(rollback::ToJson(**again)["entries"].dump(), new_paths) << where;
    EXPECT_EQ(Snap(ha_), updated_files) << where << ": the user's files changed";
  }
  // Only a crash at the final fsync of the directory finds the new file in place.
  EXPECT_EQ(new_written, 1);
  EXPECT_EQ(old_kept, 5);
  std::printf("[ crash points ] fingerprint%s: %llu exercised (%d old kept, %d new)\n",
              had_one ? " (replacing)" : " (first)", static_cast<unsigned long long>(points),
              old_kept, new_written);
}

INSTANTIATE_TEST_SUITE_P(OldFingerprint, FingerprintFaults, ::testing::Values(false, true),
                         [](const auto& param_info) {
                           return param_info.param ? "Replacing" : "First";
                         });

TEST_F(Faults, DiskFullWhileWritingTheFingerprintKeepsTheOldOne) {
  const std::string id = ids_.back();
  const std::string path = work_ + "/" + id + "/" + std::string(rollback::kFingerprintName);
  auto store = FreshStore(real_fs_);
  {
    auto lock = store->Lock(store::LockMode::kExclusive);
    ASSERT_TRUE(rollback::RecordFingerprint(config_, *store, real_fs_, clock_, pass_, id));
  }
  const auto old_text = ReadFile(path);
  WriteFile(ha_ + "/configuration.yaml", "homeassistant:\n  name: Home 3\n");
  FaultInjectingFileSystem full(1, FaultKind::kNoSpace);
  store::Options o = options_;
  o.backup_dir = work_;
  store::Store on_full(o, full, clock_);
  auto lock = on_full.Lock(store::LockMode::kExclusive);
  auto st = rollback::RecordFingerprint(config_, on_full, full, clock_, pass_, id);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kNoSpace);
  EXPECT_EQ(ReadFile(path), old_text);
  // The partial new one is not left behind to hold space (it was, until the next fingerprint).
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

}  // namespace
}  // namespace safepoint
