// What an attacker with a copy of the backup dir can search for, searched for: no hash of any
// backed-up file or secrets.yaml line (hex in both cases, base64 or raw), no path or file name,
// no passphrase. A hash at rest would let a passphrase guess be tested with one SHA-256 instead
// of one scrypt run (docs/security.md).
#include <gtest/gtest.h>
#include <sodium.h>
#include <sys/stat.h>

#include <filesystem>
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
using testing::WriteSecrets;
using testing::ReadFile;
using testing::RunSafepoint;
using testing::TempDir;
using testing::WriteFile;

constexpr const char* kPassphrase = "privacy test passphrase 41c9";

std::string RawSha256(std::string_view data) {
  std::string out(crypto_hash_sha256_BYTES, '\0');
  crypto_hash_sha256(reinterpret_cast<unsigned char*>(out.data()),
                     reinterpret_cast<const unsigned char*>(data.data()), data.size());
  return out;
}

// (Indexing `(upper ? kUpper : kLower)[i]` came out wrong under GCC 12's UBSan: every high
// nibble after the first was the first one's, so the search found no hash in the ASan stage.)
std::string Hex(std::string_view raw, bool upper) {
  const char* const digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  std::string out;
  out.reserve(raw.size() * 2);
  for (unsigned char c : raw) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

std::string Base64(std::string_view raw, int variant) {
  std::string out(sodium_base64_encoded_len(raw.size(), variant), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(raw.data()),
                    raw.size(), variant);
  out.resize(std::strlen(out.c_str()));
  return out;
}

// What is searched for, with a label that names it without revealing it.
struct Needle {
  std::string label;
  std::string bytes;
};

void AddHashNeedles(const std::string& label, std::string_view content, std::vector<Needle>& out) {
  const std::string raw = RawSha256(content);
  out.push_back({label + " sha256 raw", raw});
  out.push_back({label + " sha256 hex", Hex(raw, false)});
  out.push_back({label + " sha256 HEX", Hex(raw, true)});
  for (int variant : {sodium_base64_VARIANT_ORIGINAL, sodium_base64_VARIANT_ORIGINAL_NO_PADDING,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING}) {
    out.push_back({label + " sha256 base64", Base64(raw, variant)});
  }
}

// Every needle found in a file's bytes or in a file's name below `root`, as "label in path".
std::vector<std::string> Search(const std::string& root, const std::vector<Needle>& needles) {
  std::vector<std::string> found;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    const std::string rel = e.path().string().substr(root.size());
    std::string content;
    if (e.is_regular_file()) content = ReadFile(e.path().string()).value_or("");
    for (const auto& n : needles) {
      if (n.bytes.empty()) continue;
      if (rel.find(n.bytes) != std::string::npos) found.push_back(n.label + " in the name " + rel);
      if (content.find(n.bytes) != std::string::npos) found.push_back(n.label + " in " + rel);
    }
  }
  return found;
}

// The needles for a home: every file below `ha` and `ws` (content hashes, names, archive paths),
// every line of secrets.yaml (with and without its newline), the passphrase.
std::vector<Needle> NeedlesFor(const std::string& ha, const std::string& ws,
                               const std::string& passphrase) {
  std::vector<Needle> needles;
  needles.push_back({"the passphrase", passphrase});
  for (const auto& [root, archive_root] : {std::pair{ha, "ha_config"}, {ws, "workspace"}}) {
    for (const auto& e : fs::recursive_directory_iterator(root)) {
      const std::string rel = e.path().string().substr(root.size() + 1);
      const std::string archive = std::string(archive_root) + "/" + rel;
      needles.push_back({"path #" + std::to_string(needles.size()), archive});
      needles.push_back({"name #" + std::to_string(needles.size()), rel});
      // "manifest.json" (every custom component has one) is also the name of safepoint's own
      // summary file; its path is still searched for.
      if (e.path().filename() != "manifest.json") {
        needles.push_back(
            {"file name #" + std::to_string(needles.size()), e.path().filename().string()});
      }
      if (e.is_regular_file()) {
        AddHashNeedles("file #" + std::to_string(needles.size()),
                       ReadFile(e.path().string()).value_or(""), needles);
      }
    }
  }
  const std::string secrets = ReadFile(ha + "/secrets.yaml").value_or("");
  std::size_t start = 0;
  int line = 0;
  while (start < secrets.size()) {
    std::size_t end = secrets.find('\n', start);
    end = end == std::string::npos ? secrets.size() : end + 1;
    const std::string with_newline = secrets.substr(start, end - start);
    ++line;
    AddHashNeedles("secrets.yaml line " + std::to_string(line), with_newline, needles);
    if (with_newline.ends_with('\n')) {
      AddHashNeedles("secrets.yaml line " + std::to_string(line) + " without its newline",
                     std::string_view(with_newline).substr(0, with_newline.size() - 1), needles);
    }
    start = end;
  }
  return needles;
}

