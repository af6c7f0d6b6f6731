#include "core/format/age.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/base/fs.h"
#include "core/base/io.h"
#include "core/base/secret.h"
#include "tests/testutil/testutil.h"

namespace safepoint::age {
namespace {

using safepoint::testing::Sha256Hex;
using safepoint::testing::TempDir;

// Test passphrases are throwaway values, but the tests still never print them.
constexpr std::string_view kPassphrase = "correct horse battery staple 42";
constexpr int kFastWorkFactor = kMinWorkFactor;  // 32 MiB, ~0.1 s per scrypt run

// A WritableFile in memory.
class MemoryFile final : public WritableFile {
 public:
  Status Append(std::span<const std::uint8_t> data) override {
    data_.append(reinterpret_cast<const char*>(data.data()), data.size());
    return {};
  }
  Status WriteAt(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    if (offset + data.size() > data_.size()) return Fail(ErrorCode::kIo, "WriteAt past the end");
    std::memcpy(data_.data() + offset, data.data(), data.size());
    return {};
  }
  Status Sync() override { return {}; }
  Status Close() override { return {}; }
  const std::string& data() const { return data_; }

 private:
  std::string data_;
};

// A ByteSource over a string, returning at most `max_read` bytes per call.
class StringSource final : public ByteSource {
 public:
  explicit StringSource(std::string data, std::size_t max_read = SIZE_MAX)
      : data_(std::move(data)), max_read_(max_read) {}
  Result<std::size_t> Read(std::span<std::uint8_t> out) override {
    const std::size_t n = std::min({out.size(), data_.size() - pos_, max_read_});
    std::memcpy(out.data(), data_.data() + pos_, n);
    pos_ += n;
    return n;
  }

 private:
  std::string data_;
  std::size_t pos_ = 0;
  std::size_t max_read_;
};

std::span<const std::uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::string RandomBytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng() & 0xff);
  return out;
}

struct Encrypted {
  std::string file;
  std::string key_id;
  std::size_t header_size = 0;
};

// Encrypts `plain`, writing it in pieces of `piece` bytes.
Encrypted Encrypt(const std::string& plain, std::size_t piece = 1000,
                  int work_factor = kFastWorkFactor) {
  MemoryFile file;
  auto enc = Encryptor::Create(file, Secret(kPassphrase), work_factor);
  EXPECT_TRUE(enc.has_value()) << enc.error().message;
  if (!enc) return {};
  for (std::size_t pos = 0; pos < plain.size(); pos += piece) {
    const std::size_t n = std::min(piece, plain.size() - pos);
    auto written = (*enc)->Write(Bytes(plain).subspan(pos, n));
    EXPECT_TRUE(written.has_value()) << written.error().message;
  }
  auto finished = (*enc)->Finish();
  EXPECT_TRUE(finished.has_value()) << finished.error().message;
  EXPECT_EQ((*enc)->size(), file.data().size());
  return {file.data(), (*enc)->KeyId(), (*enc)->HeaderSize()};
}

// What a decryption released and how it ended.
struct Decrypted {
  std::string plain;
  std::optional<Error> error;  // nullopt: reached the verified end
  int work_factor = 0;
  std::string key_id;
};

Decrypted DrainDecryptor(Decryptor& dec, std::size_t buffer = 10000) {
  Decrypted out;
  out.work_factor = dec.work_factor();
  out.key_id = dec.KeyId();
  std::vector<std::uint8_t> buf(buffer);
  for (;;) {
    auto got = dec.Read(buf);
    if (!got) {
      out.error = got.error();
      return out;
    }
    if (*got == 0) return out;
    out.plain.append(reinterpret_cast<const char*>(buf.data()), *got);
  }
}

Decrypted Decrypt(const std::string& file, std::string_view passphrase = kPassphrase,
                  int max_work_factor = kDefaultWorkFactor, std::size_t max_read = SIZE_MAX) {
  StringSource source(file, max_read);
  auto dec = Decryptor::Open(source, Secret(passphrase), max_work_factor);
  if (!dec) return {"", dec.error(), 0, ""};
  return DrainDecryptor(**dec, 7777);
}

std::string ErrorText(const std::optional<Error>& error) {
  if (!error) return "success";
  return std::string(ErrorCodeName(error->code)) + ": " + error->message;
}

void ExpectRoundTrip(const std::string& plain, std::size_t piece) {
  const Encrypted enc = Encrypt(plain, piece);
  const std::size_t chunks = plain.empty() ? 1 : (plain.size() + kChunkSize - 1) / kChunkSize;
  EXPECT_EQ(enc.header_size, 150u);
  EXPECT_EQ(enc.file.size(), enc.header_size + 16 + chunks * 16 + plain.size());
  EXPECT_EQ(enc.file.substr(0, 32), "age-encryption.org/v1\n-> scrypt ");
  EXPECT_EQ(enc.key_id.size(), 16u);
  EXPECT_EQ(enc.key_id.find_first_not_of("0123456789abcdef"), std::string::npos);

  const Decrypted dec = Decrypt(enc.file, kPassphrase, kDefaultWorkFactor, 4093);
  ASSERT_FALSE(dec.error) << ErrorText(dec.error);
  EXPECT_EQ(dec.plain.size(), plain.size());
  EXPECT_TRUE(dec.plain == plain);
  EXPECT_EQ(dec.work_factor, kFastWorkFactor);
  EXPECT_EQ(dec.key_id, enc.key_id);

  StringSource source(enc.file);
  auto info = ReadHeader(source);
  ASSERT_TRUE(info.has_value()) << info.error().message;
  EXPECT_EQ(info->work_factor, kFastWorkFactor);
  EXPECT_EQ(info->key_id, enc.key_id);
  EXPECT_EQ(info->header_size, enc.header_size);
}

