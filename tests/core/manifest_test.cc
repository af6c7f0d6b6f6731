#include "core/format/manifest.h"

#include <gtest/gtest.h>

#include <limits>
#include <random>
#include <string>
#include <vector>

namespace safepoint::manifest {
namespace {

Manifest Sample(std::vector<Entry> entries) {
  Manifest m;
  m.id = "2026-12-02_01-00-00";
  m.created_at = "2026-12-02T01:00:00+00:00";
  m.created_unix = 1'796'000'000;
  m.reason = "test";
  m.entries = std::move(entries);
  return m;
}

Entry Dir(const std::string& path) {
  Entry e;
  e.path = path;
  e.type = EntryType::kDirectory;
  e.mode = 0755;
  return e;
}

Entry File(const std::string& path) {
  Entry e;
  e.path = path;
  e.type = EntryType::kFile;
  e.mode = 0644;
  e.size = 0;
  e.sha256 = std::string(64, 'a');
  return e;
}

Entry Link(const std::string& path, const std::string& target) {
  Entry e;
  e.path = path;
  e.type = EntryType::kSymlink;
  e.mode = 0777;
  e.link_target = target;
  return e;
}

TEST(Manifest, NamesThatAreNotUtf8AreStoredAsBase64AndComeBackExactly) {
  const Manifest m = Sample({Dir("ha_config"), File("ha_config/caf\xe9.yaml"),
                             Link("ha_config/l\xff", "caf\xe9.yaml"), File("ha_config/küche")});
  const std::string text = Serialize(m, /*inner=*/true);
  EXPECT_NE(text.find("\"path_b64\":\"aGFfY29uZmlnL2NhZukueWFtbA==\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"path\":\"ha_config/küche\""), std::string::npos);
  EXPECT_NE(text.find("\"link_b64\":\"Y2Fm6S55YW1s\""), std::string::npos);
  auto back = Parse(text);
  ASSERT_TRUE(back.has_value()) << back.error().message;
  EXPECT_EQ(back->entries, m.entries);
}

TEST(Manifest, ANameGivenBothAsTextAndAsBase64IsCorrupt) {
  const std::string text = Serialize(Sample({Dir("ha_config"), File("ha_config/a")}), true);
  std::string twice = text;
  twice.replace(twice.find("\"path\":\"ha_config/a\""), 20,
                "\"path\": \"ha_config/a\", \"path_b64\": \"aGFfY29uZmlnL2E=\"");
  auto m = Parse(twice);
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(m.error().message.find("given both as text and as base64"), std::string::npos);
}

TEST(Manifest, BackslashIsAnOrdinaryCharacterOfAName) {
  EXPECT_TRUE(CheckArchivePath("ha_config/dir\\back").has_value());
  EXPECT_TRUE(CheckArchivePath("ha_config/\\").has_value());
  EXPECT_FALSE(CheckArchivePath("ha_config/../x").has_value());
}

// Finding: verify passed safety points that rollback refused. Every reader parses the manifest
// with the same checks, so verify refuses them too.
TEST(Manifest, VerifyRefusesDuplicateEntries) {
  const std::string text =
      Serialize(Sample({Dir("ha_config"), File("ha_config/a"), File("ha_config/a")}), true);
  auto m = Parse(text);
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code, ErrorCode::kCorrupt);
  EXPECT_EQ(m.error().message, "manifest: entry ha_config/a appears twice");
}

TEST(Manifest, VerifyRefusesAFileBelowASymlink) {
  const std::string text =
      Serialize(Sample({Dir("ha_config"), Link("ha_config/l", "d"), File("ha_config/l/x")}), true);
  auto m = Parse(text);
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code, ErrorCode::kCorrupt);
  EXPECT_EQ(m.error().message,
            "manifest: entry ha_config/l/x lies below ha_config/l, which is not a directory");
}

TEST(Manifest, VerifyRefusesAFileBelowAFile) {
  auto m = Parse(Serialize(Sample({File("ha_config/f"), File("ha_config/f/x")}), true));
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code, ErrorCode::kCorrupt);
}