class Privacy : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GE(sodium_init(), 0);
    ha_ = dir_.Sub("config");
    ws_ = dir_.Sub("ws");
    WriteFile(ha_ + "/configuration.yaml", "homeassistant:\n  name: Villa Kunterbunt\n");
    WriteFile(ha_ + "/automations.yaml", "- id: '1'\n  alias: annika garden camera\n");
    WriteFile(ha_ + "/.storage/core.entity_registry",
              R"({"version":1,"data":{"entities":[{"entity_id":"camera.annika_garden"}]}})");
    WriteFile(ha_ + "/custom_components/frigate_privacy/manifest.json",
              R"({"domain": "frigate_privacy"})");
    // The README's own example: one line, the passphrase.
    WriteSecrets(ha_ + "/secrets.yaml", kPassphrase);
    WriteFile(ws_ + "/MEMORY.md", "remember: annika's birthday\n");
    backups_ = dir_.Sub("backups");
    config_ = dir_.Sub("safepoint.yaml");
    WriteFile(config_, "paths:\n  ha_config: " + ha_ + "\n  workspace: " + ws_ +
                           "\n  backup_dir: " + backups_ +
                           "\nencryption:\n  scrypt_work_factor: 15\nsources:\n  logs: []\n");
  }

  testing::ProcessResult Run(std::vector<std::string> args) {
    args.insert(args.begin(), {"--config", config_});
    return RunSafepoint(args);
  }

  TempDir dir_;
  std::string ha_, ws_, backups_, config_;
};

