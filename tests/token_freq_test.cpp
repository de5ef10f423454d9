#include "draftforge/io/token_freq.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "draftforge/util/fs.h"
#include "test_support.h"

namespace draftforge::io {
namespace {

using draftforge::testing::TempDir;

const std::map<int64_t, int64_t> kDocumentedDict = {
    {128000, 5}, {9906, 300}, {1, 70000}, {70000, 2147483648LL}, {5, 1}};

std::string Hex(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) out += fmt::format("{:02X} ", c);
  if (!out.empty()) out.pop_back();
  return out;
}

TEST(TokenFreq, PickleMatchesCPythonExamples) {
  EXPECT_EQ(Hex(PickleIntDict({{9906, 300}, {128000, 5}})),
            "80 02 7D 71 00 28 4D B2 26 4D 2C 01 4A 00 F4 01 00 4B 05 75 2E");
  EXPECT_EQ(Hex(PickleIntDict({{7, 1}})), "80 02 7D 71 00 4B 07 4B 01 73 2E");
  EXPECT_EQ(Hex(PickleIntDict({})), "80 02 7D 71 00 2E");
  EXPECT_EQ(Hex(PickleIntDict({{1, 2147483648LL}})),
            "80 02 7D 71 00 4B 01 8A 05 00 00 00 80 00 73 2E");
}

TEST(TokenFreq, PickleBatchesOfThousand) {
  std::map<int64_t, int64_t> dict;
  for (int64_t i = 0; i < 2000; ++i) dict[i] = 1;
  std::string pickle = PickleIntDict(dict);
  // Two full batches and a final empty MARK/SETITEMS, as CPython writes.
  EXPECT_EQ(pickle.substr(pickle.size() - 4), std::string("\x75\x28\x75\x2e", 4));
  size_t marks = 0;
  auto parsed = UnpickleIntDict(pickle, "mem");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(*parsed, dict);
  for (size_t i = 5; i < pickle.size(); ++i) marks += pickle[i] == '\x28' ? 1 : 0;
  EXPECT_GE(marks, 3u);
  dict.erase(1999);
  pickle = PickleIntDict(dict);
  EXPECT_EQ(pickle.substr(pickle.size() - 2), std::string("\x75\x2e", 2));
  EXPECT_NE(pickle.substr(pickle.size() - 3, 1), "\x28");
}

TEST(TokenFreq, ReadsTorch113File) {
  DF_REQUIRE_SHARED(path, "spec/testvectors/token_freq_torch113.pt");
  auto dict = ReadTokenFreq(path.string());
  ASSERT_TRUE(dict.ok()) << dict.status().ToString();
  EXPECT_EQ(*dict, kDocumentedDict);
}

TEST(TokenFreq, ReadsMinimalFile) {
  DF_REQUIRE_SHARED(path, "spec/testvectors/token_freq_minimal.pt");
  auto dict = ReadTokenFreq(path.string());
  ASSERT_TRUE(dict.ok()) << dict.status().ToString();
  EXPECT_EQ(*dict, kDocumentedDict);
}

TEST(TokenFreq, WriteThenReadRoundTrips) {
  TempDir dir;
  const std::string path = dir.str() + "/freqs.pt";
  ASSERT_TRUE(WriteTokenFreq(path, kDocumentedDict).ok());
  std::string bytes = ReadFileToString(path).ValueOrDie();
  EXPECT_EQ(bytes.substr(0, 4), "PK\x03\x04");
  EXPECT_NE(bytes.find("freqs/data.pkl"), std::string::npos);
  EXPECT_NE(bytes.find("freqs/byteorder"), std::string::npos);
  auto dict = ReadTokenFreq(path);
  ASSERT_TRUE(dict.ok()) << dict.status().ToString();
  EXPECT_EQ(*dict, kDocumentedDict);
}

TEST(TokenFreq, ReadsZip64EndRecords) {
  std::string zip = BuildStoredZip({{"a/data.pkl", PickleIntDict({{3, 4}})}, {"a/version", "3\n"}});
  // Rewrite the classic end record with escape values and put ZIP64 records
  // (end record + locator) in front of it.
  const size_t eocd = zip.size() - 22;
  uint16_t entries = 0;
  uint32_t directory_size = 0, directory_offset = 0;
  std::memcpy(&entries, zip.data() + eocd + 10, 2);
  std::memcpy(&directory_size, zip.data() + eocd + 12, 4);
  std::memcpy(&directory_offset, zip.data() + eocd + 16, 4);
  std::string zip64;
  auto put = [&zip64](auto value) {
    zip64.append(reinterpret_cast<const char*>(&value), sizeof(value));
  };
  const uint64_t zip64_offset = eocd;
  put(uint32_t{0x06064b50});
  put(uint64_t{44});
  put(uint16_t{45});
  put(uint16_t{45});
  put(uint32_t{0});
  put(uint32_t{0});
  put(uint64_t{entries});
  put(uint64_t{entries});
  put(uint64_t{directory_size});
  put(uint64_t{directory_offset});
  put(uint32_t{0x07064b50});
  put(uint32_t{0});
  put(zip64_offset);
  put(uint32_t{1});
  std::string classic = zip.substr(eocd);
  std::memset(classic.data() + 8, 0xff, 12);  // entries and sizes: escape values
  std::string rebuilt = zip.substr(0, eocd) + zip64 + classic;
  TempDir dir;
  const std::string path = dir.str() + "/a.pt";
  ASSERT_TRUE(WriteFileAtomic(path, rebuilt).ok());
  auto dict = ReadTokenFreq(path);
  ASSERT_TRUE(dict.ok()) << dict.status().ToString();
  EXPECT_EQ(*dict, (std::map<int64_t, int64_t>{{3, 4}}));
}

TEST(TokenFreq, RejectsForeignPickleOpcode) {
  // GLOBAL opcode 'c' as in a pickled class instance.
  std::string pickle = std::string("\x80\x02\x7d\x71\x00", 5) + "ctorch\nTensor\n.";
  auto parsed = UnpickleIntDict(pickle, "x.pt");
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find("opcode 0x63"), std::string::npos)
      << parsed.status().message();
}