TEST(Age, RoundTripsEmptyPayload) { ExpectRoundTrip("", 1); }
TEST(Age, RoundTripsOneByte) { ExpectRoundTrip("x", 1); }
TEST(Age, RoundTripsExactlyOneChunk) { ExpectRoundTrip(RandomBytes(kChunkSize, 1), 4096); }
TEST(Age, RoundTripsOneChunkPlusOneByte) { ExpectRoundTrip(RandomBytes(kChunkSize + 1, 2), 333); }
TEST(Age, RoundTripsSeveralMiB) { ExpectRoundTrip(RandomBytes(5 * 1024 * 1024 + 77, 3), 100000); }

TEST(Age, EachFileGetsFreshKeysAndSalt) {
  const Encrypted a = Encrypt("same");
  const Encrypted b = Encrypt("same");
  EXPECT_NE(a.file, b.file);
  EXPECT_NE(a.key_id, b.key_id);
}

TEST(Age, WrongPassphraseIsReported) {
  const Encrypted enc = Encrypt("secret data");
  const Decrypted dec = Decrypt(enc.file, "correct horse battery staple 43");
  ASSERT_TRUE(dec.error);
  EXPECT_EQ(dec.error->code, ErrorCode::kWrongPassphrase);
  EXPECT_EQ(dec.error->message, "wrong passphrase");
  EXPECT_TRUE(dec.plain.empty());
}

TEST(Age, FlippedHeaderByteIsDetected) {
  const Encrypted enc = Encrypt(RandomBytes(1000, 4));
  const std::size_t mac_start = enc.header_size - 44;
  // Positions: version line, stanza type, salt, work factor, body, a line feed, the MAC.
  std::vector<std::size_t> positions = {0, 5, 21, 25, 35, 55, 57, 60, 80, 105};
  for (std::size_t from_end : {45, 44, 24, 2, 1}) {  // around and in the MAC line
    positions.push_back(enc.header_size - from_end);
  }
  for (std::size_t pos : positions) {
    std::string file = enc.file;
    file[pos] = static_cast<char>(file[pos] ^ 0x01);
    const Decrypted dec = Decrypt(file);
    ASSERT_TRUE(dec.error) << "flip at " << pos << " went unnoticed";
    EXPECT_TRUE(dec.plain.empty());
    // The salt, work factor and stanza body feed scrypt: a change there is indistinguishable
    // from a wrong passphrase. Everything else is a corrupt header.
    const bool scrypt_input = pos >= 32 && pos < mac_start - 4;
    const bool stanza_type = pos >= 25 && pos < 31;  // "scrypt" becomes another stanza type
    if (stanza_type) {
      EXPECT_EQ(dec.error->code, ErrorCode::kUnsupported) << pos << ": " << ErrorText(dec.error);
    } else if (scrypt_input) {
      EXPECT_TRUE(dec.error->code == ErrorCode::kWrongPassphrase ||
                  dec.error->code == ErrorCode::kCorrupt)
          << pos << ": " << ErrorText(dec.error);
    } else {
      EXPECT_EQ(dec.error->code, ErrorCode::kCorrupt) << pos << ": " << ErrorText(dec.error);
    }
  }
}

TEST(Age, HeaderMacMismatchIsCorrupt) {
  const Encrypted enc = Encrypt("payload");
  std::string file = enc.file;
  // Replace the first MAC character by another valid base64 character.
  const std::size_t pos = enc.header_size - 44;
  file[pos] = file[pos] == 'A' ? 'B' : 'A';
  const Decrypted dec = Decrypt(file);
  ASSERT_TRUE(dec.error);
  EXPECT_EQ(dec.error->code, ErrorCode::kCorrupt);
  EXPECT_NE(dec.error->message.find("header MAC"), std::string::npos) << dec.error->message;
}

TEST(Age, FlippedPayloadByteIsCorrupt) {
  const std::string plain = RandomBytes(3 * kChunkSize + 10, 5);
  const Encrypted enc = Encrypt(plain, 65536);
  const std::size_t payload = enc.header_size;
  const std::size_t sealed = kChunkSize + 16;
  struct Case {
    std::size_t pos;
    std::size_t released;  // plaintext bytes verified before the damaged chunk
  };
  const std::vector<Case> cases = {
      {payload + 3, 0},                           // payload nonce
      {payload + 16, 0},                          // first chunk
      {payload + 16 + sealed - 1, 0},             // first chunk's tag
      {payload + 16 + sealed + 100, kChunkSize},  // second chunk
      {enc.file.size() - 1, 3 * kChunkSize},      // final chunk's tag
  };
  for (const Case& c : cases) {
    std::string file = enc.file;
    file[c.pos] = static_cast<char>(file[c.pos] ^ 0x80);
    const Decrypted dec = Decrypt(file);
    ASSERT_TRUE(dec.error) << "flip at " << c.pos << " went unnoticed";
    EXPECT_EQ(dec.error->code, ErrorCode::kCorrupt) << ErrorText(dec.error);
    EXPECT_EQ(dec.plain.size(), c.released) << "flip at " << c.pos;
    EXPECT_TRUE(dec.plain == plain.substr(0, c.released));
  }
}

