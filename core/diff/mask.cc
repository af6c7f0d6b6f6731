#include "core/diff/mask.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <unordered_set>

namespace safepoint::diff {

namespace {

std::string Normalized(std::string_view key) {
  std::string out;
  out.reserve(key.size());
  for (const char c : key) {
    out.push_back(c == '-' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

bool IsKeyChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-' || c == '.' ||
         static_cast<unsigned char>(c) >= 0x80;
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::size_t Indent(std::string_view line) {
  std::size_t n = 0;
  while (n < line.size() && (line[n] == ' ' || line[n] == '\t')) ++n;
  return n;
}

// Where the text after "- " list markers starts.
std::size_t ItemStart(std::string_view line, std::size_t at) {
  while (at + 1 < line.size() && line[at] == '-' && line[at + 1] == ' ') {
    at += 2;
    while (at < line.size() && line[at] == ' ') ++at;
  }
  return at;
}

// The key that ends right before the colon at `colon` ("password" in `"password": x` or
// `- password: x`), and where it starts; empty when there is none.
std::string_view KeyBefore(std::string_view line, std::size_t colon, std::size_t* begin) {
  std::size_t end = colon;
  while (end > 0 && IsSpace(line[end - 1])) --end;
  if (end == 0) return {};
  const char q = line[end - 1];
  if (q == '"' || q == '\'') {
    const std::size_t open = end >= 2 ? line.rfind(q, end - 2) : std::string_view::npos;
    if (open == std::string_view::npos) return {};
    *begin = open;
    return line.substr(open + 1, end - 2 - open);
  }
  std::size_t b = end;
  while (b > 0 && IsKeyChar(line[b - 1])) --b;
  *begin = b;
  return line.substr(b, end - b);
}

// Where a value starting at `at` ends: after its closing quote, at the matching bracket, at a
// separator (inline) or at the end of the line (`to_end`).
std::size_t ValueEnd(std::string_view line, std::size_t at, bool to_end) {
  if (at >= line.size()) return at;
  const char c = line[at];
  if (c == '"' || c == '\'') {
    for (std::size_t i = at + 1; i < line.size(); ++i) {
      if (c == '"' && line[i] == '\\') {
        ++i;
      } else if (line[i] == c) {
        return i + 1;
      }
    }
    return line.size();
  }
  if (to_end) return line.size();
  std::size_t depth = 0;
  for (std::size_t i = at; i < line.size(); ++i) {
    if (line[i] == '{' || line[i] == '[') ++depth;
    if (line[i] == '}' || line[i] == ']') {
      if (depth == 0) return i;
      if (--depth == 0) return i + 1;
    }
    if (depth == 0 && line[i] == ',') return i;
  }
  return line.size();
}

bool BlockOpener(std::string_view value) {
  while (!value.empty() && IsSpace(value.back())) value.remove_suffix(1);
  if (value.empty() || value == "{" || value == "[") return true;
  return value[0] == '|' || value[0] == '>';
}

// mqtt://user:password@host -> mqtt://user:***@host
void MaskUrlPasswords(std::string& line) {
  for (std::size_t at = line.find("://"); at != std::string::npos; at = line.find("://", at + 3)) {
    const std::size_t start = at + 3;
    std::size_t end = start;
    while (end < line.size() && line[end] != '/' && line[end] != '@' && !IsSpace(line[end]) &&
           line[end] != '"' && line[end] != '\'') {
      ++end;
    }
    if (end >= line.size() || line[end] != '@') continue;
    const std::size_t colon = line.find(':', start);
    if (colon == std::string::npos || colon > end || colon + 1 == end) continue;
    line.replace(colon + 1, end - colon - 1, kMasked);
  }
}

// Appends code point `cp` as JSON writes it in ASCII-only output: \uXXXX, a surrogate pair
// above U+FFFF, in lower or upper case hex.
void AppendUnicodeEscape(std::string& out, std::uint32_t cp, bool upper) {
  const auto unit = [&](std::uint32_t u) {
    char buf[8];
    std::snprintf(buf, sizeof buf, upper ? "\\u%04X" : "\\u%04x", static_cast<unsigned>(u));
    out += buf;
  };
  if (cp >= 0x10000) {
    cp -= 0x10000;
    unit(0xD800 + (cp >> 10));
    unit(0xDC00 + (cp & 0x3FF));
  } else {
    unit(cp);
  }
}

// The length of the UTF-8 sequence at `at` and its code point; 0 when it is not valid UTF-8.
std::size_t DecodeUtf8(std::string_view v, std::size_t at, std::uint32_t* cp) {
  const auto c = static_cast<unsigned char>(v[at]);
  const std::size_t len = c >= 0xF0 && c < 0xF5 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
  if (len == 0 || c >= 0xF5 || at + len > v.size()) return 0;
  std::uint32_t out = c & (0x7F >> len);
  for (std::size_t i = 1; i < len; ++i) {
    const auto b = static_cast<unsigned char>(v[at + i]);
    if ((b & 0xC0) != 0x80) return 0;
    out = (out << 6) | (b & 0x3F);
  }
  const std::uint32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
  if (out < min || out > 0x10FFFF || (out >= 0xD800 && out <= 0xDFFF)) return 0;
  *cp = out;
  return len;
}

// How other files may hold the secret value `v`: as it is; as a YAML single-quoted string holds
// it (`''`); as a JSON string holds it (quotes, backslashes and control characters escaped: a
// `.storage` file); and as ASCII-only JSON holds it (every non-ASCII character as \uXXXX,
// Python's json.dump default), in both hex cases.
std::vector<std::string> WrittenForms(std::string_view v) {
  std::string json, ascii_lower, ascii_upper;
  bool non_ascii = false;
  for (std::size_t i = 0; i < v.size();) {
    const auto c = static_cast<unsigned char>(v[i]);
    std::uint32_t cp = 0;
    const std::size_t len = c >= 0x80 ? DecodeUtf8(v, i, &cp) : 0;
    if (len > 0) {
      json.append(v.substr(i, len));
      AppendUnicodeEscape(ascii_lower, cp, false);
      AppendUnicodeEscape(ascii_upper, cp, true);
      non_ascii = true;
      i += len;
      continue;
    }
    std::string e;
    switch (c) {
      case '"':
        e = "\\\"";
        break;
      case '\\':
        e = "\\\\";
        break;
      case '\n':
        e = "\\n";
        break;
      case '\t':
        e = "\\t";
        break;
      case '\r':
        e = "\\r";
        break;
      default:
        if (c < 0x20) {
          AppendUnicodeEscape(e, c, false);
        } else {
          e.assign(1, static_cast<char>(c));  // ASCII, or a byte that is not UTF-8
        }
    }
    json += e;
    ascii_lower += e;
    ascii_upper += e;
    ++i;
  }
  std::vector<std::string> out{std::string(v)};
  // As a YAML single-quoted string holds it ('it''s').
  if (v.find('\'') != std::string_view::npos) {
    std::string yaml_single;
    for (const char c : v) yaml_single += c == '\'' ? std::string("''") : std::string(1, c);
    out.push_back(std::move(yaml_single));
  }
  for (auto* form : {&json, &ascii_lower, &ascii_upper}) {
    if ((form == &json || non_ascii) && std::find(out.begin(), out.end(), *form) == out.end()) {
      out.push_back(std::move(*form));
    }
  }
  return out;
}

// Every scalar value below `node` (map values, sequence items, at any depth up to 64). Aliases
// share nodes, so a small document can name a huge tree (`*a` ten times, each ten times...):
// `*budget` bounds the nodes visited (what a secrets file holds is far below it).
void LearnScalars(const YAML::Node& node, int depth, std::size_t* budget,
                  const std::function<void(std::string_view)>& learn) {
  if (depth > 64 || *budget == 0) return;
  --*budget;
  if (node.IsScalar()) {
    learn(node.Scalar());
  } else if (node.IsSequence()) {
    for (const auto& item : node) LearnScalars(item, depth + 1, budget, learn);
  } else if (node.IsMap()) {
    for (const auto& kv : node) LearnScalars(kv.second, depth + 1, budget, learn);
  }
}

// A YAML value as written on one line, without its quotes ('' and \" undone) or, unquoted,
// without a trailing comment (" #...").
std::string WithoutQuotesOrComment(std::string_view v) {
  while (!v.empty() && IsSpace(v.front())) v.remove_prefix(1);
  std::string out;
  if (!v.empty() && (v.front() == '"' || v.front() == '\'')) {
    const char q = v.front();
    for (std::size_t i = 1; i < v.size(); ++i) {
      if (q == '\'' && v[i] == '\'') {
        if (i + 1 < v.size() && v[i + 1] == '\'') {
          out.push_back('\'');
          ++i;
          continue;
        }
        break;
      }
      if (q == '"' && v[i] == '\\' && i + 1 < v.size()) {
        out.push_back(v[++i]);
        continue;
      }
      if (q == '"' && v[i] == '"') break;
      out.push_back(v[i]);
    }
    return out;
  }
  const std::size_t comment = v.find(" #");
  const std::size_t tab_comment = v.find("\t#");
  out = std::string(v.substr(0, std::min(comment, tab_comment)));
  while (!out.empty() && IsSpace(out.back())) out.pop_back();
  return out;
}

}  // namespace

const std::vector<std::string>& DefaultSensitiveKeys() {
  static const std::vector<std::string> keys = {
      "password",  "passwd",     "passphrase", "pass",         "pwd",
      "secret",    "token",      "api_key",    "apikey",       "_key",
      "key",       "credential", "bearer",     "cookie",       "jwt",
      "private",   "psk",        "pin",        "webhook_id",   "auth_code",
      "client_id", "passwort",   "kennwort",   "mot_de_passe", "authorization"};
  return keys;
}

Masker::Masker(const std::vector<std::string>& extra_keys) : keys_(DefaultSensitiveKeys()) {
  for (const auto& k : extra_keys) {
    if (!k.empty()) keys_.push_back(Normalized(k));
  }
}

bool Masker::SensitiveKey(std::string_view key) const {
  const std::string k = Normalized(key);
  if (k.empty()) return false;
  for (const auto& s : keys_) {
    if (s.size() > 4 || s[0] == '_') {
      if (k.find(s) != std::string::npos) return true;
      continue;
    }
    // Short fragments ("pin", "key", "pass") match whole words of the key: "door_pin", not
    // "spinner".
    for (std::size_t at = k.find(s); at != std::string::npos; at = k.find(s, at + 1)) {
      const bool starts = at == 0 || k[at - 1] == '_' || k[at - 1] == '.';
      const std::size_t end = at + s.size();
      const bool ends = end == k.size() || k[end] == '_' || k[end] == '.';
      if (starts && ends) return true;
    }
  }
  return false;
}

bool Masker::IsSecretsFile(std::string_view path) {
  const std::size_t slash = path.rfind('/');
  const std::string_view base = slash == std::string_view::npos ? path : path.substr(slash + 1);
  return base == "secrets.yaml" || base == "secrets.yml";
}

void Masker::AddSecretsText(std::string_view text) {
  // Each value once: an alias names the same (possibly large) scalar again and again.
  std::unordered_set<std::string> seen;
  std::function<void(std::string_view)> add = [&](std::string_view v) {
    // A block scalar ends with its newline.
    while (!v.empty() && (IsSpace(v.front()) || v.front() == '\n')) v.remove_prefix(1);
    while (!v.empty() && (IsSpace(v.back()) || v.back() == '\n')) v.remove_suffix(1);
    if (v.size() < 4 || v.starts_with("!secret") || !seen.emplace(v).second) return;
    for (auto& form : WrittenForms(v)) {
      // Masking works line by line (a diff keeps its line numbers): a value of several lines
      // (a PEM key) is looked for line by line, and whole only where it stays on one line.
      if (form.find('\n') == std::string::npos) values_.push_back(std::move(form));
    }
    if (v.find('\n') != std::string_view::npos) {
      for (std::size_t at = 0; at <= v.size();) {
        const std::size_t nl = std::min(v.find('\n', at), v.size());
        add(v.substr(at, nl - at));
        at = nl + 1;
      }
    }
  };
  // What YAML makes of the file (comments, quotes and escapes undone, block scalars joined): the
  // values as Home Assistant and the passphrase loader read them.
  try {
    std::size_t budget = 100'000;
    LearnScalars(YAML::Load(std::string(text)), 0, &budget, add);
  } catch (const std::exception&) {
    // Not valid YAML: the lines below still learn what they can.
  }
  // Line by line, for a file YAML cannot read: each value as written, and without its quotes or
  // a trailing comment.
  const auto add_written = [&](std::string_view v) {
    add(v);
    add(WithoutQuotesOrComment(v));
  };
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    const std::size_t start = ItemStart(line, Indent(line));
    if (start >= line.size() || line[start] == '#') continue;
    const std::size_t colon = line.find(": ", start);
    const bool keyed = colon != std::string_view::npos || line.back() == ':';
    if (!keyed) {
      add_written(line.substr(start));  // a continuation line or a list item
    } else if (colon != std::string_view::npos && !BlockOpener(line.substr(colon + 2))) {
      add_written(line.substr(colon + 2));
    }
  }
  // Longest first (a value inside a longer one must not cut it); equal ones side by side.
  std::sort(values_.begin(), values_.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() > b.size() : a < b;
  });
  values_.erase(std::unique(values_.begin(), values_.end()), values_.end());
}

// One line of an ordinary file: the values of sensitive keys and `!secret` references, wherever
// they are on the line, and URL passwords. `opens_block` is set when the line ends with a
// sensitive key whose value follows on the next, more indented lines.
namespace {

// `NAME=value` with a sensitive name, as `.env` files, shell scripts and URL queries hold them
// (`API_TOKEN=x`, `export MQTT_PASSWORD="x"`, `?access_token=x&units=metric`): the value, up to
// its closing quote or the next space, `&`, `;` or `,`. A comparison (`==`, `!=`, `<=`) or a
// value after a space (`{% set pin = 4 %}`) is not an assignment.
void MaskAssignments(const Masker& masker, std::string& line) {
  for (std::size_t eq = line.find('='); eq != std::string::npos; eq = line.find('=', eq + 1)) {
    if (eq == 0 || eq + 1 >= line.size() || line[eq + 1] == '=') continue;
    const char before = line[eq - 1];
    if (before == '=' || before == '!' || before == '<' || before == '>') continue;
    std::size_t key_begin = 0;
    const std::string_view key = KeyBefore(line, eq, &key_begin);
    if (key.empty() || !masker.SensitiveKey(key)) continue;
    if (IsSpace(before) || IsSpace(line[eq + 1])) {
      // `password = value` as INI files write it: only a key that starts its line, so that a
      // template's `{% set token = x %}` stays as it is. The value runs to the end of the line.
      if (key_begin != Indent(line)) continue;
      std::size_t at = eq + 1;
      while (at < line.size() && IsSpace(line[at])) ++at;
      if (at == line.size()) continue;
      const std::size_t end = ValueEnd(line, at, true);
      const char q = line[at];
      if ((q == '"' || q == '\'') && end - at >= 2 && line[end - 1] == q) {
        line.replace(at + 1, end - at - 2, kMasked);
      } else {
        line.replace(at, end - at, kMasked);
      }
      return;
    }
    const std::size_t at = eq + 1;
    const char q = line[at];
    std::size_t end = at;
    if (q == '"' || q == '\'') {
      end = ValueEnd(line, at, false);
      if (end - at < 2 || line[end - 1] != q) continue;  // no closing quote on this line
      line.replace(at + 1, end - at - 2, kMasked);
      eq = at + 1 + kMasked.size();
      continue;
    }
    while (end < line.size() && !IsSpace(line[end]) && line[end] != '&' && line[end] != ';' &&
           line[end] != ',' && line[end] != '"' && line[end] != '\'') {
      ++end;
    }
    if (end == at) continue;
    line.replace(at, end - at, kMasked);
    eq = at + kMasked.size() - 1;
  }
}

constexpr std::string_view kKeyBegin = "-----BEGIN ";
constexpr std::string_view kKeyEnd = "-----END ";
constexpr std::string_view kPrivateKeyDashes = "PRIVATE KEY-----";

// Whether `line` opens a PEM private key ("-----BEGIN [RSA |EC |OPENSSH ]PRIVATE KEY-----").
bool OpensPrivateKey(std::string_view line) {
  const std::size_t begin = line.find(kKeyBegin);
  return begin != std::string_view::npos &&
         line.find(kPrivateKeyDashes, begin) != std::string_view::npos &&
         line.find(kKeyEnd, begin) == std::string_view::npos;
}

// A private key written on one line, as JSON holds it ("-----BEGIN PRIVATE KEY-----\nMII...\n
// -----END PRIVATE KEY-----"): what lies between its BEGIN and END lines.
void MaskInlinePrivateKeys(std::string& line) {
  for (std::size_t begin = line.find(kKeyBegin); begin != std::string::npos;
       begin = line.find(kKeyBegin, begin + 1)) {
    const std::size_t dashes = line.find(kPrivateKeyDashes, begin);
    if (dashes == std::string::npos) return;
    const std::size_t body = dashes + kPrivateKeyDashes.size();
    const std::size_t end = line.find(kKeyEnd, body);
    if (end == std::string::npos) return;
    line.replace(body, end - body, kMasked);
  }
}

std::string MaskLine(const Masker& masker, std::string_view in, bool* opens_block) {
  std::string line(in);
  *opens_block = false;
  const std::size_t item = ItemStart(line, Indent(line));
  for (std::size_t colon = line.find(':'); colon != std::string::npos;
       colon = line.find(':', colon + 1)) {
    std::size_t key_begin = 0;
    const std::string_view key = KeyBefore(line, colon, &key_begin);
    if (key.empty()) continue;
    const bool quoted_key = line[colon - 1] == '"' || line[colon - 1] == '\'';
    // YAML wants a space (or the end) after the colon; JSON does not.
    if (!quoted_key && colon + 1 < line.size() && !IsSpace(line[colon + 1])) continue;
    std::size_t at = colon + 1;
    while (at < line.size() && IsSpace(line[at])) ++at;
    const std::string_view value = std::string_view(line).substr(at);
    const bool sensitive = masker.SensitiveKey(key);
    if (!sensitive && !value.starts_with("!secret")) continue;
    if (BlockOpener(value)) {
      *opens_block = *opens_block || sensitive;
      continue;
    }
    const bool whole_line =
        key_begin == item || (key_begin == item + 1 && quoted_key) || value.starts_with("!secret");
    std::size_t end = ValueEnd(line, at, whole_line);
    const char q = line[at];
    if ((q == '"' || q == '\'') && end - at >= 2 && line[end - 1] == q) {
      line.replace(at + 1, end - at - 2, kMasked);  // keeps the quotes
      end = at + 2 + kMasked.size();
    } else {
      line.replace(at, end - at, kMasked);
      end = at + kMasked.size();
    }
    colon = end - 1;
  }
  MaskAssignments(masker, line);
  MaskUrlPasswords(line);
  MaskInlinePrivateKeys(line);
  return line;
}

}  // namespace

std::string Masker::MaskLines(std::string_view text, bool secrets_file) const {
  std::string out;
  out.reserve(text.size());
  bool in_block = false;
  bool in_key = false;  // between the BEGIN and END lines of a PEM private key
  std::size_t block_indent = 0;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    const std::string_view line = text.substr(0, nl);
    const bool has_nl = nl != std::string_view::npos;
    text.remove_prefix(has_nl ? nl + 1 : text.size());
    const std::size_t indent = Indent(line);
    const bool blank = indent == line.size();
    if (in_key) {
      in_key = line.find(kKeyEnd) == std::string_view::npos;
      if (in_key && !blank) {
        out.append(line.substr(0, indent)).append(kMasked);
      } else {
        out.append(line);
      }
    } else if (blank) {
      out.append(line);
    } else if (OpensPrivateKey(line)) {  // kept, to show which key changed, not what it is
      in_key = true;
      out.append(line);
    } else if (in_block && (indent > block_indent ||
                            (indent == block_indent && line.substr(indent).starts_with("- ")))) {
      out.append(line.substr(0, indent)).append(kMasked);  // inside a sensitive key's value
    } else if (secrets_file) {
      in_block = false;
      const std::size_t start = ItemStart(line, indent);
      const std::size_t colon = line.find(':', start);
      if (start >= line.size() || line[start] == '#' || colon == std::string_view::npos) {
        out.append(line.substr(0, start)).append(kMasked);
      } else {
        std::size_t key_begin = 0;
        const bool key_first =
            !KeyBefore(line, colon, &key_begin).empty() && key_begin <= start + 1;
        std::size_t at = colon + 1;
        while (at < line.size() && IsSpace(line[at])) ++at;
        out.append(line.substr(0, key_first ? colon + 1 : start));
        if (!key_first || at < line.size()) out.append(key_first ? " " : "").append(kMasked);
      }
    } else {
      bool opens = false;
      out += MaskLine(*this, line, &opens);
      in_block = opens;
      block_indent = indent;
    }
    if (has_nl) out.push_back('\n');
  }
  return out;
}

std::string Masker::Mask(std::string_view path, std::string_view text) const {
  return MaskValues(MaskLines(text, IsSecretsFile(path)));
}

std::string Masker::MaskValues(std::string text) const {
  for (const auto& v : values_) {
    for (std::size_t at = text.find(v); at != std::string::npos; at = text.find(v, at)) {
      text.replace(at, v.size(), kMasked);
      at += kMasked.size();
    }
  }
  return text;
}

}  // namespace safepoint::diff
