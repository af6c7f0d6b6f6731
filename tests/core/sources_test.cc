#include "core/sources/sources.h"

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/base/fs.h"
#include "core/base/time_text.h"
#include "core/sources/entities.h"
#include "core/sources/snapshot.h"
#include "core/store/store.h"
#include "tests/testutil/testutil.h"

namespace safepoint::sources {
namespace {

using safepoint::testing::TempDir;
using safepoint::testing::WriteFile;
namespace fs = std::filesystem;

// A config over temp roots, as LoadConfig would resolve it.
config::Config MakeConfig(const TempDir& dir) {
  fs::create_directories(dir.Sub("ha"));
  WriteFile(dir.Sub("safepoint.yaml"), "paths: {ha_config: ha}\n");
  auto c = config::LoadConfig(dir.Sub("safepoint.yaml"));
  EXPECT_TRUE(c) << c.error().message;
  return c ? std::move(*c) : config::Config{};
}

std::vector<std::string> Paths(const Collection& c) {
  std::vector<std::string> out;
  for (const SourceEntry& e : c.entries) out.push_back(e.archive_path);
  return out;
}

const SourceEntry* Find(const Collection& c, const std::string& archive_path) {
  for (const SourceEntry& e : c.entries) {
    if (e.archive_path == archive_path) return &e;
  }
  return nullptr;
}

TEST(CollectFiles, AppliesDefaultExcludesAndWorkspaceGlobs) {
  TempDir dir;
  const config::Config cfg = MakeConfig(dir);
  const std::string ha = dir.Sub("ha");
  WriteFile(ha + "/configuration.yaml", "homeassistant:\n");
  WriteFile(ha + "/secrets.yaml", "x: y\n");
  WriteFile(ha + "/.storage/core.config_entries", "{}");
  WriteFile(ha + "/custom_components/foo/__init__.py", "");
  WriteFile(ha + "/custom_components/foo/__pycache__/x.pyc", "");
  WriteFile(ha + "/home-assistant_v2.db", "db");
  WriteFile(ha + "/home-assistant_v2.db-wal", "wal");
  WriteFile(ha + "/home-assistant.log", "log");
  WriteFile(ha + "/home-assistant.log.1", "log");
  WriteFile(ha + "/custom_components/foo/debug.log", "log");
  WriteFile(ha + "/backups/abc.tar", "tar");
  WriteFile(ha + "/tts/x.mp3", "mp3");
  WriteFile(ha + "/deps/lib.py", "");
  WriteFile(ha + "/.cache/x", "");
  const std::string ws = ha + "/.openclaw/workspace";
  WriteFile(ws + "/memory/a.md", "a");
  WriteFile(ws + "/memory/b.txt", "b");
  WriteFile(ws + "/memory/sub/c.md", "c");
  WriteFile(ws + "/agenda.md", "agenda");
  WriteFile(ws + "/other.md", "other");
  WriteFile(ws + "/sessions/2024/s1.md", "s1");
  fs::create_directories(ws + "/sessions/empty");
  WriteFile(ws + "/backup/safety_point/2024-01-01_00-00-00/manifest.json", "{}");
  fs::create_directories(ha + "/www/empty");

  auto c = CollectFiles(cfg);
  ASSERT_TRUE(c) << c.error().message;
  const std::vector<std::string> expected = {
      "ha_config/.openclaw",
      "ha_config/.storage",
      "ha_config/.storage/core.config_entries",
      "ha_config/configuration.yaml",
      "ha_config/custom_components",
      "ha_config/custom_components/foo",
      "ha_config/custom_components/foo/__init__.py",
      "ha_config/secrets.yaml",
      "ha_config/www",
      "ha_config/www/empty",
      "workspace/agenda.md",
      "workspace/memory/a.md",
      "workspace/sessions",
      "workspace/sessions/2024",
      "workspace/sessions/2024/s1.md",
      "workspace/sessions/empty",
  };
  EXPECT_EQ(Paths(*c), expected);
  EXPECT_TRUE(c->warnings.empty()) << c->warnings.front();
  const SourceEntry* e = Find(*c, "ha_config/configuration.yaml");
  ASSERT_NE(e, nullptr);
  // The backup reads each entry from its root joined with the rest of its archive path; no
  // entry of the walk keeps a path of its own.
  auto request = snapshot::Collect(cfg, std::nullopt);
  ASSERT_TRUE(request) << request.error().message;
  std::map<std::string, std::string> read_from;
  for (const auto& in : request->entries) {
    if (in.content) continue;
    EXPECT_EQ(in.abs_path, "") << in.header.path;
    read_from[in.header.path] = store::SourcePath(*request, in);
  }
  EXPECT_EQ(read_from.size(), expected.size());
  EXPECT_EQ(read_from["ha_config/configuration.yaml"], ha + "/configuration.yaml");
  EXPECT_EQ(read_from["workspace/sessions/empty"], ws + "/sessions/empty");
  EXPECT_EQ(read_from["workspace/sessions/2024/s1.md"], ws + "/sessions/2024/s1.md");
  EXPECT_EQ(e->kind, SourceEntry::Kind::kFile);
  EXPECT_EQ(e->size, 15u);
  EXPECT_EQ(e->mode, 0644u);
  EXPECT_EQ(e->uid, ::getuid());
  const SourceEntry* empty = Find(*c, "workspace/sessions/empty");
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(empty->kind, SourceEntry::Kind::kDirectory);
}

TEST(CollectFiles, AppliesUserIncludeAndExclude) {
  TempDir dir;
  config::Config cfg = MakeConfig(dir);
  const std::string ha = dir.Sub("ha");
  cfg.sources.ha_config.include = {"*.yaml", "packages/**"};
  cfg.sources.ha_config.exclude = {"packages/old/**", "secrets.yaml"};
  WriteFile(ha + "/configuration.yaml", "c");
  WriteFile(ha + "/secrets.yaml", "s");
  WriteFile(ha + "/notes.txt", "n");
  WriteFile(ha + "/packages/a.yaml", "a");
  WriteFile(ha + "/packages/old/b.yaml", "b");
  WriteFile(ha + "/sub/x.yaml", "x");
  auto c = CollectFiles(cfg);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(Paths(*c),
            (std::vector<std::string>{"ha_config/configuration.yaml", "ha_config/packages",
                                      "ha_config/packages/a.yaml"}));
  // The workspace does not exist in this tree.
  EXPECT_EQ(c->warnings, std::vector<std::string>{"workspace " + ha +
                                                  "/.openclaw/workspace does not exist; nothing "
                                                  "backed up from it"});
}

TEST(CollectFiles, StoresSymlinksAsLinksAndNeverFollowsThem) {
  TempDir dir;
  const config::Config cfg = MakeConfig(dir);
  const std::string ha = dir.Sub("ha");
  WriteFile(ha + "/real.yaml", "r");
  fs::create_directories(ha + "/sub");
  fs::create_symlink("real.yaml", ha + "/inside_link");
  fs::create_symlink("../real.yaml", ha + "/sub/up_inside");
  fs::create_directories(ha + "/.openclaw/workspace");
  auto c = CollectFiles(cfg);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(Paths(*c), (std::vector<std::string>{"ha_config/.openclaw", "ha_config/inside_link",
                                                 "ha_config/real.yaml", "ha_config/sub",
                                                 "ha_config/sub/up_inside"}));
  const SourceEntry* inside = Find(*c, "ha_config/inside_link");
  ASSERT_NE(inside, nullptr);
  EXPECT_EQ(inside->kind, SourceEntry::Kind::kSymlink);
  EXPECT_EQ(inside->link_target, "real.yaml");
  const SourceEntry* up = Find(*c, "ha_config/sub/up_inside");
  ASSERT_NE(up, nullptr);
  EXPECT_EQ(up->link_target, "../real.yaml");
  EXPECT_TRUE(c->warnings.empty());
}

// Issue 9, finding 12: a link leaving the tree got "stored as a link" from here and "skipped"
// from the snapshot, and the docs said it was stored. It is not backed up, with one warning.
TEST(CollectFiles, LinksLeavingTheTreeAreNotBackedUpWithOneWarningEach) {
  TempDir dir;
  const config::Config cfg = MakeConfig(dir);
  const std::string ha = dir.Sub("ha");
  WriteFile(ha + "/real.yaml", "r");
  fs::create_symlink("/etc", ha + "/etc_link");
  fs::create_symlink(ha + "/real.yaml", ha + "/absolute_inside");
  fs::create_symlink("../../outside", ha + "/up_link");
  fs::create_symlink("/nonexistent/dangling", ha + "/dangling");
  fs::create_directories(ha + "/.openclaw/workspace");
  auto c = CollectFiles(cfg);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(Paths(*c), (std::vector<std::string>{"ha_config/.openclaw", "ha_config/real.yaml"}));
  for (const SourceEntry& e : c->entries) {
    EXPECT_TRUE(e.archive_path.starts_with("ha_config/")) << e.archive_path;
    EXPECT_EQ(e.archive_path.find("passwd"), std::string::npos);
  }
  const std::string absolute = "; only relative links inside the tree are stored)";
  EXPECT_EQ(c->warnings,
            (std::vector<std::string>{
                "ha_config/absolute_inside: not backed up: link target leaves the backed-up tree "
                "(absolute target '" +
                    ha + "/real.yaml'" + absolute,
                "ha_config/dangling: not backed up: link target leaves the backed-up tree "
                "(absolute target '/nonexistent/dangling'" +
                    absolute,
                "ha_config/etc_link: not backed up: link target leaves the backed-up tree "
                "(absolute target '/etc'" +
                    absolute,
                "ha_config/up_link: not backed up: link target leaves the backed-up tree "
                "('../../outside')"}));
}

// A warning names the file it skipped exactly and on one line: a name that is not plain text
// is quoted (QuoteName), not replaced by '?' (two such names were indistinguishable).
TEST(CollectFiles, WarningsQuoteNamesThatAreNotPlainText) {
  TempDir dir;
  config::Config cfg = MakeConfig(dir);
  const std::string ha = dir.Sub("ha");
  fs::create_directories(ha + "/.openclaw/workspace");
  ASSERT_EQ(::mkfifo((ha + "/pi\npe\xe9").c_str(), 0600), 0);
  ASSERT_EQ(::mkfifo((ha + "/pipe\xe8").c_str(), 0600), 0);
  fs::create_symlink("/x\x1b[2J\xff\nY", ha + "/lnk");
  auto c = CollectFiles(cfg);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->warnings,
            (std::vector<std::string>{
                "ha_config/lnk: not backed up: link target leaves the backed-up tree (absolute "
                "target '\"/x\\033[2J\\377\\nY\"'; only relative links inside the tree are "
                "stored)",
                "\"ha_config/pi\\npe\\351\": skipped, fifo (only files, directories and symlinks "
                "are backed up)",
                "\"ha_config/pipe\\350\": skipped, fifo (only files, directories and symlinks are "
                "backed up)"}));
}

TEST(CollectFiles, SkipsSpecialFilesAndBigFilesWithWarnings) {
  TempDir dir;
  config::Config cfg = MakeConfig(dir);
  const std::string ha = dir.Sub("ha");
  fs::create_directories(ha + "/.openclaw/workspace");
  ASSERT_EQ(::mkfifo((ha + "/pipe").c_str(), 0600), 0);
  WriteFile(ha + "/small.bin", "x");
  // Sparse: 60 MiB apparent size, no disk used.
  {
    const int fd = ::open((ha + "/big.bin").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 60 << 20), 0);
    ::close(fd);
  }
  auto c = CollectFiles(cfg);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(Paths(*c), (std::vector<std::string>{"ha_config/.openclaw", "ha_config/small.bin"}));
  EXPECT_EQ(c->warnings,
            (std::vector<std::string>{
                "ha_config/big.bin: skipped, 62914560 bytes is over "
                "sources.ha_config.max_file_size (52428800 bytes)",
                "ha_config/pipe: skipped, fifo (only files, directories and symlinks are backed "
                "up)"}));

