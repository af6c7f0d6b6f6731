// A format 1 safety point (entries in the plaintext manifest.json), written by the release before
// format 2, is still shown, verified, diffed and rolled back, and is never rewritten.
// tests/fixtures/format1/ holds it and the home it was taken from (its secrets.yaml has the
// passphrase).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "tests/testutil/process.h"
#include "tests/testutil/testutil.h"

namespace safepoint {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::ReadFile;
using testing::RunSafepoint;
using testing::TempDir;
using testing::WriteFile;

constexpr const char* kId = "2026-12-02_05-42-13";
const std::string kFixture = std::string(SAFEPOINT_SOURCE_DIR) + "/tests/fixtures/format1";

class Format1 : public ::testing::Test {
 protected:
  void SetUp() override {
    ha_ = dir_.Sub("config");
    backups_ = dir_.Sub("backups");
    fs::copy(kFixture + "/home", ha_, fs::copy_options::recursive);
    ::chmod((ha_ + "/secrets.yaml").c_str(), 0600);
    fs::create_directories(backups_);
    ::chmod(backups_.c_str(), 0700);
    fs::copy(kFixture + "/" + kId, backups_ + "/" + kId, fs::copy_options::recursive);
    for (const auto& e : fs::directory_iterator(backups_ + "/" + kId)) {
      ::chmod(e.path().c_str(), 0600);
    }
    fs::create_directories(dir_.Sub("ws"));
    config_ = dir_.Sub("safepoint.yaml");
    WriteFile(config_, "paths:\n  ha_config: " + ha_ + "\n  workspace: " + dir_.Sub("ws") +
                           "\n  backup_dir: " + backups_ +
                           "\nencryption:\n  scrypt_work_factor: 15\nsources:\n  logs: []\n");
  }

  testing::ProcessResult Run(std::vector<std::string> args) {
    args.insert(args.begin(), {"--config", config_});
    return RunSafepoint(args);
  }

  json RunJson(std::vector<std::string> args, int expected_exit) {
    args.insert(args.begin(), "--json");
    auto r = Run(args);
    EXPECT_EQ(r.exit_code, expected_exit) << r.err;
    json j = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j;
  }

  TempDir dir_;
  std::string ha_, backups_, config_;
};

TEST_F(Format1, ShowSaysTheFormatAndListsTheEntries) {
  auto human = Run({"show", kId});
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("format:     1 (entry list in plaintext manifest.json)\n"),
            std::string::npos)
      << human.out;
  json j = RunJson({"show", kId}, 0);
  EXPECT_EQ(j["data"]["format"], 1);
  std::set<std::string> paths;
  for (const auto& e : j["data"]["entries"]) paths.insert(e["path"].get<std::string>());
  EXPECT_TRUE(paths.count("ha_config/configuration.yaml") == 1) << j.dump();
  EXPECT_TRUE(paths.count("ha_config/secrets.yaml") == 1) << j.dump();
  // Format 1 needs no passphrase to be shown.
  WriteFile(ha_ + "/secrets.yaml", "other_secret: x\n", 0600);
  EXPECT_EQ(Run({"show", kId}).exit_code, 0);
  json listed = RunJson({"list"}, 0);
  ASSERT_EQ(listed["data"].size(), 1u) << listed.dump();
  EXPECT_EQ(listed["data"][0]["id"], kId);
}

TEST_F(Format1, VerifiesDiffsAndRollsBackWithoutRewritingIt) {
  const auto manifest_before = ReadFile(backups_ + "/" + kId + "/manifest.json");
  ASSERT_TRUE(manifest_before);
  const auto original = ReadFile(ha_ + "/configuration.yaml");
  ASSERT_TRUE(original);

  json v = RunJson({"verify", kId}, 0);
  EXPECT_EQ(v["data"][0]["ok"], true) << v.dump();

  WriteFile(ha_ + "/configuration.yaml", "homeassistant:\n  name: Changed\n");
  WriteFile(ha_ + "/added.yaml", "new: true\n");
  json d = RunJson({"diff", kId, "--on-conflict", "overwrite"}, 0);
  std::map<std::string, std::string> changes;
  for (const auto& e : d["data"]["entries"]) {
    changes[e["path"].get<std::string>()] = e["change"].get<std::string>();
  }
  EXPECT_EQ(changes["ha_config/added.yaml"], "added") << d.dump();
  ASSERT_TRUE(changes.count("ha_config/configuration.yaml") == 1) << d.dump();
  EXPECT_NE(changes["ha_config/configuration.yaml"], "unchanged");

  auto r = Run({"rollback", kId, "--yes", "--on-conflict", "overwrite"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ReadFile(ha_ + "/configuration.yaml"), original);
  EXPECT_FALSE(fs::exists(ha_ + "/added.yaml"));
  // Nothing converted the old safety point.
  EXPECT_EQ(ReadFile(backups_ + "/" + kId + "/manifest.json"), manifest_before);
  EXPECT_EQ(RunJson({"verify", kId}, 0)["data"][0]["ok"], true);
}

}  // namespace
}  // namespace safepoint
