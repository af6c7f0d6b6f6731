// Names and free text as they are printed (QuoteName, PrintableText), checked against git's own
// quoting of real files and against Python's C-escape decoder.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/base/utf8.h"
#include "tests/testutil/process.h"
#include "tests/testutil/testutil.h"

namespace safepoint {
namespace {

using testing::RunProcess;
using testing::TempDir;
using testing::WriteFile;

// True when `s` holds a byte a terminal acts on (C0 but line feed and tab, DEL) or one of the
// characters QuoteName escapes.
bool HasDisruptive(const std::string& s, bool allow_lf_tab) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<std::uint8_t>(s[i]);
    if ((c < 0x20 && !(allow_lf_tab && (c == '\n' || c == '\t'))) || c == 0x7F) return true;
    // U+0080-U+009F is C2 80 - C2 9F; U+202A-U+202E, U+2066-U+2069 start with E2 80 / E2 81.
    if (c == 0xC2 && i + 1 < s.size() && static_cast<std::uint8_t>(s[i + 1]) <= 0x9F) return true;
  }
  return s.find("\u202E") != std::string::npos || s.find("\u2067") != std::string::npos ||
         s.find("\u2028") != std::string::npos;
}

TEST(QuoteName, PlainNamesAsTheyAreOthersQuotedAsGitQuotesThem) {
  EXPECT_EQ(QuoteName(""), "");
  EXPECT_EQ(QuoteName("ha_config/küchenlicht.png"), "ha_config/küchenlicht.png");
  EXPECT_EQ(QuoteName("www/灯 💡.js"), "www/灯 💡.js");
  EXPECT_EQ(QuoteName("a\nb"), "\"a\\nb\"");
  EXPECT_EQ(QuoteName("tab\there"), "\"tab\\there\"");
  EXPECT_EQ(QuoteName("caf\xe9.yaml"), "\"caf\\351.yaml\"");
  EXPECT_EQ(QuoteName("esc\x1b[31mred"), "\"esc\\033[31mred\"");
  EXPECT_EQ(QuoteName("say \"hi\""), "\"say \\\"hi\\\"\"");
  EXPECT_EQ(QuoteName("back\\slash"), "\"back\\\\slash\"");
  EXPECT_EQ(QuoteName("\a\b\v\f\r\x7f"), "\"\\a\\b\\v\\f\\r\\177\"");
  // U+0085 (NEL) and U+202E (right-to-left override) are valid UTF-8 but move the text.
  EXPECT_EQ(QuoteName("x\u0085y"), "\"x\\302\\205y\"");
  EXPECT_EQ(QuoteName("evil\u202Egnp.js"), "\"evil\\342\\200\\256gnp.js\"");
  // A broken sequence: its bytes one by one, the valid character after it as it is.
  EXPECT_EQ(QuoteName("\xe2\x82ü"), "\"\\342\\202ü\"");
}

TEST(PrintableText, KeepsLinesAndTabsAndEscapesTheRest) {
  EXPECT_EQ(PrintableText("two\nlines\tand küche"), "two\nlines\tand küche");
  EXPECT_EQ(PrintableText("\x1b]0;title\x07 caf\xe9 \\ \"q\""),
            "\\033]0;title\\007 caf\\351 \\ \"q\"");
  EXPECT_EQ(PrintableText("a\rb\u009bc"), "a\\015b\\302\\233c");
}

// A random name: any bytes but '/' and NUL, weighted toward the ones that need care.
std::string RandomName(std::mt19937_64& rng, bool utf8_only) {
  static const std::vector<std::string> kPieces = {
      "a", "Z", "9", ".", " ", "-", "_", "\"", "\\", "\n", "\t", "\r", "\x1b", "\x7f", "\x01", "\a",
      "\b", "\v", "\f",
      "ü", "é", "灯", "💡", "\u0085", "\u202E", "\u2066", "\u2028", "$", "'", "%", "*", "?"};
  std::uniform_int_distribution<int> len(1, 12);
  std::string name;
  const int n = len(rng);
  for (int i = 0; i < n; ++i) {
    if (!utf8_only && rng() % 4 == 0) {
      name += static_cast<char>(1 + rng() % 255);  // any byte but NUL
    } else {
      name += kPieces[rng() % kPieces.size()];
    }
  }
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  return name;
}