TEST(Age, TruncationIsCorrupt) {
  const std::string plain = RandomBytes(2 * kChunkSize + 500, 6);
  const Encrypted enc = Encrypt(plain, 65536);
  const std::size_t payload = enc.header_size;
  const std::size_t sealed = kChunkSize + 16;
  const std::vector<std::size_t> lengths = {
      0,                          // nothing
      20,                         // inside the version line
      payload - 1,                // inside the MAC line
      payload,                    // header only, no nonce
      payload + 10,               // half a nonce
      payload + 16,               // nonce, no chunk
      payload + 16 + 15,          // shorter than a tag
      payload + 16 + 1000,        // inside the first chunk
      payload + 16 + sealed,      // exactly at a chunk boundary
      payload + 16 + 2 * sealed,  // exactly at the next boundary
      enc.file.size() - 1,        // one byte short
  };
  for (std::size_t length : lengths) {
    const Decrypted dec = Decrypt(enc.file.substr(0, length));
    ASSERT_TRUE(dec.error) << "truncation to " << length << " went unnoticed";
    EXPECT_EQ(dec.error->code, ErrorCode::kCorrupt) << length << ": " << ErrorText(dec.error);
    EXPECT_TRUE(dec.plain == plain.substr(0, dec.plain.size()));
  }
  const Decrypted at_boundary = Decrypt(enc.file.substr(0, payload + 16 + sealed));
  ASSERT_TRUE(at_boundary.error);
  EXPECT_NE(at_boundary.error->message.find("without a final chunk"), std::string::npos)
      << at_boundary.error->message;
}

TEST(Age, TrailingDataIsCorrupt) {
  for (std::size_t size : {std::size_t{10}, kChunkSize}) {
    const std::string plain = RandomBytes(size, 7);
    const Encrypted enc = Encrypt(plain);
    for (const std::string& extra : {std::string(1, '\0'), std::string(5000, 'x')}) {
      const Decrypted dec = Decrypt(enc.file + extra);
      ASSERT_TRUE(dec.error);
      EXPECT_EQ(dec.error->code, ErrorCode::kCorrupt) << ErrorText(dec.error);
      // A short final chunk read together with the garbage fails to authenticate; a full one
      // authenticates as final, is released, and the trailing data is reported after it.
      if (size == kChunkSize) {
        EXPECT_TRUE(dec.plain == plain);
        EXPECT_NE(dec.error->message.find("trailing data"), std::string::npos)
            << dec.error->message;
      } else {
        EXPECT_TRUE(dec.plain.empty());
      }
    }
  }
}

// Rewrites the work factor of one of our files (always two digits) without fixing anything else.
std::string WithWorkFactor(std::string file, int work_factor) {
  const std::size_t pos = std::string("age-encryption.org/v1\n-> scrypt ").size() + 22 + 1;
  EXPECT_EQ(file[pos + 2], '\n');
  const std::string digits = std::to_string(work_factor);
  EXPECT_EQ(digits.size(), 2u);
  file.replace(pos, 2, digits);
  return file;
}

TEST(Age, WorkFactorAboveMaximumIsRefusedBeforeScrypt) {
  const Encrypted enc = Encrypt("data");
  {
    const Decrypted dec = Decrypt(WithWorkFactor(enc.file, 22), kPassphrase, 18);
    ASSERT_TRUE(dec.error);
    EXPECT_EQ(dec.error->code, ErrorCode::kCorrupt);
    EXPECT_EQ(dec.error->message, "age: work factor 22 above the maximum 18");
  }
  // scrypt at 2^30 would need 128 GiB: only a refusal before deriving can return kCorrupt.
  {
    const Decrypted dec = Decrypt(WithWorkFactor(enc.file, 30), kPassphrase, 18);
    ASSERT_TRUE(dec.error);
    EXPECT_EQ(dec.error->code, ErrorCode::kCorrupt);
    EXPECT_EQ(dec.error->message, "age: work factor 30 above the maximum 18");
  }
  StringSource source(WithWorkFactor(enc.file, 30));
  auto info = ReadHeader(source);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->work_factor, 30);
}

TEST(Age, WorkFactorEqualToMaximumIsAccepted) {
  const Encrypted enc = Encrypt("data");
  const Decrypted dec = Decrypt(enc.file, kPassphrase, kFastWorkFactor);
  EXPECT_FALSE(dec.error) << ErrorText(dec.error);
  EXPECT_EQ(dec.plain, "data");
}

TEST(Age, RejectsBadParameters) {
  MemoryFile file;
  for (int wf : {kMinWorkFactor - 1, kMaxWorkFactor + 1}) {
    auto enc = Encryptor::Create(file, Secret(kPassphrase), wf);
    ASSERT_FALSE(enc.has_value());
    EXPECT_EQ(enc.error().code, ErrorCode::kBadInput);
  }
  auto empty = Encryptor::Create(file, Secret(""), kFastWorkFactor);
  ASSERT_FALSE(empty.has_value());
  EXPECT_EQ(empty.error().code, ErrorCode::kBadInput);
  EXPECT_TRUE(file.data().empty());

  for (int max : {0, kReaderWorkFactorCap + 1}) {
    StringSource source("irrelevant");
    auto dec = Decryptor::Open(source, Secret(kPassphrase), max);
    ASSERT_FALSE(dec.has_value());
    EXPECT_EQ(dec.error().code, ErrorCode::kBadInput);
  }
}

TEST(Age, OtherRecipientTypesAndArmorAreUnsupported) {
  const std::string x25519 =
      "age-encryption.org/v1\n"
      "-> X25519 TEiF0ypqr+bpvcqXNyCVJpL7OuwPdVwPL7KQEbFDOCc\n"
      "hjabGXwSLQ9c3S6Lw2i+S2Tu2fiwQHHslbBN6B41FLE\n"
      "--- 8McE3ix9R34E/vLrQv3yepsHjo/LXhfs22Ab3UyInmg\n" +
      std::string(40, 'p');
  const std::string armored =
      "-----BEGIN AGE ENCRYPTED FILE-----\nYWdlLWVuY3J5cHRpb24ub3JnL3YxCg==\n"
      "-----END AGE ENCRYPTED FILE-----\n";
  for (const std::string& file : {x25519, armored}) {
    const Decrypted dec = Decrypt(file);
    ASSERT_TRUE(dec.error);
    EXPECT_EQ(dec.error->code, ErrorCode::kUnsupported) << ErrorText(dec.error);
    EXPECT_TRUE(dec.error->message.starts_with("only passphrase (scrypt) age files are supported"))
        << dec.error->message;
    StringSource source(file);
    auto info = ReadHeader(source);
    ASSERT_FALSE(info.has_value());
    EXPECT_EQ(info.error().code, ErrorCode::kUnsupported);
  }
}

