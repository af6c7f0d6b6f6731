#include "core/base/utf8.h"

#include <cstddef>
#include <cstdint>

namespace safepoint {

namespace {

// Length of the well-formed sequence starting at s[i], or 0.
std::size_t SequenceLength(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<std::uint8_t>(s[k]); };
  const std::uint8_t c = b(i);
  if (c < 0x80) return 1;
  std::size_t n = 0;
  std::uint8_t lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;  // no overlong forms
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k) {
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  }
  return n;
}

// The code point of the well-formed sequence of `n` bytes at s[i].
char32_t CodePoint(std::string_view s, std::size_t i, std::size_t n) {
  const auto b = [&](std::size_t k) { return static_cast<char32_t>(static_cast<std::uint8_t>(s[k])); };
  if (n == 1) return b(i);
  char32_t cp = b(i) & (0x7F >> n);
  for (std::size_t k = 1; k < n; ++k) cp = (cp << 6) | (b(i + k) & 0x3F);
  return cp;
}

// Characters that move or hide the text around them on a terminal.
bool Disruptive(char32_t cp) {
  return (cp >= 0x80 && cp <= 0x9F) || cp == 0x61C || cp == 0x200E || cp == 0x200F ||
         (cp >= 0x2028 && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

void AppendOctal(std::string& out, std::uint8_t byte) {
  out += '\\';
  out += static_cast<char>('0' + (byte >> 6));
  out += static_cast<char>('0' + ((byte >> 3) & 7));
  out += static_cast<char>('0' + (byte & 7));
}

// Git's short escapes for the control bytes that have one ("" for the others).
char ShortEscape(std::uint8_t byte) {
  switch (byte) {
    case '\a': return 'a';
    case '\b': return 'b';
    case '\t': return 't';
    case '\n': return 'n';
    case '\v': return 'v';
    case '\f': return 'f';
    case '\r': return 'r';
    case '"': return '"';
    case '\\': return '\\';
    default: return 0;
  }
}

// Appends s[i, i + n) (n == 0: the one byte s[i], not well-formed) to `out`, escaped when it is a
// control byte, a byte of a broken sequence or of a Disruptive character. With `quoted`, '"' and
// '\\' are escaped and the short escapes used; without it line feeds and tabs are kept.
void AppendEscaped(std::string& out, std::string_view s, std::size_t i, std::size_t n, bool quoted) {
  if (n == 0) {
    AppendOctal(out, static_cast<std::uint8_t>(s[i]));
    return;
  }
  if (n > 1) {
    if (Disruptive(CodePoint(s, i, n))) {
      for (std::size_t k = 0; k < n; ++k) AppendOctal(out, static_cast<std::uint8_t>(s[i + k]));
    } else {
      out.append(s.substr(i, n));
    }
    return;
  }
  const auto c = static_cast<std::uint8_t>(s[i]);
  const bool control = c < 0x20 || c == 0x7F;
  if (!quoted) {
    if (control && c != '\n' && c != '\t') {
      AppendOctal(out, c);
    } else {
      out += static_cast<char>(c);
    }
    return;
  }
  if (const char e = ShortEscape(c); e != 0) {
    out += '\\';
    out += e;
  } else if (control) {
    AppendOctal(out, c);
  } else {
    out += static_cast<char>(c);
  }
}

bool NeedsQuotes(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = SequenceLength(s, i);
    if (n == 0) return true;
    if (n == 1) {
      const auto c = static_cast<std::uint8_t>(s[i]);
      if (c < 0x20 || c == 0x7F || c == '"' || c == '\\') return true;
    } else if (Disruptive(CodePoint(s, i, n))) {
      return true;
    }
    i += n;
  }
  return false;
}

}  // namespace

std::string QuoteName(std::string_view name) {
  if (!NeedsQuotes(name)) return std::string(name);
  std::string out = "\"";
  for (std::size_t i = 0; i < name.size();) {
    const std::size_t n = SequenceLength(name, i);
    AppendEscaped(out, name, i, n, /*quoted=*/true);
    i += n == 0 ? 1 : n;
  }
  return out + "\"";
}

std::string QuoteNameInText(std::string_view name, std::size_t max_bytes) {
  std::string_view shown = name;
  if (shown.size() > max_bytes) {
    std::size_t cut = max_bytes;
    while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xC0) == 0x80) --cut;
    shown = name.substr(0, cut);
  }
  const std::string ellipsis = shown.size() < name.size() ? "..." : "";
  std::string quoted = QuoteName(shown);
  if (quoted.starts_with('"')) return quoted + ellipsis;
  return "'" + quoted + ellipsis + "'";
}

std::string PrintableText(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = SequenceLength(text, i);
    AppendEscaped(out, text, i, n, /*quoted=*/false);
    i += n == 0 ? 1 : n;
  }
  return out;
}

bool IsValidUtf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = SequenceLength(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = SequenceLength(s, i);
    if (n == 0) {
      out += '?';
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

}  // namespace safepoint
