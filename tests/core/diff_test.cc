// Content diffs: the unified format against GNU diff -u and patch(1) as oracles, and the secret
// masking against a hostile corpus.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/diff/mask.h"
#include "core/diff/patch.h"
#include "core/diff/unified.h"
#include "tests/testutil/process.h"
#include "tests/testutil/testutil.h"

namespace safepoint::diff {
namespace {

using testing::RunProcess;
using testing::TempDir;
using testing::WriteFile;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string Render(const TextDiff& d) {
  std::string out;
  for (const auto& h : d.hunks) {
    out += HunkHeader(h) + "\n";
    for (const auto& line : h.lines) out += line + "\n";
  }
  return out;
}

// GNU diff -u's hunks (its two header lines dropped), with extra options.
std::string GnuDiff(const TempDir& dir, const std::string& a, const std::string& b,
                    bool minimal = false) {
  WriteFile(dir.Sub("a"), a);
  WriteFile(dir.Sub("b"), b);
  std::vector<std::string> argv = {"/usr/bin/diff", "-u", dir.Sub("a"), dir.Sub("b")};
  if (minimal) argv.insert(argv.begin() + 1, "--minimal");
  auto r = RunProcess(argv);
  EXPECT_EQ(r.exit_code, a == b ? 0 : 1) << r.err;
  std::string out = r.out;
  for (int i = 0; i < 2 && !out.empty(); ++i) out.erase(0, out.find('\n') + 1);
  return out;
}

std::pair<std::size_t, std::size_t> Counts(const std::string& hunks) {
  std::size_t plus = 0;
  std::size_t minus = 0;
  std::istringstream in(hunks);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("+")) ++plus;
    if (line.starts_with("-")) ++minus;
  }
  return {plus, minus};
}

// A random edit of `a`: deletions, insertions of `fresh` lines and replacements; the last
// newline may come or go.
std::vector<std::string> Edit(std::mt19937& rng, std::vector<std::string> b,
                              const std::function<std::string()>& fresh) {
  const int edits = std::uniform_int_distribution<int>(0, 8)(rng);
  for (int e = 0; e < edits; ++e) {
    const int op = std::uniform_int_distribution<int>(0, 9)(rng);
    if (op < 4 && !b.empty()) {
      b.erase(b.begin() + std::uniform_int_distribution<int>(0, int(b.size()) - 1)(rng));
    } else if (op < 8) {
      const int at = std::uniform_int_distribution<int>(0, int(b.size()))(rng);
      const int n = std::uniform_int_distribution<int>(1, 3)(rng);
      for (int k = 0; k < n; ++k) b.insert(b.begin() + at, fresh());
    } else if (!b.empty()) {
      b[std::uniform_int_distribution<int>(0, int(b.size()) - 1)(rng)] = fresh();
    }
  }
  return b;
}

std::string Join(const std::vector<std::string>& lines, bool final_newline) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  if (!final_newline && !s.empty()) s.pop_back();
  return s;
}

// Lines that are unique within each file: there is one shortest edit script, and the hunks must
// be GNU diff's exactly (ranges, context, grouping, "\ No newline at end of file").
TEST(UnifiedDiff, EqualsGnuDiffOnGeneratedUniqueLines) {
  TempDir dir;
  std::mt19937 rng(20261204);
  int next = 0;
  const auto fresh = [&] { return "line " + std::to_string(next++) + " of the text"; };
  int compared = 0;
  for (int round = 0; round < 250; ++round) {
    std::vector<std::string> a;
    const int n = std::uniform_int_distribution<int>(0, 80)(rng);
    for (int i = 0; i < n; ++i) a.push_back(fresh());
    const auto b = Edit(rng, a, fresh);
    const std::string ta = Join(a, rng() % 5 != 0);
    const std::string tb = Join(b, rng() % 5 != 0);
    const std::string ours = Render(UnifiedDiff(ta, tb, 3));
    ASSERT_EQ(ours, GnuDiff(dir, ta, tb)) << "round " << round << "\n" << ta << "\n=>\n" << tb;
    compared += ta != tb;
  }
  EXPECT_GT(compared, 200);
}

