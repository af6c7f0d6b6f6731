// The CLI against hostile inputs (issue 9). Finding 5: a backup dir with something planted where
// a file is expected: a FIFO, a symlink, a directory or a sparse giant as manifest.json, a FIFO
// as the payload. Every command returns promptly with a documented exit code; the healthy safety
// points stay listed. Every run has a timeout, so a regression fails instead of hanging.
// Finding 9: values from `!secret` never printed. Finding 12: a whitespace-only passphrase, a
// link leaving the backed-up tree.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "tests/testutil/process.h"
#include "tests/testutil/testutil.h"

namespace safepoint {
namespace {

using nlohmann::json;
using testing::WriteSecrets;
using testing::RunProcess;
using testing::TempDir;
using testing::WriteFile;

constexpr const char* kPassphrase = "hostile store passphrase 51d0";
// Far above what any of these commands needs at work factor 15; a blocked open() hits it.
constexpr std::chrono::seconds kTimeout{30};
constexpr const char* kDamagedId = "2020-01-01_00-00-00";

class HostileStore : public ::testing::Test {
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
    healthy_.push_back(Backup());
    healthy_.push_back(Backup());
    damaged_dir_ = backups_ + "/" + kDamagedId;
    ASSERT_EQ(::mkdir(damaged_dir_.c_str(), 0700), 0);
  }

  testing::ProcessResult Run(std::vector<std::string> args) {
    args.insert(args.begin(), {SAFEPOINT_BINARY, "--config", config_, "--json"});
    auto r = RunProcess(args, "", {}, kTimeout);
    EXPECT_NE(r.exit_code, -1) << "killed (signal " << r.signal << "): hung or crashed";
    return r;
  }

  json RunJson(std::vector<std::string> args, int expected_exit) {
    auto r = Run(std::move(args));
    EXPECT_EQ(r.exit_code, expected_exit) << r.out << r.err;
    json j = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j;
  }

  std::string Backup() {
    json j = RunJson({"backup"}, 0);
    return j["data"]["id"].get<std::string>();
  }

  std::string Manifest() const { return damaged_dir_ + "/manifest.json"; }

  // list: exit 0; the healthy ones listed in full, the damaged one with `problem`.
  void ExpectListed(const std::string& problem) {
    json l = RunJson({"list"}, 0);
    ASSERT_EQ(l["data"].size(), 3u) << l;
    EXPECT_EQ(l["data"][0]["id"], kDamagedId);
    EXPECT_EQ(l["data"][0]["problem"], problem);
    EXPECT_EQ(l["data"][1]["id"], healthy_[0]);
    EXPECT_EQ(l["data"][1]["files"], 3);  // configuration.yaml, secrets.yaml, environment.json
    EXPECT_EQ(l["data"][2]["id"], healthy_[1]);
    EXPECT_EQ(l["data"][2]["files"], 3);
  }

  // show: exit 5 (corrupt) with the same message.
  void ExpectShowCorrupt(const std::string& problem) {
    json s = RunJson({"show", kDamagedId}, 5);
    EXPECT_EQ(s["error"]["code"], "corrupt");
    EXPECT_EQ(s["error"]["message"], problem);
  }

  // verify --all: exit 5; the damaged one fails with the message, the healthy ones verify.
  void ExpectVerifyAll(const std::string& bad_id, const std::string& problem) {
    json v = RunJson({"verify", "--all"}, 5);
    EXPECT_EQ(v["error"]["code"], "corrupt");
    ASSERT_EQ(v["data"].size(), 3u) << v;
    int ok = 0;
    for (const auto& r : v["data"]) {
      if (r["id"] == bad_id) {
        EXPECT_EQ(r["ok"], false);
        EXPECT_EQ(r["error"], "corrupt");
        EXPECT_EQ(r["message"], problem);
      } else {
        EXPECT_EQ(r["ok"], true) << r;
        ++ok;
      }
    }
    EXPECT_EQ(ok, 2);
  }