TEST(Age, NotAnAgeFileIsCorrupt) {
  for (const std::string& file :
       {std::string("PK\x03\x04 a zip file"), std::string(100000, 'a'), std::string("\n\n\n")}) {
    const Decrypted dec = Decrypt(file);
    ASSERT_TRUE(dec.error);
    EXPECT_EQ(dec.error->code, ErrorCode::kCorrupt) << ErrorText(dec.error);
  }
}

TEST(Age, WriteErrorsStickAndFinishDoesNotHide) {
  TempDir dir;
  safepoint::testing::FaultInjectingFileSystem fs(/*fail_at=*/4,
                                                  safepoint::testing::FaultKind::kNoSpace);
  auto file = fs.CreateFile(dir.Sub("out.age"), 0600);  // op 1
  ASSERT_TRUE(file.has_value());
  auto enc = Encryptor::Create(**file, Secret(kPassphrase), kFastWorkFactor);  // ops 2, 3
  ASSERT_TRUE(enc.has_value()) << enc.error().message;
  const std::string data = RandomBytes(3 * kChunkSize, 8);
  auto written = (*enc)->Write(Bytes(data));  // op 4: the first sealed chunk fails
  ASSERT_FALSE(written.has_value());
  EXPECT_EQ(written.error().code, ErrorCode::kNoSpace);
  auto finished = (*enc)->Finish();
  ASSERT_FALSE(finished.has_value());
  EXPECT_EQ(finished.error().code, ErrorCode::kNoSpace);
}

TEST(Age, ReadsFromARealFileWrittenWithWriteAt) {
  TempDir dir;
  PosixFileSystem fs;
  const std::string path = dir.Sub("real.age");
  const std::string plain = RandomBytes(300000, 9);
  {
    auto file = fs.CreateFile(path, 0600);
    ASSERT_TRUE(file.has_value());
    auto enc = Encryptor::Create(**file, Secret(kPassphrase), kFastWorkFactor);
    ASSERT_TRUE(enc.has_value());
    ASSERT_TRUE((*enc)->Write(Bytes(plain)).has_value());
    ASSERT_TRUE((*enc)->Finish().has_value());
    ASSERT_TRUE((*file)->Close().has_value());
    EXPECT_EQ(std::filesystem::file_size(path), (*enc)->size());
  }
  auto in = ReadOnlyFile::Open(path);
  ASSERT_TRUE(in.has_value());
  FdSource source(in->fd(), path);
  auto dec = Decryptor::Open(source, Secret(kPassphrase), kDefaultWorkFactor);
  ASSERT_TRUE(dec.has_value()) << dec.error().message;
  const Decrypted out = DrainDecryptor(**dec);
  EXPECT_FALSE(out.error) << ErrorText(out.error);
  EXPECT_TRUE(out.plain == plain);
}

// ---------------------------------------------------------------------------------------------
// C2SP/CCTV test vectors (npm package cctv-age 0.2.0, dumped by scripts/fetch-age-vectors.sh).

struct Vector {
  std::string name;
  std::string expect;
  std::string payload_sha256;
  std::string file_key_hex;
  std::vector<std::string> passphrases;
  bool identity = false;
  bool armored = false;
  bool unknown_key = false;
  bool compressed = false;
  std::string file;
};

Vector ParseVector(const std::string& name, const std::string& data) {
  Vector v;
  v.name = name;
  const std::size_t split = data.find("\n\n");
  EXPECT_NE(split, std::string::npos) << name;
  std::size_t pos = 0;
  while (pos < split) {
    std::size_t end = data.find('\n', pos);
    if (end > split) end = split;
    const std::string line = data.substr(pos, end - pos);
    pos = end + 1;
    const std::size_t colon = line.find(": ");
    const std::string key = line.substr(0, colon);
    const std::string value = colon == std::string::npos ? "" : line.substr(colon + 2);
    if (key == "expect")
      v.expect = value;
    else if (key == "payload")
      v.payload_sha256 = value;
    else if (key == "file key")
      v.file_key_hex = value;
    else if (key == "passphrase")
      v.passphrases.push_back(value);
    else if (key == "identity")
      v.identity = true;
    else if (key == "armored")
      v.armored = value == "yes";
    else if (key == "compressed")
      v.compressed = true;
    else if (key != "comment")
      v.unknown_key = true;
  }
  v.file = data.substr(split + 2);
  return v;
}

Secret FromHex(const std::string& hex) {
  Secret out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    out.bytes()[i] = static_cast<std::uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  }
  return out;
}

// Checks an outcome against the vector's expectation. `allowed` lists acceptable error codes
// for a failure expectation.
void ExpectOutcome(const Vector& v, const Decrypted& got, const std::string& mode,
                   std::vector<ErrorCode> allowed) {
  const std::string where = v.name + " (" + mode + ", expect " + v.expect + ")";
  if (v.expect == "success") {
    EXPECT_FALSE(got.error) << where << ": " << ErrorText(got.error);
  } else {
    ASSERT_TRUE(got.error) << where << ": decrypted successfully";
    EXPECT_NE(std::find(allowed.begin(), allowed.end(), got.error->code), allowed.end())
        << where << ": " << ErrorText(got.error);
  }
  // Whatever plaintext was released must match the expected hash (success, payload failure).
  if (!v.payload_sha256.empty()) {
    EXPECT_EQ(Sha256Hex(got.plain), v.payload_sha256) << where << ": released plaintext differs";
  } else {
    EXPECT_TRUE(got.plain.empty()) << where << ": released plaintext";
  }
}