  // Raising the limit takes the file.
  cfg.sources.ha_config.max_file_size = 100 << 20;
  auto again = CollectFiles(cfg);
  ASSERT_TRUE(again) << again.error().message;
  const SourceEntry* big = Find(*again, "ha_config/big.bin");
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(big->size, 60u << 20);
}

TEST(CollectFiles, OrderIsDeterministicAndSortedByByteValue) {
  TempDir dir;
  const config::Config cfg = MakeConfig(dir);
  const std::string ha = dir.Sub("ha");
  fs::create_directories(ha + "/.openclaw/workspace");
  for (const char* name : {"b", "B", "a.txt", "a/z", "a/y", "_x", "a-b"})
    WriteFile(ha + "/" + name, "");
  auto first = CollectFiles(cfg);
  auto second = CollectFiles(cfg);
  ASSERT_TRUE(first && second);
  const std::vector<std::string> expected = {
      "ha_config/.openclaw", "ha_config/B",   "ha_config/_x",    "ha_config/a", "ha_config/a/y",
      "ha_config/a/z",       "ha_config/a-b", "ha_config/a.txt", "ha_config/b"};
  EXPECT_EQ(Paths(*first), expected);
  EXPECT_EQ(Paths(*second), expected);
}

// Files are read without following any symlink on their path (a directory swapped for one after
// the walk must not lead the backup elsewhere), so a root configured through symlinks, its own
// name or a parent's, is read where it resolves to, and every file is still backed up.
TEST(CollectFiles, ARootConfiguredThroughSymlinksIsReadWhereItResolvesTo) {
  TempDir dir;
  const std::string real = dir.Sub("disk/homeassistant");
  WriteFile(real + "/configuration.yaml", "homeassistant:\n");
  WriteFile(real + "/.storage/core.config_entries", "{}");
  fs::create_directory_symlink(dir.Sub("disk"), dir.Sub("mnt"));
  fs::create_directory_symlink(dir.Sub("mnt/homeassistant"), dir.Sub("config"));
  WriteFile(dir.Sub("safepoint.yaml"), "paths: {ha_config: config}\n");
  auto cfg = config::LoadConfig(dir.Sub("safepoint.yaml"));
  ASSERT_TRUE(cfg) << cfg.error().message;
  auto request = snapshot::Collect(*cfg, std::nullopt);
  ASSERT_TRUE(request) << request.error().message;
  const std::string resolved = fs::canonical(real).string();
  std::map<std::string, std::string> read_from;
  for (const auto& in : request->entries) {
    if (!in.content) read_from[in.header.path] = store::SourcePath(*request, in);
  }
  EXPECT_EQ(read_from["ha_config/configuration.yaml"], resolved + "/configuration.yaml");
  EXPECT_EQ(read_from["ha_config/.storage/core.config_entries"],
            resolved + "/.storage/core.config_entries");
  PosixFileSystem files;
  for (const auto& [path, source] : read_from) {
    if (!fs::is_regular_file(fs::symlink_status(source))) continue;
    auto file = files.OpenRead(source);
    EXPECT_TRUE(file) << path << ": " << file.error().message;
  }
  // Through the symlinks, the same open is refused: that is what the resolution is for.
  auto through = files.OpenRead(dir.Sub("config") + "/configuration.yaml");
  ASSERT_FALSE(through);
  EXPECT_EQ(through.error().code, ErrorCode::kCorrupt);
}