// Every quoted name decodes to its bytes with Python's own C-escape decoder, and is printable.
TEST(QuoteName, EveryByteStringComesBackFromItsQuotedForm) {
  std::mt19937_64 rng(20261205);
  std::vector<std::string> names;
  std::string input;
  for (int i = 0; i < 3000; ++i) {
    std::string name = RandomName(rng, /*utf8_only=*/false);
    const std::string quoted = QuoteName(name);
    ASSERT_TRUE(IsValidUtf8(quoted)) << quoted;
    ASSERT_FALSE(HasDisruptive(quoted, /*allow_lf_tab=*/false)) << quoted;
    const std::string printable = PrintableText(name);
    ASSERT_TRUE(IsValidUtf8(printable)) << printable;
    ASSERT_FALSE(HasDisruptive(printable, /*allow_lf_tab=*/true)) << printable;
    if (quoted == name) continue;
    ASSERT_TRUE(quoted.size() >= 2 && quoted.front() == '"' && quoted.back() == '"') << quoted;
    names.push_back(std::move(name));
    input += quoted.substr(1, quoted.size() - 2) + "\n";  // no raw line feed is left inside
  }
  ASSERT_GT(names.size(), 2000u);
  auto r = RunProcess({"/usr/bin/python3", "-c",
                       "import sys, codecs\n"
                       "for line in sys.stdin.buffer.read().split(b'\\n')[:-1]:\n"
                       "    sys.stdout.buffer.write(codecs.escape_decode(line)[0].hex().encode()"
                       " + b'\\n')\n"},
                      input);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> decoded;
  std::size_t start = 0;
  for (std::size_t nl; (nl = r.out.find('\n', start)) != std::string::npos; start = nl + 1) {
    std::string hex = r.out.substr(start, nl - start);
    std::string bytes;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
      bytes += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
    }
    decoded.push_back(std::move(bytes));
  }
  ASSERT_EQ(decoded.size(), names.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    ASSERT_EQ(decoded[i], names[i]) << "name " << i << " quoted as " << QuoteName(names[i]);
  }
}

// For UTF-8 names of real files, the quoting is git's (`git ls-files` with core.quotePath off)
// wherever git escapes at all; git leaves the characters that move text as they are.
TEST(QuoteName, RealFilesAreQuotedAsGitQuotesThem) {
  TempDir dir;
  const std::string repo = dir.Sub("repo");
  std::mt19937_64 rng(7);
  std::set<std::string> expected;
  while (expected.size() < 400) {
    std::string name = RandomName(rng, /*utf8_only=*/true);
    if (name == "." || name == ".." || name.starts_with(".git")) continue;
    // Not the characters that move text (their first bytes are C2 and E2 here): git leaves them.
    if (name.find('\xC2') != std::string::npos || name.find('\xE2') != std::string::npos) continue;
    if (expected.insert(QuoteName(name)).second) WriteFile(repo + "/" + name, "x");
  }
  ASSERT_EQ(RunProcess({"/usr/bin/git", "-C", repo, "init", "-q"}).exit_code, 0);
  auto add = RunProcess({"/usr/bin/git", "-C", repo, "add", "-A"});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  auto ls = RunProcess({"/usr/bin/git", "-C", repo, "-c", "core.quotePath=false", "ls-files"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  std::set<std::string> listed;
  std::size_t start = 0;
  for (std::size_t nl; (nl = ls.out.find('\n', start)) != std::string::npos; start = nl + 1) {
    listed.insert(ls.out.substr(start, nl - start));
  }
  EXPECT_EQ(listed, expected);
}

}  // namespace
}  // namespace safepoint
