// Round trip over the whole legal space of Linux trees: seeded trees whose names are drawn from
// every byte but '/' and NUL (every script class, NFC/NFD twins, 255-byte names, long paths,
// newline, backslash, leading dash and space, invalid UTF-8) and whose entries are every file
// type (files empty, small, large and sparse; directories; symlinks with arbitrary targets; hard
// links; FIFOs, sockets and devices, which are skipped with a warning), with setuid, setgid and
// sticky modes and times before 1970 and after 2242. Each tree is backed up, verified,
// extracted into an empty directory, read by GNU tar and by Python's tarfile from the plain
// payload, damaged and rolled back; every result must equal the tree, names, bytes, modes and
// times included. The named tests below pin the cases users met first.
//
// Seeds: SAFEPOINT_ROUNDTRIP_SEEDS (default 150) starting at SAFEPOINT_ROUNDTRIP_SEED (default
// 1), within SAFEPOINT_ROUNDTRIP_SECONDS (default 100) of wall time; a failure prints the seed and
// the command that reproduces it alone.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/base/utf8.h"
#include "tests/testutil/process.h"
#include "tests/testutil/testutil.h"

namespace safepoint {
namespace {

using nlohmann::json;
using testing::RunProcess;
using testing::RunSafepoint;
using testing::TempDir;

constexpr const char* kPassphrase = "round trip passphrase 5d1e";

// --- the model of a tree -----------------------------------------------------------------------

enum class Kind { kFile, kDir, kLink };

struct Node {
  Kind kind = Kind::kFile;
  std::string data;  // file content, or link target
  mode_t mode = 0644;
  std::int64_t mtime = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

// Relative path (bytes) -> node; what a restore must produce.
using Tree = std::map<std::string, Node>;

bool IsRoot() { return ::geteuid() == 0; }

std::string Hex(std::string_view s) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

// Printable form of a name for failure messages.
std::string Shown(std::string_view s) { return "'" + SanitizeUtf8(s) + "' (hex " + Hex(s) + ")"; }

// Reads the tree below `root` from disk, as the model describes it. FIFOs, sockets and devices
// are left out when `skip_special` (the live tree keeps the ones a safety point never held).
Tree ReadTree(const std::string& root, bool skip_special = false) {
  Tree tree;
  std::vector<std::string> pending = {""};
  while (!pending.empty()) {
    const std::string rel = pending.back();
    pending.pop_back();
    const std::string dir = rel.empty() ? root : root + "/" + rel;
    for (const auto& de : std::filesystem::directory_iterator(dir)) {
      const std::string name = de.path().filename().string();
      const std::string child = rel.empty() ? name : rel + "/" + name;
      const std::string abs = root + "/" + child;
      struct stat st {};
      if (::lstat(abs.c_str(), &st) != 0) {
        ADD_FAILURE() << "lstat " << Shown(abs);
        continue;
      }
      Node n;
      n.mode = st.st_mode & 07777;
      n.mtime = st.st_mtime;
      n.uid = st.st_uid;
      n.gid = st.st_gid;
      if (S_ISDIR(st.st_mode)) {
        n.kind = Kind::kDir;
        pending.push_back(child);
      } else if (S_ISLNK(st.st_mode)) {
        n.kind = Kind::kLink;
        std::string target(static_cast<std::size_t>(st.st_size) + 1, '\0');
        const ssize_t len = ::readlink(abs.c_str(), target.data(), target.size());
        target.resize(static_cast<std::size_t>(std::max<ssize_t>(len, 0)));
        n.data = target;
      } else if (S_ISREG(st.st_mode)) {
        n.kind = Kind::kFile;
        n.data = testing::ReadFile(abs).value_or("<unreadable>");
      } else {
        if (!skip_special) ADD_FAILURE() << "unexpected file type at " << Shown(child);
        continue;
      }
      tree.emplace(child, std::move(n));
    }
  }
  return tree;
}

struct Compare {
  bool modes = true;  // all 07777 bits
  bool file_mtime = true;
  bool owner = false;
};

// Every difference between the expected and the actual tree, one line each (empty = equal).
std::string Differences(const Tree& want, const Tree& got, const Compare& how,
                        const std::vector<std::string>& ignored = {}) {
  std::string out;
  auto line = [&](const std::string& path, const std::string& what) {
    if (out.size() < 4000) out += "  " + Shown(path) + ": " + what + "\n";
  };
  for (const auto& [path, w] : want) {
    auto it = got.find(path);
    if (it == got.end()) {
      line(path, "missing");
      continue;
    }
    const Node& g = it->second;
    if (g.kind != w.kind) {
      line(path, "type differs");
      continue;
    }
    if (g.data != w.data) {
      line(path, w.kind == Kind::kLink ? "link target " + Shown(g.data) + ", want " + Shown(w.data)
                                       : "content differs (" + std::to_string(g.data.size()) +
                                             " bytes, want " + std::to_string(w.data.size()) + ")");
    }
    if (how.modes && w.kind != Kind::kLink && g.mode != w.mode) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "mode %04o, want %04o", g.mode, w.mode);
      line(path, buf);
    }
    if (how.file_mtime && w.kind == Kind::kFile && g.mtime != w.mtime) {
      line(path, "mtime " + std::to_string(g.mtime) + ", want " + std::to_string(w.mtime));
    }
    if (how.owner && (g.uid != w.uid || g.gid != w.gid)) {
      line(path, "owner " + std::to_string(g.uid) + ":" + std::to_string(g.gid) + ", want " +
                     std::to_string(w.uid) + ":" + std::to_string(w.gid));
    }
  }
  for (const auto& [path, g] : got) {
    const bool skipped = std::find(ignored.begin(), ignored.end(), path) != ignored.end();
    if (want.count(path) == 0 && !skipped) line(path, "not expected");
  }
  return out;
}

// --- the generator -----------------------------------------------------------------------------

class Generator {
 public:
  explicit Generator(std::uint64_t seed) : rng_(seed) {}

