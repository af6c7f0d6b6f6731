#include "core/base/glob.h"

#include <array>
#include <cstddef>
#include <cstdint>
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

// Calls `fn` on each segment of `s` in order until it returns false; false then.
template <typename Fn>
bool EachSegment(std::string_view s, Fn&& fn) {
  if (s.empty()) return true;
  std::size_t start = 0;
  while (true) {
    const std::size_t slash = s.find('/', start);
    if (slash == std::string_view::npos) return fn(s.substr(start));
    if (!fn(s.substr(start, slash - start))) return false;
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

// SegmentNfa for a pattern of at most kMaxSegments segments, without allocating: the segments
// on the stack, the state set in one word. The walk matches every path against every exclude
// pattern, so this is the common case and runs once per file and pattern.
class SmallNfa {
 public:
  static constexpr std::size_t kMaxSegments = 63;

  // False when `pattern` has more than kMaxSegments segments (SegmentNfa then).
  bool Init(std::string_view pattern) {
    const bool fits = EachSegment(pattern, [&](std::string_view seg) {
      if (n_ == kMaxSegments) return false;
      if (seg == "**") globstar_ |= Bit(n_);
      pat_[n_++] = seg;
      return true;
    });
    on_ = Close(Bit(0));
    return fits;
  }

  void Step(std::string_view seg) {
    std::uint64_t next = 0;
    for (std::size_t i = 0; i < n_; ++i) {
      if ((on_ & Bit(i)) == 0) continue;
      if ((globstar_ & Bit(i)) != 0) {
        next |= Bit(i);
      } else if (SegmentMatch(pat_[i], seg)) {
        next |= Bit(i + 1);
      }
    }
    on_ = Close(next);
  }

  [[nodiscard]] bool Accepts() const { return (on_ & Bit(n_)) != 0; }
  [[nodiscard]] bool Dead() const { return on_ == 0; }
  [[nodiscard]] bool CanContinue() const { return (on_ & (Bit(n_) - 1)) != 0; }

 private:
  static constexpr std::uint64_t Bit(std::size_t i) { return std::uint64_t{1} << i; }
  // As SegmentNfa::Close; in rising order, so a run of `**` segments is crossed in one pass.
  [[nodiscard]] std::uint64_t Close(std::uint64_t on) const {
    for (std::size_t i = 0; i < n_; ++i) {
      if ((on & Bit(i)) != 0 && (globstar_ & Bit(i)) != 0) on |= Bit(i + 1);
    }
    return on;
  }

  std::array<std::string_view, kMaxSegments> pat_;
  std::size_t n_ = 0;
  std::uint64_t globstar_ = 0;
  std::uint64_t on_ = 0;
};

// Feeds every segment of `path` to `nfa`; false as soon as no state is left.
template <typename Nfa>
bool Consume(Nfa& nfa, std::string_view path) {
  return EachSegment(path, [&](std::string_view seg) {
    nfa.Step(seg);
    return !nfa.Dead();
  });
}

template <typename Nfa>
bool MatchSelfOrParent(Nfa& nfa, std::string_view path) {
  bool accepted = false;
  EachSegment(path, [&](std::string_view seg) {
    nfa.Step(seg);
    accepted = nfa.Accepts();
    return !accepted && !nfa.Dead();
  });
  return accepted;
}

// Runs `fn` on the NFA of `pattern`: SmallNfa when it fits.
template <typename Fn>
bool WithNfa(std::string_view pattern, Fn&& fn) {
  SmallNfa small;
  if (small.Init(pattern)) return fn(small);
  SegmentNfa nfa(pattern);
  return fn(nfa);
}

}  // namespace

bool GlobMatch(std::string_view pattern, std::string_view path) {
  return WithNfa(pattern, [&](auto& nfa) { return Consume(nfa, path) && nfa.Accepts(); });
}

bool GlobMatchSelfOrParent(std::string_view pattern, std::string_view path) {
  return WithNfa(pattern, [&](auto& nfa) { return MatchSelfOrParent(nfa, path); });
}

bool GlobCouldMatchBelow(std::string_view pattern, std::string_view dir) {
  return WithNfa(pattern, [&](auto& nfa) { return Consume(nfa, dir) && nfa.CanContinue(); });
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
