#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "core/base/io.h"
#include "core/base/utf8.h"
#include "core/config/config.h"

// The reader of Home-Assistant-style secrets files (`secrets.yaml`): `!secret` values of the
// configuration and the backup passphrase. The schema of the configuration is config.cc.
namespace safepoint::config {
namespace {

constexpr std::size_t kMaxSecretsFileBytes = 1 << 20;

// Secrets file reader. It never copies a value into ordinary heap memory: the file is read into
// sodium memory and the wanted value is decoded from there into another Secret.

struct SecretHit {
  Secret value;
  std::size_t line = 0;
  std::size_t col = 0;
};

std::string SecretsWhere(const std::string& file, std::size_t line, std::size_t col) {
  if (line == 0) return file;
  return file + ":" + std::to_string(line) + ":" + std::to_string(col);
}

bool IsBlank(char c) { return c == ' ' || c == '\t'; }

std::string_view TrimRight(std::string_view s) {
  while (!s.empty() && IsBlank(s.back())) s.remove_suffix(1);
  return s;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Appends the UTF-8 encoding of `cp` at out[*n]. False for an invalid code point.
bool PutUtf8(std::uint32_t cp, std::uint8_t* out, std::size_t* n) {
  if (cp >= 0xD800 && cp <= 0xDFFF) return false;
  if (cp < 0x80) {
    out[(*n)++] = static_cast<std::uint8_t>(cp);
  } else if (cp < 0x800) {
    out[(*n)++] = static_cast<std::uint8_t>(0xC0 | (cp >> 6));
    out[(*n)++] = static_cast<std::uint8_t>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out[(*n)++] = static_cast<std::uint8_t>(0xE0 | (cp >> 12));
    out[(*n)++] = static_cast<std::uint8_t>(0x80 | ((cp >> 6) & 0x3F));
    out[(*n)++] = static_cast<std::uint8_t>(0x80 | (cp & 0x3F));
  } else if (cp <= 0x10FFFF) {
    out[(*n)++] = static_cast<std::uint8_t>(0xF0 | (cp >> 18));
    out[(*n)++] = static_cast<std::uint8_t>(0x80 | ((cp >> 12) & 0x3F));
    out[(*n)++] = static_cast<std::uint8_t>(0x80 | ((cp >> 6) & 0x3F));
    out[(*n)++] = static_cast<std::uint8_t>(0x80 | (cp & 0x3F));
  } else {
    return false;
  }
  return true;
}

// Whether `rest`, what follows a quoted value, is blank or a comment (after at least one blank).
bool OnlyCommentAfter(std::string_view rest) {
  rest = TrimRight(rest);
  std::size_t i = 0;
  while (i < rest.size() && IsBlank(rest[i])) ++i;
  return i == rest.size() || (rest[i] == '#' && i > 0);
}

// The character a one-character escape of a double-quoted value stands for; -1 for the hex
// escapes (\x, \u, \U) and unsupported ones.
int SimpleEscape(char e) {
  switch (e) {
    case '0':
      return 0;
    case 'a':
      return '\a';
    case 'b':
      return '\b';
    case 't':
    case '\t':
      return '\t';
    case 'n':
      return '\n';
    case 'v':
      return '\v';
    case 'f':
      return '\f';
    case 'r':
      return '\r';
    case 'e':
      return 0x1B;
    case ' ':
      return ' ';
    case '"':
      return '"';
    case '/':
      return '/';
    case '\\':
      return '\\';
    default:
      return -1;
  }
}

// How many hex digits follow a hex escape; 0 for other escapes.
std::size_t HexDigitsOf(char e) {
  switch (e) {
    case 'x':
      return 2;
    case 'u':
      return 4;
    case 'U':
      return 8;
    default:
      return 0;
  }
}

// Decodes a double-quoted value (v[0] is the quote) into out[0..*n). Returns an error text, or
// "" on success.
std::string DecodeDoubleQuoted(std::string_view v, std::uint8_t* out, std::size_t* n) {
  std::size_t i = 1;
  for (; i < v.size() && v[i] != '"'; ++i) {
    if (v[i] != '\\') {
      out[(*n)++] = static_cast<std::uint8_t>(v[i]);
      continue;
    }
    if (++i >= v.size()) return "multi-line quoted values are not supported";
    const char e = v[i];
    if (const int c = SimpleEscape(e); c >= 0) {
      out[(*n)++] = static_cast<std::uint8_t>(c);
      continue;
    }
    const std::size_t hex_digits = HexDigitsOf(e);
    if (hex_digits == 0) return "unsupported escape sequence in a double-quoted value";
    std::uint32_t cp = 0;
    for (std::size_t k = 0; k < hex_digits; ++k) {
      if (i + 1 >= v.size() || HexValue(v[i + 1]) < 0) return "bad hex escape in a value";
      cp = (cp << 4) | static_cast<std::uint32_t>(HexValue(v[++i]));
    }
    // As in YAML (and so in Home Assistant): every escape, \x too, names a Unicode character,
    // written as UTF-8 ("\xe9" is U+00E9, the bytes c3 a9, as typed at `age -d`'s prompt).
    if (!PutUtf8(cp, out, n)) {
      return "bad unicode escape in a value";
    }
  }
  if (i >= v.size()) return "multi-line quoted values are not supported";
  if (!OnlyCommentAfter(v.substr(i + 1))) return "unexpected text after the quoted value";
  return "";
}

// Decodes a single-quoted value (v[0] is the quote) into out[0..*n). Returns an error text, or
// "" on success.
std::string DecodeSingleQuoted(std::string_view v, std::uint8_t* out, std::size_t* n) {
  std::size_t i = 1;
  while (true) {
    if (i >= v.size()) return "multi-line quoted values are not supported";
    if (v[i] == '\'') {
      if (i + 1 < v.size() && v[i + 1] == '\'') {
        out[(*n)++] = '\'';
        i += 2;
        continue;
      }
      break;
    }
    out[(*n)++] = static_cast<std::uint8_t>(v[i++]);
  }
  if (!OnlyCommentAfter(v.substr(i + 1))) return "unexpected text after the quoted value";
  return "";
}

// Decodes the value part of `key: <v>` (v starts at the first non-blank character) into a
// Secret. Returns an error text (never containing the value) on failure.
std::string DecodeSecretValue(std::string_view v, Secret* result) {
  Secret tmp(v.size());
  std::uint8_t* out = tmp.bytes().data();
  std::size_t n = 0;
  auto finish = [&](std::size_t len) {
    *result = Secret(std::string_view(tmp.view().data(), len));
  };
  if (v.empty() || v[0] == '#') {
    finish(0);
    return "";
  }
  const char c0 = v[0];
  if (c0 == '"' || c0 == '\'') {
    std::string problem =
        c0 == '"' ? DecodeDoubleQuoted(v, out, &n) : DecodeSingleQuoted(v, out, &n);
    if (!problem.empty()) return problem;
    finish(n);
    return "";
  }
  if (c0 == '|' || c0 == '>') return "block scalars are not supported here; quote the value";
  if (c0 == '[' || c0 == '{') return "expected a string, got a list or map";
  if (c0 == '&' || c0 == '*' || c0 == '!')
    return "anchors, aliases and tags are not supported here";
  if (c0 == '@' || c0 == '`' || c0 == '%') return "a value cannot start with '@', '`' or '%'";
  // Plain scalar: up to a " #" comment, trailing blanks removed.
  std::size_t end = v.size();
  for (std::size_t i = 1; i < v.size(); ++i) {
    if (v[i] == '#' && IsBlank(v[i - 1])) {
      end = i;
      break;
    }
  }
  std::string_view plain = TrimRight(v.substr(0, end));
  if (plain == "~" || plain == "null" || plain == "Null" || plain == "NULL") plain = {};
  // `~` and `null` leave an empty view whose data() is null: memcpy may not be given it.
  if (!plain.empty()) std::memcpy(out, plain.data(), plain.size());
  finish(plain.size());
  return "";
}

// True when `text` is empty or only whitespace: ASCII space, tab, CR, LF, VT, FF and the
// Unicode spaces a keyboard or copy-paste produces (U+00A0, U+2000..U+200B, U+202F, U+205F,
// U+3000, U+FEFF).
bool IsAllWhitespace(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto b = [&](std::size_t k) {
      return i + k < text.size() ? static_cast<unsigned char>(text[i + k]) : 0u;
    };
    if (b(0) == ' ' || (b(0) >= '\t' && b(0) <= '\r')) {
      i += 1;
    } else if (b(0) == 0xC2 && b(1) == 0xA0) {
      i += 2;
    } else if (b(0) == 0xE2 && b(1) == 0x80 && ((b(2) >= 0x80 && b(2) <= 0x8B) || b(2) == 0xAF)) {
      i += 3;
    } else if (b(0) == 0xE2 && b(1) == 0x81 && b(2) == 0x9F) {
      i += 3;
    } else if ((b(0) == 0xE3 && b(1) == 0x80 && b(2) == 0x80) ||
               (b(0) == 0xEF && b(1) == 0xBB && b(2) == 0xBF)) {
      i += 3;
    } else {
      return false;
    }
  }
  return true;
}

// Reads the secrets file (a regular file of at most 1 MiB) into sodium memory: `*total` bytes
// of `*buf`. Returns an error text, or "" on success.
std::string ReadSecretsBytes(const std::string& file, Secret* buf, std::size_t* total) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return std::string("cannot read secrets file: ") + std::strerror(errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return "secrets file is not a regular file";
  }
  if (static_cast<std::uint64_t>(st.st_size) > kMaxSecretsFileBytes) {
    ::close(fd);
    return "secrets file is larger than 1 MiB";
  }
  *buf = Secret(static_cast<std::size_t>(st.st_size));
  while (*total < buf->size()) {
    const ssize_t r = ::read(fd, buf->bytes().data() + *total, buf->size() - *total);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      return std::string("cannot read secrets file: ") + std::strerror(err);
    }
    if (r == 0) break;
    *total += static_cast<std::size_t>(r);
  }
  ::close(fd);
  return "";
}