  // prune with the default retention: exit 0, nothing deleted, so nothing decrypted either
  // (`protected` is null).
  void ExpectPruneKeepsAll() {
    json p = RunJson({"prune"}, 0);
    EXPECT_EQ(p["data"]["deleted"].size(), 0u) << p;
    EXPECT_EQ(p["data"]["kept"].size(), 3u) << p;
    EXPECT_EQ(p["data"]["protected"], nullptr) << p;
  }

  void ExpectAllPrompt(const std::string& problem) {
    ExpectListed(problem);
    ExpectShowCorrupt(problem);
    ExpectVerifyAll(kDamagedId, problem);
    ExpectPruneKeepsAll();
  }

  std::string Problem(const std::string& what) const {
    return std::string("safety point ") + kDamagedId + ": " + Manifest() + what;
  }

  TempDir dir_;
  std::string ha_, backups_, config_, damaged_dir_;
  std::vector<std::string> healthy_;
};

TEST_F(HostileStore, FifoAsManifestIsListedAsDamagedNeverWaitedOn) {
  ASSERT_EQ(::mkfifo(Manifest().c_str(), 0600), 0);
  ExpectAllPrompt(Problem(" is a FIFO, not a regular file; not read"));
}

TEST_F(HostileStore, SymlinkAsManifestIsNotFollowed) {
  // Points at a healthy manifest: following it would even "work", for the wrong id.
  ASSERT_EQ(
      ::symlink((backups_ + "/" + healthy_[0] + "/manifest.json").c_str(), Manifest().c_str()), 0);
  ExpectAllPrompt(Problem(" is a symlink, not a regular file; not followed"));
}

TEST_F(HostileStore, DirectoryAsManifestIsListedAsDamaged) {
  ASSERT_EQ(::mkdir(Manifest().c_str(), 0700), 0);
  ExpectAllPrompt(Problem(" is a directory, not a regular file; not read"));
}

TEST_F(HostileStore, HugeSparseManifestIsRefusedUnread) {
  WriteFile(Manifest(), "{}");
  ASSERT_EQ(::truncate(Manifest().c_str(), 16ll << 30), 0);  // 16 GiB, sparse
  ExpectAllPrompt(Problem(": too large (17179869184 bytes, at most 67108864 expected)"));
}

TEST_F(HostileStore, FifoAsPayloadFailsVerifyOfThatSafetyPointOnly) {
  ASSERT_EQ(::rmdir(damaged_dir_.c_str()), 0);
  // The older healthy one gets a FIFO in place of its payload.
  const std::string id = healthy_[0];
  std::string payload;
  for (const auto& e : std::filesystem::directory_iterator(backups_ + "/" + id)) {
    if (e.path().extension() == ".enc") payload = e.path().string();
  }
  ASSERT_FALSE(payload.empty());
  ASSERT_EQ(::unlink(payload.c_str()), 0);
  ASSERT_EQ(::mkfifo(payload.c_str(), 0600), 0);
  const std::string problem =
      "safety point " + id + ": " + payload + " is a FIFO, not a regular file; not read";

  json l = RunJson({"list"}, 0);
  ASSERT_EQ(l["data"].size(), 2u) << l;
  EXPECT_EQ(l["data"][0]["id"], id);
  EXPECT_EQ(l["data"][1]["id"], healthy_[1]);

  json v = RunJson({"verify", "--all"}, 5);
  ASSERT_EQ(v["data"].size(), 2u) << v;
  EXPECT_EQ(v["data"][0]["ok"], false);
  EXPECT_EQ(v["data"][0]["message"], problem);
  EXPECT_EQ(v["data"][1]["ok"], true);

  json one = RunJson({"verify", id}, 5);
  EXPECT_EQ(one["error"]["message"], problem);

  auto x = Run({"extract", id, "--to", dir_.Sub("out")});
  EXPECT_EQ(x.exit_code, 5) << x.err;

  json p = RunJson({"prune"}, 0);
  EXPECT_EQ(p["data"]["deleted"].size(), 0u) << p;
  EXPECT_EQ(p["data"]["protected"], nullptr) << p;
}

TEST_F(HostileStore, PruneDeletesADamagedSafetyPointOutsideRetentionWithoutOpeningIt) {
  ASSERT_EQ(::mkfifo(Manifest().c_str(), 0600), 0);
  WriteFile(config_, "paths:\n  ha_config: " + ha_ + "\n  workspace: " + dir_.Sub("ws") +
                         "\n  backup_dir: " + backups_ +
                         "\nencryption:\n  scrypt_work_factor: 15\nsources:\n  logs: []\n"
                         "retention:\n  keep_last: 2\n  keep_daily: 1\n");
  json p = RunJson({"prune"}, 0);
  EXPECT_EQ(p["data"]["deleted"], json::array({kDamagedId})) << p;
  EXPECT_EQ(p["data"]["kept"], json::array({healthy_[0], healthy_[1]}));
  struct stat st {};
  EXPECT_NE(::lstat(damaged_dir_.c_str(), &st), 0);
}

TEST_F(HostileStore, FifoAsConfigFileIsBadInputNotAHang) {
  const std::string fifo = dir_.Sub("fifo.yaml");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto r = RunProcess({SAFEPOINT_BINARY, "--config", fifo, "list"}, "", {}, kTimeout);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(fifo + ": cannot read configuration file: " + fifo +
                       " is a FIFO, not a regular file; not read"),
            std::string::npos)
      << r.err;
}

