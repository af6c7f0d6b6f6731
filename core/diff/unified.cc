#include "core/diff/unified.h"

#include <algorithm>
#include <cstdint>
#include <dtl/dtl.hpp>
#include <unordered_map>

namespace safepoint::diff {

namespace {

enum class Op : std::uint8_t { kKeep, kDelete, kInsert };

// Each distinct line becomes a number, so the edit-script search compares integers.
std::vector<std::uint32_t> Intern(const std::vector<std::string_view>& lines,
                                  std::unordered_map<std::string_view, std::uint32_t>& ids) {
  std::vector<std::uint32_t> out;
  out.reserve(lines.size());
  for (const auto line : lines) {
    const auto [it, added] = ids.try_emplace(line, static_cast<std::uint32_t>(ids.size()));
    out.push_back(it->second);
  }
  return out;
}

// Among equally short scripts, diff -u shows a run of only insertions or only deletions as low
// as it can go ("+x" after an existing "x", not before it): each such run slides down while the
// line after it equals its first line.
void SlideDown(const std::vector<std::uint32_t>& a, const std::vector<std::uint32_t>& b,
               std::vector<Op>& ops) {
  std::size_t i = 0;  // old line at ops[k]
  std::size_t j = 0;  // new line at ops[k]
  for (std::size_t k = 0; k < ops.size();) {
    if (ops[k] == Op::kKeep) {
      ++i, ++j, ++k;
      continue;
    }
    std::size_t end = k;
    while (end < ops.size() && ops[end] == ops[k]) ++end;
    const bool deletes = ops[k] == Op::kDelete;
    const auto& lines = deletes ? a : b;
    std::size_t first = deletes ? i : j;  // the run's first line in its file
    const std::size_t len = end - k;
    if (end < ops.size() && ops[end] != Op::kKeep) {  // a mixed run: left as it is
      (deletes ? i : j) += len;
      k = end;
      continue;
    }
    while (end < ops.size() && ops[end] == Op::kKeep && lines[first] == lines[first + len]) {
      std::swap(ops[k], ops[end]);
      ++k, ++end, ++first, ++i, ++j;
    }
    (deletes ? i : j) += len;
    k = end;
  }
}

// The edit script from `a` to `b`: common prefix and suffix directly, the middle from dtl.
std::vector<Op> EditScript(const std::vector<std::uint32_t>& a,
                           const std::vector<std::uint32_t>& b) {
  std::size_t prefix = 0;
  while (prefix < a.size() && prefix < b.size() && a[prefix] == b[prefix]) ++prefix;
  std::size_t suffix = 0;
  while (suffix < a.size() - prefix && suffix < b.size() - prefix &&
         a[a.size() - 1 - suffix] == b[b.size() - 1 - suffix]) {
    ++suffix;
  }
  std::vector<Op> ops(prefix, Op::kKeep);
  const std::vector<std::uint32_t> am(a.begin() + static_cast<std::ptrdiff_t>(prefix),
                                      a.end() - static_cast<std::ptrdiff_t>(suffix));
  const std::vector<std::uint32_t> bm(b.begin() + static_cast<std::ptrdiff_t>(prefix),
                                      b.end() - static_cast<std::ptrdiff_t>(suffix));
  if (am.empty() || bm.empty()) {
    ops.insert(ops.end(), am.size(), Op::kDelete);
    ops.insert(ops.end(), bm.size(), Op::kInsert);
  } else {
    dtl::Diff<std::uint32_t> d(am, bm);
    // Past dtl's bound on edit paths the rest is one replacement: correct, not minimal, and
    // never the quadratic time and memory of two unrelated large files.
    d.onUnserious();
    d.compose();
    for (const auto& [elem, info] : d.getSes().getSequence()) {
      (void)elem;
      ops.push_back(info.type == dtl::SES_COMMON   ? Op::kKeep
                    : info.type == dtl::SES_DELETE ? Op::kDelete
                                                   : Op::kInsert);
    }
  }
  ops.insert(ops.end(), suffix, Op::kKeep);
  SlideDown(a, b, ops);
  // Within each run of changes, deletions first (as diff -u prints them).
  for (std::size_t i = 0; i < ops.size();) {
    if (ops[i] == Op::kKeep) {
      ++i;
      continue;
    }
    std::size_t end = i;
    while (end < ops.size() && ops[end] != Op::kKeep) ++end;
    std::stable_partition(ops.begin() + static_cast<std::ptrdiff_t>(i),
                          ops.begin() + static_cast<std::ptrdiff_t>(end),
                          [](Op op) { return op == Op::kDelete; });
    i = end;
  }
  return ops;
}

struct Run {  // one run of changes: [old_begin, old_end) and [new_begin, new_end), 0-based
  std::size_t old_begin, old_end, new_begin, new_end;
};

std::vector<Run> ChangeRuns(const std::vector<Op>& ops) {
  std::vector<Run> runs;
  std::size_t i = 0;
  std::size_t j = 0;
  for (std::size_t k = 0; k < ops.size();) {
    if (ops[k] == Op::kKeep) {
      ++i, ++j, ++k;
      continue;
    }
    Run r{i, i, j, j};
    while (k < ops.size() && ops[k] != Op::kKeep) {
      if (ops[k] == Op::kDelete) {
        ++i;
      } else {
        ++j;
      }
      ++k;
    }
    r.old_end = i;
    r.new_end = j;
    runs.push_back(r);
  }
  return runs;
}

std::string Body(char mark, std::string_view line, bool* no_newline) {
  *no_newline = line.empty() || line.back() != '\n';
  if (!*no_newline) line.remove_suffix(1);
  std::string out(1, mark);
  out.append(line);
  return out;
}

}  // namespace

std::vector<std::string_view> SplitLines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    const std::size_t n = nl == std::string_view::npos ? text.size() : nl + 1;
    lines.push_back(text.substr(0, n));
    text.remove_prefix(n);
  }
  return lines;
}