// Repeated lines allow several shortest scripts, and GNU diff may pick another one: ours must
// still be as short as `diff --minimal`'s and patch(1) must turn the old text into the new.
TEST(UnifiedDiff, IsMinimalAndAppliesWithPatchOnRepeatedLines) {
  TempDir dir;
  std::mt19937 rng(424242);
  for (int round = 0; round < 150; ++round) {
    const int vocabulary = round % 3 == 0 ? 3 : (round % 3 == 1 ? 10 : 100);
    const auto word = [&] {
      return "w" + std::to_string(std::uniform_int_distribution<int>(0, vocabulary - 1)(rng));
    };
    std::vector<std::string> a;
    const int n = std::uniform_int_distribution<int>(0, 60)(rng);
    for (int i = 0; i < n; ++i) a.push_back(word());
    const auto b = Edit(rng, a, word);
    const std::string ta = Join(a, rng() % 4 != 0);
    const std::string tb = Join(b, rng() % 4 != 0);
    const std::string ours = Render(UnifiedDiff(ta, tb, 3));
    EXPECT_EQ(Counts(ours), Counts(GnuDiff(dir, ta, tb, /*minimal=*/true))) << "round " << round;
    if (ta == tb) {
      EXPECT_EQ(ours, "");
      continue;
    }
    WriteFile(dir.Sub("old"), ta);
    WriteFile(dir.Sub("p"), "--- old\n+++ new\n" + ours);
    auto r = RunProcess(
        {"/usr/bin/patch", "-s", "-o", dir.Sub("patched"), dir.Sub("old"), dir.Sub("p")});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err << "round " << round;
    EXPECT_EQ(ReadAll(dir.Sub("patched")), tb) << "round " << round;
  }
}

// An edit of a real configuration: packages added, a value changed, a block removed.
TEST(UnifiedDiff, EqualsGnuDiffOnARealConfigurationEdit) {
  TempDir dir;
  const std::string before =
      "default_config:\n\nfrontend:\n  themes: !include_dir_merge_named themes\n\n"
      "automation: !include automations.yaml\nscript: !include scripts.yaml\n"
      "scene: !include scenes.yaml\n\nhomeassistant:\n  name: Zuhause\n  unit_system: metric\n"
      "  time_zone: Europe/Berlin\n  packages: !include_dir_named packages\n\n"
      "recorder:\n  purge_keep_days: 10\n  exclude:\n    domains:\n      - automation\n"
      "      - updater\n\nlogger:\n  default: warning\n  logs:\n    homeassistant.components.mqtt: "
      "debug\n\nsensor:\n  - platform: time_date\n    display_options:\n      - 'time'\n"
      "      - 'date'\n";
  const std::string after =
      "default_config:\n\nfrontend:\n  themes: !include_dir_merge_named themes\n\n"
      "automation: !include automations.yaml\nscript: !include scripts.yaml\n"
      "scene: !include scenes.yaml\n\nhomeassistant:\n  name: Zuhause 🏠\n  unit_system: metric\n"
      "  time_zone: Europe/Berlin\n  packages: !include_dir_named packages\n  customize: "
      "!include customize.yaml\n\nrecorder:\n  purge_keep_days: 14\n  exclude:\n    domains:\n"
      "      - automation\n      - updater\n\nsensor:\n  - platform: time_date\n"
      "    display_options:\n      - 'time'\n      - 'date'\n      - 'date_time'\n";
  const TextDiff d = UnifiedDiff(before, after, 3);
  EXPECT_EQ(Render(d), GnuDiff(dir, before, after));
  EXPECT_EQ(d.added, 4u);
  EXPECT_EQ(d.removed, 7u);
}

TEST(UnifiedDiff, EmptySidesAndHeaders) {
  TextDiff d = UnifiedDiff("", "a\nb", 3);
  ASSERT_EQ(d.hunks.size(), 1u);
  EXPECT_EQ(Render(d), "@@ -0,0 +1,2 @@\n+a\n+b\n\\ No newline at end of file\n");
  d = UnifiedDiff("x\n", "", 3);
  EXPECT_EQ(Render(d), "@@ -1 +0,0 @@\n-x\n");
  EXPECT_TRUE(UnifiedDiff("same\n", "same\n", 3).hunks.empty());
}