// The key of a top-level `key: value` line (plain, or quoted: the quotes are not part of it) in
// `*k`; returns the position of its colon, npos when the line is no such line.
std::size_t FindKey(std::string_view line, std::string_view* k) {
  std::size_t colon = std::string_view::npos;
  if (line[0] == '"' || line[0] == '\'') {
    const std::size_t close = line.find(line[0], 1);
    if (close == std::string_view::npos) return colon;
    *k = line.substr(1, close - 1);
    std::size_t j = close + 1;
    while (j < line.size() && IsBlank(line[j])) ++j;
    if (j < line.size() && line[j] == ':') colon = j;
  } else {
    for (std::size_t j = 0; j < line.size(); ++j) {
      if (line[j] == ':' && (j + 1 == line.size() || IsBlank(line[j + 1]))) {
        colon = j;
        break;
      }
    }
    if (colon != std::string_view::npos) *k = TrimRight(line.substr(0, colon));
  }
  return colon;
}

// The line of `text` that starts at `*pos`, without its '\n'; `*pos` moves past it.
std::string_view NextLine(std::string_view text, std::size_t* pos) {
  std::size_t eol = text.find('\n', *pos);
  if (eol == std::string_view::npos) eol = text.size();
  const std::string_view line = text.substr(*pos, eol - *pos);
  *pos = eol + 1;
  return line;
}