  std::size_t Below(std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_);
  }
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  template <typename T>
  const T& Pick(const std::vector<T>& v) {
    return v[Below(v.size())];
  }

  std::string Bytes(std::size_t n) {
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(Below(256));
    return s;
  }

  // One name component: any bytes but '/' and NUL, drawn from classes a real home holds and from
  // those nobody thinks of.
  std::string Name() {
    static const std::vector<std::string> kWords = {
        "küchenlicht.png",
        "é.yaml",
        "Größe",
        "crème brûlée",
        "smørbrød",
        "Åland",
        "ελληνικά",
        "привет.yaml",
        "客厅灯.js",
        "照片",
        "💡",
        "👨‍👩‍👧",
        "🏠 home.yaml",
        "مطبخ",
        "מטבח",
        "dir\\back",
        "back\\",
        "new\nline",
        "tab\there",
        " leading space",
        "-leading-dash",
        "trailing ",
        "'quote'",
        "\"dq\"",
        "$HOME",
        "*glob?[a]",
        "#hash",
        "a:b;c|d",
        "ascii.yaml",
        "automations",
        "\x01\x02\x1f",
        "\x7f",
        "e\xcc\x81",
        "\xc3\xa9",
        "\r\n",
        "...",
        ".hidden",
        "..x",
        "x..",
        "%2e%2e",
    };
    switch (Below(6)) {
      case 0:
      case 1:
        return Pick(kWords);
      case 2: {  // not UTF-8: stray continuation, overlong, surrogate, bytes above F4
        static const std::vector<std::string> kBad = {
            "\x80", "\xc0\x80", "\xed\xa0\x80", "\xff", "\xfe\xfe", "caf\xe9", "\xe2\x82"};
        return Pick(kWords).substr(0, 4) + Pick(kBad) + std::to_string(Below(100));
      }
      case 3: {  // random bytes
        std::string s = Bytes(1 + Below(24));
        for (auto& c : s) {
          if (c == '/' || c == '\0') c = 'x';
        }
        return s;
      }
      case 4: {  // long names up to NAME_MAX, multi-byte characters included
        std::string s;
        const std::size_t len = 200 + Below(56);
        while (s.size() < len) s += Chance(0.5) ? "ä" : "z";
        while (s.size() > 255) s.pop_back();
        return s;
      }
      default: {
        std::string s;
        const std::size_t len = 1 + Below(12);
        static constexpr char kAlnum[] =
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
        for (std::size_t i = 0; i < len; ++i) s += kAlnum[Below(sizeof kAlnum - 1)];
        return s;
      }
    }
  }

 private:
  std::mt19937_64 rng_;
};

// Names the default configuration leaves out of a safety point on purpose (logs, the recorder
// database, caches), and names of safepoint's own temporary files: the generator avoids them.
bool Avoided(const std::string& rel, const std::string& name) {
  if (name == "." || name == ".." || name.empty()) return true;
  if (name.find('/') != std::string::npos || name.find('\0') != std::string::npos) return true;
  const bool top = rel.empty();
  if (top && (name == "backups" || name == "tts" || name == "deps" || name == ".cache" ||
              name == "secrets.yaml" || name.starts_with("home-assistant_v2.db"))) {
    return true;
  }
  if (name == "__pycache__" || name.ends_with(".log") || name.find(".log.") != std::string::npos) {
    return true;
  }
  return name.find("safepoint") != std::string::npos;
}

// What a generated tree is expected to produce, beside the tree itself.
struct Generated {
  Tree tree;                         // what a restore must give back (below ha_config)
  std::vector<std::string> skipped;  // relative paths that must be named in a warning
};

class TreeBuilder {
 public:
  TreeBuilder(Generator& gen, std::string root) : gen_(gen), root_(std::move(root)) {}

