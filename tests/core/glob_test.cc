#include "core/base/glob.h"

#include <gtest/gtest.h>

#include <string>

namespace safepoint::sources {
namespace {

struct GlobCase {
  const char* pattern;
  const char* path;
  bool match;
};

TEST(Glob, MatchesTable) {
  const GlobCase cases[] = {
      // literals
      {"agenda.md", "agenda.md", true},
      {"agenda.md", "agenda.mdx", false},
      {"agenda.md", "x/agenda.md", false},  // anchored at the root
      {"a/b", "a/b", true},
      {"a/b", "a", false},
      {"a", "a/b", false},
      // * stays within a segment
      {"memory/*.md", "memory/notes.md", true},
      {"memory/*.md", "memory/.md", true},
      {"memory/*.md", "memory/sub/notes.md", false},
      {"memory/*.md", "memory/notes.txt", false},
      {"*", "a", true},
      {"*", "a/b", false},
      {"*.log", "home-assistant.log", true},
      {"*.log.*", "home-assistant.log.1", true},
      {"*.log.*", "home-assistant.log", false},
      {"home-assistant_v2.db*", "home-assistant_v2.db-wal", true},
      {"home-assistant_v2.db*", "home-assistant_v2.db", true},
      {"a*b*c", "abc", true},
      {"a*b*c", "axxbyyc", true},
      {"a*b*c", "axxbyy", false},
      {"a*b*c", "acb", false},
      {"*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
      // ?
      {"?.md", "a.md", true},
      {"?.md", ".md", false},
      {"?", "/", false},
      {"a?c", "a/c", false},
      // ** across segments
      {"**", "a", true},
      {"**", "a/b/c", true},
      {"sessions/**", "sessions/a/b.md", true},
      {"sessions/**", "sessions/a.md", true},
      {"sessions/**", "sessions", true},  // zero segments
      {"sessions/**", "sessionsx/a", false},
      {"**/x", "x", true},
      {"**/x", "a/b/x", true},
      {"**/x", "a/b/xy", false},
      {"**/__pycache__/**", "__pycache__", true},
      {"**/__pycache__/**", "custom_components/foo/__pycache__/m.pyc", true},
      {"**/__pycache__/**", "custom_components/foo/pycache/m.pyc", false},
      {"a/**/b", "a/b", true},
      {"a/**/b", "a/x/y/b", true},
      {"a/**/b", "a/x/y/c", false},
      {"**/*.log", "deep/dir/z.log", true},
      {"**/*.log", "z.log", true},
      {"**/**/x", "x", true},
      {"a**b", "axyb", true},  // ** inside a segment is a plain *
      {"a**b", "ax/yb", false},
      // empty path never matches a non-empty pattern
      {"*", "", false},
  };
  for (const GlobCase& c : cases) {
    EXPECT_EQ(GlobMatch(c.pattern, c.path), c.match)
        << "pattern '" << c.pattern << "' path '" << c.path << "'";
  }
}

TEST(Glob, SelfOrParentCoversSubtrees) {
  EXPECT_TRUE(GlobMatchSelfOrParent("backups", "backups"));
  EXPECT_TRUE(GlobMatchSelfOrParent("backups", "backups/a/b.tar"));
  EXPECT_TRUE(GlobMatchSelfOrParent("backups/**", "backups/a/b.tar"));
  EXPECT_TRUE(GlobMatchSelfOrParent("*.d", "conf.d/x.yaml"));
  EXPECT_FALSE(GlobMatchSelfOrParent("backups", "backupsx/a"));
  EXPECT_FALSE(GlobMatchSelfOrParent("a/b", "a"));
}

TEST(Glob, CouldMatchBelowDecidesWhichDirectoriesToEnter) {
  EXPECT_TRUE(GlobCouldMatchBelow("memory/*.md", ""));
  EXPECT_TRUE(GlobCouldMatchBelow("memory/*.md", "memory"));
  EXPECT_FALSE(GlobCouldMatchBelow("memory/*.md", "memory/sub"));
  EXPECT_FALSE(GlobCouldMatchBelow("memory/*.md", "other"));
  EXPECT_FALSE(GlobCouldMatchBelow("agenda.md", "sessions"));
  EXPECT_TRUE(GlobCouldMatchBelow("sessions/**", "sessions"));
  EXPECT_TRUE(GlobCouldMatchBelow("sessions/**", "sessions/a/b"));
  EXPECT_TRUE(GlobCouldMatchBelow("**/x", "a/b/c"));
  EXPECT_TRUE(GlobCouldMatchBelow("a/*/c", "a/b"));
  EXPECT_FALSE(GlobCouldMatchBelow("a/*/c", "a/b/c"));  // c itself matches, nothing below it
}

TEST(Glob, LongPathsAndPatternsStayFast) {
  // Worst cases for backtracking matchers: many stars against long non-matching input. The NFA
  // is O(pattern * path), so this finishes instantly; a recursive matcher would not.
  std::string pattern;
  std::string path;
  for (int i = 0; i < 200; ++i) pattern += "**/a*";
  for (int i = 0; i < 400; ++i) path += "aaaaaaaa/";
  path += "b";
  EXPECT_FALSE(GlobMatch(pattern, path));
  std::string stars(500, '*');
  EXPECT_FALSE(GlobMatch(stars + "b", std::string(5000, 'a')));
  EXPECT_TRUE(GlobMatch(stars + "b", std::string(5000, 'a') + "b"));
}

TEST(Glob, ReportsUnusablePatterns) {
  EXPECT_EQ(GlobPatternProblem("memory/*.md"), "");
  EXPECT_EQ(GlobPatternProblem("**"), "");
  EXPECT_EQ(GlobPatternProblem(""), "empty pattern");
  EXPECT_EQ(GlobPatternProblem("/etc/**"), "pattern must be relative (no leading '/')");
  EXPECT_EQ(GlobPatternProblem("a//b"), "empty path segment ('//' or trailing '/')");
  EXPECT_EQ(GlobPatternProblem("a/"), "empty path segment ('//' or trailing '/')");
  EXPECT_EQ(GlobPatternProblem("../x"), "'.' and '..' segments are not allowed");
  EXPECT_EQ(GlobPatternProblem("a/./b"), "'.' and '..' segments are not allowed");
}

}  // namespace
}  // namespace safepoint::sources