// Whether `key`'s text occurs in `text` other than in the name of a top-level key: in a value,
// a comment or a continued line. A key name that merely contains it ("backup" in
// "backup_encryption_passphrase:") is a typo of the name, not a passphrase.
bool OccursOutsideKeyNames(std::string_view text, std::string_view key) {
  // A key with a colon could be a whole "key: value" line itself: never told apart, always hidden.
  if (key.find(':') != std::string_view::npos) return text.find(key) != std::string_view::npos;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::string_view line = NextLine(text, &pos);
    if (line.empty()) continue;
    std::string_view k;
    const std::size_t colon =
        IsBlank(line[0]) || line[0] == '#' ? std::string_view::npos : FindKey(line, &k);
    if (colon != std::string_view::npos) line.remove_prefix(colon + 1);
    if (line.find(key) != std::string_view::npos) return true;
  }
  return false;
}

// `passphrase`: `key` is encryption.passphrase_key, which users sometimes fill with the
// passphrase itself; not found, it is then not shown when its text is in the file.
Result<SecretHit> ScanSecretsFile(const std::string& file, const std::string& key,
                                  bool passphrase = false) {
  auto fail = [&](std::size_t line, std::size_t col, const std::string& what) {
    return Fail(ErrorCode::kBadInput,
                SecretsWhere(file, line, col) + ": key '" + key + "': " + what);
  };
  Secret buf;
  std::size_t total = 0;
  if (std::string problem = ReadSecretsBytes(file, &buf, &total); !problem.empty()) {
    return fail(0, 0, problem);
  }

  std::string_view text = buf.view().substr(0, total);
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  std::optional<SecretHit> hit;
  bool check_next = false;  // the line after the hit must not continue or nest its value
  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::string_view line = NextLine(text, &pos);
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    // YAML allows no NUL byte: Home Assistant would refuse the file, so do we.
    if (const std::size_t nul = line.find('\0'); nul != std::string_view::npos) {
      return fail(line_no, nul + 1, "NUL byte in the secrets file");
    }
    std::size_t first = 0;
    while (first < line.size() && IsBlank(line[first])) ++first;
    const bool blank_or_comment = first == line.size() || line[first] == '#';
    if (check_next && !blank_or_comment) {
      check_next = false;
      if (first > 0 || line[0] == '-') {
        return fail(hit->line, hit->col,
                    "multi-line, list and map values are not supported; use one quoted line");
      }
    }
    if (blank_or_comment || first > 0) continue;
    if (line.substr(0, 3) == "---" || line.substr(0, 3) == "...") continue;
    std::string_view k;
    const std::size_t colon = FindKey(line, &k);
    if (colon == std::string_view::npos || k != key) continue;
    if (hit) return fail(line_no, 1, "duplicate key");
    std::size_t vstart = colon + 1;
    while (vstart < line.size() && IsBlank(line[vstart])) ++vstart;
    SecretHit h;
    h.line = line_no;
    h.col = vstart + 1;
    const std::string problem = DecodeSecretValue(line.substr(vstart), &h.value);
    if (!problem.empty()) return fail(h.line, h.col, problem);
    hit = std::move(h);
    check_next = true;
  }
  if (!hit && passphrase && OccursOutsideKeyNames(text, key)) {
    return Fail(ErrorCode::kBadInput,
                SecretsWhere(file, 0, 0) + ": " + std::string(kPassphraseKeyIsAValue));
  }
  if (!hit) return fail(0, 0, "not found in the secrets file");
  return std::move(*hit);
}

}  // namespace

Result<Secret> ReadSecretsFileValue(const std::string& secrets_file, const std::string& key) {
  auto hit = ScanSecretsFile(secrets_file, key);
  if (!hit) return tl::unexpected(std::move(hit.error()));
  return std::move(hit->value);
}

Result<Secret> LoadPassphrase(const Config& config) {
  const std::string& file = config.encryption.secrets_file;
  const std::string& key = config.encryption.passphrase_key;
  auto hit = ScanSecretsFile(file, key, true);
  if (!hit) return tl::unexpected(std::move(hit.error()));
  if (hit->value.empty()) {
    return Fail(ErrorCode::kBadInput, SecretsWhere(file, hit->line, hit->col) + ": key '" + key +
                                          "': the backup passphrase is empty");
  }
  if (IsAllWhitespace(hit->value.view())) {
    return Fail(ErrorCode::kBadInput, SecretsWhere(file, hit->line, hit->col) + ": key '" + key +
                                          "': the backup passphrase is only whitespace; choose "
                                          "one with visible characters");
  }
  return std::move(hit->value);
}

}  // namespace safepoint::config