// Finding 12: a link leaving the tree gets exactly one warning, saying it is not backed up, and
// is not in the safety point.
TEST_F(HostileStore, LinkLeavingTheTreeIsWarnedAboutOnceAndNotStored) {
  ASSERT_EQ(::symlink("/etc", (ha_ + "/etc_link").c_str()), 0);
  json b = RunJson({"backup"}, 0);
  const std::string id = b["data"]["id"];
  json s = RunJson({"show", id}, 0);
  const std::string expected =
      "ha_config/etc_link: not backed up: link target leaves the backed-up tree (absolute target "
      "'/etc'; only relative links inside the tree are stored)";
  EXPECT_EQ(s["data"]["warnings"],
            json::array({expected, "workspace " + dir_.Sub("ws") +
                                       " does not exist; nothing backed up from it"}));
  for (const auto& e : s["data"]["entries"]) EXPECT_NE(e["path"], "ha_config/etc_link");

  auto text = RunProcess({SAFEPOINT_BINARY, "--config", config_, "backup"}, "", {}, kTimeout);
  EXPECT_EQ(text.exit_code, 0) << text.err;
  std::size_t count = 0;
  for (std::size_t at = text.out.find("etc_link"); at != std::string::npos;
       at = text.out.find("etc_link", at + 1)) {
    ++count;
  }
  EXPECT_EQ(count, 1u) << text.out;
  EXPECT_NE(text.out.find("- warning: " + expected + "\n"), std::string::npos) << text.out;
}

