#pragma once

#include <string>
#include <string_view>

namespace safepoint {

// True when `s` is well-formed UTF-8 (no overlong forms, surrogates or code points above
// U+10FFFF). JSON output (manifests, MQTT payloads) can carry only such text.
[[nodiscard]] bool IsValidUtf8(std::string_view s);

// `s` with every byte that is not part of a well-formed UTF-8 sequence replaced by '?', for
// messages that must be JSON-safe (warnings, log lines).
[[nodiscard]] std::string SanitizeUtf8(std::string_view s);

// A file name as one line of text: the name itself when it is well-formed UTF-8 without control
// characters, '"' or '\\'; otherwise the name in double quotes with C escapes, as git quotes
// names: \a \b \t \n \v \f \r \" \\, and \ooo (three octal digits) for any other control
// byte, for each byte that is not well-formed UTF-8, and for each byte of the characters that
// change how a terminal shows the text around them (C1 controls U+0080-U+009F, U+061C,
// U+200E-U+200F, U+2028-U+202E, U+2066-U+2069). The result is well-formed UTF-8 without control
// characters, and the name's bytes can be read back from it (docs/cli.md, "Names").
[[nodiscard]] std::string QuoteName(std::string_view name);

// A name inside a message: 'name' in single quotes, or QuoteName's double-quoted form when it
// quotes; a name longer than `max_bytes` is cut there (at a character's start) and ends in "...".
[[nodiscard]] std::string QuoteNameInText(std::string_view name, std::size_t max_bytes = 200);

// Free text (a message, a human-readable listing) safe to print on a terminal: line feeds and
// tabs are kept; every other byte QuoteName would escape is written as \ooo.
[[nodiscard]] std::string PrintableText(std::string_view text);

}  // namespace safepoint