// Two unrelated large texts: dtl's bound on edit paths keeps time and memory in check, and the
// result is still a correct diff (every old line removed or kept, every new line added or kept).
TEST(UnifiedDiff, UnrelatedLargeTextsStayBounded) {
  std::string a;
  std::string b;
  for (int i = 0; i < 30000; ++i) {
    a += "a" + std::to_string(i) + "\n";
    b += "b" + std::to_string(i) + "\n";
  }
  const TextDiff d = UnifiedDiff(a, b, 3);
  EXPECT_EQ(d.removed, 30000u);
  EXPECT_EQ(d.added, 30000u);
  ASSERT_EQ(d.hunks.size(), 1u);
  EXPECT_EQ(HunkHeader(d.hunks[0]), "@@ -1,30000 +1,30000 @@");
}

}  // namespace
}  // namespace safepoint::diff

namespace safepoint::diff {
namespace {

const char* const kSecretsYaml =
    "# rotated 2026, old: hunter2-old-one\n"
    "backup_encryption_passphrase: \"correct horse battery staple\"\n"
    "mqtt_password: s3cr3t!pw\n"
    "quoted: 'it''s-a-secret'\n"
    "json_hostile: \"p\\\"q\\\\r value\"\n"
    "pem: |\n"
    "  -----BEGIN PRIVATE KEY-----\n"
    "  MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
    "  -----END PRIVATE KEY-----\n"
    "zigbee_network_key: [1, 3, 5, 7, 9, 11, 13, 15]\n";

// What must never appear once masked: the secrets file's values, and values under sensitive keys.
const std::vector<std::string> kNeverShown = {"correct horse battery staple",
                                              "s3cr3t!pw",
                                              "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
                                              "hunter2-old-one",
                                              "tok-3f9a1c",
                                              "eyJhbGciOiJIUzI1NiJ9",
                                              "refresh-77aa",
                                              "pw-in-url-9",
                                              "blockline-one",
                                              "blockline-two",
                                              "nested-secret-1",
                                              "listed-secret-2",
                                              "Geheim123",
                                              "motdepasse-fr",
                                              "webhook-abc-123",
                                              "pincode-4711",
                                              "custom-thing-42",
                                              "inline-tok-5"};

const char* const kConfiguration =
    "homeassistant:\n  name: Küche & Wohnzimmer 🏠\n"
    "mqtt:\n  broker: mqtt://bob:pw-in-url-9@192.168.1.2:1883\n"
    "  password: !secret mqtt_password\n  other: s3cr3t!pw pasted by hand\n"
    "  Access-Token: \"tok-3f9a1c\"   # keep\n"
    "api:\n  token: |\n    blockline-one\n    blockline-two\n  name: kept\n"
    "credentials:\n  user: nested-secret-1\n"
    "passwords:\n- listed-secret-2\n"
    "alarm:\n  - platform: manual\n    passwort: Geheim123\n    mot-de-passe: motdepasse-fr\n"
    "    code_pin: pincode-4711\n"
    "automation:\n  trigger: {platform: webhook, webhook_id: webhook-abc-123}\n"
    "my_integration:\n  special_thing: custom-thing-42\n"
    "json_inline: {\"id\": 1, \"access_token\": \"inline-tok-5\", \"x\": [1, 2]}\r\n";

const char* const kStorage =
    "{\n    \"data\": {\n        \"entries\": [\n            {\n"
    "                \"data\": {\"token\": {\"access_token\": \"eyJhbGciOiJIUzI1NiJ9\",\n"
    "                    \"refresh_token\": \"refresh-77aa\"}},\n"
    "                \"title\": \"Philips Hue\"\n            }\n        ],\n"
    "        \"hostile\": \"p\\\"q\\\\r value\"\n    }\n}\n";

TEST(SecretMasking, HostileCorpusShowsNoSecret) {
  Masker masker({"special_thing"});
  masker.AddSecretsText(kSecretsYaml);
  const std::string secrets = masker.Mask("ha_config/secrets.yaml", kSecretsYaml);
  const std::string config = masker.Mask("ha_config/configuration.yaml", kConfiguration);
  const std::string storage = masker.Mask("ha_config/.storage/core.config_entries", kStorage);
  for (const auto* text : {&secrets, &config, &storage}) {
    for (const auto& s : kNeverShown)
      EXPECT_EQ(text->find(s), std::string::npos) << s << "\n" << *text;
    EXPECT_EQ(text->find("p\\\"q"), std::string::npos) << *text;
    EXPECT_EQ(text->find("it''s"), std::string::npos) << *text;
  }
  // The keys and the harmless values stay, so the diff still says what changed.
  EXPECT_NE(secrets.find("mqtt_password: ***\n"), std::string::npos) << secrets;
  EXPECT_NE(config.find("name: Küche & Wohnzimmer 🏠\n"), std::string::npos) << config;
  EXPECT_NE(config.find("  name: kept\n"), std::string::npos) << config;
  EXPECT_NE(config.find("mqtt://bob:***@192.168.1.2:1883"), std::string::npos) << config;
  EXPECT_NE(config.find("  Access-Token: \"***\"   # keep\n"), std::string::npos) << config;
  EXPECT_NE(config.find("\"id\": 1, \"access_token\": \"***\", \"x\": [1, 2]}\r\n"),
            std::string::npos)
      << config;
  EXPECT_NE(storage.find("\"title\": \"Philips Hue\""), std::string::npos) << storage;
  // Masking keeps the line structure: a diff's line numbers are the file's.
  EXPECT_EQ(std::count(config.begin(), config.end(), '\n'),
            std::count(kConfiguration, kConfiguration + std::strlen(kConfiguration), '\n'));
}

// Generated key/value lines over the sensitive keys in every spelling, quoting and nesting:
// the value never survives.
TEST(SecretMasking, GeneratedSensitiveLinesNeverShowTheirValue) {
  std::mt19937 rng(5150);
  const Masker masker;
  const std::vector<std::string> keys = {"password",      "api_key",  "token",      "passphrase",
                                         "client_secret", "wifi_psk", "jwt_secret", "pin"};
  const std::string alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGH0123456789!$%&()*+-./;<=>?@^_~|";
  for (int round = 0; round < 2000; ++round) {
    std::string key = keys[rng() % keys.size()];
    for (auto& c : key) {
      if (rng() % 2) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      if (c == '_' && rng() % 3 == 0) c = '-';
    }
    if (rng() % 3 == 0) key = "my_" + key;
    std::string value = "V";
    for (int i = 0; i < 10; ++i) value += alphabet[rng() % alphabet.size()];
    std::string line;
    switch (rng() % 5) {
      case 0:
        line = std::string(rng() % 6, ' ') + key + ": " + value;
        break;
      case 1:
        line = "  - " + key + ": \"" + value + "\"";
        break;
      case 2:
        line = "    \"" + key + "\": \"" + value + "\",";
        break;
      case 3:
        line = "x: {a: 1, " + key + ": " + value + ", b: 2}";
        break;
      default:
        line = "{\"a\":1,\"" + key + "\":\"" + value + "\"}";
        break;
    }
    const std::string text = "before: 1\n" + line + "\nafter: 2\n";
    const std::string masked = masker.Mask("ha_config/x.yaml", text);
    ASSERT_EQ(masked.find(value), std::string::npos) << "round " << round << ": " << line;
    ASSERT_NE(masked.find("before: 1\n"), std::string::npos);
  }
}

// Found by a campaign on real configurations: a secrets.yaml value with a trailing comment, with
// '' or \u escapes in its quotes, or non-ASCII and held elsewhere as ASCII-only JSON (Python's
// json.dump), was not recognised where it appeared outside a sensitive key, and `diff --patch`
// printed it, the backup passphrase included. The values are now learned as YAML reads them
// and looked for in every form JSON writes them. Generated values (quotes, backslashes, '#',
// non-ASCII up to emoji) in five YAML spellings, found in a script and in two JSON files.
TEST(SecretMasking, SecretsAreLearnedAsYamlReadsThemAndFoundAsJsonWritesThem) {
  std::mt19937 rng(4711);
  const std::vector<std::string> pieces = {"a", "Z",  "7", "-", " ", "'", "\"", "\\", "#", "é",
                                           "ß", "客", "🎄", ":", "x", "%", "q",  "Ä",  "/", "!"};
  // Independent of the product: code points as \uXXXX (surrogate pairs), as Python writes them.
  // With `yaml`, a code point above U+FFFF is one \UXXXXXXXX escape, as YAML writes it.
  const auto ascii_json = [](const std::string& v, bool upper, bool yaml = false) {
    std::string out;
    for (std::size_t i = 0; i < v.size();) {
      const auto c = static_cast<unsigned char>(v[i]);
      if (c < 0x80) {
        if (c == '"' || c == '\\') out += '\\';
        out += static_cast<char>(c);
        ++i;
        continue;
      }
      const int len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
      std::uint32_t cp = c & (0x7F >> len);
      for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(v[i + k]) & 0x3F);
      i += static_cast<std::size_t>(len);
      std::vector<std::uint32_t> units;
      if (yaml && cp >= 0x10000) {
        char buf[12];
        std::snprintf(buf, sizeof buf, "\\U%08X", cp);
        out += buf;
        continue;
      }
      if (cp >= 0x10000) {
        units = {0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)};
      } else {
        units = {cp};
      }
      for (const auto u : units) {
        char buf[8];
        std::snprintf(buf, sizeof buf, upper ? "\\u%04X" : "\\u%04x", u);
        out += buf;
      }
    }
    return out;
  };
  for (int round = 0; round < 400; ++round) {
    std::string value = "S" + std::to_string(round);
    for (int i = 0; i < 8; ++i) value += pieces[rng() % pieces.size()];
    value += "z";  // no trailing space: YAML would drop it
    std::string yaml;
    switch (round % 5) {
      case 0: {  // plain, with a comment (a plain scalar cannot hold " #", ": " or a leading quote)
        std::string plain = value;
        for (auto& c : plain) {
          if (c == '#' || c == ':' || c == '\'' || c == '"') c = '_';
        }
        value = plain;
        yaml = "wifi: " + value + "  # the router's\n";
        break;
      }
      case 1: {  // single-quoted, '' for a quote
        std::string q;
        for (char c : value) q += c == '\'' ? std::string("''") : std::string(1, c);
        yaml = "wifi: '" + q + "' # set 2026\n";
        break;
      }
      case 2:  // double-quoted, every non-ASCII character escaped
        yaml = "wifi: \"" + ascii_json(value, round % 2 == 0, true) + "\"\n";
        break;
      case 3: {  // a block scalar under a list item
        std::string plain = value;
        yaml = "keys:\n  - |\n    " + plain + "\n";
        value = plain;
        break;
      }
      default: {  // double-quoted with \" and \\ only
        std::string q;
        for (char c : value)
          q += (c == '"' || c == '\\') ? "\\" + std::string(1, c) : std::string(1, c);
        yaml = "wifi: \"" + q + "\"\n";
        break;
      }
    }
    Masker masker;
    masker.AddSecretsText("other: value-one\n" + yaml + "last: value-two\n");
    std::string utf8_json;
    for (char c : value)
      utf8_json += (c == '"' || c == '\\') ? "\\" + std::string(1, c) : std::string(1, c);
    std::string yaml_single;  // as YAML writes it single-quoted (a review found this one shown)
    for (char c : value) yaml_single += c == '\'' ? std::string("''") : std::string(1, c);
    const std::vector<std::pair<std::string, std::string>> uses = {
        {"ha_config/python_scripts/use.py", "note = \"\"\"" + value + "\"\"\"\n"},
        {"ha_config/packages/use.yaml", "note: '" + yaml_single + "'\n"},
        {"ha_config/.storage/a", "{\"data\": {\"note\": \"" + utf8_json + "\"}}\n"},
        {"ha_config/.storage/b", "{\"note\": \"" + ascii_json(value, false) + "\", \"n\": 1}\n"},
        {"ha_config/.storage/c", "{\"note\": \"" + ascii_json(value, true) + "\"}\n"}};
    for (const auto& [path, text] : uses) {
      const std::string masked = masker.Mask(path, text);
      ASSERT_EQ(masked.find(value), std::string::npos) << "round " << round << "\n"
                                                       << yaml << masked;
      ASSERT_EQ(masked.find(utf8_json), std::string::npos) << "round " << round << "\n"
                                                           << yaml << masked;
      ASSERT_EQ(masked.find(ascii_json(value, false)), std::string::npos) << "round " << round;
      ASSERT_EQ(masked.find(ascii_json(value, true)), std::string::npos) << "round " << round;
      ASSERT_EQ(masked.find(yaml_single), std::string::npos) << "round " << round << "\n" << masked;
    }
  }
}

