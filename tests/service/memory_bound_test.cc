// The memory bound at scale (issue "Performance on real data and at scale"): the real binary's
// peak resident memory, as the kernel reports it for the child (wait4's ru_maxrss), stays within
// scrypt's memory plus 64 MiB for every command that reads or writes a whole safety point, on a
// tree of 20,000 files shaped like a real configuration. A regression guard on memory, not a
// timing: the figures at 100,000 files are in docs/performance.md.
//
// Not built under the sanitizers (tests/CMakeLists.txt): their shadow memory and quarantine
// multiply every allocation, so the bound only means something in the plain build.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/format/age.h"
#include "tests/testutil/process.h"
#include "tests/testutil/testutil.h"

namespace safepoint::service {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using safepoint::testing::ProcessResult;
using safepoint::testing::RunSafepoint;
using safepoint::testing::SnapTree;
using safepoint::testing::TempDir;
using safepoint::testing::WriteFile;

constexpr int kWorkFactor = 15;
constexpr std::size_t kFiles = 20000;
// scrypt's memory at the work factor plus 64 MiB, in KiB (ru_maxrss's unit).
constexpr long kBudgetKib =
    static_cast<long>((age::ScryptMemory(kWorkFactor) + (std::uint64_t{64} << 20)) / 1024);

std::string RandomText(std::mt19937_64& rng, std::size_t size, std::string_view alphabet) {
  std::string s(size, ' ');
  std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
  for (auto& c : s) c = alphabet[pick(rng)];
  return s;
}

std::string RandomBytes(std::mt19937_64& rng, std::size_t size) {
  std::string s(size, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// A configuration's mix, `kFiles` files in all: YAML, .storage JSON of several hundred kB,
// incompressible media, custom components, and a HACS www/community tree of small JS files;
// some names in German, French, Chinese and emoji.
void MakeTree(const std::string& root, std::mt19937_64& rng) {
  constexpr std::string_view kJs = "abcdefghijklmnopqrstuvwxyz(){};=.,+-*/ 0123456789\"'\n";
  constexpr std::string_view kYaml = "abcdefghijklmnopqrstuvwxyz_: -\n0123456789";
  const std::vector<std::string> odd = {"küchenlicht", "salle-à-manger", "客厅",
                                        "🏠-home",      "Gäste WC",       "éclairage"};
  std::size_t made = 0;
  auto add = [&](const std::string& rel, const std::string& content) {
    WriteFile(root + "/" + rel, content);
    ++made;
  };
  add("secrets.yaml", "backup_encryption_passphrase: \"memory bound pass\"\n");
  add("configuration.yaml", "homeassistant:\n  name: Home\n");
  for (int i = 0; i < 10; ++i) {
    add(".storage/core.store_" + std::to_string(i),
        "{\"data\": \"" + RandomText(rng, 100000 + 50000 * static_cast<std::size_t>(i), kYaml) +
            "\"}");
  }
  for (int i = 0; i < 200; ++i) {
    add("www/images/" + odd[static_cast<std::size_t>(i) % odd.size()] + "-" + std::to_string(i) +
            ".jpg",
        RandomBytes(rng, 8192 + rng() % 32768));
  }
  for (int i = 0; i < 400; ++i) {
    add("packages/" + std::to_string(i % 20) + "/p" + std::to_string(i) + ".yaml",
        RandomText(rng, 300 + rng() % 2000, kYaml));
  }
  for (int i = 0; i < 2000; ++i) {
    add("custom_components/c" + std::to_string(i % 40) + "/m" + std::to_string(i) + ".py",
        RandomText(rng, 500 + rng() % 2500, kJs));
  }
  for (std::size_t i = 0; made < kFiles; ++i) {
    std::string name =
        (i % 33 == 0 ? odd[i % odd.size()] + "-" : std::string("f")) + std::to_string(i) + ".js";
    add("www/community/card" + std::to_string(i % 60) + "/dist/" + name,
        RandomText(rng, 400 + rng() % 1200, kJs));
  }
}

TEST(MemoryBound, EveryWholePointCommandStaysWithinScryptPlus64MiBAt20kFiles) {
  TempDir dir;
  const std::string ha = dir.Sub("config");
  const std::string config = dir.Sub("safepoint.yaml");
  std::mt19937_64 rng(20000);
  MakeTree(ha, rng);
  WriteFile(config, "paths:\n  ha_config: " + ha + "\n  workspace: " + dir.Sub("ws") +
                        "\n  backup_dir: " + dir.Sub("backups") +
                        "\nencryption:\n  scrypt_work_factor: " + std::to_string(kWorkFactor) +
                        "\nsources:\n  logs: []\n");
  const auto pristine = SnapTree(ha);
  std::size_t files = 0;
  for (const auto& [path, state] : pristine) files += state[0] == 'F' ? 1 : 0;
  ASSERT_EQ(files, kFiles);

  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--config", config, "--json"});
    // The child's peak RSS includes this process's at the spawn: a few MiB of names and hashes.
    ProcessResult r = RunSafepoint(args);
    std::cout << "memory bound: " << args[3] << " peak " << r.max_rss_kib << " KiB of "
              << kBudgetKib << "\n";
    EXPECT_LE(r.max_rss_kib, kBudgetKib)
        << args[3] << ": peak RSS " << r.max_rss_kib << " KiB over the budget of " << kBudgetKib
        << " KiB (scrypt " << age::ScryptMemory(kWorkFactor) / 1024 << " KiB + 64 MiB)";
    // The measurement itself: every command but list runs scrypt, whose memory is resident.
    if (args[3] != "list") {
      EXPECT_GE(r.max_rss_kib, static_cast<long>(age::ScryptMemory(kWorkFactor) / 1024)) << args[3];
    }
    return r;
  };

  ProcessResult r = cli({"backup", "--reason", "memory bound"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string id = json::parse(r.out)["data"]["id"].get<std::string>();
  r = cli({"verify", id});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["data"][0]["ok"], true) << r.out;
  r = cli({"show", id});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = cli({"list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = cli({"extract", id, "--to", dir.Sub("extracted")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(SnapTree(dir.Sub("extracted") + "/ha_config"), pristine);

  // An update: 5 % of the files rewritten, 1 % added, a few removed.
  std::size_t changed = 0;
  std::size_t removed = 0;
  for (const auto& [path, state] : pristine) {
    if (state[0] != 'F' || path == "secrets.yaml") continue;
    if (rng() % 20 == 0) {
      WriteFile(ha + "/" + path, "updated " + std::to_string(changed++));
    } else if (rng() % 200 == 0) {
      fs::remove(ha + "/" + path);
      ++removed;
    }
  }
  for (int i = 0; i < 200; ++i) {
    WriteFile(ha + "/www/community/new/n" + std::to_string(i) + ".js", "new");
  }
  ASSERT_GT(changed, kFiles / 25);
  ASSERT_GT(removed, 0u);

  r = cli({"diff", id, "--on-conflict", "overwrite"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json summary = json::parse(r.out)["data"]["summary"];
  EXPECT_EQ(summary["conflict"], changed) << summary;
  EXPECT_EQ(summary["missing"], removed) << summary;
  EXPECT_EQ(summary["added"], 201) << summary;  // the 200 files and their directory

  r = cli({"rollback", id, "--yes", "--on-conflict", "overwrite"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(SnapTree(ha), pristine);
}

}  // namespace
}  // namespace safepoint::service
