// Fuzzes the writing side: the input describes a tree (names of any bytes, types, modes, times,
// owners, sizes, link targets), which is written as a safety point's payload and manifest would
// be, and read back. The readers fuzzed elsewhere only see what mutations make of valid input;
// here every valid input must survive the round trip exactly.
//
// Input (FuzzedDataProvider): a sequence of entries, each a type, a path below ha_config/ made
// of raw bytes, mode, mtime, uid, gid, and the file's bytes or the link's target. Entries whose
// path or target the format does not allow (CheckArchivePath, CheckLinkTarget, duplicates,
// below a non-directory) are dropped first, as collection never produces them.
// Invariants: the tar writer accepts every remaining entry; our reader returns each one with the
// same path, type, mode, mtime, uid, gid, size, bytes and target; the manifest serializes and
// parses back to the same entries.

#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "core/base/io.h"
#include "core/format/archive.h"
#include "core/format/manifest.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using namespace safepoint;

struct Item {
  archive::EntryHeader header;
  std::string data;
};

std::span<const std::uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace safepoint::fuzz;
  FuzzedDataProvider in(data, size);
  std::vector<Item> items;
  std::vector<manifest::Entry> entries;
  std::set<std::string> seen;
  const int workers = in.ConsumeBool() ? 1 : 0;
  while (in.remaining_bytes() > 0 && items.size() < 64) {
    Item item;
    auto& h = item.header;
    const auto type = in.ConsumeIntegralInRange<int>(0, 2);
    h.type = type == 0   ? manifest::EntryType::kFile
             : type == 1 ? manifest::EntryType::kDirectory
                         : manifest::EntryType::kSymlink;
    h.path = "ha_config/" + in.ConsumeRandomLengthString(300);
    h.mode = in.ConsumeIntegral<std::uint32_t>() & 07777;
    h.mtime = in.ConsumeIntegral<std::int64_t>() % (std::int64_t{1} << 40);
    h.uid = in.ConsumeIntegral<std::uint32_t>();
    h.gid = in.ConsumeIntegral<std::uint32_t>();
    if (h.type == manifest::EntryType::kFile) {
      item.data = in.ConsumeRandomLengthString(4096);
      h.size = item.data.size();
    } else if (h.type == manifest::EntryType::kSymlink) {
      h.link_target = in.ConsumeRandomLengthString(300);
    }
    if (!manifest::CheckArchivePath(h.path)) continue;
    if (h.type == manifest::EntryType::kSymlink &&
        !manifest::CheckLinkTarget(h.path, h.link_target)) {
      continue;
    }
    if (!seen.insert(h.path).second) continue;
    manifest::Entry e;
    e.path = h.path;
    e.type = h.type;
    e.size = h.size;
    e.mode = h.mode;
    e.mtime = h.mtime;
    e.uid = h.uid;
    e.gid = h.gid;
    e.link_target = h.link_target;
    if (e.type == manifest::EntryType::kFile) e.sha256 = std::string(64, '0');
    entries.push_back(e);
    if (!manifest::CheckEntries(entries)) {
      entries.pop_back();
      seen.erase(h.path);
      continue;
    }
    items.push_back(std::move(item));
  }

  // The tar: written, then read back exactly.
  StringSink sink;
  auto writer = archive::TarZstdWriter::Create(sink, 1, workers);
  if (!writer) Violated("writer: " + writer.error().message);
  for (const auto& item : items) {
    if (auto st = (*writer)->BeginEntry(item.header); !st)
      Violated("BeginEntry: " + st.error().message);
    if (!item.data.empty()) {
      if (auto st = (*writer)->WriteData(Bytes(item.data)); !st)
        Violated("WriteData: " + st.error().message);
    }
  }
  if (auto st = (*writer)->Finish(); !st) Violated("Finish: " + st.error().message);

  MemorySource source(
      {reinterpret_cast<const std::uint8_t*>(sink.text.data()), sink.text.size()}, 1 << 16);
  auto reader = archive::TarZstdReader::Open(source);
  if (!reader) Violated("reader: " + reader.error().message);
  std::vector<std::uint8_t> buf(65536);
  for (const auto& item : items) {
    auto next = (*reader)->Next();
    if (!next) Violated("Next: " + next.error().message);
    if (!next->has_value()) Violated("an entry is missing");
    const auto& got = **next;
    const auto& want = item.header;
    if (got.path != want.path) Violated("path differs");
    if (got.type != want.type) Violated("type differs");
    if (got.mode != want.mode) Violated("mode differs");
    if (got.mtime != want.mtime) Violated("mtime differs");
    if (got.uid != want.uid || got.gid != want.gid) Violated("owner differs");
    if (got.link_target != want.link_target) Violated("link target differs");
    if (got.size != want.size) Violated("size differs");
    std::string bytes;
    for (;;) {
      auto n = (*reader)->ReadData(buf);
      if (!n) Violated("ReadData: " + n.error().message);
      if (*n == 0) break;
      bytes.append(reinterpret_cast<const char*>(buf.data()), *n);
    }
    if (bytes != item.data) Violated("file bytes differ");
  }
  auto end = (*reader)->Next();
  if (!end || end->has_value()) Violated("an entry too many, or a bad end");

  // The manifest: serialized and parsed back to the same entries.
  manifest::Manifest m;
  m.id = "2026-12-02_01-00-00";
  m.created_at = "2026-12-02T01:00:00+00:00";
  m.entries = entries;
  auto back = manifest::Parse(manifest::Serialize(m, /*inner=*/true));
  if (!back) Violated("manifest parse: " + back.error().message);
  if (back->entries != entries) Violated("manifest entries differ");
  return 0;
}