TEST(Age, DecryptsCctvVectorsWithExpectedOutcome) {
  const char* env = std::getenv("SAFEPOINT_AGE_VECTORS");
  const std::string dir =
      env != nullptr && *env != '\0' ? env : std::string(SAFEPOINT_BUILD_DIR) + "/age-vectors";
  ASSERT_TRUE(std::filesystem::is_directory(dir))
      << "age test vectors not found in " << dir << "; run: scripts/fetch-age-vectors.sh " << dir;
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  ASSERT_GT(names.size(), 100u) << "too few vectors in " << dir;

  // Counters per category and expected outcome.
  std::map<std::string, std::map<std::string, int>> counts;
  const Secret not_the_passphrase("safepoint-test-no-such-passphrase");
  for (const std::string& name : names) {
    const auto data = safepoint::testing::ReadFile(dir + "/" + name);
    ASSERT_TRUE(data.has_value()) << name;
    const Vector v = ParseVector(name, *data);
    ASSERT_FALSE(v.compressed) << name << " is compressed; re-run scripts/fetch-age-vectors.sh";
    if (v.unknown_key) {
      ++counts["ignored (unknown key)"][v.expect];
      continue;
    }
    const bool header_failure = v.expect == "header failure";

    if (!v.passphrases.empty() && !v.armored) {
      // Passphrase vectors: the exact expected outcome.
      Decrypted got;
      for (const std::string& passphrase : v.passphrases) {
        got = Decrypt(v.file, passphrase, kMaxWorkFactor);
        if (!got.error || got.error->code != ErrorCode::kWrongPassphrase) break;
      }
      std::vector<ErrorCode> allowed = {ErrorCode::kCorrupt};
      if (v.expect == "no match") {
        // A stanza that is not "scrypt" (e.g. "Scrypt") is a recipient type we do not have.
        const bool has_scrypt = v.file.find("\n-> scrypt ") != std::string::npos;
        allowed = {has_scrypt ? ErrorCode::kWrongPassphrase : ErrorCode::kUnsupported};
      }
      ExpectOutcome(v, got, "passphrase", allowed);
      ++counts["scrypt: exact outcome"][v.expect];
      continue;
    }

    // X25519, hybrid and armored vectors: a clean failure through the passphrase API.
    {
      Decrypted got = Decrypt(v.file, not_the_passphrase.view(), kMaxWorkFactor);
      std::vector<ErrorCode> allowed = {ErrorCode::kUnsupported};
      if (header_failure || v.expect == "armor failure") allowed.push_back(ErrorCode::kCorrupt);
      const std::string where = name + " (passphrase API, expect " + v.expect + ")";
      ASSERT_TRUE(got.error) << where << ": decrypted successfully";
      EXPECT_NE(std::find(allowed.begin(), allowed.end(), got.error->code), allowed.end())
          << where << ": " << ErrorText(got.error);
      EXPECT_TRUE(got.plain.empty()) << where;
      ++counts[v.armored ? "armored: clean failure" : "x25519/hybrid: clean failure"]
              [ErrorText(got.error).substr(0, ErrorText(got.error).find(':'))];
    }
    if (v.armored) continue;

    // With the vector's file key, our header parser, header MAC and STREAM code must give the
    // exact expected outcome. Not judged: "no match" and the header failures specific to the
    // X25519 and hybrid stanza formats, which only an implementation of those types can see.
    const bool recipient_specific =
        v.expect == "no match" ||
        (header_failure && (name.starts_with("x25519_") || name.starts_with("hybrid_")));
    if (recipient_specific || v.file_key_hex.size() != 32) {
      ++counts["file key: not judged (recipient-specific)"][v.expect];
      continue;
    }
    StringSource source(v.file);
    auto dec = Decryptor::OpenWithFileKeyForTesting(source, FromHex(v.file_key_hex));
    const Decrypted got = dec ? DrainDecryptor(**dec, 4096) : Decrypted{"", dec.error(), 0, ""};
    if (v.expect == "payload failure") {
      EXPECT_TRUE(dec.has_value()) << name << ": header must parse: " << dec.error().message;
    }
    ExpectOutcome(v, got, "file key", {ErrorCode::kCorrupt});
    ++counts["file key: exact outcome"][v.expect];
  }

  for (const auto& [category, by_outcome] : counts) {
    std::cout << "[ vectors  ] " << category << ":";
    for (const auto& [outcome, n] : by_outcome) std::cout << " " << outcome << "=" << n;
    std::cout << "\n";
  }
  const auto& scrypt = counts["scrypt: exact outcome"];
  for (const char* outcome : {"success", "no match", "header failure"}) {
    EXPECT_GT(scrypt.count(outcome) ? scrypt.at(outcome) : 0, 0) << "scrypt " << outcome;
  }
  const auto& file_key = counts["file key: exact outcome"];
  for (const char* outcome : {"success", "header failure", "HMAC failure", "payload failure"}) {
    EXPECT_GT(file_key.count(outcome) ? file_key.at(outcome) : 0, 0) << "file key " << outcome;
  }
  EXPECT_FALSE(counts["x25519/hybrid: clean failure"].empty());
  EXPECT_FALSE(counts["armored: clean failure"].empty());
}

// ---------------------------------------------------------------------------------------------
// Interoperability with the age command line tool (Debian package age). age reads passphrases
// only from a terminal, so it runs on a pseudo-terminal and gets its answers typed in.

