// What the CLI prints about names and text it did not choose (any bytes a file name may hold,
// escape sequences, line feeds), how it answers words it does not know, and what it leaves behind
// when it fails: checked against GNU patch and fixed expectations, byte for byte.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "tests/testutil/process.h"
#include "tests/testutil/testutil.h"

namespace safepoint {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::ReadFile;
using testing::RunProcess;
using testing::RunSafepoint;
using testing::TempDir;
using testing::WriteFile;
using testing::WriteSecrets;

constexpr const char* kPassphrase = "cli text test passphrase 41d2";

class CliText : public ::testing::Test {
 protected:
  void SetUp() override {
    ha_ = dir_.Sub("config");
    WriteFile(ha_ + "/configuration.yaml", "homeassistant:\n  name: Test\n");
    WriteSecrets(ha_ + "/secrets.yaml", kPassphrase);
    backups_ = dir_.Sub("backups");
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

  std::string BackupId() {
    json j = RunJson({"backup", "--reason", "test"}, 0);
    return j["data"]["id"].get<std::string>();
  }

  // Four files added after a safety point whose names are not plain text: two that differ only
  // in a byte that is not UTF-8, one with a line feed, one with a terminal escape sequence.
  void AddHostileNames() {
    WriteFile(ha_ + "/caf\xe9.yaml", "e-acute\n");
    WriteFile(ha_ + "/caf\xe8.yaml", "e-grave\n");
    WriteFile(ha_ + "/new\nline.yaml", "lf\n");
    WriteFile(ha_ + "/esc\x1b[31mred.yaml", "esc\n");
  }

  TempDir dir_;
  std::string ha_, backups_, config_;
};

// Found by a new-user walkthrough: `diff --json` wrote both caf\xe9 and caf\xe8 as "caf\ufffd",
// and the human form printed a line feed and an escape sequence as they are.
TEST_F(CliText, DiffNamesEveryFileExactlyInJsonAndQuotedInText) {
  const std::string id = BackupId();
  AddHostileNames();

  json plan = RunJson({"diff", id}, 0);
  std::set<std::string> text, b64;
  for (const auto& e : plan["data"]["entries"]) {
    if (e.contains("path")) text.insert(e["path"].get<std::string>());
    if (e.contains("path_b64")) b64.insert(e["path_b64"].get<std::string>());
    EXPECT_NE(e.contains("path"), e.contains("path_b64")) << e;
  }
  // base64 of ha_config/caf\xe9.yaml and ha_config/caf\xe8.yaml (Python's base64 module).
  EXPECT_EQ(b64, (std::set<std::string>{"aGFfY29uZmlnL2NhZukueWFtbA==",
                                        "aGFfY29uZmlnL2NhZugueWFtbA=="}));
  EXPECT_EQ(text, (std::set<std::string>{"ha_config/new\nline.yaml",
                                         "ha_config/esc\x1b[31mred.yaml"}));

  json changes = RunJson({"diff", id, "--patch"}, 0);
  std::set<std::string> changed_b64;
  for (const auto& f : changes["data"]["files"]) {
    if (f.contains("path_b64")) changed_b64.insert(f["path_b64"].get<std::string>());
  }
  EXPECT_EQ(changed_b64, b64);

  auto human = Run({"diff", id});
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_EQ(human.out.find('\x1b'), std::string::npos);
  EXPECT_NE(human.out.find("  added: \"ha_config/caf\\351.yaml\" (move aside)\n"),
            std::string::npos)
      << human.out;
  EXPECT_NE(human.out.find("  added: \"ha_config/caf\\350.yaml\" (move aside)\n"),
            std::string::npos);
  EXPECT_NE(human.out.find("  added: \"ha_config/new\\nline.yaml\" (move aside)\n"),
            std::string::npos);
  EXPECT_NE(human.out.find("  added: \"ha_config/esc\\033[31mred.yaml\" (move aside)\n"),
            std::string::npos);

  auto summary = Run({"diff", id, "--patch", "ha_config"});
  ASSERT_EQ(summary.exit_code, 0) << summary.err;
  EXPECT_NE(summary.out.find("+++ \"live/ha_config/new\\nline.yaml\"\n"), std::string::npos)
      << summary.out;
}

// GNU patch is the oracle for the patch's headers: applied to an empty tree, it creates each file
// under its exact name with its exact content.
TEST_F(CliText, PatchOfHostileNamesAppliesWithGnuPatch) {
  const std::string id = BackupId();
  AddHostileNames();
  auto patch = Run({"diff", id, "--patch", "ha_config"});
  ASSERT_EQ(patch.exit_code, 0) << patch.err;
  const std::string tree = dir_.Sub("applied");
  fs::create_directories(tree + "/ha_config");
  auto applied = RunProcess({"/usr/bin/patch", "-s", "-p1", "-d", tree}, patch.out);
  ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
  std::map<std::string, std::string> files;
  for (const auto& e : fs::directory_iterator(tree + "/ha_config")) {
    files[e.path().filename().string()] = ReadFile(e.path().string()).value_or("(unreadable)");
  }
  EXPECT_EQ(files, (std::map<std::string, std::string>{{"caf\xe9.yaml", "e-acute\n"},
                                                       {"caf\xe8.yaml", "e-grave\n"},
                                                       {"new\nline.yaml", "lf\n"},
                                                       {"esc\x1b[31mred.yaml", "esc\n"}}));
}

// A reason is one line of UTF-8 text, as over MQTT; a refused one creates no safety point. A
// manifest written before that rule (or by hand) is still listed on one line, quoted.
TEST_F(CliText, ReasonsAreOneLineOfTextAndListedSafely) {
  for (const std::string bad : {"two\nlines", "esc\x1b[2J", "caf\xe9"}) {
    json j = RunJson({"backup", "--reason", bad}, 2);
    EXPECT_EQ(j["error"]["code"], "bad_input");
  }
  EXPECT_EQ(RunJson({"list"}, 0)["data"], json::array());
  const std::string id = BackupId();
  auto listed = Run({"list"});
  ASSERT_EQ(listed.exit_code, 0);
  EXPECT_NE(listed.out.find(id), std::string::npos);
  EXPECT_EQ(std::count(listed.out.begin(), listed.out.end(), '\n'), 1) << listed.out;
}

TEST_F(CliText, AnUnknownCommandIsNamed) {
  auto r = Run({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err.rfind("safepoint: unknown command 'frobnicate' (commands: backup, list,", 0), 0u)
      << r.err;
  json j = RunJson({"roll-back", "x"}, 2);
  EXPECT_EQ(j["error"]["code"], "bad_input");
  EXPECT_EQ(j["error"]["message"].get<std::string>().rfind("unknown command 'roll-back'", 0), 0u);
  auto nested = Run({"config", "chek"});
  EXPECT_EQ(nested.exit_code, 2);
  EXPECT_EQ(nested.err, "safepoint: unknown command 'config chek' (commands: check; see --help)\n");
  // An option's value is not taken for a command, nor a command's argument.
  EXPECT_EQ(Run({"config", "check"}).exit_code, 0);
  EXPECT_EQ(Run({"show", "frobnicate"}).exit_code, 2);
  EXPECT_NE(Run({"show", "frobnicate"}).err.find("not a safety point id"), std::string::npos);
  EXPECT_EQ(RunSafepoint({"-c", config_, "list"}).exit_code, 0);
}

// Found by a new-user walkthrough: extract with a wrong passphrase made the --to directory.
TEST_F(CliText, AFailedExtractLeavesNoDirectoryBehind) {
  const std::string id = BackupId();
  WriteFile(ha_ + "/secrets.yaml", "backup_encryption_passphrase: another one\n", 0600);
  const std::string out = dir_.Sub("out");
  EXPECT_EQ(Run({"extract", id, "--to", out}).exit_code, 4);
  EXPECT_FALSE(fs::exists(out));
  // A directory that existed stays, as it was.
  fs::create_directories(out);
  EXPECT_EQ(Run({"extract", id, "--to", out}).exit_code, 4);
  EXPECT_TRUE(fs::is_directory(out) && fs::is_empty(out));
}

// Found by a new-user walkthrough: decrypt called a flipped byte "truncated or replaced".
TEST_F(CliText, DecryptTellsADamagedPayloadFromATruncatedOne) {
  const std::string id = BackupId();
  std::string payload;
  for (const auto& e : fs::directory_iterator(backups_ + "/" + id)) {
    if (e.path().filename().string().starts_with("state_")) payload = e.path();
  }
  ASSERT_FALSE(payload.empty());
  std::string bytes = *ReadFile(payload);
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x20);
  WriteFile(payload, bytes, 0600);
  auto d = Run({"decrypt", id});
  EXPECT_EQ(d.exit_code, 5);
  EXPECT_TRUE(d.out.empty());
  EXPECT_NE(d.err.find("the payload is damaged (its size is right"), std::string::npos) << d.err;
  EXPECT_NE(d.err.find("`safepoint verify " + id + "` names the damaged part"), std::string::npos);
  bytes.pop_back();
  WriteFile(payload, bytes, 0600);
  d = Run({"decrypt", id});
  EXPECT_EQ(d.exit_code, 5);
  EXPECT_NE(d.err.find("(truncated or replaced); nothing was written"), std::string::npos) << d.err;
}

}  // namespace
}  // namespace safepoint