TextDiff UnifiedDiff(std::string_view old_text, std::string_view new_text, std::size_t context) {
  const auto a = SplitLines(old_text);
  const auto b = SplitLines(new_text);
  std::unordered_map<std::string_view, std::uint32_t> ids;
  const auto ops = EditScript(Intern(a, ids), Intern(b, ids));
  const auto runs = ChangeRuns(ops);

  TextDiff out;
  constexpr std::string_view kNoNewline = "\\ No newline at end of file";
  std::size_t k = 0;  // position in the script, at old line oi and new line nj
  std::size_t oi = 0;
  std::size_t nj = 0;
  for (std::size_t r = 0; r < runs.size();) {
    // Runs whose gap is at most 2 x context share a hunk.
    std::size_t last = r;
    while (last + 1 < runs.size() && runs[last + 1].old_begin - runs[last].old_end <= 2 * context) {
      ++last;
    }
    const std::size_t lead = std::min(context, runs[r].old_begin);
    std::size_t i = runs[r].old_begin - lead;
    std::size_t j = runs[r].new_begin - lead;
    const std::size_t old_end = std::min(a.size(), runs[last].old_end + context);
    const std::size_t new_end = std::min(b.size(), runs[last].new_end + context);
    Hunk h;
    h.old_count = old_end - i;
    h.new_count = new_end - j;
    h.old_start = h.old_count == 0 ? i : i + 1;
    h.new_start = h.new_count == 0 ? j : j + 1;
    // Advance the script to old line i / new line j (hunks come in order).
    while (oi < i || nj < j) {
      if (ops[k] != Op::kInsert) ++oi;
      if (ops[k] != Op::kDelete) ++nj;
      ++k;
    }
    while (i < old_end || j < new_end) {
      bool no_newline = false;
      if (ops[k] == Op::kKeep) {
        h.lines.push_back(Body(' ', a[i], &no_newline));
        ++i, ++j;
      } else if (ops[k] == Op::kDelete) {
        h.lines.push_back(Body('-', a[i], &no_newline));
        ++i;
        ++out.removed;
      } else {
        h.lines.push_back(Body('+', b[j], &no_newline));
        ++j;
        ++out.added;
      }
      ++k;
      oi = i;
      nj = j;
      if (no_newline) h.lines.emplace_back(kNoNewline);
    }
    out.hunks.push_back(std::move(h));
    r = last + 1;
  }
  return out;
}

std::string HunkHeader(const Hunk& hunk) {
  const auto range = [](std::size_t start, std::size_t count) {
    std::string s = std::to_string(start);
    if (count != 1) s += "," + std::to_string(count);
    return s;
  };
  return "@@ -" + range(hunk.old_start, hunk.old_count) + " +" +
         range(hunk.new_start, hunk.new_count) + " @@";
}

}  // namespace safepoint::diff
