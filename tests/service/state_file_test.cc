// The service's state file (service/state_file.h): what the service writes is what it and the
// CLI read back, and a missing, hostile or odd file never blocks or crashes a reader.
#include "service/state_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>

#include "tests/testutil/testutil.h"

namespace safepoint::service {
namespace {

using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

TEST(StateFile, WhatIsWrittenIsReadBackBelowNewDirectories) {
  TempDir dir;
  // A path a user may choose: new directories, an umlaut and an emoji.
  const std::string path = dir.Sub(
      "var/lib/k\xc3\xbc"
      "che \xf0\x9f\x92\xa1/state.json");
  PersistedState state;
  state.state = State::kAwaitingConflictResolution;
  state.operation = Operation::kRollback;
  state.backup_id = "2026-12-03_04-00-00";
  state.policy = ConflictPolicy::kAbort;
  state.conflicts = {"ha_config/configuration.yaml",
                     "ha_config/k\xc3\xbc"
                     "chenlicht.png"};
  state.deadline = TimePoint(std::chrono::seconds(1796284800));
  PosixFileSystem fs;
  ASSERT_TRUE(WriteStateFile(fs, path, state));
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string parent = path.substr(0, path.rfind('/'));
  ASSERT_EQ(::stat(parent.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_FALSE(ReadFile(path + ".tmp").has_value());

  auto back = ReadStateFile(path);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->state, State::kAwaitingConflictResolution);
  EXPECT_EQ(back->backup_id, "2026-12-03_04-00-00");
  EXPECT_EQ(back->conflicts, state.conflicts);
  EXPECT_EQ(back->deadline, state.deadline);
  EXPECT_EQ(PersistedStateToJson(*back), PersistedStateToJson(state));
}

TEST(StateFile, MissingCorruptAndSpecialFilesAreErrorsNotHangs) {
  TempDir dir;
  EXPECT_EQ(ReadStateFile(dir.Sub("none.json")).error().code, ErrorCode::kNotFound);
  WriteFile(dir.Sub("garbage.json"), "{\"state\": ");
  EXPECT_EQ(ReadStateFile(dir.Sub("garbage.json")).error().code, ErrorCode::kCorrupt);
  WriteFile(dir.Sub("wrong.json"), "{\"version\": 1, \"state\": \"dancing\"}");
  EXPECT_EQ(ReadStateFile(dir.Sub("wrong.json")).error().code, ErrorCode::kCorrupt);
  // A FIFO where the file should be: a reader that opened it would wait for a writer forever.
  ASSERT_EQ(::mkfifo(dir.Sub("fifo.json").c_str(), 0600), 0);
  auto fifo = ReadStateFile(dir.Sub("fifo.json"));
  ASSERT_FALSE(fifo);
  EXPECT_EQ(fifo.error().code, ErrorCode::kCorrupt);
  // Over the 1 MiB bound: refused, not read whole.
  WriteFile(dir.Sub("huge.json"), std::string((1 << 20) + 1, ' '));
  EXPECT_FALSE(ReadStateFile(dir.Sub("huge.json")));
}

TEST(StateFile, AParentThatIsAFileIsAnError) {
  TempDir dir;
  WriteFile(dir.Sub("blocker"), "x");
  PosixFileSystem fs;
  const auto st = WriteStateFile(fs, dir.Sub("blocker/sub/state.json"), PersistedState{});
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kIo);
}

}  // namespace
}  // namespace safepoint::service
