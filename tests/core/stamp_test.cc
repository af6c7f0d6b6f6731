// Stamps (manifest::Stamp): which files a backup records them for, and that diff, the rollback
// plan and the fingerprint trust a file's recorded hash only while its lstat(2) still shows the
// stamp. Each case below is a change a person or a tool makes; every one must be seen.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <utility>

#include "core/config/config.h"
#include "core/rollback/fingerprint.h"
#include "core/rollback/rollback.h"
#include "core/sources/snapshot.h"
#include "core/store/store.h"
#include "tests/testutil/testutil.h"

namespace safepoint::rollback {
namespace {

namespace fs = std::filesystem;
using safepoint::testing::FakeClock;
using safepoint::testing::ReadFile;
using safepoint::testing::TempDir;
using safepoint::testing::WriteFile;
using safepoint::testing::WriteHomeAssistantTree;

constexpr char kPassphrase[] = "correct horse battery staple";

std::int64_t Nanos(const struct timespec& t) {
  return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

// Whether nanoseconds since the epoch of a time with these seconds fit in 64 bits.
bool FitsInNanos(std::int64_t seconds) {
  return seconds > -9'223'372'036 && seconds < 9'223'372'036;
}

struct stat LStat(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st;
}

// Sets a file's atime and mtime to exactly those of `st` (a tool that "preserves times").
void RestoreTimes(const std::string& path, const struct stat& st) {
  const struct timespec times[2] = {st.st_atim, st.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << path;
}

class StampTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ha_ = dir_.Sub("config");
    WriteHomeAssistantTree(ha_, kPassphrase);
    for (const char* name : {"same_size.yaml", "copied.yaml", "chmod.yaml", "touched.yaml",
                             "rewritten.yaml", "by_update.yaml"}) {
      WriteFile(ha_ + "/" + name, std::string("name: ") + name + "\nvalue: 1234\n");
    }
    WriteFile(dir_.Sub("safepoint.yaml"),
              "paths:\n  ha_config: " + ha_ + "\n  workspace: " + dir_.Sub("ws") +
                  "\n  backup_dir: " + dir_.Sub("backups") +
                  "\nencryption:\n  scrypt_work_factor: 15\n  max_work_factor: 18\n"
                  "sources:\n  workspace: {include: []}\n  environment: {variables: []}\n"
                  "  logs: []\n");
    auto c = config::LoadConfig(dir_.Sub("safepoint.yaml"));
    ASSERT_TRUE(c) << c.error().message;
    config_ = std::move(*c);
    store::Options o;
    o.backup_dir = dir_.Sub("backups");
    o.work_factor = 15;
    o.max_work_factor = 18;
    store_ = std::make_unique<store::Store>(o, fs_, clock_);
    // Times that nanoseconds since the epoch do not hold in 64 bits: never stamped, always read.
    for (const auto& [name, seconds] : {std::pair{"far_future.yaml", 10'413'792'000LL},
                                        std::pair{"far_past.yaml", -11'676'096'000LL}}) {
      WriteFile(ha_ + "/" + name, "mtime: far away\n");
      const struct timespec times[2] = {{seconds, 5}, {seconds, 5}};
      ASSERT_EQ(::utimensat(AT_FDCWD, (ha_ + "/" + name).c_str(), times, 0), 0) << name;
    }
    // Every file above is older than the quiet time when the backup starts; this one is not,
    // when the backup starts within the quiet time (Backup() says whether it did).
    std::this_thread::sleep_for(
        std::chrono::milliseconds(manifest::kStampQuietSeconds * 1000 + 300));
    WriteFile(ha_ + "/fresh.yaml", "written: just now\n");
    fresh_written_ = std::chrono::steady_clock::now();
  }

  std::string Backup() {
    auto request = snapshot::Collect(config_, std::nullopt);
    EXPECT_TRUE(request) << request.error().message;
    auto lock = store_->Lock(store::LockMode::kExclusive);
    EXPECT_TRUE(lock);
    auto m = store_->Backup(*request, pass_);
    EXPECT_TRUE(m) << m.error().message;
    // Returned within the quiet time of writing fresh.yaml: it began reading sooner, so the
    // file cannot be quiet. (A stalled machine may take longer; then it may be stamped.)
    fresh_is_busy_ = std::chrono::steady_clock::now() - fresh_written_ <
                     std::chrono::seconds(manifest::kStampQuietSeconds);
    clock_.Advance(std::chrono::seconds(1));
    return m ? m->id : "";
  }

  manifest::Manifest Load(const std::string& id) {
    auto m = store_->Load(id, pass_);
    EXPECT_TRUE(m) << m.error().message;
    return m ? std::move(*m) : manifest::Manifest{};
  }

  Plan MakePlanFor(const std::string& id) {
    auto lock = store_->Lock(store::LockMode::kShared);
    auto plan = MakePlan(config_, *store_, pass_, id, Policy::kOverwrite);
    EXPECT_TRUE(plan) << plan.error().message;
    return plan ? std::move(*plan) : Plan{};
  }

  static std::string ChangeAt(const Plan& plan, const std::string& path) {
    for (const auto& e : plan.entries) {
      if (e.path == path) return std::string(ChangeName(e.change));
    }
    return "absent";
  }

  TempDir dir_;
  std::string ha_;
  config::Config config_;
  PosixFileSystem fs_;
  FakeClock clock_;
  std::unique_ptr<store::Store> store_;
  Secret pass_{std::string_view(kPassphrase)};
  std::chrono::steady_clock::time_point fresh_written_;
  bool fresh_is_busy_ = false;
};

TEST_F(StampTest, RecordedForQuietFilesOnlyAndTrustedOnlyWhileTheyHold) {
  const std::string id = Backup();
  const manifest::Manifest m = Load(id);

  // Every quiet file carries its lstat(2) identity and nanosecond times; the fresh one and the
  // ones with far-away times none.
  std::size_t stamped = 0;
  std::size_t unstamped = 0;
  for (const auto& e : m.entries) {
    if (e.type != manifest::EntryType::kFile || !e.path.starts_with("ha_config/")) continue;
    const std::string abs = ha_ + "/" + e.path.substr(std::string("ha_config/").size());
    if (e.path == "ha_config/fresh.yaml" && (fresh_is_busy_ || !e.stamp)) {
      EXPECT_FALSE(e.stamp.has_value());
      ++unstamped;
      continue;
    }
    if ((e.path == "ha_config/far_future.yaml" || e.path == "ha_config/far_past.yaml") &&
        !FitsInNanos(LStat(abs).st_mtim.tv_sec)) {
      EXPECT_FALSE(e.stamp.has_value()) << e.path;
      ++unstamped;
      continue;
    }
    ASSERT_TRUE(e.stamp.has_value()) << e.path;
    const struct stat st = LStat(abs);
    EXPECT_EQ(e.stamp->dev, static_cast<std::uint64_t>(st.st_dev)) << e.path;
    EXPECT_EQ(e.stamp->ino, static_cast<std::uint64_t>(st.st_ino)) << e.path;
    EXPECT_EQ(e.stamp->mtime_ns, Nanos(st.st_mtim)) << e.path;
    EXPECT_EQ(e.stamp->ctime_ns, Nanos(st.st_ctim)) << e.path;
    ++stamped;
  }
  ASSERT_GE(stamped, 6u);
  // ext4 keeps 2300 (it clamps 1600 to 1901): at least the far future is out of range.
  EXPECT_FALSE(FitsInNanos(LStat(ha_ + "/far_future.yaml").st_mtim.tv_sec));
  EXPECT_GE(unstamped, fresh_is_busy_ ? 2u : 1u);

  // Nothing changed: only the unstamped files are read.
  Plan quiet = MakePlanFor(id);
  EXPECT_EQ(quiet.files_hashed, unstamped);
  EXPECT_EQ(quiet.files_trusted, stamped);
  EXPECT_TRUE(quiet.Empty());

  // The changes tools make, each behind a stamp that no longer holds.
  const std::string same_size = ha_ + "/same_size.yaml";
  const std::string original = *ReadFile(same_size);
  const struct stat before = LStat(same_size);
  WriteFile(same_size, "name: same_size.yaml\nvalue: 9999\n");  // same length
  RestoreTimes(same_size, before);                              // and the old mtime
  ASSERT_EQ(LStat(same_size).st_size, before.st_size);
  ASSERT_EQ(Nanos(LStat(same_size).st_mtim), Nanos(before.st_mtim));

  const std::string copied = ha_ + "/copied.yaml";  // an identical copy renamed over it
  const struct stat copied_before = LStat(copied);
  WriteFile(copied + ".tmp", *ReadFile(copied));
  RestoreTimes(copied + ".tmp", copied_before);
  ASSERT_EQ(std::rename((copied + ".tmp").c_str(), copied.c_str()), 0);

  ASSERT_EQ(::chmod((ha_ + "/chmod.yaml").c_str(), 0600), 0);
  const struct timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (ha_ + "/touched.yaml").c_str(), now, 0), 0);
  WriteFile(ha_ + "/rewritten.yaml", *ReadFile(ha_ + "/rewritten.yaml"));  // same bytes again

  Plan after = MakePlanFor(id);
  EXPECT_EQ(after.files_hashed, unstamped + 5);  // the unstamped files and the five above
  EXPECT_EQ(after.files_trusted, stamped - 5);
  EXPECT_EQ(ChangeAt(after, "ha_config/same_size.yaml"), "conflict");
  EXPECT_EQ(ChangeAt(after, "ha_config/chmod.yaml"), "conflict");
  for (const char* unchanged : {"copied.yaml", "touched.yaml", "rewritten.yaml", "fresh.yaml"}) {
    EXPECT_EQ(ChangeAt(after, std::string("ha_config/") + unchanged), "unchanged") << unchanged;
  }
  EXPECT_EQ(after.Conflicts(),
            (std::vector<std::string>{"ha_config/chmod.yaml", "ha_config/same_size.yaml"}));

  // A rollback brings the old bytes back.
  {
    auto lock = store_->Lock(store::LockMode::kExclusive);
    auto report = Rollback(config_, *store_, fs_, clock_, pass_, id, Policy::kOverwrite, false, {});
    ASSERT_TRUE(report) << report.error().message;
  }
  EXPECT_EQ(*ReadFile(same_size), original);
  EXPECT_EQ(LStat(ha_ + "/chmod.yaml").st_mode & 07777, 0644u);
}

// The fingerprint after an update records what the file holds now, not what its old stamp says:
// a same-size rewrite with the old mtime is "changed by the update", not a person's conflict.
TEST_F(StampTest, FingerprintReadsFilesWhoseStampNoLongerHolds) {
  const std::string id = Backup();
  const std::string path = ha_ + "/by_update.yaml";
  const struct stat before = LStat(path);
  WriteFile(path, "name: by_update.yaml\nvalue: 5678\n");
  RestoreTimes(path, before);
  {
    auto lock = store_->Lock(store::LockMode::kExclusive);
    ASSERT_TRUE(RecordFingerprint(config_, *store_, fs_, clock_, pass_, id));
  }
  Plan plan = MakePlanFor(id);
  EXPECT_TRUE(plan.has_fingerprint);
  EXPECT_EQ(ChangeAt(plan, "ha_config/by_update.yaml"), "changed_by_update");
  EXPECT_TRUE(plan.Conflicts().empty());
}

}  // namespace
}  // namespace safepoint::rollback