// Aliases share nodes: ten levels of ten aliases name 10^10 values in under 1 kB. Learning stops
// at a bound instead of walking them all, and a later value is still learned from its line.
TEST(SecretMasking, AnAliasBombInASecretsFileIsBounded) {
  std::string yaml = "l0: &l0 [Wert-0001, Wert-0002]\n";
  for (int level = 1; level <= 10; ++level) {
    yaml += "l" + std::to_string(level) + ": &l" + std::to_string(level) + " [";
    for (int i = 0; i < 10; ++i)
      yaml += std::string(i ? ", " : "") + "*l" + std::to_string(level - 1);
    yaml += "]\n";
  }
  yaml += "wifi: Sekret-After-The-Bomb\n";
  Masker masker;
  masker.AddSecretsText(yaml);  // unbounded, this would not return (ctest's timeout would fail it)
  EXPECT_EQ(masker.Mask("ha_config/notes.md", "psk Sekret-After-The-Bomb and Wert-0001\n"),
            "psk *** and ***\n");
}

// A value of several lines (a PEM key in secrets.yaml, also under ssl/) is masked line by line:
// masking never joins lines (the diff fuzzer's invariant; found by a review).
TEST(SecretMasking, ASecretOfSeveralLinesIsMaskedLineByLine) {
  Masker masker;
  masker.AddSecretsText("k: \"abcd\\nefgh\"\nkey: |\n  -----BEGIN KEY-----\n  MIIEvQIBADAN\n");
  EXPECT_EQ(
      masker.Mask("ha_config/ssl/notes.txt", "abcd\nefgh\n-----BEGIN KEY-----\nMIIEvQIBADAN\n"),
      "***\n***\n***\n***\n");
}