// Finding 9: a value that came from `!secret` is never printed. Every free-form string key is
// set from its own secret; `config check` (text and --json) shows none of the values.
class SecretValues : public ::testing::Test {
 protected:
  void SetUp() override {
    ha_ = dir_.Sub("config");
    WriteFile(ha_ + "/configuration.yaml", "homeassistant:\n  name: Test\n");
    for (const char* f : {"secret-ca-l2.pem", "secret-cert-m3.pem", "secret-key-n4.pem"}) {
      WriteFile(dir_.Sub(f), "-----BEGIN CERTIFICATE-----\n", 0600);
    }
    secrets_ = {
        {"s_url", "mqtts://secret-host-a1.invalid:8883"},
        {"s_client", "secret-client-b2"},
        {"s_user", "secret-user-c3"},
        {"s_pass", "secret-pass-d4"},
        {"s_base", "secret-base-e5"},
        {"s_disc", "secret-disc-f6"},
        {"s_node", "secret-node-g7"},
        {"s_z2m", "secret-z2m-h8"},
        {"s_filter", "secret-filter-i9/#"},
        {"s_exclude", "secret-exclude-j0/#"},
        {"s_ca", dir_.Sub("secret-ca-l2.pem")},
        {"s_cert", dir_.Sub("secret-cert-m3.pem")},
        {"s_key", dir_.Sub("secret-key-n4.pem")},
        {"s_restart", "secret-restart-o5"},
        {"s_cmd", "secret-cmd-p6"},
        {"s_log", dir_.Sub("secret-log-q7.log")},
        {"s_state", dir_.Sub("secret-state-r8.json")},
        {"s_include", "secret-glob-s9/**"},
        {"s_ws_exclude", "secret-glob-t0/**"},
        {"s_var", "SECRET_VAR_U1"},
        {"s_site", dir_.Sub("secret-site-v2")},
    };
    std::string secrets = std::string("backup_encryption_passphrase: \"") + kPassphrase + "\"\n";
    for (const auto& [k, v] : secrets_) secrets += k + ": \"" + v + "\"\n";
    WriteFile(ha_ + "/secrets.yaml", secrets, 0600);
    config_ = dir_.Sub("safepoint.yaml");
  }

  void WriteConfig(const std::string& mqtt_extra) {
    WriteFile(config_,
              "paths:\n  ha_config: " + ha_ + "\n  workspace: " + dir_.Sub("ws") +
                  "\n  backup_dir: " + dir_.Sub("backups") +
                  "\nencryption:\n  scrypt_work_factor: 15\n"
                  "sources:\n"
                  "  ha_config:\n    include: [!secret s_include, '**']\n"
                  "    exclude: [!secret s_ws_exclude]\n"
                  "  environment:\n    variables: [!secret s_var]\n"
                  "    python_site_packages: [!secret s_site]\n"
                  "  logs:\n    - path: !secret s_log\n"
                  "restart:\n  - name: !secret s_restart\n    command: [!secret s_cmd, restart]\n"
                  "service:\n  state_file: !secret s_state\n"
                  "mqtt:\n  url: !secret s_url\n" +
                  mqtt_extra +
                  "  username: !secret s_user\n  password: !secret s_pass\n"
                  "  base_topic: !secret s_base\n  discovery_prefix: !secret s_disc\n"
                  "  node_id: !secret s_node\n  zigbee2mqtt_base_topic: !secret s_z2m\n"
                  "  mirror:\n    filters: [!secret s_filter]\n    exclude: [!secret s_exclude]\n"
                  "  tls:\n    ca_file: !secret s_ca\n    cert_file: !secret s_cert\n"
                  "    key_file: !secret s_key\n");
  }

  testing::ProcessResult Run(std::vector<std::string> args) {
    args.insert(args.begin(), {SAFEPOINT_BINARY, "--config", config_});
    auto r = RunProcess(args, "", {}, kTimeout);
    EXPECT_NE(r.exit_code, -1) << "killed (signal " << r.signal << ")";
    return r;
  }

  void ExpectNoSecretIn(const testing::ProcessResult& r) {
    for (const auto& [k, v] : secrets_) {
      EXPECT_EQ(r.out.find(v), std::string::npos) << k << " in stdout:\n" << r.out;
      EXPECT_EQ(r.err.find(v), std::string::npos) << k << " in stderr:\n" << r.err;
    }
    EXPECT_EQ(r.out.find(kPassphrase), std::string::npos) << r.out;
    EXPECT_EQ(r.err.find(kPassphrase), std::string::npos) << r.err;
  }

  TempDir dir_;
  std::string ha_, config_;
  std::vector<std::pair<std::string, std::string>> secrets_;
};