TEST(TokenFreq, RejectsZeroCountAndNegativeId) {
  std::string zero = PickleIntDict({{3, 1}});
  zero[zero.size() - 3] = 0;  // the value byte of BININT1
  EXPECT_FALSE(UnpickleIntDict(zero, "mem").ok());
  EXPECT_FALSE(WriteTokenFreq("/tmp/never-written.pt", {{-1, 3}}).ok());
}

TEST(TokenFreq, DetectsCrcMismatch) {
  TempDir dir;
  const std::string path = dir.str() + "/token_freq.pt";
  ASSERT_TRUE(WriteTokenFreq(path, {{7, 1}}).ok());
  std::string bytes = ReadFileToString(path).ValueOrDie();
  const size_t at = bytes.find(std::string("\x4b\x07", 2));
  ASSERT_NE(at, std::string::npos);
  bytes[at + 1] = 8;
  ASSERT_TRUE(WriteFileAtomic(path, bytes).ok());
  auto dict = ReadTokenFreq(path);
  ASSERT_FALSE(dict.ok());
  EXPECT_NE(dict.status().message().find("CRC-32 mismatch"), std::string::npos);
}

TEST(TokenFreq, RejectsNonZipFile) {
  TempDir dir;
  const std::string path = dir.str() + "/token_freq.pt";
  ASSERT_TRUE(WriteFileAtomic(path, "not a zip").ok());
  auto dict = ReadTokenFreq(path);
  ASSERT_FALSE(dict.ok());
  EXPECT_NE(dict.status().message().find("not a ZIP archive"), std::string::npos);
}

// Finds a Python interpreter that can import torch: python3 on PATH, else the
// system one (a pyenv python3 may shadow Debian's python3-torch).
std::string FindTorchPython() {
  for (const char* python : {"python3", "/usr/bin/python3"}) {
    std::string command = std::string(python) + " -c 'import torch' >/dev/null 2>&1";
    if (std::system(command.c_str()) == 0) return python;
  }
  return "";
}

TEST(TokenFreq, TorchLoadReadsOurFile) {
  const std::string python = FindTorchPython();
  if (python.empty()) GTEST_SKIP() << "no python3 with 'import torch' available";
  TempDir dir;
  const std::string path = dir.str() + "/token_freq.pt";
  std::map<int64_t, int64_t> dict = kDocumentedDict;
  for (int64_t i = 1000; i < 3000; ++i) dict[i] = i;  // several pickle batches
  ASSERT_TRUE(WriteTokenFreq(path, dict).ok());
  std::string command = python + " -c 'import torch,sys; d=torch.load(sys.argv[1], "
                        "weights_only=True); print(sorted(d.items()))' '" + path + "'";
  std::FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[4096];
  size_t count = 0;
  while ((count = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, count);
  ASSERT_EQ(::pclose(pipe), 0) << output;
  std::string expected = "[";
  for (const auto& [key, value] : dict) {
    expected += fmt::format("{}({}, {})", expected.size() > 1 ? ", " : "", key, value);
  }
  expected += "]\n";
  EXPECT_EQ(output, expected);
}

}  // namespace
}  // namespace draftforge::io