TEST_F(Privacy, ACopyOfTheBackupDirHoldsNoHashPathOrPassphrase) {
  auto b = Run({"--json", "backup", "--reason", "privacy"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const std::string id = json::parse(b.out)["data"]["id"].get<std::string>();

  std::vector<Needle> needles = NeedlesFor(ha_, ws_, kPassphrase);
  // The generated entries (state, environment) too: their paths and hashes, as `show` lists them.
  auto shown = Run({"--json", "show", id});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  json m = json::parse(shown.out)["data"];
  ASSERT_EQ(m["format"], 2);
  ASSERT_GE(m["entries"].size(), 8u);
  for (const auto& e : m["entries"]) {
    const std::string path = e["path"].get<std::string>();
    if (path.find('/') == std::string::npos) continue;  // a root: ha_config, state, ...
    needles.push_back({"listed path #" + std::to_string(needles.size()), path});
    if (e.contains("sha256")) {
      needles.push_back(
          {"listed hash #" + std::to_string(needles.size()), e["sha256"].get<std::string>()});
    }
  }
  const std::vector<std::string> found = Search(backups_, needles);
  EXPECT_TRUE(found.empty()) << ::testing::PrintToString(found);

  // What stays readable: the summary, and nothing else.
  json outer = json::parse(ReadFile(backups_ + "/" + id + "/manifest.json").value_or("null"));
  std::set<std::string> keys;
  for (const auto& [k, v] : outer.items()) keys.insert(k);
  EXPECT_EQ(keys,
            (std::set<std::string>{"format", "id", "created_at", "created_unix", "reason", "update",
                                   "producer", "encryption", "payload", "index", "summary"}));
  // `list` works without the passphrase; `show` needs it.
  WriteFile(ha_ + "/secrets.yaml", "backup_encryption_passphrase: \"not it\"\n", 0600);
  auto listed = Run({"--json", "list"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(json::parse(listed.out)["data"][0]["id"], id);
  EXPECT_EQ(Run({"show", id}).exit_code, 4);
  EXPECT_EQ(Run({"diff", id}).exit_code, 4);
}

// After an update: the post-update fingerprint and the record of a rollback. The fingerprint is
// keyed, so it names no path and holds no plaintext hash of the trees before or after the update;
// a finished rollback journal keeps no hash either. The journal and the files the rollback moved
// aside still name paths (docs/security.md says so), so only hashes and the passphrase are
// searched for below .rollbacks.
TEST_F(Privacy, FingerprintAndRollbackRecordsHoldNoHashOrPassphrase) {
  auto b = Run({"--json", "backup", "--reason", "before update"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const std::string id = json::parse(b.out)["data"]["id"].get<std::string>();
  std::vector<Needle> needles = NeedlesFor(ha_, ws_, kPassphrase);
  // The update changes a file and adds one.
  WriteFile(ha_ + "/configuration.yaml", "homeassistant:\n  name: Villa Kunterbunt 2\n");
  WriteFile(ha_ + "/custom_components/frigate_privacy/camera_annika.py", "CAMERA = 'annika'\n");
  for (auto& n : NeedlesFor(ha_, ws_, kPassphrase)) needles.push_back(std::move(n));

  auto fp = Run({"--json", "fingerprint", id});
  ASSERT_EQ(fp.exit_code, 0) << fp.err;
  // configuration.yaml, automations.yaml, secrets.yaml, .storage and its file, custom_components,
  // frigate_privacy and its two files.
  EXPECT_EQ(json::parse(fp.out)["data"]["paths"].get<int>(), 9) << fp.out;
  ASSERT_TRUE(fs::exists(backups_ + "/" + id + "/fingerprint.json"));
  std::vector<std::string> found = Search(backups_, needles);
  EXPECT_TRUE(found.empty()) << ::testing::PrintToString(found);

  // The keyed fingerprint still tells the update's changes from a person's: a plan after a
  // hand edit lists exactly that file as a conflict.
  WriteFile(ha_ + "/automations.yaml", "- id: '1'\n  alias: edited by hand\n");
  auto plan = Run({"--json", "diff", id});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  const json planned = json::parse(plan.out)["data"];
  EXPECT_EQ(planned["conflicts"], json::array({"ha_config/automations.yaml"})) << plan.out;
  EXPECT_EQ(planned["summary"]["changed_by_update"], 1) << plan.out;

  auto rb = Run({"--json", "rollback", id, "--yes", "--on-conflict", "overwrite"});
  ASSERT_EQ(rb.exit_code, 0) << rb.err;
  EXPECT_EQ(ReadFile(ha_ + "/configuration.yaml"),
            "homeassistant:\n  name: Villa Kunterbunt\n");
  std::vector<Needle> hashes;
  for (const auto& n : needles) {
    if (n.label.find("sha256") != std::string::npos || n.label == "the passphrase") {
      hashes.push_back(n);
    }
  }
  ASSERT_GT(hashes.size(), 50u);
  ASSERT_TRUE(fs::exists(backups_ + "/.rollbacks"));
  found = Search(backups_, hashes);
  EXPECT_TRUE(found.empty()) << ::testing::PrintToString(found);
}

// The same search finds what format 1 left in its plaintext manifest.json: the hash of the
// one-line secrets.yaml (which tests a passphrase guess with one SHA-256) and the paths.
TEST_F(Privacy, TheSearchFindsWhatFormatOneRevealed) {
  const std::string fixture = std::string(SAFEPOINT_SOURCE_DIR) + "/tests/fixtures/format1";
  const std::string home = fixture + "/home";
  const std::string secrets = ReadFile(home + "/secrets.yaml").value_or("");
  ASSERT_EQ(std::count(secrets.begin(), secrets.end(), '\n'), 1);
  const std::string empty_ws = dir_.Sub("empty_ws");
  fs::create_directories(empty_ws);
  const std::vector<Needle> needles =
      NeedlesFor(home, empty_ws,
                 secrets.substr(secrets.find('"') + 1, secrets.rfind('"') - secrets.find('"') - 1));
  const std::vector<std::string> found = Search(fixture + "/2026-12-02_05-42-13", needles);
  auto has = [&](const std::string& what) {
    return std::any_of(found.begin(), found.end(), [&](const std::string& f) { return f == what; });
  };
  EXPECT_TRUE(has("secrets.yaml line 1 sha256 hex in /manifest.json"))
      << ::testing::PrintToString(found);
  EXPECT_TRUE(std::any_of(found.begin(), found.end(), [](const std::string& f) {
    return f.starts_with("path #") && f.ends_with(" in /manifest.json");
  })) << ::testing::PrintToString(found);
  // The passphrase itself never was at rest.
  EXPECT_FALSE(std::any_of(found.begin(), found.end(),
                           [](const std::string& f) { return f.starts_with("the passphrase"); }));
}

}  // namespace
}  // namespace safepoint