  Generated Build() {
    std::filesystem::create_directories(root_);
    const std::size_t entries = 6 + gen_.Below(20);
    for (std::size_t i = 0; i < entries; ++i) AddRandom(PickDir());
    if (gen_.Chance(0.25)) AddDeepPath();
    // Modes and times of directories last: children are created first.
    for (auto it = out_.tree.rbegin(); it != out_.tree.rend(); ++it) {
      const std::string abs = root_ + "/" + it->first;
      if (it->second.kind == Kind::kDir) {
        EXPECT_EQ(::chmod(abs.c_str(), it->second.mode), 0) << Shown(abs);
      }
    }
    return std::move(out_);
  }

  // The tree as it is on disk now, with the owners and times the file system gave it.
  static void Refresh(const std::string& root, Tree& tree) {
    Tree disk = ReadTree(root, /*skip_special=*/true);
    for (auto& [path, node] : tree) {
      auto it = disk.find(path);
      if (it == disk.end()) continue;
      node.uid = it->second.uid;
      node.gid = it->second.gid;
      if (node.kind != Kind::kFile) node.mtime = it->second.mtime;
    }
  }

 private:
  std::string PickDir() {
    std::vector<std::string> dirs = {""};
    for (const auto& [path, node] : out_.tree) {
      if (node.kind == Kind::kDir) dirs.push_back(path);
    }
    return gen_.Pick(dirs);
  }

  std::string FreshName(const std::string& dir) {
    for (;;) {
      std::string name = gen_.Name();
      const std::string rel = dir.empty() ? name : dir + "/" + name;
      if (Avoided(dir, name) || out_.tree.count(rel) != 0 || used_.count(rel) != 0) continue;
      if (root_.size() + 1 + rel.size() > 3900) continue;  // PATH_MAX for absolute paths
      used_.insert(rel);
      return rel;
    }
  }

  std::size_t DepthOf(const std::string& rel) {
    return static_cast<std::size_t>(std::count(rel.begin(), rel.end(), '/'));
  }

  void AddRandom(const std::string& dir) {
    const std::size_t r = gen_.Below(100);
    if (r < 25 && DepthOf(dir) < 5) return AddDir(FreshName(dir));
    if (r < 70) return AddFile(FreshName(dir));
    if (r < 85) return AddLink(FreshName(dir));
    if (r < 93) return AddHardLink(dir);
    AddSpecial(FreshName(dir));
  }

  void AddDir(const std::string& rel) {
    const std::string abs = root_ + "/" + rel;
    ASSERT_EQ(::mkdir(abs.c_str(), 0700), 0) << Shown(abs) << " " << std::strerror(errno);
    Node n;
    n.kind = Kind::kDir;
    static const std::vector<mode_t> kModes = {0755, 0700, 02755, 01777, 0750, 02775, 0711};
    n.mode = gen_.Pick(kModes);
    SetOwner(abs, n);
    out_.tree.emplace(rel, n);
  }

