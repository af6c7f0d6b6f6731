#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

// Line diffs in the unified format of `diff -u`: the shortest edit script (dtl's O(NP)
// algorithm) grouped into hunks with `context` lines around each change; changes separated by
// at most 2 x context unchanged lines share a hunk, as GNU diff groups them.
namespace safepoint::diff {

// One hunk. `lines` are the hunk's body without their newlines, each starting with ' ', '-' or
// '+', and "\ No newline at end of file" after a last line that has none.
struct Hunk {
  std::size_t old_start = 0;  // first old line (1-based); for an empty range, the line before it
  std::size_t old_count = 0;
  std::size_t new_start = 0;
  std::size_t new_count = 0;
  std::vector<std::string> lines;
};

struct TextDiff {
  std::vector<Hunk> hunks;
  std::size_t added = 0;    // '+' lines
  std::size_t removed = 0;  // '-' lines
};

// The lines of `text`: each ends with its '\n', except a last line that has none.
[[nodiscard]] std::vector<std::string_view> SplitLines(std::string_view text);

// The unified diff from `old_text` to `new_text`. Lines compare with their newline, so a last
// line that gains or loses its newline is a change (as in GNU diff). A diff too large for the
// edit-script search's bound (millions of edit paths) is still correct, only not minimal.
[[nodiscard]] TextDiff UnifiedDiff(std::string_view old_text, std::string_view new_text,
                                   std::size_t context = 3);

// "@@ -3,7 +3,8 @@": a count of 1 is left out, an empty range names the line before it.
[[nodiscard]] std::string HunkHeader(const Hunk& hunk);

}  // namespace safepoint::diff
