#pragma once

#include <string>
#include <string_view>
#include <vector>

// What a content diff shows instead of secrets, so a diff can be pasted into an issue or a chat:
//  - every value of a secrets file (`secrets.yaml` at any depth): `key: ***`; comments and
//    continuation lines are `***` too;
//  - the value after any key that looks sensitive (DefaultSensitiveKeys, plus the configured
//    `diff.sensitive_keys`), in YAML (`password: x`, `- token: "x"`, block scalars and nested
//    blocks below such a key) and JSON (`"access_token": "x"`, also inline), and any `!secret`
//    reference;
//  - `NAME=value` with a sensitive name (`.env`, shell scripts, URL queries);
//  - the password of a URL (`mqtt://user:***@host`);
//  - every value the secrets files hold, wherever else it appears (a password pasted into
//    configuration.yaml under an innocent key): as YAML reads it, and in the forms JSON writes
//    it (escaped; ASCII-only with \uXXXX).
// Both sides of a diff are masked the same way before they are compared.
namespace safepoint::diff {

inline constexpr std::string_view kMasked = "***";

// Lowercase fragments of key names whose values are masked ("password", "token", "api_key", ...).
[[nodiscard]] const std::vector<std::string>& DefaultSensitiveKeys();

class Masker {
 public:
  // `extra_keys`: more key-name fragments (matched case-insensitively, '-' as '_').
  explicit Masker(const std::vector<std::string>& extra_keys = {});

  // Learns the values of a secrets file's text (a safety point's or the live one) so they are
  // masked wherever they appear. Values shorter than 4 bytes are masked only by key.
  void AddSecretsText(std::string_view text);

  // True for the files whose every value is masked: `secrets.yaml` (or `.yml`) at any depth.
  [[nodiscard]] static bool IsSecretsFile(std::string_view path);

  // `text` (the content of archive path `path`) as a diff may show it.
  [[nodiscard]] std::string Mask(std::string_view path, std::string_view text) const;

  // True when `key` (a YAML or JSON key) names something sensitive.
  [[nodiscard]] bool SensitiveKey(std::string_view key) const;

 private:
  [[nodiscard]] std::string MaskLines(std::string_view text, bool secrets_file) const;
  [[nodiscard]] std::string MaskValues(std::string text) const;

  std::vector<std::string> keys_;
  std::vector<std::string> values_;  // longest first
};

}  // namespace safepoint::diff