  void AddFile(const std::string& rel) {
    const std::string abs = root_ + "/" + rel;
    Node n;
    const std::size_t r = gen_.Below(100);
    std::size_t size = r < 20   ? 0
                       : r < 65 ? 1 + gen_.Below(200)
                       : r < 97 ? gen_.Below(70000)
                                : (1 << 20) + gen_.Below(1 << 21);
    const bool sparse = gen_.Chance(0.05);
    if (sparse) {
      // A hole of a few MiB with data at both ends: read back as zeros.
      n.data =
          gen_.Bytes(100) + std::string((3 << 20) + gen_.Below(1 << 20), '\0') + gen_.Bytes(10);
      const int fd = ::open(abs.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
      ASSERT_GE(fd, 0) << Shown(abs) << " " << std::strerror(errno);
      ASSERT_EQ(::pwrite(fd, n.data.data(), 100, 0), 100);
      const auto tail = static_cast<off_t>(n.data.size() - 10);
      ASSERT_EQ(::pwrite(fd, n.data.data() + tail, 10, tail), 10);
      ::close(fd);
    } else {
      n.data = gen_.Chance(0.5) ? gen_.Bytes(size)
                                : std::string(size, 'a' + static_cast<char>(gen_.Below(26)));
      const int fd = ::open(abs.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
      ASSERT_GE(fd, 0) << Shown(abs) << " " << std::strerror(errno);
      ASSERT_EQ(::write(fd, n.data.data(), n.data.size()), static_cast<ssize_t>(n.data.size()));
      ::close(fd);
    }
    static const std::vector<mode_t> kModes = {0644,  0600,  0755,  0640,  0444, 0400,
                                               04755, 02755, 06755, 01644, 0700, 02644};
    n.mode = gen_.Pick(kModes);
    static const std::vector<std::int64_t> kTimes = {
        0, 1, 1700000000, -86400LL * 365 * 20, 8589934592LL, 4102444800LL};
    n.mtime = gen_.Chance(0.2) ? gen_.Pick(kTimes)
                               : static_cast<std::int64_t>(1000000000 + gen_.Below(900000000));
    SetOwner(abs, n);
    EXPECT_EQ(::chmod(abs.c_str(), n.mode), 0);
    SetTime(abs, n.mtime);
    out_.tree.emplace(rel, n);
  }

  // A symlink with an arbitrary target: one that stays inside the tree is backed up as it is,
  // one that leaves it is named in a warning and left out.
  void AddLink(const std::string& rel) {
    const std::string abs = root_ + "/" + rel;
    const std::size_t depth = DepthOf(rel);
    std::string target;
    bool inside = true;
    switch (gen_.Below(5)) {
      case 0:
        target = "/etc/" + gen_.Name();
        inside = false;
        break;
      case 1:
        for (std::size_t i = 0; i <= depth; ++i) target += "../";
        target += gen_.Name();
        inside = false;
        break;
      case 2: {  // up as far as it may go, then down
        const std::size_t up = depth == 0 ? 0 : gen_.Below(depth + 1);
        for (std::size_t i = 0; i < up; ++i) target += "../";
        target += gen_.Name();
        break;
      }
      default:
        target = gen_.Name();
        if (gen_.Chance(0.3)) target += "/" + gen_.Name();
        if (Avoided("x", target)) target = "plain";
    }
    if (target.find('\0') != std::string::npos) target = "plain";
    ASSERT_EQ(::symlink(target.c_str(), abs.c_str()), 0)
        << Shown(abs) << " " << std::strerror(errno);
    if (!inside) {
      out_.skipped.push_back(rel);
      return;
    }
    Node n;
    n.kind = Kind::kLink;
    n.data = target;
    if (IsRoot()) {
      n.uid = gen_.Chance(0.5) ? 0 : 1000;
      n.gid = n.uid;
      EXPECT_EQ(::lchown(abs.c_str(), n.uid, n.gid), 0);
    }
    out_.tree.emplace(rel, n);
  }

  // A second name for an existing file: both names are backed up as files of the same bytes.
  void AddHardLink(const std::string& dir) {
    std::vector<std::string> files;
    for (const auto& [path, node] : out_.tree) {
      if (node.kind == Kind::kFile) files.push_back(path);
    }
    if (files.empty()) return AddFile(FreshName(dir));
    const std::string from = gen_.Pick(files);
    const std::string rel = FreshName(dir);
    const std::string abs = root_ + "/" + rel;
    ASSERT_EQ(::link((root_ + "/" + from).c_str(), abs.c_str()), 0) << std::strerror(errno);
    out_.tree.emplace(rel, out_.tree.at(from));
  }

  // A FIFO, a socket or (as root) a device: skipped with a warning naming it.
  void AddSpecial(const std::string& rel) {
    const std::string abs = root_ + "/" + rel;
    const std::size_t kind = gen_.Below(IsRoot() ? 3 : 2);
    if (kind == 0) {
      ASSERT_EQ(::mkfifo(abs.c_str(), 0644), 0) << std::strerror(errno);
    } else if (kind == 1) {
      // A socket is bound at a short path (sun_path holds 108 bytes) and renamed into place.
      TempDir short_dir;
      const std::string at = short_dir.Sub("s");
      const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
      ASSERT_GE(fd, 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", at.c_str());
      ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << at;
      ::close(fd);
      ASSERT_EQ(::rename(at.c_str(), abs.c_str()), 0) << std::strerror(errno);
    } else {
      ASSERT_EQ(::mknod(abs.c_str(), S_IFCHR | 0600, makedev(1, 3)), 0) << std::strerror(errno);
    }
    out_.skipped.push_back(rel);
  }

  // One directory chain whose path is thousands of bytes long.
  void AddDeepPath() {
    std::string dir;
    const std::size_t want = 1000 + gen_.Below(2600);
    while (root_.size() + dir.size() + 300 < want + root_.size() && DepthOf(dir) < 60) {
      std::string name;
      const std::size_t len = 20 + gen_.Below(200);
      while (name.size() < len) name += gen_.Chance(0.3) ? "ü" : "d";
      const std::string rel = dir.empty() ? name : dir + "/" + name;
      if (out_.tree.count(rel) != 0) break;
      AddDir(rel);
      dir = rel;
    }
    if (!dir.empty()) AddFile(FreshName(dir));
  }

  void SetOwner(const std::string& abs, Node& n) {
    if (!IsRoot()) return;
    static const std::vector<uid_t> kIds = {0, 1000, 65534, 3000000};
    n.uid = gen_.Pick(kIds);
    n.gid = gen_.Pick(kIds);
    EXPECT_EQ(::lchown(abs.c_str(), n.uid, n.gid), 0);
  }

  static void SetTime(const std::string& abs, std::int64_t mtime) {
    struct timespec times[2];
    times[0].tv_sec = static_cast<time_t>(mtime);
    times[0].tv_nsec = 0;
    times[1] = times[0];
    EXPECT_EQ(::utimensat(AT_FDCWD, abs.c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << Shown(abs);
  }

  Generator& gen_;
  std::string root_;
  Generated out_;
  std::set<std::string> used_;
};

// --- one round trip ----------------------------------------------------------------------------

class RoundTrip {
 public:
  RoundTrip() {
    ha_ = dir_.Sub("config");
    backups_ = dir_.Sub("backups");
    config_ = dir_.Sub("safepoint.yaml");
    std::filesystem::create_directories(ha_);
    std::filesystem::create_directories(dir_.Sub("ws"));
    testing::WriteFile(config_,
                       "paths:\n  ha_config: " + ha_ + "\n  workspace: " + dir_.Sub("ws") +
                           "\n  backup_dir: " + backups_ +
                           "\nencryption:\n  scrypt_work_factor: 15\nsources:\n  logs: []\n");
  }

  const std::string& ha() const { return ha_; }

  testing::ProcessResult Run(std::vector<std::string> args) {
    args.insert(args.begin(), {"--config", config_});
    return RunSafepoint(args);
  }

  // Writes secrets.yaml and adds it to `tree`: it is part of every safety point.
  void AddSecrets(Tree& tree) {
    const std::string content =
        std::string("backup_encryption_passphrase: \"") + kPassphrase + "\"\n";
    testing::WriteFile(ha_ + "/secrets.yaml", content, 0600);
    Node n;
    n.data = content;
    n.mode = 0600;
    struct stat st {};
    ::lstat((ha_ + "/secrets.yaml").c_str(), &st);
    n.mtime = st.st_mtime;
    n.uid = st.st_uid;
    n.gid = st.st_gid;
    tree.emplace("secrets.yaml", n);
  }

  // Takes a safety point; returns its id and warnings.
  std::string Backup(std::vector<std::string>* warnings) {
    auto r = Run({"--json", "backup", "--reason", "round trip"});
    EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
    json j = json::parse(r.out, nullptr, false);
    if (j.is_discarded() || !j.contains("data")) {
      ADD_FAILURE() << "backup --json output: " << r.out;
      return "";
    }
    if (warnings != nullptr && j["data"].contains("warnings")) {
      for (const auto& w : j["data"]["warnings"]) warnings->push_back(w.get<std::string>());
    }
    return j["data"]["id"].get<std::string>();
  }

  // Checks every reader against `want`; returns what differed (empty = all equal).
  std::string CheckReaders(const std::string& id, const Tree& want) {
    std::string problems;
    auto verify = Run({"verify", id});
    if (verify.exit_code != 0)
      problems += "verify: exit " + std::to_string(verify.exit_code) + " " + verify.err;

    const std::string extracted = dir_.Sub("extracted-" + id);
    auto ex = Run({"extract", id, "--to", extracted});
    if (ex.exit_code != 0) {
      problems += "extract: exit " + std::to_string(ex.exit_code) + " " + ex.err + "\n";
    } else {
      // extract restores names, bytes, modes and file times; ownership is the caller's.
      problems +=
          Prefixed("extract", Differences(want, ReadTree(extracted + "/ha_config"),
                                          {.modes = true, .file_mtime = true, .owner = false}));
    }

    const std::string payload = dir_.Sub("payload-" + id + ".tar.zst");
    auto dec = Run({"decrypt", id});
    if (dec.exit_code != 0) {
      problems += "decrypt: exit " + std::to_string(dec.exit_code) + " " + dec.err + "\n";
      return problems;
    }
    testing::WriteFile(payload, dec.out, 0600);
    const std::string tar = dir_.Sub("payload-" + id + ".tar");
    auto unz = RunProcess({"/usr/bin/zstd", "-q", "-d", "-f", payload, "-o", tar});
    if (unz.exit_code != 0) return problems + "zstd -d: " + unz.err + "\n";

    // GNU tar, as users recover without safepoint.
    const std::string gnu = dir_.Sub("gnu-" + id);
    std::filesystem::create_directories(gnu);
    auto t = RunProcess({"/bin/tar", "-x", "-p", "--numeric-owner", "-f", tar, "-C", gnu});
    if (t.exit_code != 0) {
      problems += "GNU tar -x: exit " + std::to_string(t.exit_code) + " " + t.err + "\n";
    } else {
      problems +=
          Prefixed("GNU tar", Differences(want, ReadTree(gnu + "/ha_config"),
                                          {.modes = true, .file_mtime = true, .owner = IsRoot()}));
    }

    // Python's tarfile reads the same tar independently: each member as JSON.
    static constexpr const char* kLister = R"PY(
import hashlib, json, sys, tarfile
with tarfile.open(sys.argv[1], encoding="utf-8", errors="surrogateescape") as t:
    for m in t:
        name = m.name.encode("utf-8", "surrogateescape")
        if not name.startswith(b"ha_config/"):
            continue
        rec = {"name": name[len(b"ha_config/"):].hex(), "mode": m.mode, "mtime": int(m.mtime),
               "uid": m.uid, "gid": m.gid}
        if m.isdir():
            rec["type"] = "dir"
        elif m.issym():
            rec["type"] = "link"
            rec["data"] = m.linkname.encode("utf-8", "surrogateescape").hex()
        elif m.isreg():
            rec["type"] = "file"
            rec["sha256"] = hashlib.sha256(t.extractfile(m).read()).hexdigest()
        else:
            rec["type"] = "other"
        print(json.dumps(rec))
)PY";
    auto py = RunProcess({"/usr/bin/python3", "-c", kLister, tar});
    if (py.exit_code != 0) {
      problems += "python tarfile: " + py.err + "\n";
    } else {
      problems += Prefixed("Python tarfile", CompareListing(want, py.out));
    }
    return problems;
  }

  // Damages the live tree as an update (and a user) might, then rolls back; the tree must be
  // `want` again, and a diff afterwards must find nothing to do.
  // Entries that were never backed up (`skipped`) stay as they are.
  std::string DamageAndRollBack(Generator& gen, const std::string& id, const Tree& want,
                                const std::vector<std::string>& skipped) {
    std::vector<std::string> files, all;
    for (const auto& [path, node] : want) {
      if (path == "secrets.yaml") continue;
      all.push_back(path);
      if (node.kind == Kind::kFile) files.push_back(path);
    }
    for (std::size_t i = 0; i < 3 && !files.empty(); ++i) {
      const std::string abs = ha_ + "/" + gen.Pick(files);
      std::error_code ec;
      if (std::filesystem::is_regular_file(std::filesystem::symlink_status(abs, ec))) {
        // Rewritten in place, as an editor would (hard links see it too: the same bytes).
        testing::WriteFile(abs, "changed by the update " + std::to_string(i), 0644);
      }
    }
    if (!all.empty()) {
      const std::string victim = ha_ + "/" + gen.Pick(all);
      std::error_code ec;
      std::filesystem::remove_all(victim, ec);
    }
    testing::WriteFile(ha_ + "/added by the update ✨.yaml", "new: true\n");
    testing::WriteFile(ha_ + "/added-\xff\xfe.bin", "new\n");

    std::string problems;
    auto rb = Run({"rollback", id, "--on-conflict", "overwrite", "--yes"});
    if (rb.exit_code != 0) {
      return "rollback: exit " + std::to_string(rb.exit_code) + " " + rb.err + "\n";
    }
    problems += Prefixed(
        "rollback", Differences(want, ReadTree(ha_, /*skip_special=*/true),
                                {.modes = true, .file_mtime = true, .owner = IsRoot()}, skipped));
    auto diff = Run({"--json", "diff", id});
    json j = json::parse(diff.out, nullptr, false);
    if (diff.exit_code != 0 || j.is_discarded()) {
      problems +=
          "diff after rollback: exit " + std::to_string(diff.exit_code) + " " + diff.err + "\n";
    } else {
      for (const auto& [key, count] : j["data"]["summary"].items()) {
        if (key != "unchanged" && count.is_number() && count.get<long>() != 0) {
          problems += "diff after rollback: " + key + " = " + count.dump() + "\n";
        }
      }
    }
    return problems;
  }

 private:
  static std::string Prefixed(const std::string& who, const std::string& diff) {
    return diff.empty() ? "" : who + " differs from the tree:\n" + diff;
  }

  static std::string CompareListing(const Tree& want, const std::string& listing) {
    std::string out;
    std::set<std::string> seen;
    std::size_t start = 0;
    while (start < listing.size()) {
      const std::size_t end = listing.find('\n', start);
      const std::string line = listing.substr(start, end - start);
      start = end == std::string::npos ? listing.size() : end + 1;
      if (line.empty()) continue;
      json rec = json::parse(line);
      std::string name;
      const std::string hex = rec["name"];
      for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
        name += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
      }
      if (!name.empty() && name.back() == '/') name.pop_back();
      if (name.empty()) continue;  // the ha_config/ directory itself
      seen.insert(name);
      auto it = want.find(name);
      if (it == want.end()) {
        out += "  " + Shown(name) + ": not expected\n";
        continue;
      }
      const Node& w = it->second;
      const std::string type = rec["type"];
      const std::string want_type = w.kind == Kind::kFile  ? "file"
                                    : w.kind == Kind::kDir ? "dir"
                                                           : "link";
      if (type != want_type) {
        out += "  " + Shown(name) + ": type " + type + "\n";
        continue;
      }
      if (w.kind == Kind::kFile && rec["sha256"] != testing::Sha256Hex(w.data)) {
        out += "  " + Shown(name) + ": content differs\n";
      }
      if (w.kind == Kind::kLink && rec["data"] != Hex(w.data)) {
        out += "  " + Shown(name) + ": link target differs\n";
      }
      if (w.kind != Kind::kLink && rec["mode"].get<mode_t>() != w.mode) {
        out += "  " + Shown(name) + ": mode differs\n";
      }
      if (w.kind == Kind::kFile && rec["mtime"].get<std::int64_t>() != w.mtime) {
        out += "  " + Shown(name) + ": mtime " + rec["mtime"].dump() + "\n";
      }
      if (rec["uid"].get<uid_t>() != w.uid || rec["gid"].get<gid_t>() != w.gid) {
        out += "  " + Shown(name) + ": owner differs\n";
      }
    }
    for (const auto& [path, node] : want) {
      if (seen.count(path) == 0) out += "  " + Shown(path) + ": missing\n";
    }
    return out;
  }

  TempDir dir_;
  std::string ha_, backups_, config_;
};

std::uint64_t EnvNumber(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

// Runs one seed; returns a description of every failure (empty = passed).
std::string RunSeed(std::uint64_t seed) {
  Generator gen(seed);
  RoundTrip rt;
  TreeBuilder builder(gen, rt.ha());
  Generated g = builder.Build();
  if (::testing::Test::HasFatalFailure()) return "the tree could not be built";
  rt.AddSecrets(g.tree);
  TreeBuilder::Refresh(rt.ha(), g.tree);

  std::string problems;
  std::vector<std::string> warnings;
  const std::string id = rt.Backup(&warnings);
  if (id.empty()) return "backup failed";
  // Nothing is skipped silently: each skipped entry is named by exactly one warning, and no
  // other warning appears.
  for (const auto& rel : g.skipped) {
    // Named exactly: as it is, or escaped inside the quotes QuoteName puts around the path.
    std::string shown = QuoteName(rel);
    if (shown != rel) shown = shown.substr(1, shown.size() - 2);
    std::size_t naming = 0;
    for (const auto& w : warnings) naming += w.find(shown) != std::string::npos ? 1 : 0;
    if (naming == 0) problems += "no warning names skipped " + Shown(rel) + "\n";
  }
  if (warnings.size() != g.skipped.size()) {
    problems += std::to_string(warnings.size()) + " warnings for " +
                std::to_string(g.skipped.size()) + " skipped entries:\n";
    for (const auto& w : warnings) problems += "  " + w + "\n";
  }
  problems += rt.CheckReaders(id, g.tree);
  problems += rt.DamageAndRollBack(gen, id, g.tree, g.skipped);
  return problems;
}

// A hand-made tree through the same round trip as a generated one. `make` creates entries below
// the root and records them in the tree (or in `skipped`).
std::string RunFixed(const std::function<void(const std::string& root, Generated& g)>& make) {
  Generator gen(7);
  RoundTrip rt;
  Generated g;
  make(rt.ha(), g);
  rt.AddSecrets(g.tree);
  TreeBuilder::Refresh(rt.ha(), g.tree);
  std::vector<std::string> warnings;
  const std::string id = rt.Backup(&warnings);
  if (id.empty()) return "backup failed";
  std::string problems;
  if (warnings.size() != g.skipped.size()) {
    problems += std::to_string(warnings.size()) + " warnings, want " +
                std::to_string(g.skipped.size()) + "\n";
    for (const auto& w : warnings) problems += "  " + w + "\n";
  }
  problems += rt.CheckReaders(id, g.tree);
  problems += rt.DamageAndRollBack(gen, id, g.tree, g.skipped);
  return problems;
}

void File(const std::string& root, Generated& g, const std::string& rel, const std::string& data,
          mode_t mode = 0644) {
  testing::WriteFile(root + "/" + rel, data, mode);
  ASSERT_EQ(::chmod((root + "/" + rel).c_str(), mode), 0);
  Node n;
  n.data = data;
  n.mode = mode;
  struct stat st {};
  ::lstat((root + "/" + rel).c_str(), &st);
  n.mtime = st.st_mtime;
  g.tree[rel] = n;
}

void Dir(const std::string& root, Generated& g, const std::string& rel, mode_t mode = 0755) {
  std::filesystem::create_directories(root + "/" + rel);
  ASSERT_EQ(::chmod((root + "/" + rel).c_str(), mode), 0);
  Node n;
  n.kind = Kind::kDir;
  n.mode = mode;
  g.tree[rel] = n;
}

void Link(const std::string& root, Generated& g, const std::string& rel,
          const std::string& target) {
  ASSERT_EQ(::symlink(target.c_str(), (root + "/" + rel).c_str()), 0);
  Node n;
  n.kind = Kind::kLink;
  n.data = target;
  g.tree[rel] = n;
}

// Finding: the first backup of a real configuration died with SIGSEGV on this name.
TEST(RoundTrip, NonAsciiFileNameKuechenlichtPng) {
  EXPECT_EQ(RunFixed([](const std::string& root, Generated& g) {
              Dir(root, g, "www");
              File(root, g, "www/küchenlicht.png", std::string("\x89PNG\r\n\x1a\n", 8) + "pixels");
              File(root, g, "é.yaml", "x\n");
            }),
            "");
}

// Finding: a non-ASCII directory name failed with "Can't translate pathname".
TEST(RoundTrip, NonAsciiDirectoryNames) {
  EXPECT_EQ(RunFixed([](const std::string& root, Generated& g) {
              Dir(root, g, "Größe");
              Dir(root, g, "Größe/客厅");
              File(root, g, "Größe/客厅/💡 lamp.js", "export default 1;\n");
              Dir(root, g, "smørbrød");
            }),
            "");
}

// Finding: a link with a non-ASCII target was stored with an empty target, and the safety point
// could never be restored.
TEST(RoundTrip, SymlinkWithNonAsciiTarget) {
  EXPECT_EQ(RunFixed([](const std::string& root, Generated& g) {
              File(root, g, "crème.yaml", "a: 1\n");
              Link(root, g, "link-to-crème", "crème.yaml");
              Link(root, g, "link-to-nowhere", "später/🚫");
            }),
            "");
}

// Finding: a backslash in a name made every safety point "corrupt".
TEST(RoundTrip, BackslashInFileName) {
  EXPECT_EQ(RunFixed([](const std::string& root, Generated& g) {
              File(root, g, "dir\\back.yaml", "b: 2\n");
              Dir(root, g, "C:\\Users");
              File(root, g, "C:\\Users\\x", "\\\\\n");
            }),
            "");
}

// Finding: names that are not UTF-8 were skipped with a warning.
TEST(RoundTrip, NameThatIsNotUtf8IsBackedUpByteForByte) {
  EXPECT_EQ(RunFixed([](const std::string& root, Generated& g) {
              File(root, g, "caf\xe9.yaml", "latin-1 name\n");
              Dir(root, g, "\xff\xfe dir");
              File(root, g, "\xff\xfe dir/\xc0\x80\xed\xa0\x80", "");
              Link(root, g, "link\x80", "caf\xe9.yaml");
              File(root, g, "new\nline", "\n");
            }),
            "");
}

// Finding: setuid and setgid bits came back from a rollback as 0755, and the next diff saw a
// conflict.
TEST(RoundTrip, SetuidSetgidAndStickyBitsSurviveRollbackExtractAndDiff) {
  EXPECT_EQ(RunFixed([](const std::string& root, Generated& g) {
              File(root, g, "suid", "#!/bin/sh\n", 04755);
              File(root, g, "sgid", "#!/bin/sh\n", 02755);
              File(root, g, "both", "#!/bin/sh\n", 06750);
              Dir(root, g, "shared", 02775);
              Dir(root, g, "tmp", 01777);
              File(root, g, "shared/f", "x", 02644);
            }),
            "");
}

// Names of NAME_MAX bytes: the rollback's temporary names and merge copies must still fit.
TEST(RoundTrip, NamesOfTwoHundredFiftyFiveBytes) {
  EXPECT_EQ(RunFixed([](const std::string& root, Generated& g) {
              File(root, g, std::string(255, 'n'), "long\n");
              std::string umlauts;
              while (umlauts.size() + 2 <= 255) umlauts += "ü";
              umlauts += "x";
              File(root, g, umlauts, "long too\n");
            }),
            "");
}

TEST(RoundTrip, GeneratedTreesSurviveEveryReaderAndRollback) {
  const std::uint64_t first = EnvNumber("SAFEPOINT_ROUNDTRIP_SEED", 1);
  const std::uint64_t count = EnvNumber("SAFEPOINT_ROUNDTRIP_SEEDS", 150);
  const auto budget = std::chrono::seconds(EnvNumber("SAFEPOINT_ROUNDTRIP_SECONDS", 100));
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t ran = 0;
  for (std::uint64_t seed = first; seed < first + count; ++seed) {
    if (ran > 0 && std::chrono::steady_clock::now() - start > budget) break;
    const std::string problems = RunSeed(seed);
    ++ran;
    if (!problems.empty()) {
      ADD_FAILURE() << "seed " << seed
                    << " failed; reproduce with SAFEPOINT_ROUNDTRIP_SEED=" << seed
                    << " SAFEPOINT_ROUNDTRIP_SEEDS=1 ctest -R RoundTrip\n"
                    << problems;
      break;
    }
  }
  std::printf("round trip: %llu seeds from %llu in %lld s\n", static_cast<unsigned long long>(ran),
              static_cast<unsigned long long>(first),
              static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(
                                         std::chrono::steady_clock::now() - start)
                                         .count()));
  EXPECT_GE(ran, 1u);
}

}  // namespace
}  // namespace safepoint