constexpr const char* kAgeBinary = "/usr/bin/age";

struct PtyRun {
  int exit_status = -1;
  std::string transcript;  // what age wrote to the terminal (never contains the passphrase)
};

// Runs `args` under a pseudo-terminal and types `passphrase` at each of the first `answers`
// prompts that mention a passphrase.
PtyRun RunOnPty(const std::vector<std::string>& args, std::string_view passphrase, int answers) {
  PtyRun run;
  int master = -1;
  const pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  if (pid < 0) {
    ADD_FAILURE() << "forkpty: " << std::strerror(errno);
    return run;
  }
  if (pid == 0) {
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int answered = 0;
  std::size_t scan_from = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  for (;;) {
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "age did not finish in time";
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd pfd{master, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, 200);
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    char buf[1024];
    const ssize_t n = ::read(master, buf, sizeof buf);
    if (n <= 0) break;  // EIO once the child closed the terminal
    run.transcript.append(buf, static_cast<std::size_t>(n));
    // A prompt is complete once its ": " has arrived.
    for (;;) {
      const std::size_t at = run.transcript.find("passphrase", scan_from);
      if (at == std::string::npos || answered >= answers) break;
      const std::size_t colon = run.transcript.find(": ", at);
      if (colon == std::string::npos) break;
      std::string line(passphrase);
      line += '\n';
      EXPECT_EQ(::write(master, line.data(), line.size()), static_cast<ssize_t>(line.size()));
      ++answered;
      scan_from = colon + 2;
    }
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(master);
  run.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  // Terminal echo is off while age reads a passphrase; redact anyway, the transcript is printed
  // on failure.
  for (std::size_t at; (at = run.transcript.find(passphrase)) != std::string::npos;) {
    run.transcript.replace(at, passphrase.size(), "<redacted>");
  }
  return run;
}

// `file` decrypts to `plain` with the passphrase, by our reader (naming `key_id`) and by age.
void ExpectOursAndAgeDecrypt(const std::string& file, const std::string& plain,
                             const std::string& key_id) {
  const Decrypted ours = Decrypt(file);
  ASSERT_FALSE(ours.error) << ErrorText(ours.error);
  EXPECT_TRUE(ours.plain == plain);
  EXPECT_EQ(ours.key_id, key_id);
  TempDir dir;
  safepoint::testing::WriteFile(dir.Sub("file.age"), file, 0600);
  const PtyRun run =
      RunOnPty({kAgeBinary, "-d", "-o", dir.Sub("out"), dir.Sub("file.age")}, kPassphrase, 1);
  ASSERT_EQ(run.exit_status, 0) << run.transcript;
  EXPECT_TRUE(safepoint::testing::ReadFile(dir.Sub("out")) == plain);
}

TEST(Age, AgeDecryptsOurFile) {
  ASSERT_TRUE(std::filesystem::exists(kAgeBinary)) << "install the Debian package age";
  TempDir dir;
  const std::string plain = RandomBytes(3 * kChunkSize + 4321, 10);
  const Encrypted enc = Encrypt(plain, 50000);
  safepoint::testing::WriteFile(dir.Sub("ours.age"), enc.file, 0600);
  const PtyRun run =
      RunOnPty({kAgeBinary, "-d", "-o", dir.Sub("out"), dir.Sub("ours.age")}, kPassphrase, 1);
  ASSERT_EQ(run.exit_status, 0) << run.transcript;
  const auto out = safepoint::testing::ReadFile(dir.Sub("out"));
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->size(), plain.size());
  EXPECT_TRUE(*out == plain);

  // And age refuses a wrong passphrase for our file, as we do.
  const PtyRun wrong = RunOnPty({kAgeBinary, "-d", "-o", dir.Sub("out2"), dir.Sub("ours.age")},
                                "not the passphrase", 1);
  EXPECT_NE(wrong.exit_status, 0) << wrong.transcript;
}

// A file started with CreateSibling copies the existing file's header byte for byte, needs no
// scrypt, and opens with the same passphrase: ours and age's. Only that file's key is accepted.
TEST(Age, SiblingCopiesTheHeaderAndOpensWithTheSamePassphrase) {
  ASSERT_TRUE(std::filesystem::exists(kAgeBinary)) << "install the Debian package age";
  const Encrypted first = Encrypt(RandomBytes(2 * kChunkSize + 17, 12));
  StringSource opened_from(first.file);
  auto opened = Decryptor::Open(opened_from, Secret(kPassphrase), kDefaultWorkFactor);
  ASSERT_TRUE(opened.has_value()) << opened.error().message;
  const Secret file_key((*opened)->file_key().view());

  const std::string plain = RandomBytes(3 * kChunkSize + 5, 13);
  MemoryFile file;
  StringSource existing(first.file);
  auto enc = Encryptor::CreateSibling(file, existing, file_key);
  ASSERT_TRUE(enc.has_value()) << enc.error().message;
  EXPECT_TRUE((*enc)->KdfDone());
  EXPECT_TRUE((*enc)->header_written());
  EXPECT_EQ((*enc)->work_factor(), kFastWorkFactor);
  ASSERT_TRUE((*enc)->Write(Bytes(plain)));
  ASSERT_TRUE((*enc)->Finish());
  EXPECT_EQ((*enc)->KeyId(), first.key_id);
  ASSERT_GT(file.data().size(), first.header_size + 16);
  EXPECT_EQ(file.data().substr(0, first.header_size), first.file.substr(0, first.header_size));
  // Its own payload nonce, so its own payload key.
  EXPECT_NE(file.data().substr(first.header_size, 16), first.file.substr(first.header_size, 16));
  EXPECT_EQ((*enc)->size(), file.data().size());

  ExpectOursAndAgeDecrypt(file.data(), plain, first.key_id);

  // Another file's key, a modified header, a key of the wrong size: refused, nothing written.
  const Encrypted other = Encrypt("x");
  StringSource other_from(other.file);
  auto other_opened = Decryptor::Open(other_from, Secret(kPassphrase), kDefaultWorkFactor);
  ASSERT_TRUE(other_opened.has_value());
  struct Case {
    std::string file;
    Secret key;
    ErrorCode code;
  };
  std::string tampered = first.file;
  tampered[40] = tampered[40] == 'A' ? 'B' : 'A';  // inside the salt
  std::vector<Case> cases;
  cases.push_back({first.file, Secret((*other_opened)->file_key().view()), ErrorCode::kCorrupt});
  cases.push_back({tampered, Secret(file_key.view()), ErrorCode::kCorrupt});
  cases.push_back({first.file, Secret(std::string_view("short")), ErrorCode::kBadInput});
  cases.push_back({"not an age file", Secret(file_key.view()), ErrorCode::kCorrupt});
  for (const Case& c : cases) {
    MemoryFile none;
    StringSource from(c.file);
    auto refused = Encryptor::CreateSibling(none, from, c.key);
    ASSERT_FALSE(refused.has_value());
    EXPECT_EQ(refused.error().code, c.code) << refused.error().message;
    EXPECT_EQ(none.data(), "");
  }
}

TEST(Age, HeaderWrittenMidStreamIsFinalAndAgeReadsTheFile) {
  ASSERT_TRUE(std::filesystem::exists(kAgeBinary)) << "install the Debian package age";
  const std::string plain = RandomBytes(4 * kChunkSize + 999, 11);
  MemoryFile file;
  auto enc = Encryptor::Create(file, Secret(kPassphrase), kFastWorkFactor);
  ASSERT_TRUE(enc.has_value()) << enc.error().message;
  ASSERT_TRUE((*enc)->Write(Bytes(plain).first(2 * kChunkSize + 5)));
  for (int i = 0; i < 6000 && !(*enc)->KdfDone(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE((*enc)->KdfDone());
  EXPECT_FALSE((*enc)->header_written());
  ASSERT_TRUE((*enc)->WriteHeaderNow());
  ASSERT_TRUE((*enc)->header_written());
  const std::string header = file.data().substr(0, (*enc)->HeaderSize());
  EXPECT_EQ(header.substr(0, 32), "age-encryption.org/v1\n-> scrypt ");
  ASSERT_TRUE((*enc)->WriteHeaderNow());  // a second call changes nothing
  ASSERT_TRUE((*enc)->Write(Bytes(plain).subspan(2 * kChunkSize + 5)));
  ASSERT_TRUE((*enc)->Finish());
  EXPECT_EQ(file.data().substr(0, header.size()), header)
      << "the header changed after it was written";
  EXPECT_EQ((*enc)->size(), file.data().size());

  ExpectOursAndAgeDecrypt(file.data(), plain, (*enc)->KeyId());
}

// A derivation started before its file (as a backup starts it before it walks the trees): the
// file it makes is an ordinary age file, the job's salt is in its header, and a job is used once.
TEST(Age, ADerivationStartedAheadMakesAFileAgeReads) {
  ASSERT_TRUE(std::filesystem::exists(kAgeBinary)) << "install the Debian package age";
  auto job = ScryptJob::Start(Secret(kPassphrase), kFastWorkFactor);
  ASSERT_TRUE(job.has_value()) << job.error().message;
  EXPECT_EQ((*job)->work_factor(), kFastWorkFactor);
  (*job)->Wait();
  EXPECT_TRUE((*job)->Done());
  const std::string plain = RandomBytes(3 * kChunkSize + 17, 12);
  MemoryFile file;
  auto enc = Encryptor::Create(file, std::move(*job));
  ASSERT_TRUE(enc.has_value()) << enc.error().message;
  EXPECT_TRUE((*enc)->KdfDone());
  EXPECT_EQ((*enc)->work_factor(), kFastWorkFactor);
  ASSERT_TRUE((*enc)->Write(Bytes(plain)));
  ASSERT_TRUE((*enc)->Finish());
  ExpectOursAndAgeDecrypt(file.data(), plain, (*enc)->KeyId());

  // Two jobs, two salts: the stanza line differs.
  auto other = ScryptJob::Start(Secret(kPassphrase), kFastWorkFactor);
  ASSERT_TRUE(other.has_value());
  MemoryFile second;
  auto enc2 = Encryptor::Create(second, std::move(*other));
  ASSERT_TRUE(enc2.has_value());
  ASSERT_TRUE((*enc2)->Write(Bytes(plain)));
  ASSERT_TRUE((*enc2)->Finish());
  const auto stanza = [](const std::string& f) { return f.substr(0, f.find('\n', 23)); };
  EXPECT_NE(stanza(file.data()), stanza(second.data()));
  const Decrypted wrong = Decrypt(second.data(), "correct horse battery staple 43");
  ASSERT_TRUE(wrong.error);
  EXPECT_EQ(wrong.error->code, ErrorCode::kWrongPassphrase);
}

TEST(Age, ADerivationRefusesWhatCreateRefuses) {
  for (int wf : {kMinWorkFactor - 1, kMaxWorkFactor + 1}) {
    auto job = ScryptJob::Start(Secret(kPassphrase), wf);
    ASSERT_FALSE(job.has_value());
    EXPECT_EQ(job.error().code, ErrorCode::kBadInput);
  }
  auto empty = ScryptJob::Start(Secret(""), kFastWorkFactor);
  ASSERT_FALSE(empty.has_value());
  EXPECT_EQ(empty.error().code, ErrorCode::kBadInput);
  MemoryFile file;
  auto none = Encryptor::Create(file, std::unique_ptr<ScryptJob>());
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code, ErrorCode::kInternal);
  EXPECT_TRUE(file.data().empty());
}

TEST(Age, WeDecryptAgeFile) {
  ASSERT_TRUE(std::filesystem::exists(kAgeBinary)) << "install the Debian package age";
  TempDir dir;
  const std::string plain = RandomBytes(2 * kChunkSize, 11);  // a full final chunk
  safepoint::testing::WriteFile(dir.Sub("plain"), plain, 0600);
  const PtyRun run = RunOnPty({kAgeBinary, "-p", "-o", dir.Sub("theirs.age"), dir.Sub("plain")},
                              kPassphrase, 2);  // enter and confirm
  ASSERT_EQ(run.exit_status, 0) << run.transcript;
  const auto file = safepoint::testing::ReadFile(dir.Sub("theirs.age"));
  ASSERT_TRUE(file.has_value());

  const Decrypted dec = Decrypt(*file, kPassphrase, kDefaultWorkFactor);
  ASSERT_FALSE(dec.error) << ErrorText(dec.error);
  EXPECT_EQ(dec.work_factor, kDefaultWorkFactor);  // age -p always uses 18
  EXPECT_TRUE(dec.plain == plain);
  // A reader configured below age's work factor refuses the file without deriving.
  const Decrypted refused = Decrypt(*file, kPassphrase, 17);
  ASSERT_TRUE(refused.error);
  EXPECT_EQ(refused.error->code, ErrorCode::kCorrupt);
}

// ---------------------------------------------------------------------------------------------
// Memory: streaming keeps the peak RSS independent of the data size.

// A deterministic stream of `size` pseudo-random bytes.
class GeneratorSource final : public ByteSource {
 public:
  explicit GeneratorSource(std::uint64_t size) : left_(size) {}
  Result<std::size_t> Read(std::span<std::uint8_t> out) override {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), left_));
    for (std::size_t i = 0; i < n; ++i) {
      state_ ^= state_ << 13;
      state_ ^= state_ >> 7;
      state_ ^= state_ << 17;
      out[i] = static_cast<std::uint8_t>(state_);
    }
    left_ -= n;
    return n;
  }

 private:
  std::uint64_t left_;
  std::uint64_t state_ = 0x9e3779b97f4a7c15ull;
};