TEST(CollectFiles, MissingHaConfigIsBadInput) {
  TempDir dir;
  config::Config cfg = MakeConfig(dir);
  cfg.paths.ha_config = dir.Sub("gone");
  auto c = CollectFiles(cfg);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, ErrorCode::kBadInput);
  EXPECT_EQ(c.error().message,
            "paths.ha_config " + dir.Sub("gone") + ": No such file or directory");
}

// CollectFiles(cfg) run in a child process as user and group nobody (65534) when this process
// is root, since root reads every directory; as another user it runs as that user. Returns
// "<error code>\n<message>" on failure, "ok" on success, or what went wrong in the child.
std::string CollectFilesUnprivileged(const config::Config& cfg) {
  int fds[2];
  if (::pipe(fds) != 0) return "pipe failed";
  const pid_t pid = ::fork();
  if (pid < 0) return "fork failed";
  if (pid == 0) {
    ::close(fds[0]);
    std::string out;
    constexpr uid_t kNobody = 65534;
    if (::geteuid() == 0 &&
        (::setgroups(0, nullptr) != 0 || ::setresgid(kNobody, kNobody, kNobody) != 0 ||
         ::setresuid(kNobody, kNobody, kNobody) != 0)) {
      out = std::string("cannot drop privileges: ") + std::strerror(errno);
    } else if (::geteuid() == 0) {
      out = "still root";
    } else {
      auto c = CollectFiles(cfg);
      out = c ? std::string("ok")
              : std::string(ErrorCodeName(c.error().code)) + "\n" + c.error().message;
    }
    const char* p = out.data();
    std::size_t left = out.size();
    while (left > 0) {
      const ssize_t n = ::write(fds[1], p, left);
      if (n <= 0) break;
      p += n;
      left -= static_cast<std::size_t>(n);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    out += "\n(child status " + std::to_string(status) + ")";
  return out;
}

// Runs as root too (CI does): the collection runs as nobody in a child, for whom the directory
// (owned by root, mode 000) is unreadable.
TEST(CollectFiles, UnreadableDirectoryIsAnErrorNamingIt) {
  TempDir dir;
  const config::Config cfg = MakeConfig(dir);
  const std::string ha = dir.Sub("ha");
  fs::create_directories(ha + "/locked");
  WriteFile(ha + "/configuration.yaml", "homeassistant:\n");
  // Everything but `locked` is readable by nobody: the temp dir is 0700 from mkdtemp.
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  ASSERT_EQ(::chmod(ha.c_str(), 0755), 0);
  ASSERT_EQ(::chmod((ha + "/locked").c_str(), 0), 0);
  const std::string result = CollectFilesUnprivileged(cfg);
  ASSERT_EQ(::chmod((ha + "/locked").c_str(), 0755), 0);
  EXPECT_EQ(result, "io\nopen directory " + ha +
                        "/locked: Permission denied (exclude it in sources.ha_config.exclude if "
                        "it is not needed)");
  // The same collection succeeds once the directory is readable: the error above is that
  // directory's, not the unprivileged user's in general.
  EXPECT_EQ(CollectFilesUnprivileged(cfg), "ok");
}

// Found by a campaign: a path over PATH_MAX failed the whole backup half-way with "File name too
// long" and no hint. The walk goes by descriptors, but files are read and restored by path: the
// first such path is now bad input, named, with the exclude that gets past it.
// Found by a campaign on hostile trees: the depth limit stopped the backup without saying how
// to get past it (the PATH_MAX message does), and the docs did not name it.
TEST(CollectFiles, DirectoriesNestedTooDeepAreBadInputNamingTheExcludeThatGetsPastThem) {
  TempDir dir;
  config::Config cfg = MakeConfig(dir);
  const std::string ha = dir.Sub("ha");
  WriteFile(ha + "/configuration.yaml", "homeassistant:\n");
  std::string deepest = ha + "/n";  // depth 1
  std::string first_too_deep;
  for (int depth = 2; depth <= 258; ++depth) {
    deepest += "/d";
    if (depth == 257) first_too_deep = deepest;
  }
  fs::create_directories(deepest);
  auto c = CollectFiles(cfg);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, ErrorCode::kBadInput);
  EXPECT_EQ(c.error().message,
            first_too_deep +
                ": directories nested deeper than 256 levels cannot be backed up; exclude "
                "it (or a directory above it) in sources.ha_config.exclude");
  cfg.sources.ha_config.exclude = {"n"};
  c = CollectFiles(cfg);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_NE(Find(*c, "ha_config/configuration.yaml"), nullptr);
}

TEST(CollectFiles, APathOverPathMaxIsBadInputNamingItAndAnExcludeGetsPastIt) {
  TempDir dir;
  config::Config cfg = MakeConfig(dir);
  const std::string ha = dir.Sub("ha");
  WriteFile(ha + "/configuration.yaml", "homeassistant:\n");
  // deep/ then 20 levels of 250-byte names, made by descriptor (the paths outgrow PATH_MAX).
  const std::string name(250, 'd');
  int fd = ::open(ha.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::string abs = ha;
  std::string too_long;
  for (int level = 0; level <= 20; ++level) {
    const std::string part = level == 0 ? "deep" : name;
    ASSERT_EQ(::mkdirat(fd, part.c_str(), 0755), 0) << std::strerror(errno);
    const int next = ::openat(fd, part.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ::close(fd);
    ASSERT_GE(next, 0);
    fd = next;
    abs += "/" + part;
    if (too_long.empty() && abs.size() >= PATH_MAX) too_long = abs;
  }
  const int file = ::openat(fd, "automations.yaml", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(file, 0);
  ::close(file);
  ::close(fd);
  ASSERT_FALSE(too_long.empty());
  auto c = CollectFiles(cfg);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, ErrorCode::kBadInput);
  EXPECT_EQ(c.error().message,
            too_long + ": its path is " + std::to_string(too_long.size()) +
                " bytes long, over the " + std::to_string(PATH_MAX - 1) +
                " bytes a path may have on this system, so it cannot be backed up or restored; "
                "exclude it (or a directory above it) in sources.ha_config.exclude, or shorten "
                "its name");
  cfg.sources.ha_config.exclude = {"deep"};
  c = CollectFiles(cfg);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_NE(Find(*c, "ha_config/configuration.yaml"), nullptr);
  EXPECT_EQ(Find(*c, "ha_config/deep"), nullptr);
  // std::filesystem cannot remove what is past PATH_MAX; rm(1) works by descriptor.
  EXPECT_EQ(std::system(("rm -rf '" + ha + "/deep'").c_str()), 0);
}

TEST(CollectFiles, SocketIsSkippedWithWarning) {
  TempDir dir;
  const config::Config cfg = MakeConfig(dir);
  const std::string ha = dir.Sub("ha");
  fs::create_directories(ha + "/.openclaw/workspace");
  const std::string sock_path = ha + "/s.sock";
  sockaddr_un addr{};
  if (sock_path.size() >= sizeof(addr.sun_path)) GTEST_SKIP() << "temp path too long for a socket";
  const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(s, 0);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, sock_path.c_str(), sock_path.size() + 1);
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  auto c = CollectFiles(cfg);
  ::close(s);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->warnings, std::vector<std::string>{
                             "ha_config/s.sock: skipped, socket (only files, directories and "
                             "symlinks are backed up)"});
}

// ---- environment -----------------------------------------------------------------------------

TEST(CaptureEnvironment, RecordsVariablesAndPythonPackages) {
  TempDir dir;
  config::Config cfg = MakeConfig(dir);
  const std::string site = dir.Sub("site-packages");
  WriteFile(site + "/requests-2.31.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nSummary: x\n\nVersion: 9\n");
  WriteFile(site + "/PyYAML-6.0.1.dist-info/METADATA", "Name: PyYAML\r\nVersion: 6.0.1\r\n");
  WriteFile(site + "/no_meta-1.2.dist-info/RECORD", "");
  WriteFile(site + "/legacy-0.9-py3.11.egg-info/PKG-INFO", "Name: legacy\nVersion: 0.9\n");
  WriteFile(site + "/single_file-3.0-py3.11.egg-info", "Name: single-file\nVersion: 3.0\n");
  WriteFile(site + "/not_a_package/__init__.py", "");
  cfg.sources.environment.python_site_packages = {site, dir.Sub("missing-site")};
  cfg.sources.environment.variables = {"SAFEPOINT_TEST_SET", "SAFEPOINT_TEST_UNSET"};
  ::setenv("SAFEPOINT_TEST_SET", "Europe/Berlin", 1);
  ::unsetenv("SAFEPOINT_TEST_UNSET");
  auto env = CaptureEnvironment(cfg);
  ASSERT_TRUE(env) << env.error().message;
  const auto pkg = [&](const char* name, const char* version) {
    return nlohmann::json{{"name", name}, {"version", version}, {"site", site}};
  };
  nlohmann::json expected = nlohmann::json::object();
  expected["variables"] = {{"SAFEPOINT_TEST_SET", "Europe/Berlin"},
                           {"SAFEPOINT_TEST_UNSET", nullptr}};
  expected["python_packages"] =
      nlohmann::json::array({pkg("legacy", "0.9"), pkg("no_meta", "1.2"), pkg("PyYAML", "6.0.1"),
                             pkg("requests", "2.31.0"), pkg("single-file", "3.0")});
  expected["warnings"] = nlohmann::json::array(
      {"python package " + site +
           "/no_meta-1.2.dist-info: no readable metadata; name and version taken from its name",
       "python site-packages " + dir.Sub("missing-site") +
           ": No such file or directory; no packages recorded from it"});
  EXPECT_EQ(*env, expected) << env->dump(2);
}

// ---- log tails -------------------------------------------------------------------------------

class Tail : public ::testing::Test {
 protected:
  std::string Write(const std::string& content) {
    const std::string p = dir_.Sub("agent.log");
    WriteFile(p, content);
    return p;
  }
  std::string TailOf(const std::string& content, std::size_t n) {
    auto r = TailLines(Write(content), n);
    EXPECT_TRUE(r) << r.error().message;
    return r ? *r : "<error>";
  }
  TempDir dir_;
};

TEST_F(Tail, ReturnsTheLastLinesByteForByte) {
  EXPECT_EQ(TailOf("a\nb\nc\n", 2), "b\nc\n");
  EXPECT_EQ(TailOf("a\nb\nc\n", 3), "a\nb\nc\n");   // exactly n
  EXPECT_EQ(TailOf("a\nb\nc\n", 10), "a\nb\nc\n");  // more than the file
  EXPECT_EQ(TailOf("a\nb\nc", 2), "b\nc");          // no trailing newline
  EXPECT_EQ(TailOf("a\nb\nc", 1), "c");
  EXPECT_EQ(TailOf("a\r\nb\r\nc\r\n", 2), "b\r\nc\r\n");  // CRLF kept
  EXPECT_EQ(TailOf("", 5), "");                           // empty file
  EXPECT_EQ(TailOf("a\nb\n", 0), "");                     // zero lines
  EXPECT_EQ(TailOf("\n\n\n", 2), "\n\n");                 // empty lines count
  EXPECT_EQ(TailOf("only line", 3), "only line");
}

TEST_F(Tail, SpansBlockBoundaries) {
  std::string content;
  for (int i = 0; i < 20000; ++i) content += "line " + std::to_string(i) + " of the agent log\n";
  ASSERT_GT(content.size(), 3 * kTailBlockBytes);
  std::string expected;
  for (int i = 20000 - 7000; i < 20000; ++i) {
    expected += "line " + std::to_string(i) + " of the agent log\n";
  }
  EXPECT_EQ(TailOf(content, 7000), expected);
  EXPECT_EQ(TailOf(content, 30000), content);
}

TEST_F(Tail, AOneGibibyteLogCostsNoMoreThanASmallOne) {
  const std::string p = dir_.Sub("huge.log");
  {
    const int fd = ::open(p.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 1LL << 30), 0);  // sparse: no disk blocks
    const std::string tail = "first\nsecond\nthird\n";
    ASSERT_EQ(::pwrite(fd, tail.data(), tail.size(), 1LL << 30), static_cast<ssize_t>(tail.size()));
    ::close(fd);
  }
  auto r = TailLinesWithStats(p, 2);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->text, "second\nthird\n");
  EXPECT_FALSE(r->truncated);
  EXPECT_EQ(r->reads, 1u);
  EXPECT_EQ(r->bytes_read, kTailBlockBytes);

  auto small = TailLinesWithStats(Write("first\nsecond\nthird\n"), 2);
  ASSERT_TRUE(small);
  EXPECT_EQ(small->text, r->text);
  EXPECT_LE(r->reads, small->reads + 1);
}