// A long-lived access token goes in an HTTP header: `Authorization: Bearer ...`.
TEST(SecretMasking, AnAuthorizationHeaderIsMasked) {
  const Masker masker;
  EXPECT_EQ(masker.Mask("ha_config/configuration.yaml",
                        "rest_command:\n  lights:\n    headers:\n"
                        "      authorization: \"Bearer eyJ0eXAiOiJKV1QiLCJhbGciOi\"\n"
                        "      content-type: application/json\n"),
            "rest_command:\n  lights:\n    headers:\n      authorization: \"***\"\n"
            "      content-type: application/json\n");
}

// `.env` files, shell scripts and URL queries name secrets as NAME=value (found by the campaign
// on real configurations, where they were shown).
TEST(SecretMasking, AssignmentsToSensitiveNamesAreMasked) {
  const Masker masker;
  EXPECT_EQ(
      masker.Mask("ha_config/.env",
                  "API_TOKEN=abc123def\nexport MQTT_PASSWORD=\"two words\"\nTZ=Europe/Berlin\n"
                  "DB_PASS='x;y'\n"),
      "API_TOKEN=***\nexport MQTT_PASSWORD=\"***\"\nTZ=Europe/Berlin\nDB_PASS='***'\n");
  EXPECT_EQ(masker.Mask("ha_config/configuration.yaml",
                        "  resource: https://api.example.com/v1?access_token=tok42&units=metric\n"),
            "  resource: https://api.example.com/v1?access_token=***&units=metric\n");
  // Comparisons, template assignments with spaces and padding are left alone.
  const std::string kept =
      "  value_template: \"{{ pin==4 or token != 'x' }}\"\n  {% set pin = 4 %}\n  data: dGVzdA==\n";
  EXPECT_EQ(masker.Mask("ha_config/automations.yaml", kept), kept);
}

