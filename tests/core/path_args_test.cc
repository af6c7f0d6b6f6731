// The paths users type to `diff` and `extract` (rollback::ArchivePathsOf), against Python's
// posixpath.normpath as the oracle of what a spelling of a path means.
#include "core/rollback/path_args.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "tests/testutil/process.h"
#include "tests/testutil/testutil.h"

namespace safepoint::rollback {
namespace {

namespace fs = std::filesystem;
using testing::RunProcess;
using testing::TempDir;

// Each of `paths` (NUL-separated in and out) as posixpath.normpath spells it.
std::vector<std::string> NormPaths(const std::vector<std::string>& paths) {
  std::string in;
  for (const auto& p : paths) in += p + '\0';
  auto r = RunProcess({"/usr/bin/python3", "-c",
                       "import posixpath, sys\n"
                       "items = sys.stdin.buffer.read().split(b'\\0')[:-1]\n"
                       "sys.stdout.buffer.write(b''.join(posixpath.normpath(p) + b'\\0' "
                       "for p in items))\n"},
                      in);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t nul = r.out.find('\0'); nul != std::string::npos;
       nul = r.out.find('\0', start)) {
    out.push_back(r.out.substr(start, nul - start));
    start = nul + 1;
  }
  return out;
}

// A name of 1-6 bytes, any byte but '/' and NUL (names in German, Chinese and emoji are among
// them as their UTF-8 bytes), never "." or "..".
std::string RandomName(std::mt19937_64& rng) {
  std::string name;
  do {
    name.clear();
    const std::size_t n = 1 + rng() % 6;
    for (std::size_t i = 0; i < n; ++i) {
      char c = 0;
      while (c == 0 || c == '/') c = static_cast<char>(rng() % 256);
      if (rng() % 4 == 0) c = '.';  // dots are what the rule is about
      name += c;
    }
  } while (name == "." || name == "..");
  return name;
}

// The names joined the way people and shells write them: "/", "//", "/./", a leading "./",
// a trailing "/" or "/.".
std::string Spelled(const std::vector<std::string>& names, std::mt19937_64& rng) {
  static const char* const kSeparators[] = {"/", "/", "/", "//", "/./", "/.//", "///./"};
  std::string out = rng() % 3 == 0 ? "./" : "";
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += kSeparators[rng() % std::size(kSeparators)];
    out += names[i];
  }
  static const char* const kEnds[] = {"", "", "/", "/.", "//"};
  return out + kEnds[rng() % std::size(kEnds)];
}

bool StartsWithARoot(const std::string& p) {
  const std::string top = p.substr(0, p.find('/'));
  return top == "ha_config" || top == "workspace" || top == "state" || top == "environment" ||
         top == "logs";
}

// 3,000 seeded paths, relative and below ha_config by its absolute path: each comes out as the
// oracle spells it, below ha_config unless it names a root of the format.
TEST(ArchivePathsOf, EverySpellingOfAPathMeansWhatNormpathSays) {
  TempDir dir;
  config::Config config;
  config.paths.ha_config = dir.Sub("config");
  config.paths.workspace = dir.Sub("ws");
  std::mt19937_64 rng(20261206);
  std::vector<std::string> typed;
  for (int i = 0; i < 3000; ++i) {
    std::vector<std::string> names;
    const std::size_t depth = 1 + rng() % 5;
    if (rng() % 5 == 0) names.emplace_back(i % 2 == 0 ? "ha_config" : "workspace");
    while (names.size() < depth + (names.empty() ? 0 : 1)) names.push_back(RandomName(rng));
    std::string p = Spelled(names, rng);
    if (rng() % 3 == 0) p = config.paths.ha_config + (rng() % 2 == 0 ? "/" : "//./") + p;
    typed.push_back(std::move(p));
  }
  const auto norm = NormPaths(typed);
  ASSERT_EQ(norm.size(), typed.size());
  for (std::size_t i = 0; i < typed.size(); ++i) {
    std::string want = norm[i];
    if (want.starts_with('/')) {
      want = "ha_config" + want.substr(config.paths.ha_config.size());
    } else if (!StartsWithARoot(want)) {
      want = "ha_config/" + want;
    }
    auto got = ArchivePathsOf({typed[i]}, &config);
    ASSERT_TRUE(got) << ::testing::PrintToString(typed[i]) << ": " << got.error().message;
    ASSERT_EQ(got->size(), 1u);
    EXPECT_EQ(got->front(), want) << ::testing::PrintToString(typed[i]);
  }
}

