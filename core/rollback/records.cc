// A rollback's record: <backup_dir>/.rollbacks/<rollback-id>/ with its journal and, while it
// applies, the reserve that keeps room for the journal on a full disk.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "core/base/io.h"
#include "core/base/time_text.h"
#include "core/rollback/internal.h"
#include "core/rollback/journal.h"

namespace safepoint::rollback::internal {

namespace {

constexpr std::string_view kRecordsDir = ".rollbacks";

// Room a rollback keeps on the backup dir's file system while it applies: the size of its
// journal, and this much more.
constexpr std::uint64_t kReserveExtra = std::uint64_t{64} << 10;
constexpr std::string_view kReserveName = "reserve";

}  // namespace


std::string RecordsDir(const store::Store& store) {
  return store.options().backup_dir + "/" + std::string(kRecordsDir);
}

Status WriteJournal(FileSystem& fs, const std::string& record, const Journal& j) {
  if (j.phase == Phase::kDone || j.phase == Phase::kReverted) {
    // Finished: no recovery checks a staged file again, so the SHA-256 of the safety point's
    // plaintext (which would confirm a guessed secrets.yaml without scrypt) is not kept.
    Journal finished = j;
    for (auto& op : finished.ops) op.sha256.clear();
    return WriteFileAtomically(fs, record + "/" + std::string(journal::kFileName),
                               journal::ToJson(finished).dump(1) + "\n", 0600);
  }
  return WriteFileAtomically(fs, record + "/" + std::string(journal::kFileName),
                             journal::ToJson(j).dump(1) + "\n", 0600);
}

// Outside the FileSystem seam: the reserve holds no data, and a crash leaves a file that
// recovery removes.
Status MakeReserve(const std::string& record, const Journal& j) {
  // Made before the journal: a rollback that finds no room for it leaves no journal behind
  // that a crash could bring back for recovery to complete.
  const std::uint64_t size = journal::ToJson(j).dump(1).size() + 1 + kReserveExtra;
  const std::string path = record + "/" + std::string(kReserveName);
  const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return tl::unexpected(ErrnoError(errno, "create", path));
  const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
  ::close(fd);
  if (err != 0) {
    ::unlink(path.c_str());
    return tl::unexpected(ErrnoError(err, "reserve space for the rollback's journal in", record));
  }
  return {};
}

void FreeReserve(const std::string& record) {
  (void)::unlink((record + "/" + std::string(kReserveName)).c_str());
}

Status EnsureRecordsDir(FileSystem& fs, const store::Store& store) {
  const std::string dir = RecordsDir(store);
  if (IsRealDir(dir)) return {};
  if (LExists(dir)) return Fail(ErrorCode::kIo, dir + " is not a directory");
  SP_RETURN_IF_ERROR(fs.MakeDir(dir, 0700));
  return fs.SyncDir(store.options().backup_dir);
}

Result<std::string> NewRollbackId(const store::Store& store, const Clock& clock) {
  const std::string base = FormatLocalStamp(clock.Now());
  for (int n = 1; n <= 999; ++n) {
    std::string id = n == 1 ? base : base + "-" + std::to_string(n);
    if (!LExists(RecordsDir(store) + "/" + id)) return id;
  }
  return Fail(ErrorCode::kBusy, "more than 999 rollbacks in one second");
}

Result<Report> DiscardUnchanged(FileSystem& fs, store::Store& store, const std::string& record,
                                const std::string& pre_rollback_id, Error e) {
  (void)fs.RemoveTree(record);
  if (!pre_rollback_id.empty()) (void)store.Delete(pre_rollback_id);
  return tl::unexpected(std::move(e));
}

}  // namespace safepoint::rollback::internal