TEST_F(SecretValues, ConfigCheckNeverPrintsAValueFromSecret) {
  WriteConfig("  client_id: !secret s_client\n");
  auto text = Run({"config", "check"});
  EXPECT_EQ(text.exit_code, 0) << text.err;
  ExpectNoSecretIn(text);
  EXPECT_NE(text.out.find("\"client_id\": \"(from !secret s_client)\""), std::string::npos)
      << text.out;

  auto js = Run({"--json", "config", "check"});
  EXPECT_EQ(js.exit_code, 0) << js.err;
  ExpectNoSecretIn(js);
  json j = json::parse(js.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << js.out;
  const json& mqtt = j["data"]["config"]["mqtt"];
  EXPECT_EQ(mqtt["url"], "(from !secret s_url)");
  EXPECT_EQ(mqtt["client_id"], "(from !secret s_client)");
  EXPECT_EQ(mqtt["username"], "(from !secret s_user)");
  EXPECT_EQ(mqtt["password"], "<set>");
  EXPECT_EQ(mqtt["base_topic"], "(from !secret s_base)");
  EXPECT_EQ(mqtt["node_id"], "(from !secret s_node)");
  EXPECT_EQ(mqtt["tls"]["ca_file"], "(from !secret s_ca)");
  EXPECT_EQ(mqtt["mirror"]["filters"], json::array({"(from !secret s_filter)"}));
  EXPECT_EQ(j["data"]["config"]["restart"][0]["name"], "(from !secret s_restart)");
  EXPECT_EQ(j["data"]["config"]["restart"][0]["command"],
            json::array({"(from !secret s_cmd)", "restart"}));
  EXPECT_EQ(j["data"]["config"]["service"]["state_file"], "(from !secret s_state)");
  EXPECT_EQ(j["data"]["config"]["sources"]["logs"][0]["path"], "(from !secret s_log)");
}

TEST_F(SecretValues, ThePassphraseMayNotBeUsedForAnotherSetting) {
  // The finding's reproduction: it printed the passphrase (and would send it to the broker).
  WriteConfig("  client_id: !secret backup_encryption_passphrase\n");
  auto r = Run({"config", "check"});
  EXPECT_EQ(r.exit_code, 2);
  ExpectNoSecretIn(r);
  EXPECT_NE(r.err.find("key 'mqtt.client_id': !secret backup_encryption_passphrase is the backup "
                       "passphrase; it only encrypts safety points and may not be used for "
                       "another setting"),
            std::string::npos)
      << r.err;
}

TEST_F(SecretValues, ErrorsAboutAValueFromSecretDoNotShowIt) {
  secrets_.emplace_back("s_badglob", "../secret-glob-w3");
  std::string secrets =
      *testing::ReadFile(ha_ + "/secrets.yaml") + "s_badglob: ../secret-glob-w3\n";
  WriteFile(ha_ + "/secrets.yaml", secrets, 0600);
  WriteFile(config_, "paths:\n  ha_config: " + ha_ + "\n  workspace: " + dir_.Sub("ws") +
                         "\n  backup_dir: " + dir_.Sub("backups") +
                         "\nsources:\n  workspace:\n    include: [!secret s_badglob]\n");
  auto r = Run({"config", "check"});
  EXPECT_EQ(r.exit_code, 2);
  ExpectNoSecretIn(r);
  EXPECT_NE(r.err.find("key 'sources.workspace.include[0]': bad glob (value from !secret)"),
            std::string::npos)
      << r.err;
}

// Finding 12: a whitespace-only passphrase is bad input (exit 2), and nothing is written.
TEST_F(HostileStore, WhitespaceOnlyPassphraseIsRejectedWithExitTwo) {
  WriteFile(ha_ + "/secrets.yaml", "backup_encryption_passphrase: \" \\t  \"\n", 0600);
  auto before = std::distance(std::filesystem::directory_iterator(backups_),
                              std::filesystem::directory_iterator());
  auto r = Run({"backup"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("safepoint: " + ha_ +
                       "/secrets.yaml:1:31: key 'backup_encryption_passphrase': the backup "
                       "passphrase is only whitespace; choose one with visible characters"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(backups_),
                          std::filesystem::directory_iterator()),
            before);
  EXPECT_EQ(Run({"config", "check"}).exit_code, 2);
}

}  // namespace
}  // namespace safepoint
