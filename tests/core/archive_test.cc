#include "core/archive.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "tests/testutil/process.h"
#include "tests/testutil/testutil.h"

namespace safepoint::archive {
namespace {

using testing::ReadFile;
using testing::RunProcess;
using testing::TempDir;
using testing::WriteFile;

class StringSink final : public ByteSink {
 public:
  Status Write(std::span<const std::uint8_t> data) override {
    out.append(reinterpret_cast<const char*>(data.data()), data.size());
    return {};
  }
  std::string out;
};

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
  StringSource source(sink.out);
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
  WriteFile(dir.Sub("p.tar.zst"), sink.out);
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

}  // namespace
}  // namespace safepoint::archive
