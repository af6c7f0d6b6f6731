#include "core/base/glob.h"

#include <cstddef>
#include <vector>

namespace safepoint::sources {
namespace {

// Splits "a/b/c" into its segments (views into `s`). "" has no segments.
std::vector<std::string_view> Split(std::string_view s) {
  std::vector<std::string_view> out;
  if (s.empty()) return out;
  std::size_t start = 0;
  while (true) {
    const std::size_t slash = s.find('/', start);
    if (slash == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, slash - start));
    start = slash + 1;
  }
}

// Matches one segment against one segment pattern with `*` and `?` (iterative, linear
// backtracking to the last star only; correct because every other token matches one char).
bool SegmentMatch(std::string_view pat, std::string_view text) {
  std::size_t p = 0;
  std::size_t t = 0;
  std::size_t star_p = std::string_view::npos;
  std::size_t star_t = 0;
  while (t < text.size()) {
    if (p < pat.size() && pat[p] == '*') {
      while (p < pat.size() && pat[p] == '*') ++p;
      star_p = p;
      star_t = t;
    } else if (p < pat.size() && (pat[p] == '?' || pat[p] == text[t])) {
      ++p;
      ++t;
    } else if (star_p != std::string_view::npos) {
      p = star_p;
      t = ++star_t;
    } else {
      return false;
    }
  }
  while (p < pat.size() && pat[p] == '*') ++p;
  return p == pat.size();
}

// A set of positions in the pattern's segment list, as an NFA state. Position i means
// "segments [0, i) are matched"; a `**` segment may consume any number of path segments.
class SegmentNfa {
 public:
  explicit SegmentNfa(std::string_view pattern) : pat_(Split(pattern)), on_(pat_.size() + 1) {
    on_[0] = true;
    Close();
  }

  // Consumes one path segment.
  void Step(std::string_view seg) {
    std::vector<bool> next(on_.size());
    for (std::size_t i = 0; i < pat_.size(); ++i) {
      if (!on_[i]) continue;
      if (pat_[i] == "**") {
        next[i] = true;
      } else if (SegmentMatch(pat_[i], seg)) {
        next[i + 1] = true;
      }
    }
    on_.swap(next);
    Close();
  }

  [[nodiscard]] bool Accepts() const { return on_[pat_.size()]; }
  [[nodiscard]] bool Dead() const {
    for (bool b : on_) {
      if (b) return false;
    }
    return true;
  }
  // Some state still expects at least one more segment.
  [[nodiscard]] bool CanContinue() const {
    for (std::size_t i = 0; i < pat_.size(); ++i) {
      if (on_[i]) return true;
    }
    return false;
  }

 private:
  // `**` may match zero segments: reaching position i with pat[i] == "**" also reaches i + 1.
  void Close() {
    for (std::size_t i = 0; i < pat_.size(); ++i) {
      if (on_[i] && pat_[i] == "**") on_[i + 1] = true;
    }
  }

  std::vector<std::string_view> pat_;
  std::vector<bool> on_;
};

}  // namespace

bool GlobMatch(std::string_view pattern, std::string_view path) {
  SegmentNfa nfa(pattern);
  for (std::string_view seg : Split(path)) {
    nfa.Step(seg);
    if (nfa.Dead()) return false;
  }
  return nfa.Accepts();
}

bool GlobMatchSelfOrParent(std::string_view pattern, std::string_view path) {
  SegmentNfa nfa(pattern);
  for (std::string_view seg : Split(path)) {
    nfa.Step(seg);
    if (nfa.Accepts()) return true;
    if (nfa.Dead()) return false;
  }
  return false;
}

bool GlobCouldMatchBelow(std::string_view pattern, std::string_view dir) {
  SegmentNfa nfa(pattern);
  for (std::string_view seg : Split(dir)) {
    nfa.Step(seg);
    if (nfa.Dead()) return false;
  }
  return nfa.CanContinue();
}

std::string GlobPatternProblem(std::string_view pattern) {
  if (pattern.empty()) return "empty pattern";
  if (pattern.front() == '/') return "pattern must be relative (no leading '/')";
  for (std::string_view seg : Split(pattern)) {
    if (seg.empty()) return "empty path segment ('//' or trailing '/')";
    if (seg == "." || seg == "..") return "'.' and '..' segments are not allowed";
  }
  return "";
}

}  // namespace safepoint::sources