TEST_F(Tail, CapsVeryLongLines) {
  const std::string p = dir_.Sub("oneline.log");
  const int fd = ::open(p.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 64LL << 20), 0);  // 64 MiB of NULs, no newline
  ::close(fd);
  auto r = TailLinesWithStats(p, 1, 100000);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->truncated);
  EXPECT_EQ(r->text.size(), 100000u);
  EXPECT_LE(r->bytes_read, 100000u + kTailBlockBytes);
}

TEST_F(Tail, ErrorsAreClassified) {
  auto missing = TailLines(dir_.Sub("nope.log"), 5);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
  auto directory = TailLines(dir_.path(), 5);
  ASSERT_FALSE(directory);
  EXPECT_EQ(directory.error().code, ErrorCode::kBadInput);
}

TEST(CaptureLogs, SkipsMissingLogsWithAWarningAndNamesDuplicates) {
  TempDir dir;
  config::Config cfg = MakeConfig(dir);
  WriteFile(dir.Sub("a/agent.log"), "1\n2\n3\n");
  WriteFile(dir.Sub("b/agent.log"), "x\ny\n");
  cfg.sources.logs = {
      {dir.Sub("a/agent.log"), 2}, {dir.Sub("missing.log"), 5}, {dir.Sub("b/agent.log"), 50}};
  auto c = CaptureLogs(cfg);
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_EQ(c->logs.size(), 2u);
  EXPECT_EQ(c->logs[0].archive_path, "logs/agent.log");
  EXPECT_EQ(c->logs[0].text, "2\n3\n");
  EXPECT_EQ(c->logs[1].archive_path, "logs/agent-2.log");
  EXPECT_EQ(c->logs[1].text, "x\ny\n");
  EXPECT_EQ(c->warnings, std::vector<std::string>{"log " + dir.Sub("missing.log") + " skipped: " +
                                                  dir.Sub("missing.log") + ": no such file"});
}

