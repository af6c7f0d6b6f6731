#include "core/diff/mask.h"

#include <algorithm>
#include <cctype>

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

}  // namespace

const std::vector<std::string>& DefaultSensitiveKeys() {
  static const std::vector<std::string> keys = {
      "password",   "passwd",    "passphrase", "pass",     "pwd",      "secret",
      "token",      "api_key",   "apikey",     "_key",     "key",      "credential",
      "bearer",     "cookie",    "jwt",        "private",  "psk",      "pin",
      "webhook_id", "auth_code", "client_id",  "passwort", "kennwort", "mot_de_passe"};
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
  const auto add = [this](std::string_view v) {
    while (!v.empty() && IsSpace(v.front())) v.remove_prefix(1);
    while (!v.empty() && IsSpace(v.back())) v.remove_suffix(1);
    if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) {
      v = v.substr(1, v.size() - 2);
    }
    if (v.size() < 4 || v.starts_with("!secret")) return;
    values_.emplace_back(v);
    // How JSON (a .storage file) would write it.
    std::string escaped;
    for (const char c : v) {
      if (c == '"' || c == '\\') escaped.push_back('\\');
      escaped.push_back(c);
    }
    if (escaped != v) values_.push_back(std::move(escaped));
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
      add(line.substr(start));  // a continuation line or a list item
    } else if (colon != std::string_view::npos && !BlockOpener(line.substr(colon + 2))) {
      add(line.substr(colon + 2));
    }
  }
  std::sort(values_.begin(), values_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  values_.erase(std::unique(values_.begin(), values_.end()), values_.end());
}

// One line of an ordinary file: the values of sensitive keys and `!secret` references, wherever
// they are on the line, and URL passwords. `opens_block` is set when the line ends with a
// sensitive key whose value follows on the next, more indented lines.
namespace {

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
  MaskUrlPasswords(line);
  return line;
}

}  // namespace

std::string Masker::MaskLines(std::string_view text, bool secrets_file) const {
  std::string out;
  out.reserve(text.size());
  bool in_block = false;
  std::size_t block_indent = 0;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    const std::string_view line = text.substr(0, nl);
    const bool has_nl = nl != std::string_view::npos;
    text.remove_prefix(has_nl ? nl + 1 : text.size());
    const std::size_t indent = Indent(line);
    const bool blank = indent == line.size();
    if (blank) {
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
