// Fuzzes content diffs: diff::UnifiedDiff (dtl's edit script, hunk grouping, "\ No newline at
// end of file") and diff::Masker (the secret masking of `safepoint diff --patch`).
//
// Input: byte 0 is a context size (0..7); the rest is split at the first two "\x00\x00" pairs
// into an old text, a new text and a secrets file (missing parts are empty). Invariants:
// - the hunks, applied to the old text line by line, give the new text exactly: every context
//   and '-' line matches the old text at the header's position, ranges and counts agree, hunks
//   come in order without overlap, and `added`/`removed` count the '+'/'-' lines;
// - masking keeps the line structure (same number of lines, each newline where it was) for an
//   ordinary file and for a secrets file, and a text without a key, a URL or a learned value is
//   left unchanged.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/diff/mask.h"
#include "core/diff/unified.h"
#include "tests/fuzz/fuzz_util.h"

namespace safepoint::fuzz {
namespace {

std::size_t Count(std::string_view s, char c) {
  std::size_t n = 0;
  for (const char x : s) n += x == c ? 1 : 0;
  return n;
}

// The body of a hunk line without its mark, with the newline it stood for.
std::string LineOf(const std::vector<std::string>& lines, std::size_t i) {
  std::string text = lines[i].substr(1);
  const bool no_newline = i + 1 < lines.size() && lines[i + 1] == "\\ No newline at end of file";
  if (!no_newline) text += '\n';
  return text;
}

void CheckApplies(std::string_view old_text, std::string_view new_text, std::size_t context) {
  const auto a = diff::SplitLines(old_text);
  const diff::TextDiff d = diff::UnifiedDiff(old_text, new_text, context);
  std::string rebuilt;
  std::size_t next_old = 0;  // 0-based: the first old line not yet copied
  std::size_t added = 0;
  std::size_t removed = 0;
  for (const auto& h : d.hunks) {
    const std::size_t begin = h.old_count == 0 ? h.old_start : h.old_start - 1;
    if (begin < next_old || begin > a.size()) Violated("diff: hunks overlap or leave the text");
    for (; next_old < begin; ++next_old) rebuilt += a[next_old];
    std::size_t olds = 0;
    std::size_t news = 0;
    for (std::size_t i = 0; i < h.lines.size(); ++i) {
      const std::string& l = h.lines[i];
      if (l.empty()) Violated("diff: an empty hunk line");
      if (l[0] == '\\') continue;
      const std::string text = LineOf(h.lines, i);
      if (l[0] == ' ' || l[0] == '-') {
        if (next_old >= a.size() || a[next_old] != text)
          Violated("diff: a line the old text lacks");
        ++next_old;
        ++olds;
      }
      if (l[0] == ' ' || l[0] == '+') {
        rebuilt += text;
        ++news;
      }
      if (l[0] == '-') ++removed;
      if (l[0] == '+') ++added;
      if (l[0] != ' ' && l[0] != '-' && l[0] != '+') Violated("diff: a line without a mark");
    }
    if (olds != h.old_count || news != h.new_count) Violated("diff: a header's counts are wrong");
  }
  for (; next_old < a.size(); ++next_old) rebuilt += a[next_old];
  if (rebuilt != new_text) Violated("diff: the hunks do not turn the old text into the new");
  if (added != d.added || removed != d.removed) Violated("diff: added/removed miscounted");
  if ((old_text == new_text) != d.hunks.empty()) Violated("diff: hunks for equal texts or none");
}

void CheckMask(std::string_view text, std::string_view secrets) {
  diff::Masker masker({"Custom-Thing"});
  masker.AddSecretsText(secrets);
  for (const char* path : {"ha_config/configuration.yaml", "ha_config/secrets.yaml"}) {
    const std::string masked = masker.Mask(path, text);
    if (Count(masked, '\n') != Count(text, '\n')) Violated("mask: the line count changed");
    if (!text.empty() && (text.back() == '\n') != (!masked.empty() && masked.back() == '\n')) {
      Violated("mask: the final newline changed");
    }
  }
  const bool plain = text.find_first_of(":@=") == std::string_view::npos &&
                     text.find("PRIVATE KEY-----") == std::string_view::npos;
  if (plain && secrets.empty() && masker.Mask("ha_config/x.yaml", text) != text) {
    Violated("mask: a text without keys, assignments, URLs, private keys or secrets was changed");
  }
}

}  // namespace
}  // namespace safepoint::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace safepoint::fuzz;
  if (size < 1) return 0;
  const std::size_t context = data[0] % 8;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string_view parts[3];
  for (int i = 0; i < 2; ++i) {
    const std::size_t cut = rest.find(std::string_view("\0\0", 2));
    parts[i] = rest.substr(0, cut);
    rest = cut == std::string_view::npos ? std::string_view() : rest.substr(cut + 2);
  }
  parts[2] = rest;
  CheckApplies(parts[0], parts[1], context);
  CheckMask(parts[0], parts[2]);
  CheckMask(parts[1], parts[2]);
  return 0;
}