// Serialize writes the entries one by one instead of building a JSON tree of all of them; on
// seeded random manifests (any byte in names and warnings, UTF-8 free text, every entry type,
// optional fields absent and present, no entries at all) its text is exactly the tree's, and Parse,
// which reads entries as they close, gives back the same manifest.
TEST(Manifest, StreamedTextEqualsTheTreeAndParsesBackOnRandomManifests) {
  std::mt19937_64 rng(20261204);
  auto pick = [&](std::uint64_t n) { return rng() % n; };
  auto name = [&] {
    std::string s;
    const std::size_t len = 1 + pick(12);
    for (std::size_t i = 0; i < len; ++i) {
      char c = static_cast<char>(1 + pick(255));
      s += c == '/' ? '_' : c;
    }
    return s == "." || s == ".." ? s + "x" : s;
  };
  // Free text (reason, update, warnings) is valid UTF-8 here: other bytes are replaced on write.
  auto text = [&] {
    static const std::vector<std::string> kWords = {"a",  "Küche", "café", "灯", "🏠",
                                                    "\"", "\\",    "\n",   "\t", " "};
    std::string s;
    for (std::size_t i = 1 + pick(6); i > 0; --i) s += kWords[pick(kWords.size())];
    return s;
  };
  for (int round = 0; round < 300; ++round) {
    Manifest m = Sample({});
    m.reason = text();
    if (pick(2) == 0) m.update = UpdateRef{"u" + text(), text(), "1.0", "2.0"};
    m.format = pick(4) == 0 ? 1 : 2;
    const std::size_t count = pick(4) == 0 ? 0 : pick(40);
    if (count > 0) m.entries.push_back(Dir("ha_config"));
    for (std::size_t i = 0; m.entries.size() < count; ++i) {
      const std::string path = "ha_config/" + std::to_string(i) + name();
      Entry e = pick(3) == 0 ? Link(path, name()) : pick(2) == 0 ? Dir(path) : File(path);
      if (e.type == EntryType::kSymlink && (e.link_target == ".." || e.link_target == ".")) {
        e.link_target = "x";
      }
      e.mtime = static_cast<std::int64_t>(rng() >> 2) * (pick(2) == 0 ? -1 : 1);
      e.uid = static_cast<std::uint32_t>(rng());
      if (e.type == EntryType::kFile) e.size = rng();
      if (e.type == EntryType::kFile && pick(2) == 0) {
        e.stamp = Stamp{rng(), rng(), static_cast<std::int64_t>(rng() >> 1) * (pick(2) ? -1 : 1),
                        static_cast<std::int64_t>(rng() >> 1)};
      }
      m.entries.push_back(std::move(e));
    }
    for (std::size_t w = pick(3); w > 0; --w) m.warnings.push_back(pick(2) == 0 ? name() : text());
    for (bool inner : {true, false}) {
      const std::string written = Serialize(m, inner);
      const std::string tree =
          ToJson(m, inner).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      ASSERT_EQ(nlohmann::json::parse(written), nlohmann::json::parse(tree)) << "round " << round;
      // Listed entries take one line each.
      std::size_t entry_lines = 0;
      for (std::size_t at = written.find("\n  {\""); at != std::string::npos;
           at = written.find("\n  {\"", at + 1)) {
        ++entry_lines;
      }
      EXPECT_EQ(entry_lines, (inner || m.format < 2) ? m.entries.size() : 0u) << "round " << round;
      EXPECT_EQ(written.back(), '\n');
    }
    auto back = Parse(Serialize(m, /*inner=*/true));
    ASSERT_TRUE(back.has_value()) << "round " << round << ": " << back.error().message;
    EXPECT_EQ(back->entries, m.entries) << "round " << round;
    EXPECT_EQ(back->update, m.update);
    EXPECT_EQ(back->reason, m.reason);
    EXPECT_EQ(back->warnings.size(), m.warnings.size());
  }
}

// `written` (Serialize(m, true)) holds each entry of `m` on a line of its own, exactly as the JSON
// library writes that entry of ToJson(m, true), in order.
void ExpectEachEntryOnItsOwnLineAsTheLibraryWritesIt(const Manifest& m,
                                                     const std::string& written) {
  const nlohmann::json tree = ToJson(m, /*inner=*/true);
  const std::string_view key = "\n \"entries\": ";
  std::size_t at = written.find(key);
  ASSERT_NE(at, std::string::npos);
  at += key.size();
  for (std::size_t i = 0; i < m.entries.size(); ++i) {
    const std::string line =
        tree["entries"][i].dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    const std::string expected = (i == 0 ? "[\n  " : ",\n  ") + line;
    ASSERT_EQ(written.substr(at, expected.size()), expected) << "entry " << i;
    at += expected.size();
  }
  EXPECT_EQ(written.substr(at, 3), "\n ]");
}

