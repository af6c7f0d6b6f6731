#include "tests/testutil/testutil.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sodium.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace safepoint::testing {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl =
      std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/safepoint-test-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp failed";
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  // Make read-only leftovers of a test removable before deleting.
  for (auto it = std::filesystem::recursive_directory_iterator(
           path_, std::filesystem::directory_options::skip_permission_denied, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) {
      std::filesystem::permissions(it->path(), std::filesystem::perms::owner_all,
                                   std::filesystem::perm_options::add, ec);
    }
  }
  std::filesystem::remove_all(path_, ec);
}

void WriteFile(const std::string& path, const std::string& content, mode_t mode) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  ASSERT_TRUE(out.good()) << "cannot write " << path;
  out << content;
  out.close();
  std::filesystem::permissions(path, static_cast<std::filesystem::perms>(mode));
}

void WriteSecrets(const std::string& path, const std::string& passphrase,
                  const std::string& extra) {
  WriteFile(path, "backup_encryption_passphrase: \"" + passphrase + "\"\n" + extra, 0600);
}

void WriteHomeAssistantTree(const std::string& ha, const std::string& passphrase) {
  WriteSecrets(ha + "/secrets.yaml", passphrase);
  WriteFile(ha + "/configuration.yaml", "homeassistant:\n  name: Home\n");
  WriteFile(ha + "/automations.yaml", "- id: lights\n");
  WriteFile(ha + "/.storage/core.entity_registry", "{\"data\": {\"entities\": []}}");
  WriteFile(ha + "/custom_components/foo/__init__.py", "VERSION = '1.0'\n");
  std::filesystem::create_directories(ha + "/blueprints/empty_dir");
  std::filesystem::create_symlink("configuration.yaml", ha + "/link.yaml");
}

std::map<std::string, std::string> SnapTree(const std::string& root) {
  namespace fs = std::filesystem;
  std::map<std::string, std::string> s;
  if (!fs::exists(root)) return s;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    struct stat st {};
    ::lstat(it->path().c_str(), &st);
    std::string key = it->path().lexically_relative(root).string();
    if (S_ISLNK(st.st_mode)) {
      s[key] = "L " + fs::read_symlink(it->path()).string();
    } else if (S_ISDIR(st.st_mode)) {
      s[key] = "D " + std::to_string(st.st_mode & 07777);
    } else {
      s[key] = "F " + std::to_string(st.st_mode & 07777) + " " +
               Sha256Hex(ReadFile(it->path().string()).value_or("?"));
    }
  }
  return s;
}

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Sha256Hex(const std::string& data) {
  unsigned char out[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(out, reinterpret_cast<const unsigned char*>(data.data()), data.size());
  static const char* kHex = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : out) {
    hex += kHex[c >> 4];
    hex += kHex[c & 15];
  }
  return hex;
}

namespace {

class FaultyFile final : public WritableFile {
 public:
  FaultyFile(std::unique_ptr<WritableFile> real, FaultInjectingFileSystem* fs, std::string path)
      : real_(std::move(real)), fs_(fs), path_(std::move(path)) {}
  Status Append(std::span<const std::uint8_t> data) override {
    SP_RETURN_IF_ERROR(fs_->Check("write", path_, true));
    return real_->Append(data);
  }
  Status WriteAt(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    SP_RETURN_IF_ERROR(fs_->Check("write", path_, true));
    return real_->WriteAt(offset, data);
  }
  Status Sync() override {
    SP_RETURN_IF_ERROR(fs_->Check("fsync", path_, false));
    return real_->Sync();
  }
  Status Close() override {
    SP_RETURN_IF_ERROR(fs_->Check("close", path_, false));
    return real_->Close();
  }

 private:
  std::unique_ptr<WritableFile> real_;
  FaultInjectingFileSystem* fs_;
  std::string path_;
};

// Changes the file on disk after every read that returned data.
class ChangingFile final : public ReadableFile {
 public:
  ChangingFile(std::unique_ptr<ReadableFile> real, std::string path, ReadChange how)
      : real_(std::move(real)), path_(std::move(path)), how_(how) {}
  Result<std::size_t> Read(std::span<std::uint8_t> out) override {
    auto n = real_->Read(out);
    if (n && *n > 0) Change();
    return n;
  }
  Result<struct stat> Stat() override { return real_->Stat(); }
  Result<struct stat> OpenedStat() override { return real_->OpenedStat(); }

