// Fuzzes the secrets.yaml reader (config::ReadSecretsFileValue and config::LoadPassphrase: the
// hand-written scanner of top-level `key: value` lines that keeps the passphrase out of ordinary
// heap memory; docs/configuration.md, "The passphrase").
//
// Input: byte 0 picks the mode.
// - Even: the rest is a whole secrets file. Invariants: errors are kBadInput and read
//   "<file>[:<line>:<col>]: key '<key>': <one of the reader's fixed texts>", so no byte of the
//   file (a value above all) reaches a message; a line number is one of the file's lines; a
//   passphrase LoadPassphrase accepts is neither empty nor only whitespace.
// - Odd: byte 1 picks a quoting style (double-quoted with escapes, single-quoted, plain) and the
//   rest is a value, written as `backup_encryption_passphrase: <quoted value>` between other
//   lines. Invariant: the reader returns exactly the value's bytes; where yaml-cpp loads the same
//   file, it reads the same string.
// The file lives in a private temporary directory made once per process.

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "core/config/config.h"
#include "tests/fuzz/fuzz_util.h"

namespace safepoint::fuzz {
namespace {

constexpr std::string_view kKey = "backup_encryption_passphrase";

// Every text the reader puts after "key '<key>': ".
constexpr std::string_view kTexts[] = {
    "multi-line quoted values are not supported",
    "unsupported escape sequence in a double-quoted value",
    "bad hex escape in a value",
    "bad unicode escape in a value",
    "unexpected text after the quoted value",
    "block scalars are not supported here; quote the value",
    "expected a string, got a list or map",
    "anchors, aliases and tags are not supported here",
    "a value cannot start with '@', '`' or '%'",
    "multi-line, list and map values are not supported; use one quoted line",
    "duplicate key",
    "not found in the secrets file",
    "the backup passphrase is empty",
    "the backup passphrase is only whitespace; choose one with visible characters",
    "NUL byte in the secrets file",
};

const std::string& SecretsFile() {
  static const std::string path = [] {
    std::string dir = (std::filesystem::temp_directory_path() / "safepoint-fuzz-XXXXXX").string();
    if (::mkdtemp(dir.data()) == nullptr) Violated("cannot make a temporary directory");
    static const std::string remove = dir;
    std::atexit([] { std::filesystem::remove_all(remove); });
    return dir + "/secrets.yaml";
  }();
  return path;
}

void WriteFile(std::string_view content) {
  std::ofstream out(SecretsFile(), std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  if (!out.flush()) Violated("cannot write the secrets file");
}

void CheckMessage(const Error& error, std::size_t lines) {
  ExpectCode(error, {ErrorCode::kBadInput}, "secrets reader");
  std::string_view m = error.message;
  if (!m.starts_with(SecretsFile())) Violated("secrets: message does not start with the file");
  m.remove_prefix(SecretsFile().size());
  if (m.size() > 1 && m[0] == ':' && std::isdigit(static_cast<unsigned char>(m[1])) != 0) {
    const std::size_t line = std::strtoull(std::string(m.substr(1)).c_str(), nullptr, 10);
    if (line == 0 || line > lines) Violated("secrets: message names a line the file lacks");
    m.remove_prefix(m.find(": "));
  }
  if (m == ": " + std::string(config::kPassphraseKeyIsAValue)) return;  // the key's text, hidden
  const std::string head = ": key '" + std::string(kKey) + "': ";
  if (!m.starts_with(head)) Violated("secrets: message does not name the key");
  m.remove_prefix(head.size());
  for (std::string_view t : kTexts) {
    if (m == t) return;
  }
  if (m == "secrets file is not a regular file" || m == "secrets file is larger than 1 MiB" ||
      m.starts_with("cannot read secrets file: ")) {
    return;
  }
  Violated("secrets: a message beyond the reader's fixed texts (may leak the file)");
}

std::size_t CountLines(std::string_view text) {
  std::size_t n = 0;
  for (char c : text) n += c == '\n' ? 1 : 0;
  return text.empty() || text.back() == '\n' ? n : n + 1;
}

void WholeFile(std::string_view text) {
  WriteFile(text);
  const std::size_t lines = CountLines(text);
  auto value = config::ReadSecretsFileValue(SecretsFile(), std::string(kKey));
  if (!value) CheckMessage(value.error(), lines);
  config::Config config;
  config.encryption.secrets_file = SecretsFile();
  config.encryption.passphrase_key = std::string(kKey);
  auto passphrase = config::LoadPassphrase(config);
  if (!passphrase) {
    CheckMessage(passphrase.error(), lines);
    return;
  }
  if (!value || passphrase->view() != value->view()) {
    Violated("secrets: LoadPassphrase and ReadSecretsFileValue disagree");
  }
  if (passphrase->empty()) Violated("secrets: an empty passphrase accepted");
  if (passphrase->view().find_first_not_of(" \t\r\n\v\f") == std::string_view::npos) {
    Violated("secrets: a whitespace-only passphrase accepted");
  }
}

std::string Quote(std::uint8_t style, std::string_view value) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  switch (style % 3) {
    case 0:  // double-quoted; control bytes as \xNN, everything else as it is
      out = "\"";
      for (char c : value) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
          out += '\\';
          out += c;
        } else if (u < 0x20 || u == 0x7f) {
          out += "\\x";
          out += kHex[u >> 4];
          out += kHex[u & 15];
        } else {
          out += c;
        }
      }
      return out + "\"";
    case 1:  // single-quoted: one line, quotes doubled, no NUL (YAML has none; refused)
      out = "'";
      for (char c : value) {
        if (c == '\n' || c == '\r' || c == '\0') return {};
        out += c;
        if (c == '\'') out += c;
      }
      return out + "'";
    default: {  // plain: letters, digits and inner spaces only
      if (value.empty() || value.front() == ' ' || value.back() == ' ') return {};
      for (char c : value) {
        if (c != ' ' && !std::isalnum(static_cast<unsigned char>(c))) return {};
      }
      if (value == "null" || value == "Null" || value == "NULL") return {};
      return std::string(value);
    }
  }
}

void RoundTrip(std::uint8_t style, std::string_view value) {
  const std::string quoted = Quote(style, value);
  if (quoted.empty()) return;
  const std::string text = "# Home Assistant secrets\nmqtt_password: other\n" + std::string(kKey) +
                           ": " + quoted + "  # the backup passphrase\nlast: \"x\"\n";
  WriteFile(text);
  auto got = config::ReadSecretsFileValue(SecretsFile(), std::string(kKey));
  if (!got) {
    std::fprintf(stderr, "%s\n", got.error().message.c_str());
    Violated("secrets: a correctly quoted value is refused");
  }
  if (got->view() != value) Violated("secrets: the value read differs from the value written");
  try {
    const YAML::Node doc = YAML::Load(text);
    const YAML::Node node = doc[std::string(kKey)];
    if (node.IsScalar() && node.as<std::string>() != value) {
      Violated("secrets: yaml-cpp reads another value than the reader");
    }
  } catch (const YAML::Exception&) {
    // yaml-cpp refuses some bytes (e.g. a BOM inside); the reader's own round trip still holds.
  }
}

}  // namespace
}  // namespace safepoint::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace safepoint::fuzz;
  if (size < 1) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) == 0) {
    WholeFile(rest);
  } else if (!rest.empty()) {
    RoundTrip(static_cast<std::uint8_t>(rest[0]), rest.substr(1));
  }
  return 0;
}
