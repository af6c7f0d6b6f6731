#include "core/base/glob.h"

#include <fnmatch.h>
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

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

// An independent reading of the rules: whole segments, `**` as zero or more of them (memoized
// recursion), and each other segment by fnmatch(3) (no escapes; the alphabet has no '[').
class Oracle {
 public:
  Oracle(std::vector<std::string> pat, std::vector<std::string> path)
      : pat_(std::move(pat)),
        path_(std::move(path)),
        memo_((pat_.size() + 1) * (path_.size() + 1), -1) {}

  // Segments [p, ...) of the pattern match segments [s, ...) of the path exactly.
  bool Match(std::size_t p, std::size_t s) {
    int& m = memo_[p * (path_.size() + 1) + s];
    if (m >= 0) return m == 1;
    bool r = false;
    if (p == pat_.size()) {
      r = s == path_.size();
    } else if (pat_[p] == "**") {
      r = Match(p + 1, s) || (s < path_.size() && Match(p, s + 1));
    } else {
      r = s < path_.size() && ::fnmatch(pat_[p].c_str(), path_[s].c_str(), FNM_NOESCAPE) == 0 &&
          Match(p + 1, s + 1);
    }
    m = r ? 1 : 0;
    return r;
  }

 private:
  std::vector<std::string> pat_;
  std::vector<std::string> path_;
  std::vector<int> memo_;
};

std::string Join(const std::vector<std::string>& segs) {
  std::string out;
  for (const auto& s : segs) out += (out.empty() ? "" : "/") + s;
  return out;
}

// Seeded random patterns (short ones, and ones over 63 segments, which take the other matcher)
// against random paths and their prefixes: the three functions agree with the oracle.
TEST(Glob, AgreesWithAnIndependentMatcherOnRandomPatterns) {
  std::mt19937_64 rng(20261207);
  auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  static const std::vector<std::string> kPatternSegs = {"**", "*",     "a*", "*b",   "?", "a?b",
                                                        "ab", "*a*b*", "b",  "a**b", "??"};
  static const std::vector<std::string> kPathSegs = {"a", "b", "ab", "aab", "ba", "abb", "x", "ä"};
  for (int round = 0; round < 4000; ++round) {
    std::vector<std::string> pat;
    const std::size_t np = round % 10 == 0 ? 60 + pick(20) : 1 + pick(6);
    for (std::size_t i = 0; i < np; ++i) pat.push_back(kPatternSegs[pick(kPatternSegs.size())]);
    std::vector<std::string> path;
    const std::size_t ns = round % 10 == 0 ? 50 + pick(40) : pick(7);
    for (std::size_t i = 0; i < ns; ++i) path.push_back(kPathSegs[pick(kPathSegs.size())]);
    const std::string pattern = Join(pat);
    const std::string text = Join(path);
    Oracle oracle(pat, path);
    ASSERT_EQ(GlobMatch(pattern, text), oracle.Match(0, 0)) << pattern << " vs " << text;
    // Self or parent: the oracle on each non-empty prefix of the path.
    bool any = false;
    for (std::size_t k = 1; k <= path.size() && !any; ++k) {
      any = Oracle(pat, {path.begin(), path.begin() + static_cast<std::ptrdiff_t>(k)}).Match(0, 0);
    }
    ASSERT_EQ(GlobMatchSelfOrParent(pattern, text), any) << pattern << " vs " << text;
    // Could match below: some longer path (one to three more segments of any kind) matches.
    bool below = false;
    for (std::size_t more = 1; more <= 3 && !below; ++more) {
      for (const auto& seg : kPathSegs) {
        std::vector<std::string> longer = path;
        for (std::size_t j = 0; j < more; ++j) longer.push_back(j == 0 ? seg : kPathSegs[j]);
        if (Oracle(pat, longer).Match(0, 0)) below = true;
      }
    }
    if (below) {
      EXPECT_TRUE(GlobCouldMatchBelow(pattern, text)) << pattern << " vs " << text;
    }
  }
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