 private:
  void Change() {
    const int flags = O_RDWR | O_CLOEXEC | (how_ == ReadChange::kAppend ? O_APPEND : 0);
    const int fd = ::open(path_.c_str(), flags);
    if (fd < 0) {
      ADD_FAILURE() << "cannot open " << path_ << " to change it";
      return;
    }
    if (how_ == ReadChange::kAppend) {
      EXPECT_EQ(::write(fd, "+", 1), 1);
    } else {
      char first = 0;
      EXPECT_EQ(::pread(fd, &first, 1, 0), 1);
      first = static_cast<char>(first ^ 1);
      EXPECT_EQ(::pwrite(fd, &first, 1, 0), 1);
      // File times have a granularity of a clock tick: move mtime on by a second so the change
      // is visible to fstat however fast the reads come.
      struct stat st {};
      EXPECT_EQ(::fstat(fd, &st), 0);
      struct timespec times[2] = {{0, UTIME_OMIT}, st.st_mtim};
      times[1].tv_sec += 1;
      EXPECT_EQ(::futimens(fd, times), 0);
    }
    ::close(fd);
  }

  std::unique_ptr<ReadableFile> real_;
  std::string path_;
  ReadChange how_;
};

}  // namespace

Result<std::unique_ptr<ReadableFile>> FaultInjectingFileSystem::OpenRead(const std::string& path) {
  auto it = changing_.find(path);
  if (it != changing_.end() && it->second == ReadChange::kReplace) {
    std::lock_guard lock(opens_mu_);
    if (opens_[path]++ > 0) {
      const std::string next = path + ".replacing";
      std::filesystem::copy_file(path, next, std::filesystem::copy_options::overwrite_existing);
      std::ofstream(next, std::ios::app) << '+';
      std::filesystem::rename(next, path);
    }
    return real_.OpenRead(path);
  }
  auto real = real_.OpenRead(path);
  if (!real) return tl::unexpected(real.error());
  if (it == changing_.end()) return real;
  return std::make_unique<ChangingFile>(std::move(*real), path, it->second);
}

Status FaultInjectingFileSystem::Check(const char* op, const std::string& path, bool is_write) {
  std::uint64_t n = ++ops_;
  if (fail_at_ == 0) return {};
  if (kind_ == FaultKind::kCrash) {
    if (n >= fail_at_) {
      tripped_ = true;
      return Fail(ErrorCode::kIo, std::string(op) + " " + path + ": simulated crash");
    }
  } else if (is_write && n >= fail_at_) {
    tripped_ = true;
    return Fail(ErrorCode::kNoSpace, std::string(op) + " " + path + ": No space left on device");
  }
  return {};
}