// Found by a campaign on hostile trees: `password = x` (INI files, spaces around `=`) and a whole
// OpenSSH private key under ha_config/.ssh were shown in full by diff --patch.
TEST(SecretMasking, SpacedAssignmentsAndPrivateKeysAreMasked) {
  const Masker masker;
  EXPECT_EQ(masker.Mask("ha_config/app.ini",
                        "[db]\npassword = INI-PASSWORD-LEAK\n  api_key =\"quoted value\"\n"
                        "user = admin\n"),
            "[db]\npassword = ***\n  api_key =\"***\"\nuser = admin\n");
  const std::string key =
      "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n\nQyNTUxOQAAACD+\n"
      "-----END OPENSSH PRIVATE KEY-----\nafter: 1\n";
  EXPECT_EQ(masker.Mask("ha_config/.ssh/id_ed25519", key),
            "-----BEGIN OPENSSH PRIVATE KEY-----\n***\n\n***\n-----END OPENSSH PRIVATE KEY-----\n"
            "after: 1\n");
  EXPECT_EQ(masker.Mask("ha_config/.storage/x",
                        "{\"k\": \"-----BEGIN RSA PRIVATE KEY-----\\nMIIEpA\\n-----END RSA PRIVATE "
                        "KEY-----\\n\"}\n"),
            "{\"k\": \"-----BEGIN RSA PRIVATE KEY-----***-----END RSA PRIVATE KEY-----\\n\"}\n");
  // A public key or certificate is not a secret; a template's spaced set is not an assignment.
  const std::string kept =
      "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n  {% set token = 4 %}\n";
  EXPECT_EQ(masker.Mask("ha_config/x.yaml", kept), kept);
}