TEST(ArchivePathsOf, AbsolutePathsLieInsideATreeOrAreRefused) {
  TempDir dir;
  fs::create_directories(dir.Sub("disk/config/packages"));
  fs::create_directories(dir.Sub("ws"));
  fs::create_directory_symlink(dir.Sub("disk/config"), dir.Sub("config-link"));
  fs::create_directory_symlink(dir.Sub("disk/config/packages"), dir.Sub("pk"));
  fs::create_symlink("../ws", dir.Sub("disk/config/ws-link"));
  config::Config config;
  config.paths.ha_config = dir.Sub("disk/config");
  config.paths.workspace = dir.Sub("ws");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {dir.Sub("disk/config"), "ha_config"},
      {dir.Sub("disk/config/"), "ha_config"},
      {dir.Sub("disk/config/packages/x.yaml"), "ha_config/packages/x.yaml"},
      {dir.Sub("config-link/packages/x.yaml"), "ha_config/packages/x.yaml"},
      {dir.Sub("config-link/not-yet/x.yaml"), "ha_config/not-yet/x.yaml"},
      {dir.Sub("pk/x.yaml"), "ha_config/packages/x.yaml"},
      {dir.Sub("pk"), "ha_config/packages"},  // a directory's link is resolved, not named
      // A link inside the tree is named as itself, not as what it points to.
      {dir.Sub("disk/config/ws-link"), "ha_config/ws-link"},
      {dir.Sub("ws/agenda.md"), "workspace/agenda.md"},
      {".", "ha_config"},
      {"./", "ha_config"},
      {"ha_config/.", "ha_config"},
  };
  for (const auto& [typed, want] : cases) {
    auto got = ArchivePathsOf({typed}, &config);
    ASSERT_TRUE(got) << typed << ": " << got.error().message;
    EXPECT_EQ(got->front(), want) << typed;
  }
  for (const std::string& bad :
       {std::string("/etc/passwd"), std::string("/"), dir.Sub("disk"), dir.Sub("disk/configx"),
        dir.Sub("disk/config/../config/x.yaml"), std::string(""), std::string("a/.."),
        std::string(".."), "ha_config/" + std::string(5000, 'x')}) {
    auto got = ArchivePathsOf({bad}, &config);
    ASSERT_FALSE(got) << bad;
    EXPECT_EQ(got.error().code, ErrorCode::kBadInput) << bad;
    EXPECT_EQ(got.error().message.rfind("path '", 0), 0u) << got.error().message;
    EXPECT_LT(got.error().message.size(), 400u);  // a long path is cut in the message
  }
  // A name that must be escaped is quoted once, as the names in every other message are.
  auto odd = ArchivePathsOf({"a/../b\nc"});
  ASSERT_FALSE(odd);
  EXPECT_EQ(odd.error().message,
            "path \"a/../b\\nc\": '..' is not allowed; name the path inside the backed-up trees");
  // The default layout: the workspace inside ha_config (which the backup of ha_config leaves out).
  config::Config nested;
  nested.paths.ha_config = dir.Sub("disk/config");
  nested.paths.workspace = dir.Sub("disk/config/.openclaw/workspace");
  for (const auto& [typed, want] : std::vector<std::pair<std::string, std::string>>{
           {nested.paths.workspace + "/memory/m.md", "workspace/memory/m.md"},
           {nested.paths.workspace, "workspace"},
           {dir.Sub("disk/config/.openclaw/other.md"), "ha_config/.openclaw/other.md"},
           {dir.Sub("config-link/.openclaw/workspace/agenda.md"), "workspace/agenda.md"}}) {
    auto got = ArchivePathsOf({typed}, &nested);
    ASSERT_TRUE(got) << typed << ": " << got.error().message;
    EXPECT_EQ(got->front(), want) << typed;
  }
  // Without a configuration (the MQTT command's check), every absolute path is refused.
  auto mqtt = ArchivePathsOf({dir.Sub("disk/config/x.yaml")});
  ASSERT_FALSE(mqtt);
  EXPECT_EQ(mqtt.error().message,
            "path '" + dir.Sub("disk/config/x.yaml") +
                "': must be relative to the backed-up trees (\"configuration.yaml\" or "
                "\"ha_config/.storage/core.config_entries\")");
}

}  // namespace
}  // namespace safepoint::rollback