// ---- entity snapshot -------------------------------------------------------------------------

using entities::EntityRecord;
using entities::EntitySnapshot;

std::chrono::system_clock::time_point At(std::int64_t ms) {
  return std::chrono::system_clock::time_point(std::chrono::milliseconds(ms));
}

EntityRecord Rec(std::string topic, std::string payload, bool retained = true) {
  return EntityRecord{std::move(topic), std::make_shared<const std::string>(std::move(payload)),
                      retained, At(1714564800123)};
}

TEST(EntitySnapshot, JsonLayoutIsSortedAndPayloadsAreExactlyRecoverable) {
  EntitySnapshot s;
  s.captured_at = At(1714564800500);
  s.dropped_topics = 2;
  s.dropped_payloads = 1;
  s.records = {
      Rec("zigbee2mqtt/lamp", "{\"state\":\"ON\",\"brightness\":254}"),  // unsorted keys
      Rec("zigbee2mqtt/lamp/availability", "{\"state\":\"online\"}"),
      Rec("a/plain", "online", false),
      Rec("a/number", "21.5"),
      Rec("a/quoted", "\"text\""),
      Rec("a/binary", std::string("\x00\xFF\x01", 3)),
      Rec("a/empty", ""),
  };
  const nlohmann::json j = entities::ToJson(s);
  const nlohmann::json expected = nlohmann::json::parse(R"({
    "format": 1,
    "captured_at": "2024-05-01T12:00:00.500Z",
    "source": "mqtt",
    "dropped": {"topics": 2, "payloads": 1},
    "entities": [
      {"topic": "a/binary", "payload_b64": "AP8B", "retained": true,
       "received_at": "2024-05-01T12:00:00.123Z"},
      {"topic": "a/empty", "payload": "", "retained": true,
       "received_at": "2024-05-01T12:00:00.123Z"},
      {"topic": "a/number", "payload": 21.5, "retained": true,
       "received_at": "2024-05-01T12:00:00.123Z"},
      {"topic": "a/plain", "payload": "online", "retained": false,
       "received_at": "2024-05-01T12:00:00.123Z"},
      {"topic": "a/quoted", "payload": "\"text\"", "retained": true,
       "received_at": "2024-05-01T12:00:00.123Z"},
      {"topic": "zigbee2mqtt/lamp", "payload": {"brightness": 254, "state": "ON"},
       "payload_raw": "{\"state\":\"ON\",\"brightness\":254}", "retained": true,
       "received_at": "2024-05-01T12:00:00.123Z"},
      {"topic": "zigbee2mqtt/lamp/availability", "payload": {"state": "online"},
       "retained": true, "received_at": "2024-05-01T12:00:00.123Z"}
    ]})");
  EXPECT_EQ(j, expected) << j.dump(2);

  // Through text and back: every payload byte-exact.
  auto back = entities::EntitySnapshotFromJson(nlohmann::json::parse(j.dump()));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->captured_at, s.captured_at);
  EXPECT_EQ(back->dropped_topics, 2u);
  EXPECT_EQ(back->dropped_payloads, 1u);
  EXPECT_EQ(back->source, "mqtt");
  ASSERT_EQ(back->records.size(), s.records.size());
  for (const EntityRecord& r : s.records) {
    auto it = std::find_if(back->records.begin(), back->records.end(),
                           [&](const EntityRecord& b) { return b.topic == r.topic; });
    ASSERT_NE(it, back->records.end()) << r.topic;
    ASSERT_TRUE(it->payload) << r.topic;
    EXPECT_EQ(*it->payload, *r.payload) << r.topic;
    EXPECT_EQ(it->retained, r.retained) << r.topic;
    EXPECT_EQ(it->received_at, r.received_at) << r.topic;
  }
}

