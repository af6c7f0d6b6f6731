#pragma once

#include <string>
#include <string_view>

namespace safepoint::sources {

// Path globs used by the `sources.*.include` / `exclude` configuration keys.
//
// Paths and patterns are relative, '/'-separated, without a leading '/'. Matching is anchored
// at the root of the source (use a leading `**/` to match at any depth):
//   `*`   any run of characters within one path segment (never '/'),
//   `?`   exactly one character other than '/',
//   `**`  as a whole segment: zero or more whole segments ("sessions/**" matches "sessions",
//         "sessions/a" and "sessions/a/b.md"; "**/x" matches "x" and "a/b/x"). Inside a
//         segment ("a**b") it behaves like `*`.
// Every other character matches itself; there are no character classes or escapes.
//
// Cost: O(len(pattern) * len(path)), no recursion, and no allocation for patterns of up to 63
// segments.

// True when `pattern` matches the whole of `path`.
[[nodiscard]] bool GlobMatch(std::string_view pattern, std::string_view path);

// True when `pattern` matches `path` or one of its parent directories ("backups" and
// "backups/**" both cover "backups/a/b.tar"). Excludes and includes apply to whole subtrees
// this way.
[[nodiscard]] bool GlobMatchSelfOrParent(std::string_view pattern, std::string_view path);

// True when some path strictly below the directory `dir` could match `pattern`; the walker
// uses it to decide whether a directory must be entered. `dir` == "" is the root.
[[nodiscard]] bool GlobCouldMatchBelow(std::string_view pattern, std::string_view dir);

// Checks that `pattern` is usable: non-empty, relative, no empty, "." or ".." segments.
// Returns an empty string when it is, otherwise what is wrong with it.
[[nodiscard]] std::string GlobPatternProblem(std::string_view pattern);

}  // namespace safepoint::sources
