#include "core/format/archive.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "core/base/io.h"
#include "core/base/sha256.h"
#include "tests/testutil/process.h"
#include "tests/testutil/testutil.h"

namespace safepoint::archive {
namespace {

using testing::ReadFile;
using testing::RunProcess;
using testing::TempDir;
using testing::WriteFile;

class StringSource final : public ByteSource {
 public:
  explicit StringSource(const std::string& s) : s_(s) {}
  Result<std::size_t> Read(std::span<std::uint8_t> out) override {
    const std::size_t n = std::min(out.size(), s_.size() - pos_);
    std::copy_n(s_.data() + pos_, n, reinterpret_cast<char*>(out.data()));
    pos_ += n;
    return n;
  }

 private:
  const std::string& s_;
  std::size_t pos_ = 0;
};

// Compressible but not trivially (a few MiB, so zstd and libarchive flush several times).
std::string Text(std::size_t size, std::uint32_t seed) {
  std::string s;
  s.reserve(size);
  for (std::size_t i = 0; i < size; ++i) {
    seed = seed * 1103515245u + 12345u;
    s.push_back(static_cast<char>('a' + (seed >> 16) % 16));
  }
  return s;
}

std::span<const std::uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

EntryHeader File(const std::string& path, std::size_t size) {
  EntryHeader h;
  h.path = path;
  h.size = size;
  h.mode = 0644;
  h.mtime = 1'700'000'000;
  return h;
}

TEST(TarZstd, WorkersChangedInsideAnEntryGiveFramesThatEveryReaderReadsAsOneTar) {
  const std::string a = Text(3 << 20, 1);
  const std::string b = Text(2 << 20, 2);
  StringSink sink;
  auto w = TarZstdWriter::Create(sink, 3, 0);
  ASSERT_TRUE(w) << w.error().message;
  ASSERT_TRUE((*w)->BeginEntry(File("ha_config/a.txt", a.size())));
  ASSERT_TRUE((*w)->WriteData(Bytes(a).first(a.size() / 2)));
  // What Store::BackupOnce does once the KDF is done: a new, multi-threaded frame.
  ASSERT_TRUE((*w)->SetWorkers(1));
  ASSERT_TRUE((*w)->SetWorkers(1));  // unchanged: no new frame
  ASSERT_TRUE((*w)->WriteData(Bytes(a).subspan(a.size() / 2)));
  ASSERT_TRUE((*w)->BeginEntry(File("ha_config/b.txt", b.size())));
  ASSERT_TRUE((*w)->WriteData(Bytes(b)));
  ASSERT_TRUE((*w)->Finish());

  // Our reader.
  StringSource source(sink.text);
  auto r = TarZstdReader::Open(source);
  ASSERT_TRUE(r) << r.error().message;
  const std::vector<std::pair<std::string, const std::string*>> expected = {
      {"ha_config/a.txt", &a}, {"ha_config/b.txt", &b}};
  for (const auto& [path, want] : expected) {
    auto e = (*r)->Next();
    ASSERT_TRUE(e) << e.error().message;
    ASSERT_TRUE(e->has_value());
    EXPECT_EQ((*e)->path, path);
    std::string got;
    std::vector<std::uint8_t> buf(100'000);
    for (;;) {
      auto n = (*r)->ReadData(buf);
      ASSERT_TRUE(n) << n.error().message;
      if (*n == 0) break;
      got.append(reinterpret_cast<const char*>(buf.data()), *n);
    }
    EXPECT_TRUE(got == *want) << path;
  }
  auto end = (*r)->Next();
  ASSERT_TRUE(end);
  EXPECT_FALSE(end->has_value());

  // Stock tools: two frames, one tar.
  TempDir dir;
  WriteFile(dir.Sub("p.tar.zst"), sink.text);
  auto frames = RunProcess({"/usr/bin/zstd", "-lv", dir.Sub("p.tar.zst")});
  ASSERT_EQ(frames.exit_code, 0) << frames.err;
  EXPECT_NE(frames.out.find("# Zstandard Frames: 2\n"), std::string::npos) << frames.out;
  std::filesystem::create_directories(dir.Sub("x"));
  auto x =
      RunProcess({"/bin/sh", "-c",
                  "zstd -dc '" + dir.Sub("p.tar.zst") + "' | tar -xf - -C '" + dir.Sub("x") + "'"});
  ASSERT_EQ(x.exit_code, 0) << x.err;
  EXPECT_TRUE(ReadFile(dir.Sub("x/ha_config/a.txt")) == a);
  EXPECT_TRUE(ReadFile(dir.Sub("x/ha_config/b.txt")) == b);
}

// Every field that does not fit a ustar header goes through pax records and comes back exactly:
// names of any bytes, long names and targets, times before 1970 and after 2242, big ids.
TEST(TarZstd, FieldsOutsideUstarRangeComeBackExactly) {
  std::vector<EntryHeader> headers;
  auto add = [&](EntryHeader h) { headers.push_back(std::move(h)); };
  add(File("ha_config/küchenlicht.png", 3));
  add(File("ha_config/caf\xe9\xff.yaml", 0));
  add(File("ha_config/dir\\back", 1));
  add(File("ha_config/" + std::string(250, 'x') + "/" + std::string(255, 'y'), 2));
  EntryHeader old = File("ha_config/old", 1);
  old.mtime = -631152000;
  add(old);
  EntryHeader future = File("ha_config/future", 1);
  future.mtime = 8'589'934'592;  // 8^11: one past the octal field
  future.uid = 3'000'000;
  future.gid = 2'097'152;
  future.mode = 06755;
  add(future);
  EntryHeader dir;
  dir.path = "ha_config/Größe";
  dir.type = manifest::EntryType::kDirectory;
  dir.mode = 02775;
  add(dir);
  EntryHeader link;
  link.path = "ha_config/Größe/l\x80";
  link.type = manifest::EntryType::kSymlink;
  link.link_target = std::string(150, 'z') + "\xc3\xa9\xff";
  link.mode = 0777;
  add(link);

  StringSink sink;
  auto w = TarZstdWriter::Create(sink, 3, 0);
  ASSERT_TRUE(w.has_value());
  for (const auto& h : headers) {
    ASSERT_TRUE((*w)->BeginEntry(h).has_value()) << h.path;
    if (h.type == manifest::EntryType::kFile) {
      ASSERT_TRUE((*w)->WriteData(Bytes(std::string(h.size, 'd'))).has_value());
    }
  }
  ASSERT_TRUE((*w)->Finish().has_value());

  StringSource source(sink.text);
  auto r = TarZstdReader::Open(source);
  ASSERT_TRUE(r.has_value());
  for (const auto& want : headers) {
    auto got = (*r)->Next();
    ASSERT_TRUE(got.has_value()) << got.error().message;
    ASSERT_TRUE(got->has_value());
    EXPECT_EQ((*got)->path, want.path);
    EXPECT_EQ((*got)->type, want.type);
    EXPECT_EQ((*got)->size, want.type == manifest::EntryType::kFile ? want.size : 0);
    EXPECT_EQ((*got)->mode, want.mode) << want.path;
    EXPECT_EQ((*got)->mtime, want.mtime) << want.path;
    EXPECT_EQ((*got)->uid, want.uid) << want.path;
    EXPECT_EQ((*got)->gid, want.gid) << want.path;
    EXPECT_EQ((*got)->link_target, want.link_target);
    std::string data(want.size + 10, '\0');
    std::size_t total = 0;
    for (;;) {
      auto n = (*r)->ReadData(
          {reinterpret_cast<std::uint8_t*>(data.data()) + total, data.size() - total});
      ASSERT_TRUE(n.has_value());
      if (*n == 0) break;
      total += *n;
    }
    EXPECT_EQ(total, (*got)->size);
  }
  auto end = (*r)->Next();
  ASSERT_TRUE(end.has_value());
  EXPECT_FALSE(end->has_value());

  // GNU tar lists the same names, byte for byte.
  TempDir tmp;
  WriteFile(tmp.Sub("t.tar.zst"), sink.text);
  std::string want_listing;
  for (const auto& h : headers) {
    want_listing += h.path + (h.type == manifest::EntryType::kDirectory ? "/" : "") + "\n";
  }
  // The default quoting style escapes backslashes and non-printables: list literally.
  auto t =
      RunProcess({"/bin/sh", "-c",
                  "zstd -dc '" + tmp.Sub("t.tar.zst") + "' | tar --quoting-style=literal -tf -"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_EQ(t.out, want_listing);
}

// ---- Entries the format does not allow (docs/format.md, docs/security.md) ----

// Writes `<dir>/<name>.tar` with python3's tarfile: `ha_config/a.txt`, then one entry of `kind`
// (hardlink, chardev, blockdev, fifo) at `ha_config/bad`, then `ha_config/z.txt`.
std::string PythonTar(const TempDir& dir, const std::string& kind) {
  const std::string script = R"(
import io, sys, tarfile
kind, out = sys.argv[1], sys.argv[2]
def regular(tar, name, data):
    info = tarfile.TarInfo(name); info.size = len(data); info.mtime = 1700000000
    tar.addfile(info, io.BytesIO(data))
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
    regular(tar, "ha_config/a.txt", b"first\n")
    info = tarfile.TarInfo("ha_config/bad"); info.mtime = 1700000000
    if kind == "hardlink":
        info.type = tarfile.LNKTYPE; info.linkname = "ha_config/a.txt"
    elif kind == "chardev":
        info.type = tarfile.CHRTYPE; info.devmajor = 1; info.devminor = 3
    elif kind == "blockdev":
        info.type = tarfile.BLKTYPE; info.devmajor = 7; info.devminor = 0
    elif kind == "fifo":
        info.type = tarfile.FIFOTYPE
    tar.addfile(info)
    regular(tar, "ha_config/z.txt", b"last\n")
)";
  const std::string out = dir.Sub(kind + ".tar");
  auto r = RunProcess({"/usr/bin/python3", "-c", script, kind, out});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return out;
}

// Writes `<dir>/<name>.tar` with GNU tar --sparse in `format_args`: `ha_config/a.txt`, a sparse
// `ha_config/bad` (1 MiB hole, one byte of data, 1 MiB hole), then `ha_config/z.txt`.
std::string GnuSparseTar(const TempDir& dir, const std::string& name,
                         const std::vector<std::string>& format_args) {
  const std::string tree = dir.Sub("tree-" + name);
  WriteFile(tree + "/ha_config/a.txt", "first\n");
  WriteFile(tree + "/ha_config/z.txt", "last\n");
  {
    std::ofstream f(tree + "/ha_config/bad", std::ios::binary);
    f.seekp(1 << 20);
    f.put('x');
  }
  EXPECT_EQ(::truncate((tree + "/ha_config/bad").c_str(), 2 << 20), 0);
  const std::string out = dir.Sub(name + ".tar");
  std::vector<std::string> argv = {"/bin/tar", "--sparse"};
  argv.insert(argv.end(), format_args.begin(), format_args.end());
  argv.insert(argv.end(),
              {"-C", tree, "-cf", out, "ha_config/a.txt", "ha_config/bad", "ha_config/z.txt"});
  auto r = RunProcess(argv);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return out;
}

// Reads the zstd-compressed `tar` with TarZstdReader: the entry before the refused one comes
// back whole; the refused one fails with kCorrupt and `message`, and no later entry is read.
void ExpectRefused(const std::string& tar, const std::string& message) {
  auto z = RunProcess({"/usr/bin/zstd", "-q", "-f", tar, "-o", tar + ".zst"});
  ASSERT_EQ(z.exit_code, 0) << z.err;
  const auto compressed = ReadFile(tar + ".zst");
  ASSERT_TRUE(compressed);
  StringSource source(*compressed);
  auto r = TarZstdReader::Open(source);
  ASSERT_TRUE(r) << r.error().message;
  auto first = (*r)->Next();
  ASSERT_TRUE(first) << first.error().message;
  ASSERT_TRUE(first->has_value());
  EXPECT_EQ((*first)->path, "ha_config/a.txt");
  std::vector<std::uint8_t> buf(64);
  auto n = (*r)->ReadData(buf);
  ASSERT_TRUE(n) << n.error().message;
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf.data()), *n), "first\n");
  auto bad = (*r)->Next();
  ASSERT_FALSE(bad) << "returned " << (bad->has_value() ? (*bad)->path : "the end");
  EXPECT_EQ(bad.error().code, ErrorCode::kCorrupt);
  EXPECT_EQ(bad.error().message, message);
}

TEST(TarZstdRefuses, HardLinkEntry) {
  TempDir dir;
  ExpectRefused(PythonTar(dir, "hardlink"), "tar: hard link entry ha_config/bad refused");
}

TEST(TarZstdRefuses, CharacterDeviceEntry) {
  TempDir dir;
  ExpectRefused(PythonTar(dir, "chardev"), "tar: special file entry ha_config/bad refused");
}

TEST(TarZstdRefuses, BlockDeviceEntry) {
  TempDir dir;
  ExpectRefused(PythonTar(dir, "blockdev"), "tar: special file entry ha_config/bad refused");
}

TEST(TarZstdRefuses, FifoEntry) {
  TempDir dir;
  ExpectRefused(PythonTar(dir, "fifo"), "tar: special file entry ha_config/bad refused");
}

TEST(TarZstdRefuses, GnuSparseEntry) {
  TempDir dir;
  ExpectRefused(GnuSparseTar(dir, "gnu", {"--format=gnu"}),
                "tar: sparse entry ha_config/bad refused");
}

TEST(TarZstdRefuses, PaxSparseEntriesOfEveryVersion) {
  for (const std::string version : {"0.0", "0.1", "1.0"}) {
    SCOPED_TRACE("pax sparse " + version);
    TempDir dir;
    ExpectRefused(GnuSparseTar(dir, "pax", {"--format=pax", "--sparse-version=" + version}),
                  "tar: sparse entry ha_config/bad refused");
  }
}

// --- the index's text ---------------------------------------------------------------------------

// Everything IndexText gives for `in`, read `chunk` bytes at a time, or its error.
Result<std::string> ReadIndexText(const std::string& in, std::size_t chunk = 1000) {
  StringSource src(in);
  auto text = IndexText(src);
  std::string out;
  std::vector<std::uint8_t> buf(chunk);
  for (;;) {
    auto n = text->Read(buf);
    if (!n) return tl::unexpected(n.error());
    if (*n == 0) return out;
    out.append(reinterpret_cast<const char*>(buf.data()), *n);
  }
}

// `text` compressed by the zstd CLI: one frame, with its content checksum unless `check` is false.
std::string ZstdCli(TempDir& dir, const std::string& text, bool check = true) {
  WriteFile(dir.Sub("in"), text);
  auto z = RunProcess(
      {"/usr/bin/zstd", "-q", "-c", "-3", check ? "--check" : "--no-check", dir.Sub("in")});
  EXPECT_EQ(z.exit_code, 0) << z.err;
  return z.out;
}

TEST(IndexText, PlainTextAsOlderWritersStoredItIsReadAsItIs) {
  for (const std::string& text :
       {std::string(), std::string("{"), std::string("{\n \"a\": 1\n}\n"), Text(300'000, 7)}) {
    auto got = ReadIndexText(text);
    ASSERT_TRUE(got) << got.error().message;
    EXPECT_EQ(*got, text);
  }
}

TEST(IndexText, AFrameOfTheZstdCliIsDecompressedExactly) {
  TempDir dir;
  for (const std::size_t size : {std::size_t{1}, std::size_t{5000}, std::size_t{3'000'000}}) {
    const std::string text = "{" + Text(size, 9);
    // Reads smaller than zstd's blocks leave output in zstd after its input is all consumed
    // (without a checksum, nothing of the frame is left to read then).
    for (const bool check : {true, false}) {
      const std::string frame = ZstdCli(dir, text, check);
      for (const std::size_t chunk : {std::size_t{1}, std::size_t{1000}, std::size_t{1} << 20}) {
        if (chunk == 1 && size > 5000) continue;
        auto got = ReadIndexText(frame, chunk);
        ASSERT_TRUE(got) << size << " in reads of " << chunk << ": " << got.error().message;
        EXPECT_EQ(*got, text) << size << " in reads of " << chunk;
      }
    }
  }
}

TEST(IndexText, ADamagedUnfinishedOrFollowedFrameIsCorrupt) {
  TempDir dir;
  const std::string frame = ZstdCli(dir, "{" + Text(200'000, 3));
  std::string flipped = frame;
  flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x10);
  for (const auto& [what, bad] : std::vector<std::pair<std::string, std::string>>{
           {"truncated", frame.substr(0, frame.size() - 1)},
           {"magic only", frame.substr(0, 4)},
           {"one byte after", frame + "x"},
           {"two frames", frame + frame},
           {"a flipped byte", flipped}}) {
    auto got = ReadIndexText(bad);
    ASSERT_FALSE(got) << what;
    EXPECT_EQ(got.error().code, ErrorCode::kCorrupt) << what << ": " << got.error().message;
  }
}

// An error of the source below (the age reader's, for a tampered chunk) is passed on unchanged.
TEST(IndexText, AnErrorOfItsSourcePassesThrough) {
  class Failing final : public ByteSource {
   public:
    explicit Failing(std::string head) : head_(std::move(head)) {}
    Result<std::size_t> Read(std::span<std::uint8_t> out) override {
      if (head_.empty()) return Fail(ErrorCode::kWrongPassphrase, "below");
      const std::size_t n = std::min(out.size(), head_.size());
      std::copy_n(head_.data(), n, reinterpret_cast<char*>(out.data()));
      head_.erase(0, n);
      return n;
    }

   private:
    std::string head_;
  };
  TempDir dir;
  const std::string frame = ZstdCli(dir, "{" + Text(100'000, 5));
  for (const std::string& head : {std::string(), std::string("{\"a\""), frame.substr(0, 100)}) {
    Failing src(head);
    auto text = IndexText(src);
    std::vector<std::uint8_t> buf(1 << 20);
    Result<std::size_t> n = std::size_t{1};
    while (n && *n > 0) n = text->Read(buf);
    ASSERT_FALSE(n) << head.size();
    EXPECT_EQ(n.error().code, ErrorCode::kWrongPassphrase);
  }
}

// MANIFEST.json's data in a frame of its own: that frame alone is what the zstd CLI decompresses
// to the data, it lies in the payload byte for byte, and GNU tar still reads one archive.
TEST(TarZstdWriter, AnEntryInAFrameOfItsOwnIsThatFrameAloneAndTheArchiveStaysWhole) {
  for (const int workers : {0, 2}) {
    TempDir dir;
    StringSink sink;
    auto w = TarZstdWriter::Create(sink, 3, workers);
    ASSERT_TRUE(w);
    const std::string first = Text(5'000'000, 1);
    const std::string second = Text(1'234, 2);
    ASSERT_TRUE((*w)->BeginEntry(File("ha_config/before", second.size())));
    ASSERT_TRUE((*w)->WriteData(Bytes(second)));
    ASSERT_TRUE((*w)->BeginEntry(File("MANIFEST.json", first.size())));
    std::vector<std::uint8_t> frame;
    // Only the entry's whole data goes in a frame of its own; a part is refused, changing nothing.
    auto part = (*w)->WriteDataInOwnFrame(Bytes(first).first(10), 1, frame);
    ASSERT_FALSE(part);
    EXPECT_EQ(part.error().code, ErrorCode::kInternal);
    EXPECT_TRUE(frame.empty());
    ASSERT_TRUE((*w)->WriteDataInOwnFrame(Bytes(first), 1, frame));
    ASSERT_TRUE((*w)->BeginEntry(File("ha_config/after", second.size())));
    ASSERT_TRUE((*w)->WriteData(Bytes(second)));
    ASSERT_TRUE((*w)->Finish());
    const std::string framed(frame.begin(), frame.end());
    EXPECT_NE(sink.text.find(framed), std::string::npos) << "workers " << workers;
    WriteFile(dir.Sub("frame.zst"), framed);
    auto alone = RunProcess({"/usr/bin/zstd", "-q", "-d", "-c", dir.Sub("frame.zst")});
    ASSERT_EQ(alone.exit_code, 0) << alone.err;
    EXPECT_TRUE(alone.out == first) << "workers " << workers;
    WriteFile(dir.Sub("p.tar.zst"), sink.text);
    auto listed = RunProcess({"/bin/bash", "-c",
                              "zstd -dc '" + dir.Sub("p.tar.zst") +
                                  "' | tar -xOf - MANIFEST.json | sha256sum; zstd -dc '" +
                                  dir.Sub("p.tar.zst") + "' | tar -tf -"});
    ASSERT_EQ(listed.exit_code, 0) << listed.err;
    EXPECT_EQ(listed.out,
              Sha256Hex(first) + "  -\nha_config/before\nMANIFEST.json\nha_config/after\n");
  }
}

}  // namespace
}  // namespace safepoint::archive