TEST(EntitySnapshot, RejectsMalformedDocuments) {
  const struct {
    const char* json;
    const char* message;
  } cases[] = {
      {R"([])", "entities.json: not a JSON object"},
      {R"({"format": 2})", "entities.json: format: expected 1"},
      {R"({"format": 1, "captured_at": "yesterday", "entities": []})",
       "entities.json: captured_at: not an ISO-8601 UTC time"},
      {R"({"format": 1, "captured_at": "2024-05-01T12:00:00Z"})",
       "entities.json: entities: missing or not a list"},
      {R"({"format": 1, "captured_at": "2024-05-01T12:00:00Z", "entities": [{"topic": "a"}]})",
       "entities.json: entities[0]: no payload"},
      {R"({"format": 1, "captured_at": "2024-05-01T12:00:00Z",
           "entities": [{"topic": "a", "payload_b64": "!!", "received_at": "x"}]})",
       "entities.json: entities[0].payload_b64: bad base64"},
      {R"({"format": 1, "captured_at": "2024-05-01T12:00:00Z",
           "entities": [{"topic": "a", "payload": 1, "retained": "yes",
                         "received_at": "2024-05-01T12:00:00Z"}]})",
       "entities.json: entities[0].retained: not a boolean"},
  };
  for (const auto& c : cases) {
    auto r = entities::EntitySnapshotFromJson(nlohmann::json::parse(c.json));
    ASSERT_FALSE(r) << c.json;
    EXPECT_EQ(r.error().code, ErrorCode::kBadInput);
    EXPECT_EQ(r.error().message, c.message);
  }
}

