// The safepoint binary as users run it: exit codes, --json output, locking, kill -9, and the
// names and text it did not choose (checked against GNU patch).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "service/lifecycle.h"
#include "tests/testutil/process.h"
#include "tests/testutil/testutil.h"

namespace safepoint {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::WriteSecrets;
using testing::ReadFile;
using testing::RunProcess;
using testing::RunSafepoint;
using testing::TempDir;
using testing::WriteFile;

constexpr const char* kPassphrase = "cli test passphrase 7b1c";

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    ha_ = dir_.Sub("config");
    WriteFile(ha_ + "/configuration.yaml", "homeassistant:\n  name: Test\n");
    WriteFile(ha_ + "/automations.yaml", "- id: '1'\n  alias: lights\n");
    WriteFile(ha_ + "/.storage/core.entity_registry", R"({"version":1,"data":{"entities":[]}})");
    WriteSecrets(ha_ + "/secrets.yaml", kPassphrase);
    WriteFile(ha_ + "/home-assistant.log", "not configuration\n");
    backups_ = dir_.Sub("backups");
    config_ = dir_.Sub("safepoint.yaml");
    WriteConfig("");
  }

  void WriteConfig(const std::string& extra) {
    WriteFile(config_, "paths:\n  ha_config: " + ha_ + "\n  workspace: " + dir_.Sub("ws") +
                           "\n  backup_dir: " + backups_ +
                           "\nencryption:\n  scrypt_work_factor: 15\nsources:\n  logs: []\n" +
                           extra);
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

  TempDir dir_;
  std::string ha_, backups_, config_;
};

TEST_F(Cli, BackupListShowVerifyInJson) {
  json b = RunJson({"backup", "--reason", "before core update"}, 0);
  EXPECT_EQ(b["status"], "ok");
  const std::string id = b["data"]["id"];
  EXPECT_EQ(b["data"]["reason"], "before core update");
  // configuration.yaml, automations.yaml, entity registry, secrets.yaml, environment.json;
  // home-assistant.log is excluded by default.
  EXPECT_EQ(b["data"]["files"], 5);

  json l = RunJson({"list"}, 0);
  ASSERT_EQ(l["data"].size(), 1u);
  EXPECT_EQ(l["data"][0]["id"], id);

  json s = RunJson({"show", id}, 0);
  std::vector<std::string> paths;
  for (const auto& e : s["data"]["entries"]) paths.push_back(e["path"]);
  EXPECT_EQ(std::count(paths.begin(), paths.end(), "ha_config/configuration.yaml"), 1);
  EXPECT_EQ(std::count(paths.begin(), paths.end(), "ha_config/home-assistant.log"), 0);

  json v = RunJson({"verify", id}, 0);
  EXPECT_EQ(v["data"][0]["ok"], true);
  json all = RunJson({"verify", "--all"}, 0);
  EXPECT_EQ(all["data"].size(), 1u);
}

