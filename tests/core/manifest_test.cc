#include "core/format/manifest.h"

#include <gtest/gtest.h>

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
  EXPECT_NE(text.find("\"path_b64\": \"aGFfY29uZmlnL2NhZukueWFtbA==\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"path\": \"ha_config/küche\""), std::string::npos);
  EXPECT_NE(text.find("\"link_b64\": \"Y2Fm6S55YW1s\""), std::string::npos);
  auto back = Parse(text);
  ASSERT_TRUE(back.has_value()) << back.error().message;
  EXPECT_EQ(back->entries, m.entries);
}

TEST(Manifest, ANameGivenBothAsTextAndAsBase64IsCorrupt) {
  const std::string text = Serialize(Sample({Dir("ha_config"), File("ha_config/a")}), true);
  std::string twice = text;
  twice.replace(twice.find("\"path\": \"ha_config/a\""), 21,
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

}  // namespace
}  // namespace safepoint::manifest