TEST(EntitySnapshot, TimesRoundTripWithMilliseconds) {
  EXPECT_EQ(FormatMillisTime(At(0)), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(entities::ParseTime("2024-05-01T12:00:00.5Z"), At(1714564800500));
  EXPECT_EQ(entities::ParseTime("2024-05-01T12:00:00Z"), At(1714564800000));
  EXPECT_EQ(entities::ParseTime("2024-05-01T12:00:00.123456Z"), At(1714564800123));
  EXPECT_FALSE(entities::ParseTime("2024-05-01 12:00:00Z").has_value());
  EXPECT_FALSE(entities::ParseTime("2024-05-01T12:00:00+02:00").has_value());
  // Outside 64-bit nanoseconds (1677-09-21 .. 2262-04-11): refused, never wrapped.
  EXPECT_TRUE(entities::ParseTime("1678-01-01T00:00:00Z").has_value());
  EXPECT_TRUE(entities::ParseTime("2261-12-31T23:59:59Z").has_value());
  for (const char* out : {"7964-01-01T00:00:00Z", "1677-12-31T23:59:59Z", "0001-01-01T00:00:00Z",
                          "2262-01-01T00:00:00Z"}) {
    EXPECT_FALSE(entities::ParseTime(out).has_value()) << out;
  }
}

TEST(EntitySnapshot, UnavailableNowListsEntitiesThatWentAway) {
  EntitySnapshot before;
  before.records = {
      Rec("zigbee2mqtt/kitchen/lamp/availability", "{\"state\":\"online\"}"),
      Rec("zigbee2mqtt/plug/availability", "online"),
      Rec("zigbee2mqtt/already_off/availability", "offline"),
      Rec("zigbee2mqtt/stays/availability", "online"),
      Rec("homeassistant_statestream/light/hall/state", "on"),
      Rec("homeassistant_statestream/sensor/temp/state", "21.5"),
  };
  EntitySnapshot now;
  now.records = {
      Rec("zigbee2mqtt/kitchen/lamp/availability", "{\"state\":\"offline\"}"),
      Rec("zigbee2mqtt/plug/availability", "offline"),
      Rec("zigbee2mqtt/already_off/availability", "offline"),
      Rec("zigbee2mqtt/stays/availability", "{\"state\":\"online\"}"),
      Rec("homeassistant_statestream/light/hall/state", "unavailable"),
      Rec("homeassistant_statestream/sensor/temp/state", "22"),
      Rec("zigbee2mqtt/new/availability", "offline"),  // unknown before: not reported
  };
  EXPECT_EQ(entities::UnavailableNow(before, now),
            (std::vector<std::string>{"homeassistant_statestream/light/hall",
                                      "zigbee2mqtt/kitchen/lamp", "zigbee2mqtt/plug"}));
  EXPECT_TRUE(entities::UnavailableNow(now, before).empty());
}

struct TopicCase {
  const char* filter;
  const char* topic;
  bool match;
};

TEST(MirrorTopics, FilterMatchingTable) {
  const TopicCase cases[] = {
      {"zigbee2mqtt/#", "zigbee2mqtt/lamp", true},
      {"zigbee2mqtt/#", "zigbee2mqtt", true},  // '#' includes the parent level
      {"zigbee2mqtt/#", "zigbee2mqttx/lamp", false},
      {"zigbee2mqtt/+/set", "zigbee2mqtt/lamp/set", true},
      {"zigbee2mqtt/+/set", "zigbee2mqtt/kitchen/lamp/set", false},
      {"zigbee2mqtt/#/set/#", "zigbee2mqtt/kitchen/lamp/set", true},
      {"zigbee2mqtt/#/set/#", "zigbee2mqtt/lamp/set/brightness", true},
      {"zigbee2mqtt/#/set/#", "zigbee2mqtt/lamp", false},
      {"zigbee2mqtt/#/set/#", "zigbee2mqtt/set", false},  // a middle '#' needs >= 1 level
      {"zigbee2mqtt/#/get/#", "zigbee2mqtt/a/b/c/get", true},
      {"zigbee2mqtt/#/set/#", "zigbee2mqtt/settings/lamp", false},
      {"#", "anything/at/all", true},
      {"#", "$SYS/broker/uptime", false},
      {"+/x", "$SYS/x", false},
      {"$SYS/#", "$SYS/broker", true},
      {"a/+", "a/", true},  // an empty level is a level
      {"a/+", "a", false},
  };
  for (const TopicCase& c : cases) {
    EXPECT_EQ(entities::TopicMatches(c.filter, c.topic), c.match)
        << "filter '" << c.filter << "' topic '" << c.topic << "'";
  }
}

TEST(MirrorTopics, DefaultMirrorKeepsStatesAndDropsCommands) {
  const config::MirrorConfig mirror;
  EXPECT_TRUE(entities::MirrorAccepts(mirror, "zigbee2mqtt/kitchen/lamp"));
  EXPECT_TRUE(entities::MirrorAccepts(mirror, "zigbee2mqtt/kitchen/lamp/availability"));
  EXPECT_FALSE(entities::MirrorAccepts(mirror, "zigbee2mqtt/bridge/state"));
  EXPECT_FALSE(entities::MirrorAccepts(mirror, "zigbee2mqtt/kitchen/lamp/set"));
  EXPECT_FALSE(entities::MirrorAccepts(mirror, "zigbee2mqtt/kitchen/lamp/set/brightness"));
  EXPECT_FALSE(entities::MirrorAccepts(mirror, "zigbee2mqtt/lamp/get"));
  EXPECT_FALSE(entities::MirrorAccepts(mirror, "homeassistant/status"));
}

}  // namespace
}  // namespace safepoint::sources