Result<std::unique_ptr<WritableFile>> FaultInjectingFileSystem::CreateFile(const std::string& path,
                                                                           mode_t mode) {
  SP_RETURN_IF_ERROR(Check("create", path, false));
  auto real = real_.CreateFile(path, mode);
  if (!real) return tl::unexpected(real.error());
  return std::make_unique<FaultyFile>(std::move(*real), this, path);
}
Status FaultInjectingFileSystem::Rename(const std::string& from, const std::string& to) {
  SP_RETURN_IF_ERROR(Check("rename", from, false));
  return real_.Rename(from, to);
}
Status FaultInjectingFileSystem::SyncDir(const std::string& path) {
  SP_RETURN_IF_ERROR(Check("fsync", path, false));
  return real_.SyncDir(path);
}
Status FaultInjectingFileSystem::SyncFileSystem(const std::string& path) {
  SP_RETURN_IF_ERROR(Check("syncfs", path, false));
  return real_.SyncFileSystem(path);
}
Status FaultInjectingFileSystem::MakeDir(const std::string& path, mode_t mode) {
  SP_RETURN_IF_ERROR(Check("mkdir", path, false));
  return real_.MakeDir(path, mode);
}
Status FaultInjectingFileSystem::Remove(const std::string& path) {
  SP_RETURN_IF_ERROR(Check("remove", path, false));
  return real_.Remove(path);
}
Status FaultInjectingFileSystem::RemoveTree(const std::string& path) {
  SP_RETURN_IF_ERROR(Check("remove", path, false));
  return real_.RemoveTree(path);
}
Status FaultInjectingFileSystem::Symlink(const std::string& target, const std::string& path) {
  SP_RETURN_IF_ERROR(Check("symlink", path, false));
  return real_.Symlink(target, path);
}
Status FaultInjectingFileSystem::Chmod(const std::string& path, mode_t mode) {
  SP_RETURN_IF_ERROR(Check("chmod", path, false));
  return real_.Chmod(path, mode);
}
Status FaultInjectingFileSystem::Chown(const std::string& path, uid_t uid, gid_t gid) {
  SP_RETURN_IF_ERROR(Check("chown", path, false));
  return real_.Chown(path, uid, gid);
}
Status FaultInjectingFileSystem::SetMtime(const std::string& path, std::int64_t mtime) {
  SP_RETURN_IF_ERROR(Check("utimensat", path, false));
  return real_.SetMtime(path, mtime);
}

Result<std::unique_ptr<WritableFile>> FaultInjectingFileSystem::CreateFileAt(const Dir& dir,
                                                                             const std::string& rel,
                                                                             mode_t mode) {
  const std::string path = dir.PathOf(rel);
  SP_RETURN_IF_ERROR(Check("create", path, false));
  auto real = FileSystem::CreateFileAt(dir, rel, mode);
  if (!real) return tl::unexpected(real.error());
  return std::make_unique<FaultyFile>(std::move(*real), this, path);
}
Status FaultInjectingFileSystem::MakeDirAt(const Dir& dir, const std::string& rel, mode_t mode) {
  SP_RETURN_IF_ERROR(Check("mkdir", dir.PathOf(rel), false));
  return FileSystem::MakeDirAt(dir, rel, mode);
}
Status FaultInjectingFileSystem::SymlinkAt(const std::string& target, const Dir& dir,
                                           const std::string& rel) {
  SP_RETURN_IF_ERROR(Check("symlink", dir.PathOf(rel), false));
  return FileSystem::SymlinkAt(target, dir, rel);
}
Status FaultInjectingFileSystem::RenameAt(const Dir& from_dir, const std::string& from,
                                          const Dir& to_dir, const std::string& to) {
  SP_RETURN_IF_ERROR(Check("rename", from_dir.PathOf(from), false));
  return FileSystem::RenameAt(from_dir, from, to_dir, to);
}
Status FaultInjectingFileSystem::ChownAt(const Dir& dir, const std::string& rel, uid_t uid,
                                         gid_t gid) {
  SP_RETURN_IF_ERROR(Check("chown", dir.PathOf(rel), false));
  return FileSystem::ChownAt(dir, rel, uid, gid);
}
Status FaultInjectingFileSystem::ChmodAt(const Dir& dir, const std::string& rel, mode_t mode) {
  SP_RETURN_IF_ERROR(Check("chmod", dir.PathOf(rel), false));
  return FileSystem::ChmodAt(dir, rel, mode);
}
Status FaultInjectingFileSystem::SetMtimeAt(const Dir& dir, const std::string& rel,
                                            std::int64_t mtime) {
  SP_RETURN_IF_ERROR(Check("utimensat", dir.PathOf(rel), false));
  return FileSystem::SetMtimeAt(dir, rel, mtime);
}
Status FaultInjectingFileSystem::RemoveTreeAt(const Dir& dir, const std::string& rel) {
  SP_RETURN_IF_ERROR(Check("remove", dir.PathOf(rel), false));
  return FileSystem::RemoveTreeAt(dir, rel);
}

}  // namespace safepoint::testing