TEST(SecretMasking, DiffOfOnlyMaskedValuesShowsNoHunk) {
  Masker masker;
  const auto side = [](std::uint32_t mode, std::string content) {
    Side s;
    s.present = true;
    s.size = content.size();
    s.mode = mode;
    s.content = std::move(content);
    return s;
  };
  const Side before = side(0644, "password: old-pw-1\n");
  const Side after = side(0600, "password: new-pw-2\n");
  const FileDiff d = DiffFile("ha_config/x.yaml", before, after, masker, Options{});
  EXPECT_TRUE(d.hunks.empty());
  EXPECT_EQ(d.notes, (std::vector<std::string>{"mode 0644 -> 0600", "only masked values differ"}));
  const Side binary = side(0644, std::string("a\0b", 3));
  // Too large to compare, and over the budget: named with the reason, never skipped.
  Side huge;
  huge.present = true;
  huge.size = 9'000'000;
  huge.mode = 0644;
  EXPECT_EQ(DiffFile("ha_config/big.json", before, huge, masker, Options{}).notes,
            (std::vector<std::string>{
                "text or binary, 19 B -> 9.0 MB, too large to compare (9.0 MB; the limit is "
                "8.0 MB)"}));
  huge.size = 100;
  EXPECT_EQ(DiffFile("ha_config/big.json", before, huge, masker, Options{}).notes,
            (std::vector<std::string>{
                "text or binary, 19 B -> 100 B, not compared: the diff's memory budget (64.0 MB) "
                "is spent"}));
  huge.unread = "cannot read it: a FIFO";
  EXPECT_EQ(DiffFile("ha_config/big.json", before, huge, masker, Options{}).notes,
            (std::vector<std::string>{"text or binary, 19 B -> 100 B, cannot read it: a FIFO"}));
  const FileDiff b = DiffFile("ha_config/x.png", before, binary, masker, Options{});
  EXPECT_TRUE(b.binary);
  EXPECT_EQ(b.notes, (std::vector<std::string>{"binary, 19 B -> 3 B"}));
}

}  // namespace
}  // namespace safepoint::diff

namespace safepoint::diff {
namespace {

// diff_fuzzer, first run: a secrets-file line of only a list marker ("-  ") was read one byte
// past its end (ASan heap-buffer-overflow). Seed: tests/fuzz/corpus/diff/list-marker-only-line.
TEST(Regression, SecretsFileLineOfOnlyAListMarker) {
  const Masker masker;
  EXPECT_EQ(masker.Mask("ha_config/secrets.yaml", "-  \nkey: v\n- "), "-  ***\nkey: ***\n- ***");
}

}  // namespace
}  // namespace safepoint::diff
