#include "draftforge/io/npy.h"

#include <gtest/gtest.h>

#include "draftforge/util/fs.h"
#include "test_support.h"

namespace draftforge::io {
namespace {

using draftforge::testing::TempDir;

TEST(Npy, HeaderMatchesNumpyForSpecSizes) {
  std::string d2t = NpyHeader("<i8", {32000});
  EXPECT_EQ(d2t.size(), 128u);
  EXPECT_EQ(static_cast<uint8_t>(d2t[8]), 118);
  EXPECT_EQ(d2t.substr(10, 61), "{'descr': '<i8', 'fortran_order': False, 'shape': (32000,), }");
  EXPECT_EQ(d2t.back(), '\n');
  std::string t2d = NpyHeader("|b1", {128256});
  EXPECT_EQ(t2d.size(), 128u);
  EXPECT_EQ(t2d.substr(10, 62), "{'descr': '|b1', 'fortran_order': False, 'shape': (128256,), }");
}

TEST(Npy, WriterReproducesNumpyFilesByteForByte) {
  DF_REQUIRE_SHARED(d2t_path, "spec/testvectors/d2t_example.npy");
  DF_REQUIRE_SHARED(t2d_path, "spec/testvectors/t2d_example.npy");
  TempDir dir;
  std::vector<int64_t> d2t = {2, 4, 5};
  NpyArray d2t_array{"<i8", false, {3}, std::string(reinterpret_cast<char*>(d2t.data()), 24)};
  ASSERT_TRUE(WriteNpy(dir.str() + "/d2t.npy", d2t_array).ok());
  EXPECT_EQ(ReadFileToString(dir.str() + "/d2t.npy").ValueOrDie(),
            ReadFileToString(d2t_path.string()).ValueOrDie());
  NpyArray t2d_array{"|b1", false, {10}, std::string("\0\0\1\0\0\1\0\1\0\0", 10)};
  ASSERT_TRUE(WriteNpy(dir.str() + "/t2d.npy", t2d_array).ok());
  EXPECT_EQ(ReadFileToString(dir.str() + "/t2d.npy").ValueOrDie(),
            ReadFileToString(t2d_path.string()).ValueOrDie());
}

TEST(Npy, ReadsSpecVectors) {
  DF_REQUIRE_SHARED(d2t_path, "spec/testvectors/d2t_example.npy");
  DF_REQUIRE_SHARED(t2d_path, "spec/testvectors/t2d_example.npy");
  auto d2t = ReadNpyInt64Vector(d2t_path.string());
  ASSERT_TRUE(d2t.ok()) << d2t.status().ToString();
  EXPECT_EQ(*d2t, (std::vector<int64_t>{2, 4, 5}));
  auto t2d = ReadNpyBoolVector(t2d_path.string());
  ASSERT_TRUE(t2d.ok()) << t2d.status().ToString();
  EXPECT_EQ(*t2d, (std::vector<uint8_t>{0, 0, 1, 0, 0, 1, 0, 1, 0, 0}));
}

TEST(Npy, ReadsVersion2AndInt32) {
  TempDir dir;
  std::string header = "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }";
  header.append(64 - (12 + header.size() + 1) % 64, ' ');
  header += '\n';
  std::string bytes = std::string("\x93NUMPY\x02\x00", 8);
  uint32_t length = static_cast<uint32_t>(header.size());
  bytes.append(reinterpret_cast<char*>(&length), 4);
  bytes += header;
  int32_t values[] = {-3, 7};
  bytes.append(reinterpret_cast<char*>(values), 8);
  ASSERT_TRUE(WriteFileAtomic(dir.str() + "/a.npy", bytes).ok());
  auto read = ReadNpyInt64Vector(dir.str() + "/a.npy");
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(*read, (std::vector<int64_t>{-3, 7}));
}

TEST(Npy, RejectsWrongDataSizeAndBigEndian) {
  TempDir dir;
  std::string good = NpyHeader("<i8", {2}) + std::string(16, '\0');
  ASSERT_TRUE(WriteFileAtomic(dir.str() + "/short.npy", good.substr(0, good.size() - 1)).ok());
  auto short_read = ReadNpy(dir.str() + "/short.npy");
  ASSERT_FALSE(short_read.ok());
  EXPECT_NE(short_read.status().message().find("needs 16 data bytes"), std::string::npos)
      << short_read.status().message();
  ASSERT_TRUE(WriteFileAtomic(dir.str() + "/big.npy", NpyHeader(">i8", {2}) + std::string(16, '\0')).ok());
  auto big = ReadNpy(dir.str() + "/big.npy");
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), StatusCode::kUnimplemented);
}

TEST(Npy, RejectsMaskValuesAboveOne) {
  TempDir dir;
  ASSERT_TRUE(WriteFileAtomic(dir.str() + "/m.npy", NpyHeader("|u1", {2}) + "\x01\x02").ok());
  auto read = ReadNpyBoolVector(dir.str() + "/m.npy");
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find("element 1 is 2"), std::string::npos);
}

}  // namespace
}  // namespace draftforge::io