// A list this long is written in two halves on two threads: the text is still every entry's
// own line, in order, and parses back to the same entries.
TEST(Manifest, ALongEntryListIsWrittenInOrderOnTwoThreads) {
  std::mt19937_64 rng(20261205);
  static const std::vector<std::string> kNames = {"küchenlicht.png", "café", "客厅", "🏠", "a\nb",
                                                  "\xff\xfe",        "x"};
  Manifest m = Sample({Dir("ha_config")});
  for (std::size_t i = 0; m.entries.size() < 20'001; ++i) {
    Entry e = File("ha_config/" + std::to_string(i) + kNames[rng() % kNames.size()]);
    e.size = rng() >> 8;
    e.mtime = static_cast<std::int64_t>(rng() >> 2);
    if (i % 3 == 0) e.stamp = Stamp{rng(), rng(), 5, 7};
    m.entries.push_back(std::move(e));
  }
  const std::string written = Serialize(m, /*inner=*/true);
  ASSERT_EQ(nlohmann::json::parse(written), ToJson(m, /*inner=*/true));
  ExpectEachEntryOnItsOwnLineAsTheLibraryWritesIt(m, written);
  auto back = Parse(written);
  ASSERT_TRUE(back.has_value()) << back.error().message;
  EXPECT_EQ(back->entries, m.entries);
}

// Entry lines are written without the JSON library; on seeded random entries (every byte in
// names, link targets and hash text, every type, numbers at the ends of their ranges, stamps
// absent and present) each line is exactly the library's text of the same entry, on one thread
// and on two.
TEST(Manifest, EntryLinesAreTheJsonLibrarysTextForAnyBytes) {
  std::mt19937_64 rng(20261206);
  auto pick = [&](std::uint64_t n) { return rng() % n; };
  auto bytes = [&](std::size_t max, bool slash) {
    std::string s;
    for (std::size_t len = 1 + pick(max); s.size() < len;) {
      const char c = static_cast<char>(1 + pick(255));
      if (c != '/' || slash) s += c;
    }
    return s;
  };
  auto number = [&]() -> std::uint64_t {
    switch (pick(4)) {
      case 0:
        return 0;
      case 1:
        return std::numeric_limits<std::uint64_t>::max() - pick(2);
      case 2:
        return pick(1000);
      default:
        return rng();
    }
  };
  for (const std::size_t count : {std::size_t{3000}, std::size_t{9000}}) {
    Manifest m = Sample({Dir("ha_config")});
    for (std::size_t i = 0; m.entries.size() < count; ++i) {
      const std::string path = "ha_config/" + std::to_string(i) + bytes(16, false);
      Entry e = pick(3) == 0 ? Link(path, bytes(16, true)) : pick(4) == 0 ? Dir(path) : File(path);
      e.mode = static_cast<std::uint32_t>(number());
      e.mtime = static_cast<std::int64_t>(number());
      e.uid = static_cast<std::uint32_t>(number());
      e.gid = static_cast<std::uint32_t>(number());
      if (e.type == EntryType::kFile) {
        e.size = number();
        e.sha256 = pick(4) == 0 ? bytes(70, true) : std::string(64, "0123456789abcdef"[pick(16)]);
        if (pick(2) == 0) {
          e.stamp = Stamp{number(), number(), static_cast<std::int64_t>(number()),
                          static_cast<std::int64_t>(number())};
        }
      }
      m.entries.push_back(std::move(e));
    }
    ExpectEachEntryOnItsOwnLineAsTheLibraryWritesIt(m, Serialize(m, /*inner=*/true));
  }
}

// Entry lists that are not lists of entry objects are corrupt, whatever shape they take.
TEST(Manifest, AnEntryListOfOtherShapesIsCorrupt) {
  const std::string good = Serialize(Sample({Dir("ha_config"), File("ha_config/a")}), true);
  const std::size_t at = good.find("\"entries\": [");
  ASSERT_NE(at, std::string::npos);
  const std::size_t end = good.find("\n ]", at) + 3;
  const std::string entries = good.substr(at, end - at);
  for (const std::string& other :
       {std::string("\"entries\": [\"ha_config/a\"]"), std::string("\"entries\": [[]]"),
        std::string("\"entries\": [{\"path\": \"ha_config/a\"}]"),
        std::string("\"entries\": {\"a\": {\"path\": \"ha_config/a\"}}"),
        std::string("\"entries\": [{\"path\": \"ha_config\", \"type\": \"dir\", \"mode\": 493, "
                    "\"mtime\": 0, \"uid\": 0, \"gid\": 0}, 7]"),
        entries + ", " + entries}) {
    std::string text = good;
    text.replace(at, end - at, other);
    auto m = Parse(text);
    ASSERT_FALSE(m.has_value()) << other;
    EXPECT_EQ(m.error().code, ErrorCode::kCorrupt) << other;
  }
  auto ok = Parse(good);
  ASSERT_TRUE(ok.has_value()) << ok.error().message;
  EXPECT_EQ(ok->entries.size(), 2u);
}