long MaxRssKiB() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

// Encrypts `size` generated bytes to a file and decrypts them back, comparing against the
// generator. Returns the growth of the peak RSS in KiB, or -1 on failure.
long StreamRoundTripRssGrowth(const std::string& path, std::uint64_t size) {
  const long before = MaxRssKiB();
  {
    PosixFileSystem fs;
    auto file = fs.CreateFile(path, 0600);
    if (!file) return -1;
    auto enc = Encryptor::Create(**file, Secret(kPassphrase), kFastWorkFactor);
    if (!enc) return -1;
    GeneratorSource gen(size);
    std::vector<std::uint8_t> buf(256 * 1024);
    for (;;) {
      auto n = gen.Read(buf);
      if (!n || *n == 0) break;
      if (!(*enc)->Write(std::span(buf).first(*n))) return -1;
    }
    if (!(*enc)->Finish() || !(*file)->Close()) return -1;
  }
  {
    auto in = ReadOnlyFile::Open(path);
    if (!in) return -1;
    FdSource source(in->fd(), path);
    auto dec = Decryptor::Open(source, Secret(kPassphrase), kFastWorkFactor);
    if (!dec) return -1;
    GeneratorSource expected(size);
    std::vector<std::uint8_t> got(100000), want(100000);
    std::uint64_t total = 0;
    for (;;) {
      auto n = (*dec)->Read(got);
      if (!n) return -1;
      if (*n == 0) break;
      if (!expected.Read(std::span(want).first(*n)) ||
          std::memcmp(got.data(), want.data(), *n) != 0) {
        return -1;
      }
      total += *n;
    }
    if (total != size) return -1;
  }
  std::filesystem::remove(path);
  return MaxRssKiB() - before;
}