TEST_F(Cli, ExitCodesForBadIdsAndMissingSafetyPoints) {
  auto bad = Run({"show", "../../etc"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("not a safety point id"), std::string::npos);
  json j = RunJson({"verify", "../../etc"}, 2);
  EXPECT_EQ(j["error"]["code"], "bad_input");
  json nf = RunJson({"verify", "2020-01-01_00-00-00"}, 3);
  EXPECT_EQ(nf["error"]["code"], "not_found");
  EXPECT_EQ(Run({"delete", "2020-01-01_00-00-00"}).exit_code, 3);
  EXPECT_EQ(Run({"frobnicate"}).exit_code, 2);
}

// Found by nocrash_test: an argument error (missing id, unknown option) printed nothing on stdout
// with --json, so a script got no JSON document at all.
TEST_F(Cli, ArgumentErrorsAnswerInJsonWithJson) {
  json missing = RunJson({"show"}, 2);
  EXPECT_EQ(missing["status"], "error");
  EXPECT_EQ(missing["error"]["code"], "bad_input");
  EXPECT_NE(missing["error"]["message"].get<std::string>().find("id is required"),
            std::string::npos);
  json unknown = RunJson({"rollback", "2020-01-01_00-00-00", "--bogus"}, 2);
  EXPECT_EQ(unknown["error"]["code"], "bad_input");
  EXPECT_NE(unknown["error"]["message"].get<std::string>().find("--bogus"), std::string::npos);
  // --json after the failing argument counts too; without --json stdout stays empty.
  auto after = RunSafepoint({"show", "--config", config_, "--json"});
  EXPECT_EQ(after.exit_code, 2);
  EXPECT_FALSE(json::parse(after.out, nullptr, false).is_discarded()) << after.out;
  auto plain = Run({"show"});
  EXPECT_EQ(plain.exit_code, 2);
  EXPECT_TRUE(plain.out.empty()) << plain.out;
  EXPECT_NE(plain.err.find("id is required"), std::string::npos) << plain.err;
}

// Found by a test campaign: argument errors printed CLI11's text and "Run with --help for more
// information." instead of the one line `safepoint: <message>` every other failure prints.
TEST_F(Cli, EveryArgumentErrorIsOneSafepointLineOnStderr) {
  const std::string id = "2026-01-01_00-00-00";
  const struct {
    std::vector<std::string> args;
    std::string err;
  } cases[] = {
      {{"--config", config_, "list", "--bogus"},
       "safepoint: The following argument was not expected: --bogus (see --help)\n"},
      {{"--config", config_, "show"}, "safepoint: id is required (see --help)\n"},
      {{"--config", config_, "backup", "--reason"},
       "safepoint: --reason: 1 required TEXT missing (see --help)\n"},
      {{"--config", config_, "rollback", id, "--on-conflict", "abort", "--on-conflict", "merge"},
       "safepoint: --on-conflict: At Most 1 required but received 2 (see --help)\n"},
      {{"--config", config_, "extract", id}, "safepoint: --to is required (see --help)\n"},
      {{"--config", config_, "--config", config_, "list"},
       "safepoint: --config: At Most 1 required but received 2 (see --help)\n"},
      {{"--config", config_, "config"}, "safepoint: A subcommand is required (see --help)\n"},
      {{"--config", config_, "list", "--bo\ngus"},
       "safepoint: The following argument was not expected: --bo\\ngus (see --help)\n"},
  };
  for (const auto& c : cases) {
    auto r = RunSafepoint(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.err;
    EXPECT_EQ(r.err, c.err);
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
  // --help and --version still print on stdout and exit 0, with nothing on stderr.
  auto help = RunSafepoint({"show", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("show a safety point's manifest"), std::string::npos) << help.out;
  EXPECT_TRUE(help.err.empty()) << help.err;
  auto version = RunSafepoint({"--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.out, "0.1.0\n");
}

// Found by a test campaign: control bytes of a malformed id were printed as '?'; they are
// quoted as names are (docs/cli.md, "Names"), as the other messages do.
TEST_F(Cli, AMalformedIdIsQuotedWithOctalEscapes) {
  auto r = Run({"show", "a\001b\177c\033[31m"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err,
            "safepoint: '\"a\\001b\\177c\\033[31m\"' is not a safety point id (expected "
            "YYYY-MM-DD_HH-MM-SS)\n");
  json j = RunJson({"verify", "x\ny"}, 2);
  EXPECT_EQ(j["error"]["message"],
            "'\"x\\ny\"' is not a safety point id (expected YYYY-MM-DD_HH-MM-SS)");
}

TEST_F(Cli, WrongPassphraseHasItsOwnExitCodeAndLeavesNoOutput) {
  const std::string id = BackupId();
  WriteFile(ha_ + "/secrets.yaml", "backup_encryption_passphrase: another one\n", 0600);
  auto v = Run({"verify", id});
  EXPECT_EQ(v.exit_code, 4);
  EXPECT_NE(v.err.find("wrong passphrase"), std::string::npos) << v.err;
  const std::string out = dir_.Sub("out");
  auto x = Run({"extract", id, "--to", out});
  EXPECT_EQ(x.exit_code, 4);
  EXPECT_FALSE(fs::exists(out));
  auto d = Run({"decrypt", id});
  EXPECT_EQ(d.exit_code, 4);
  EXPECT_TRUE(d.out.empty());
}

// Found by a new-user walkthrough: on a backup dir mounted read-only (the disk of a dead machine,
// at restore time) every reading command failed with `open .lock: Read-only file system`. As
// root the store is bind-mounted read-only in a private mount namespace; otherwise it is made
// unwritable (chmod 0500). With and without a lock file, every reading command answers, and
// the store is left byte for byte as it was.
TEST_F(Cli, ReadingCommandsWorkOnAReadOnlyBackupDir) {
  const std::string id = BackupId();
  WriteFile(ha_ + "/configuration.yaml", "homeassistant:\n  name: Changed\n");
  const bool root = ::geteuid() == 0;
  if (root && RunProcess({"/usr/bin/unshare", "-m", "/bin/true"}).exit_code != 0) {
    GTEST_SKIP() << "root without the right to make a mount namespace (CAP_SYS_ADMIN)";
  }
  const auto run_read_only = [&](const std::vector<std::string>& args) {
    std::vector<std::string> argv = {SAFEPOINT_BINARY, "--config", config_, "--json"};
    argv.insert(argv.end(), args.begin(), args.end());
    if (!root) {
      ::chmod(backups_.c_str(), 0500);
      auto r = RunProcess(argv);
      ::chmod(backups_.c_str(), 0700);
      return r;
    }
    std::vector<std::string> sh = {"/usr/bin/unshare", "-m", "/bin/sh", "-c",
                                   "mount --bind -o ro \"$0\" \"$0\" && exec \"$@\"", backups_};
    sh.insert(sh.end(), argv.begin(), argv.end());
    return RunProcess(sh);
  };
  for (const bool with_lock : {true, false}) {
    if (!with_lock) {
      ASSERT_TRUE(fs::remove(backups_ + "/.lock"));
    }
    const auto before = testing::SnapTree(backups_);
    const std::string out = dir_.Sub(with_lock ? "out-locked" : "out-unlocked");
    for (const std::vector<std::string>& args :
         std::vector<std::vector<std::string>>{{"list"},
                                               {"show", id},
                                               {"verify", id},
                                               {"verify", "--all"},
                                               {"diff", id},
                                               {"diff", id, "--patch"},
                                               {"extract", id, "--to", out}}) {
      auto r = run_read_only(args);
      EXPECT_EQ(r.exit_code, 0) << args[0] << " (lock file: " << with_lock << "): " << r.out
                                << r.err;
      EXPECT_EQ(json::parse(r.out, nullptr, false).value("status", ""), "ok") << r.out;
    }
    EXPECT_EQ(ReadFile(out + "/ha_config/configuration.yaml"), "homeassistant:\n  name: Test\n");
    auto decrypted = run_read_only({"decrypt", id});
    EXPECT_EQ(decrypted.exit_code, 0) << decrypted.err;
    EXPECT_EQ(decrypted.out.substr(0, 4), "\x28\xb5\x2f\xfd");  // a zstd frame
    EXPECT_EQ(testing::SnapTree(backups_), before);
  }
}

// Before: a reader made the backup dir it was pointed at (a mistyped path grew a directory), and
// failed with an io error where it could not (a read-only mount).
TEST_F(Cli, ReadingCommandsDoNotMakeAMissingBackupDir) {
  ASSERT_FALSE(fs::exists(backups_));
  json j = RunJson({"list"}, 0);
  EXPECT_EQ(j["data"], json::array()) << j.dump();
  const std::string id = "2026-12-02_04-00-00";
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"show", id}, {"verify", id}, {"diff", id}, {"extract", id, "--to", dir_.path() + "/x"},
           {"decrypt", id}}) {
    json r = RunJson(args, 3);
    EXPECT_EQ(r["error"]["code"], "not_found") << args[0] << ": " << r.dump();
  }
  EXPECT_FALSE(fs::exists(backups_));
  EXPECT_FALSE(fs::exists(dir_.path() + "/x"));
  // The first writer makes it, 0700.
  ASSERT_EQ(Run({"backup"}).exit_code, 0);
  EXPECT_EQ(fs::status(backups_).permissions(), fs::perms::owner_all);
}

TEST_F(Cli, MissingPassphraseKeyIsBadInputNamingTheKey) {
  WriteFile(ha_ + "/secrets.yaml", "other_secret: hunter2\n", 0600);
  auto r = Run({"backup"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("backup_encryption_passphrase"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("hunter2"), std::string::npos);
  EXPECT_FALSE(fs::exists(backups_) && !fs::is_empty(backups_) &&
               fs::directory_iterator(backups_)->path().filename() != ".lock");
}

TEST_F(Cli, CorruptSafetyPointExitsWithCorrupt) {
  const std::string id = BackupId();
  for (const auto& e : fs::directory_iterator(backups_ + "/" + id)) {
    if (e.path().extension() == ".enc") {
      fs::resize_file(e.path(), fs::file_size(e.path()) - 1);
    }
  }
  json j = RunJson({"verify", id}, 5);
  EXPECT_EQ(j["error"]["code"], "corrupt");
}

// Found by nocrash_test: decrypt of a truncated payload released the chunks that authenticated
// (64 KiB of a tar.zst) before failing, and with --json the error document followed that binary
// on stdout. The payload file is now checked against manifest.json before any plaintext goes out.
TEST_F(Cli, DecryptOfATruncatedPayloadWritesNothing) {
  std::mt19937_64 rng(11);
  std::string noise(300'000, '\0');
  for (auto& c : noise) c = static_cast<char>(rng());
  WriteFile(ha_ + "/www/noise.bin", noise);  // several 64 KiB chunks even after zstd
  const std::string id = BackupId();
  for (const auto& e : fs::directory_iterator(backups_ + "/" + id)) {
    if (e.path().extension() == ".enc") {
      fs::resize_file(e.path(), fs::file_size(e.path()) - 100);
    }
  }
  auto d = Run({"decrypt", id});
  EXPECT_EQ(d.exit_code, 5);
  EXPECT_TRUE(d.out.empty()) << d.out.size() << " bytes on stdout";
  EXPECT_NE(d.err.find("truncated"), std::string::npos) << d.err;
  json j = RunJson({"decrypt", id}, 5);
  EXPECT_EQ(j["error"]["code"], "corrupt");
}

TEST_F(Cli, SecondWriterReportsBusy) {
  ASSERT_EQ(Run({"list"}).exit_code, 0);
  fs::create_directories(backups_);
  int fd = ::open((backups_ + "/.lock").c_str(), O_CREAT | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);
  json j = RunJson({"backup"}, 7);
  EXPECT_EQ(j["error"]["code"], "busy");
  ::close(fd);
  EXPECT_EQ(Run({"backup"}).exit_code, 0);
}

TEST_F(Cli, ConfigCheckPrintsSourcesButNoSecrets) {
  WriteConfig("mqtt:\n  url: mqtt://127.0.0.1:1883\n  password: !secret mqtt_password\n");
  WriteSecrets(ha_ + "/secrets.yaml", kPassphrase, "mqtt_password: s3cr3t-mqtt\n");
  auto r = Run({"config", "check"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("is valid"), std::string::npos);
  EXPECT_EQ(r.out.find(kPassphrase), std::string::npos);
  EXPECT_EQ(r.out.find("s3cr3t-mqtt"), std::string::npos);
  EXPECT_EQ(r.err.find("s3cr3t-mqtt"), std::string::npos);
}

TEST_F(Cli, BadConfigNamesFileLineColumnAndKey) {
  WriteConfig("retention:\n  keep_lots: 3\n");
  auto r = Run({"list"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(config_ + ":"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("keep_lots"), std::string::npos) << r.err;
}

TEST_F(Cli, DecryptWritesAPlainTarZstdWithManifestFirst) {
  const std::string id = BackupId();
  const std::string tarzst = dir_.Sub("payload.tar.zst");
  auto d = Run({"decrypt", id});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  WriteFile(tarzst, d.out);
  auto t = RunProcess({"/bin/sh", "-c", "zstd -dc '" + tarzst + "' | tar -tf -"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_EQ(t.out.substr(0, t.out.find('\n')), "MANIFEST.json");
  EXPECT_NE(t.out.find("ha_config/configuration.yaml\n"), std::string::npos);
}

TEST_F(Cli, StockToolsRestoreALargePayload) {
  // Large enough that the KDF usually ends while the payload is compressed (the first zstd frame
  // written on one thread, the rest in a multi-threaded frame after it); on a slow build it may
  // end before, and there is one frame. Either way stock tools restore it exactly
  // (archive_test pins the two-frame case).
  std::string data;
  std::uint32_t x = 12345;
  for (int f = 0; f < 12; ++f) {
    data.clear();
    for (int i = 0; i < 3'000'000; ++i) {
      x = x * 1103515245u + 12345u;
      data.push_back(static_cast<char>('a' + (x >> 16) % 16));  // compressible, not trivially
    }
    WriteFile(ha_ + "/www/blob" + std::to_string(f) + ".txt", data);
  }
  const std::string id = BackupId();
  const std::string tarzst = dir_.Sub("payload.tar.zst");
  auto d = Run({"decrypt", id});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  WriteFile(tarzst, d.out);
  const std::string out = dir_.Sub("stock");
  std::filesystem::create_directories(out);
  auto t = RunProcess({"/bin/sh", "-c", "zstd -dc '" + tarzst + "' | tar -xf - -C '" + out + "'"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  for (int f = 0; f < 12; ++f) {
    const std::string name = "/www/blob" + std::to_string(f) + ".txt";
    EXPECT_TRUE(ReadFile(out + "/ha_config" + name) == ReadFile(ha_ + name)) << name;
  }
  EXPECT_EQ(Run({"verify", id}).exit_code, 0);
}

TEST_F(Cli, ExtractCopiesSingleFilesExactly) {
  const std::string id = BackupId();
  const std::string out = dir_.Sub("restore");
  auto x = Run({"extract", id, "--to", out, "ha_config/automations.yaml"});
  ASSERT_EQ(x.exit_code, 0) << x.err;
  EXPECT_EQ(ReadFile(out + "/ha_config/automations.yaml"), ReadFile(ha_ + "/automations.yaml"));
  EXPECT_FALSE(fs::exists(out + "/ha_config/configuration.yaml"));
}

// Found by nocrash_test: `extract ID --to ""` failed as an I/O error (exit 9, "mkdir : No such
// file or directory") instead of bad input.
TEST_F(Cli, ExtractToAnEmptyPathIsBadInput) {
  const std::string id = BackupId();
  json j = RunJson({"extract", id, "--to", ""}, 2);
  EXPECT_EQ(j["error"]["code"], "bad_input");
  EXPECT_EQ(j["error"]["message"], "--to needs a directory");
}

// Found by a CLI campaign: a --to under a missing directory exited 9 (mkdir's "No such file or
// directory"). Only DIR itself is made: a missing parent is bad input, exit 2.
TEST_F(Cli, ExtractToADirectoryWhoseParentIsMissingIsBadInput) {
  const std::string id = BackupId();
  const std::string missing = dir_.Sub("no-such-dir");
  json j = RunJson({"extract", id, "--to", missing + "/out"}, 2);
  EXPECT_EQ(j["error"]["code"], "bad_input");
  EXPECT_EQ(j["error"]["message"],
            "--to " + missing + "/out: its parent " + missing +
                " is not an existing directory (only DIR itself is created)");
  EXPECT_FALSE(fs::exists(missing));
}

// The payload a running backup is writing: the path and size of the
// `<backups>/.tmp-<id>/payload.partial` that process `pid` holds open, or std::nullopt while it
// holds none (before the staging dir exists, after the payload was renamed, or once it exited).
std::optional<std::pair<std::string, std::uint64_t>> OpenPartialPayload(
    pid_t pid, const std::string& backups) {
  const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
  std::error_code ec;
  std::optional<std::pair<std::string, std::uint64_t>> found;
  for (fs::directory_iterator it(fd_dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code link_ec;
    const std::string target = fs::read_symlink(it->path(), link_ec).string();
    if (link_ec || !target.starts_with(backups + "/.tmp-") ||
        !target.ends_with("/payload.partial")) {
      continue;
    }
    struct stat st {};
    if (::stat(it->path().c_str(), &st) != 0) continue;
    const auto size = static_cast<std::uint64_t>(st.st_size);
    if (!found || size > found->second) found = std::make_pair(target, size);
  }
  return found;
}

// kill -9 of `safepoint backup` while it writes the payload, at six points from its first bytes
// to well past half of it. Each kill is proven to hit mid-way: the process is stopped while it
// holds its staging payload open with at least that many bytes written, then killed; afterwards
// that partial payload is still on disk, and the visible safety points are exactly the ones from
// before, each whole.
TEST_F(Cli, KillDuringBackupNeverLeavesAPartialSafetyPoint) {
  // Enough data that a backup takes a while: 40 MiB of incompressible files.
  std::mt19937_64 rng(7);
  for (int i = 0; i < 40; ++i) {
    std::string data(1 << 20, '\0');
    for (auto& c : data) c = static_cast<char>(rng());
    WriteFile(ha_ + "/www/blob" + std::to_string(i) + ".bin", data);
  }
  const std::string first = BackupId();
  auto listed_ids = [&] {
    std::set<std::string> ids;
    json l = RunJson({"list"}, 0);
    for (const auto& item : l["data"]) {
      EXPECT_FALSE(item.contains("problem")) << item.dump();
      ids.insert(item.value("id", "?"));
    }
    return ids;
  };
  // Bytes of payload written before the kill: from the first one to 24 of about 40 MiB.
  const std::vector<std::uint64_t> thresholds = {1,       256 << 10, 2 << 20,
                                                 8 << 20, 16 << 20,  24 << 20};
  std::size_t killed_mid_way = 0;
  int attempts = 0;
  while (killed_mid_way < thresholds.size() && attempts < 12) {
    ++attempts;
    const std::uint64_t threshold = thresholds[killed_mid_way];
    const std::set<std::string> before = listed_ids();
    pid_t pid = testing::SpawnProcess({SAFEPOINT_BINARY, "--config", config_, "backup"});
    ASSERT_GT(pid, 0);
    std::optional<std::pair<std::string, std::uint64_t>> partial;
    bool exited = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::chrono::steady_clock::now() < deadline) {
      partial = OpenPartialPayload(pid, backups_);
      if (partial && partial->second >= threshold) {
        ::kill(pid, SIGSTOP);
        // kill() only asks for the stop: wait until every thread has stopped, so that no write
        // is still under way when the size is taken again (CI once saw the payload grow by a
        // write in flight after this check, with the size read before the stop took effect).
        int stop_status = 0;
        if (::waitpid(pid, &stop_status, WUNTRACED) != pid || !WIFSTOPPED(stop_status)) {
          exited = true;  // it ended between the look and the stop
          partial.reset();
          break;
        }
        // Stopped: check again, since it may have moved on between the look and the stop.
        partial = OpenPartialPayload(pid, backups_);
        if (partial && partial->second >= threshold) break;
        partial.reset();
        ::kill(pid, SIGCONT);
      }
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    if (exited) {
      // The backup finished before the kill (a busy machine did not look in time): a whole
      // safety point more, then the same kill again.
      EXPECT_EQ(listed_ids().size(), before.size() + 1);
      continue;
    }
    ASSERT_TRUE(partial) << "no payload of " << threshold << " bytes within 120 s";
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
    ++killed_mid_way;
    const std::string where = "killed with " + std::to_string(partial->second) + " bytes written";
    // Mid-way: the partial payload is on disk in its staging dir, as big as when it was stopped.
    struct stat st {};
    ASSERT_EQ(::stat(partial->first.c_str(), &st), 0) << where << ": " << partial->first;
    EXPECT_EQ(static_cast<std::uint64_t>(st.st_size), partial->second) << where;
    // No partial safety point: exactly the ones from before are visible, and each verifies.
    EXPECT_EQ(listed_ids(), before) << where;
    json v = RunJson({"verify", "--all"}, 0);
    EXPECT_EQ(v["data"].size(), before.size()) << where;
    for (const auto& item : v["data"]) EXPECT_EQ(item["ok"], true) << where << ": " << item.dump();
  }
  EXPECT_EQ(killed_mid_way, thresholds.size()) << "in " << attempts << " attempts";
  std::printf("[ kill -9 ] backup: %zu kills mid-way in %d attempts\n", killed_mid_way, attempts);
  // The next writer cleans the leftovers.
  ASSERT_EQ(Run({"backup"}).exit_code, 0);
  for (const auto& e : fs::directory_iterator(backups_)) {
    EXPECT_FALSE(e.path().filename().string().starts_with(".tmp-")) << e.path();
  }
  json v = RunJson({"verify", first}, 0);
  EXPECT_EQ(v["data"][0]["ok"], true);
}

TEST_F(Cli, DeleteAndPrune) {
  WriteConfig("retention:\n  keep_last: 1\n  keep_daily: 0\n");
  const std::string a = BackupId();
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  // `backup` applies retention itself (issue 9, finding 10) and lists what it deleted.
  const json second = RunJson({"backup", "--reason", "test"}, 0);
  const std::string b = second["data"]["id"].get<std::string>();
  EXPECT_EQ(second["data"]["pruned"], json::array({a}));
  json p = RunJson({"prune"}, 0);
  EXPECT_EQ(p["data"]["deleted"], json::array());
  // Nothing to delete: no safety point was decrypted to find the newest that verifies.
  EXPECT_EQ(p["data"]["protected"], nullptr);
  json d = RunJson({"delete", b}, 0);
  EXPECT_EQ(d["data"]["deleted"], true);
  json l = RunJson({"list"}, 0);
  EXPECT_TRUE(l["data"].empty());
}

// The service's pending update keeps its safety point: a `delete` or `prune` run by hand while
// the update waits for its decision must not take away its way back.
TEST_F(Cli, DeleteAndPruneNeverTakeTheSafetyPointOfTheServicesPendingUpdate) {
  const std::string state_file = dir_.Sub("state.json");
  WriteConfig("retention:\n  keep_last: 1\n  keep_daily: 0\nservice:\n  state_file: " +
              state_file + "\n");
  const std::string pending = BackupId();
  // The service's state file as it is while the update waits for Continue or Cancel.
  service::Lifecycle lifecycle;
  const auto now = std::chrono::system_clock::now();
  (void)lifecycle.OnUpdateRequest({"u1", "core", "2026.1", "2026.2", std::nullopt}, now);
  service::BackupSummary summary;
  summary.backup_id = pending;
  summary.created = now;
  (void)lifecycle.OnBackupDone(summary, now);
  ASSERT_EQ(lifecycle.state(), service::State::kAwaitingConfirmation);
  WriteFile(state_file, service::PersistedStateToJson(lifecycle.Snapshot()).dump());

  json refused = RunJson({"delete", pending}, 7);
  EXPECT_EQ(refused["error"]["code"], "busy");
  EXPECT_NE(refused["error"]["message"].get<std::string>().find("operation in progress"),
            std::string::npos);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  // A newer safety point: retention (keep_last 1) would delete the pending one, and does not.
  const json newer = RunJson({"backup", "--reason", "later"}, 0);
  EXPECT_EQ(newer["data"]["pruned"], json::array());
  EXPECT_EQ(RunJson({"prune"}, 0)["data"]["deleted"], json::array());
  EXPECT_TRUE(fs::is_directory(backups_ + "/" + pending));

  // Once the update is over, both work again.
  WriteFile(state_file, service::PersistedStateToJson(service::Lifecycle().Snapshot()).dump());
  json pruned = RunJson({"prune"}, 0);
  EXPECT_EQ(pruned["data"]["deleted"], json::array({pending}));
}

// ---- Names and text the CLI did not choose; answers to words it does not know ----

// Four files whose names are not plain text: two that differ only in a byte that is not UTF-8,
// one with a line feed, one with a terminal escape sequence.
void AddHostileNames(const std::string& ha) {
  WriteFile(ha + "/caf\xe9.yaml", "e-acute\n");
  WriteFile(ha + "/caf\xe8.yaml", "e-grave\n");
  WriteFile(ha + "/new\nline.yaml", "lf\n");
  WriteFile(ha + "/esc\x1b[31mred.yaml", "esc\n");
}

// Found by a new-user walkthrough: `diff --json` wrote both caf\xe9 and caf\xe8 as "caf\ufffd",
// and the human form printed a line feed and an escape sequence as they are.
TEST_F(Cli, DiffNamesEveryFileExactlyInJsonAndQuotedInText) {
  const std::string id = BackupId();
  AddHostileNames(ha_);

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
TEST_F(Cli, PatchOfHostileNamesAppliesWithGnuPatch) {
  const std::string id = BackupId();
  AddHostileNames(ha_);
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
TEST_F(Cli, ReasonsAreOneLineOfTextAndListedSafely) {
  for (const std::string bad : {"two\nlines", "esc\x1b[2J", "caf\xe9"}) {
    json j = RunJson({"backup", "--reason", bad}, 2);
    EXPECT_EQ(j["error"]["code"], "bad_input");
  }
  // Found by a test campaign: C1 controls (NEL, CSI) and U+2028/U+2029 were accepted.
  for (const std::string bad : {"nel\xc2\x85here", "csi\xc2\x9bhere", "c1\xc2\x80"}) {
    auto r = Run({"backup", "--reason", bad});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(r.err, "safepoint: '--reason' contains a control character\n");
  }
  for (const std::string bad : {"ls\xe2\x80\xa8here", "ps\xe2\x80\xa9here"}) {
    auto r = Run({"backup", "--reason", bad});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(r.err, "safepoint: '--reason' contains a line or paragraph separator\n");
  }
  EXPECT_EQ(RunJson({"list"}, 0)["data"], json::array());
  // A reason that holds a `!secret` value with a quote and a backslash: masked, then quoted.
  const std::string secret = "sec\"ret\\pw";
  json b = RunJson({"backup", "--reason", "note " + secret + " here"}, 0);
  const std::string id = b["data"]["id"];
  WriteConfig("mqtt:\n  url: mqtt://127.0.0.1:1\n  password: !secret mqtt_password\n");
  WriteSecrets(ha_ + "/secrets.yaml", kPassphrase, "mqtt_password: '" + secret + "'\n");
  // A reason written before the rule (by hand here): listed on one line, quoted, not acted on.
  const std::string manifest_path = backups_ + "/" + id + "/manifest.json";
  json manifest = json::parse(*ReadFile(manifest_path));
  manifest["reason"] = "old\nreason \x1b[2J";
  const std::string old_id = "2020-01-01_00-00-00";
  fs::create_directories(backups_ + "/" + old_id);
  manifest["id"] = old_id;
  WriteFile(backups_ + "/" + old_id + "/manifest.json", manifest.dump(), 0600);

  auto listed = Run({"list"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(listed.out.find(secret), std::string::npos) << listed.out;
  EXPECT_EQ(listed.out.find("sec\\\"ret"), std::string::npos) << listed.out;  // nor quoted
  EXPECT_NE(listed.out.find(id), std::string::npos);
  EXPECT_NE(listed.out.find("  note (from !secret mqtt_password) here\n"), std::string::npos)
      << listed.out;
  EXPECT_NE(listed.out.find("  \"old\\nreason \\033[2J\"\n"), std::string::npos) << listed.out;
  EXPECT_EQ(std::count(listed.out.begin(), listed.out.end(), '\n'), 2) << listed.out;
  auto shown = Run({"show", id});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE(shown.out.find("reason:     note (from !secret mqtt_password) here\n"),
            std::string::npos)
      << shown.out;
}

TEST_F(Cli, AnUnknownCommandIsNamed) {
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
TEST_F(Cli, AFailedExtractLeavesNoDirectoryBehind) {
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
TEST_F(Cli, DecryptTellsADamagedPayloadFromATruncatedOne) {
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
  EXPECT_NE(d.err.find("`safepoint verify " + id + "` checks it part by part"), std::string::npos);
  bytes.pop_back();
  WriteFile(payload, bytes, 0600);
  d = Run({"decrypt", id});
  EXPECT_EQ(d.exit_code, 5);
  EXPECT_NE(d.err.find("(truncated or replaced); nothing was written"), std::string::npos) << d.err;
}

}  // namespace
}  // namespace safepoint