// A number too large for its field is corrupt, not wrapped into range: 2^32 + 420 read as a
// 32-bit mode would be 0644, 2^32 + 2 as the format would be 2.
TEST(Manifest, ANumberBeyondItsFieldIsCorruptNotWrapped) {
  Entry f = File("ha_config/a");
  f.mode = 0644;
  f.uid = 1000;
  const std::string good = Serialize(Sample({Dir("ha_config"), f}), true);
  ASSERT_TRUE(Parse(good).has_value());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\"mode\":420", "\"mode\":4294967716"},
      {"\"uid\":1000", "\"uid\":4294968296"},
      {"\"uid\":1000", "\"uid\":18446744073709551615"},
      {"\"format\": 2", "\"format\": 4294967298"},
      {"\"format\": 2", "\"format\": -4294967294"},
      {"\"work_factor\": 18", "\"work_factor\": 9223372036854775808"},
  };
  for (const auto& [from, to] : cases) {
    const std::size_t at = good.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    std::string text = good;
    text.replace(at, from.size(), to);
    auto m = Parse(text);
    ASSERT_FALSE(m.has_value()) << to;
    EXPECT_EQ(m.error().code, ErrorCode::kCorrupt) << to;
    EXPECT_NE(m.error().message.find("out of range"), std::string::npos) << m.error().message;
  }
}

// A file's stamp is four integers in range or the manifest is corrupt; no stamp is fine.
TEST(Manifest, AStampIsFourIntegersInRange) {
  Entry f = File("ha_config/a");
  f.stamp = Stamp{18446744073709551615u, 42, -1'000'000'001, 1'796'000'000'123'456'789};
  const std::string good = Serialize(Sample({Dir("ha_config"), f}), true);
  auto ok = Parse(good);
  ASSERT_TRUE(ok.has_value()) << ok.error().message;
  ASSERT_EQ(ok->entries.size(), 2u);
  EXPECT_EQ(ok->entries[1].stamp, f.stamp);
  EXPECT_FALSE(ok->entries[0].stamp.has_value());
  const std::size_t at = good.find("\"stamp\":[");
  ASSERT_NE(at, std::string::npos);
  const std::size_t end = good.find(']', at) + 1;
  for (const std::string& other :
       {std::string("\"stamp\": [1, 2, 3]"), std::string("\"stamp\": [1, 2, 3, 4, 5]"),
        std::string("\"stamp\": [-1, 2, 3, 4]"), std::string("\"stamp\": [1, -2, 3, 4]"),
        std::string("\"stamp\": [1, 2, 3.5, 4]"), std::string("\"stamp\": [1, 2, 3, 1e30]"),
        std::string("\"stamp\": [1, 2, 9223372036854775808, 4]"),
        std::string("\"stamp\": [18446744073709551616, 2, 3, 4]"),
        std::string("\"stamp\": [\"1\", 2, 3, 4]"), std::string("\"stamp\": {\"dev\": 1}"),
        std::string("\"stamp\": null"), std::string("\"stamp\": 7")}) {
    std::string text = good;
    text.replace(at, end - at, other);
    auto m = Parse(text);
    ASSERT_FALSE(m.has_value()) << other;
    EXPECT_EQ(m.error().code, ErrorCode::kCorrupt) << other;
    EXPECT_NE(m.error().message.find("stamp"), std::string::npos) << m.error().message;
  }
  // Old readers ignore the field; this one keeps the entry as it was without it.
  std::string without = good;
  without.replace(at, end - at, "\"x\": 0");
  auto plain = Parse(without);
  ASSERT_TRUE(plain.has_value()) << plain.error().message;
  EXPECT_FALSE(plain->entries[1].stamp.has_value());
}

TEST(Manifest, DroppedEntriesKeepTheirCounts) {
  Entry f = File("ha_config/a");
  f.size = 7;
  Entry g = File("ha_config/b");
  g.size = 5;
  Manifest m = Sample({Dir("ha_config"), f, g});
  m.warnings = {"one", "two"};
  DropEntries(m);
  EXPECT_TRUE(m.entries.empty());
  EXPECT_FALSE(m.entries_listed);
  EXPECT_EQ(m.FileCount(), 2u);
  EXPECT_EQ(m.TotalBytes(), 12u);
  EXPECT_EQ(m.EntryCount(), 3u);
  EXPECT_EQ(m.WarningCount(), 2u);
  DropEntries(m);  // once dropped, nothing changes
  EXPECT_EQ(m.FileCount(), 2u);
  EXPECT_EQ(m.EntryCount(), 3u);
}

}  // namespace
}  // namespace safepoint::manifest