// Runs StreamRoundTripRssGrowth in a forked child, so the peak RSS starts from a clean baseline.
long RssGrowthInChild(const std::string& path, std::uint64_t size) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    const long growth = StreamRoundTripRssGrowth(path, size);
    const ssize_t w = ::write(fds[1], &growth, sizeof growth);
    ::_exit(w == sizeof growth ? 0 : 1);
  }
  ::close(fds[1]);
  long growth = -1;
  if (::read(fds[0], &growth, sizeof growth) != sizeof growth) growth = -1;
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return growth;
}

TEST(Age, PeakMemoryDoesNotGrowWithDataSize) {
  TempDir dir;
  const long small_kib = RssGrowthInChild(dir.Sub("small.age"), 1024 * 1024);
  const long large_kib = RssGrowthInChild(dir.Sub("large.age"), 256ull * 1024 * 1024);
  ASSERT_GE(small_kib, 0) << "1 MiB round trip failed";
  ASSERT_GE(large_kib, 0) << "256 MiB round trip failed";
  std::cout << "[ memory   ] peak RSS growth: 1 MiB " << small_kib / 1024 << " MiB, 256 MiB "
            << large_kib / 1024 << " MiB (scrypt " << ScryptMemory(kFastWorkFactor) / 1048576
            << " MiB)\n";
  const long scrypt_kib = static_cast<long>(ScryptMemory(kFastWorkFactor) / 1024);
  EXPECT_LT(large_kib, scrypt_kib + 32 * 1024);
  EXPECT_LT(large_kib - small_kib, 32 * 1024);
}

}  // namespace
}  // namespace safepoint::age
