#include "draftforge/hidden_states/hs_file.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "draftforge/io/safetensors.h"
#include "draftforge/io/torch_tensors.h"
#include "draftforge/util/fs.h"
#include "test_support.h"

namespace draftforge::hidden_states {
namespace {

namespace fs = std::filesystem;
using draftforge::testing::TempDir;

bool Contains(const Status& status, const std::string& text) {
  return status.message().find(text) != std::string::npos;
}

TEST(HsFile, WritesVllmLayoutByteForByte) {
  TempDir dir;
  std::string path = dir.str() + "/hs_0.safetensors";
  std::vector<int64_t> ids = {5, 6, 7};
  auto hidden = torch::ones({3, 4, 2}, torch::kBFloat16);
  ASSERT_TRUE(WriteHiddenStatesFile(path, ids, hidden).ok());

  std::string bytes = ReadFileToString(path).ValueOrDie();
  ASSERT_EQ(bytes.size(), 216u);
  EXPECT_EQ(static_cast<uint8_t>(bytes[0]), 136);
  EXPECT_EQ(bytes.substr(8, 136),
            R"({"token_ids":{"dtype":"I64","shape":[3],"data_offsets":[0,24]},"hidden_states":{"dtype":"BF16","shape":[3,4,2],"data_offsets":[24,72]}} )");
  EXPECT_EQ(bytes.substr(144, 8), std::string("\x05\0\0\0\0\0\0\0", 8));
  EXPECT_EQ(static_cast<uint8_t>(bytes[168]), 0x80);  // bf16 1.0 = 0x3f80, little-endian
  EXPECT_EQ(static_cast<uint8_t>(bytes[169]), 0x3f);
}

TEST(HsFile, RoundTripWithExpectations) {
  TempDir dir;
  std::string path = dir.str() + "/hs_3.safetensors";
  std::vector<int64_t> ids = {1, 9, 4, 2};
  auto hidden = torch::randn({4, 3, 8});
  ASSERT_TRUE(WriteHiddenStatesFile(path, ids, hidden).ok());

  HiddenStatesExpectation expected;
  expected.token_ids = std::span<const int64_t>(ids);
  expected.num_layers = 3;
  expected.hidden_size = 8;
  auto file = ReadHiddenStatesFile(path, expected);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_TRUE(torch::equal(file->hidden_states, hidden));
  EXPECT_TRUE(torch::equal(file->token_ids, torch::tensor(ids, torch::kInt64)));

  auto metadata_free = io::SafetensorsFile::Open(path).ValueOrDie();
  EXPECT_TRUE(metadata_free.metadata().empty());
  ASSERT_EQ(metadata_free.tensors().size(), 2u);
  EXPECT_EQ(metadata_free.tensors()[0].name, "token_ids");
  EXPECT_EQ(metadata_free.tensors()[1].dtype, io::DType::kF32);
}

TEST(HsFile, ReportsMismatchedExpectations) {
  TempDir dir;
  std::string path = dir.str() + "/hs_0.safetensors";
  std::vector<int64_t> ids = {1, 9, 4};
  ASSERT_TRUE(WriteHiddenStatesFile(path, ids, torch::zeros({3, 4, 8}, torch::kFloat16)).ok());

  std::vector<int64_t> other_values = {1, 8, 4};
  HiddenStatesExpectation expected;
  expected.token_ids = std::span<const int64_t>(other_values);
  auto wrong_value = ReadHiddenStatesFile(path, expected);
  ASSERT_FALSE(wrong_value.ok());
  EXPECT_EQ(wrong_value.status().code(), StatusCode::kInvalid);
  EXPECT_TRUE(Contains(wrong_value.status(), path)) << wrong_value.status().message();
  EXPECT_TRUE(Contains(wrong_value.status(), "token_ids[1] is 9 but the dataset row has 8"))
      << wrong_value.status().message();

  std::vector<int64_t> longer = {1, 9, 4, 2};
  expected.token_ids = std::span<const int64_t>(longer);
  auto wrong_length = ReadHiddenStatesFile(path, expected);
  ASSERT_FALSE(wrong_length.ok());
  EXPECT_TRUE(Contains(wrong_length.status(), "3 tokens but the dataset row has 4"))
      << wrong_length.status().message();

  HiddenStatesExpectation layers;
  layers.num_layers = 3;
  auto wrong_layers = ReadHiddenStatesFile(path, layers);
  ASSERT_FALSE(wrong_layers.ok());
  EXPECT_TRUE(Contains(wrong_layers.status(), "holds 4 layers")) << wrong_layers.status().message();

  HiddenStatesExpectation width;
  width.hidden_size = 16;
  EXPECT_FALSE(ReadHiddenStatesFile(path, width).ok());
}

TEST(HsFile, DetectsTruncatedFile) {
  TempDir dir;
  std::string path = dir.str() + "/hs_0.safetensors";
  std::vector<int64_t> ids = {1, 2, 3, 4};
  ASSERT_TRUE(WriteHiddenStatesFile(path, ids, torch::randn({4, 4, 16})).ok());
  const auto full_size = fs::file_size(path);
  for (uintmax_t size : {full_size - 1, full_size / 2, uintmax_t{100}, uintmax_t{0}}) {
    SCOPED_TRACE(size);
    fs::resize_file(path, size);
    auto file = ReadHiddenStatesFile(path);
    ASSERT_FALSE(file.ok());
    EXPECT_EQ(file.status().code(), StatusCode::kCorrupt);
    EXPECT_TRUE(Contains(file.status(), path)) << file.status().message();
  }
}

TEST(HsFile, RejectsNonFiniteValues) {
  TempDir dir;
  std::string path = dir.str() + "/hs_0.safetensors";
  std::vector<int64_t> ids = {1, 2};
  auto hidden = torch::zeros({2, 4, 8}, torch::kBFloat16);
  hidden[1][2][5] = std::numeric_limits<float>::quiet_NaN();
  ASSERT_TRUE(WriteHiddenStatesFile(path, ids, hidden).ok());
  auto file = ReadHiddenStatesFile(path);
  ASSERT_FALSE(file.ok());
  EXPECT_TRUE(Contains(file.status(), "1 non-finite values, the first at [1, 2, 5]"))
      << file.status().message();
}

TEST(HsFile, ChecksKeysRanksAndDtypes) {
  TempDir dir;
  std::string path = dir.str() + "/hs_0.safetensors";

  ASSERT_TRUE(io::WriteTensors(path, {{"hidden_states", torch::zeros({2, 1, 4})}}, {}, false).ok());
  auto missing = ReadHiddenStatesFile(path);
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(Contains(missing.status(), "'token_ids' is missing")) << missing.status().message();

  ASSERT_TRUE(io::WriteTensors(path, {{"token_ids", torch::zeros({2}, torch::kInt64)},
                                      {"hidden_states", torch::zeros({2, 4})}},
                               {}, false)
                  .ok());
  auto rank = ReadHiddenStatesFile(path);
  ASSERT_FALSE(rank.ok());
  EXPECT_TRUE(Contains(rank.status(), "rank 3")) << rank.status().message();

  ASSERT_TRUE(io::WriteTensors(path, {{"token_ids", torch::zeros({3}, torch::kInt64)},
                                      {"hidden_states", torch::zeros({2, 1, 4})}},
                               {}, false)
                  .ok());
  auto length = ReadHiddenStatesFile(path);
  ASSERT_FALSE(length.ok());
  EXPECT_TRUE(Contains(length.status(), "2 tokens")) << length.status().message();

  ASSERT_TRUE(io::WriteTensors(path, {{"token_ids", torch::zeros({2}, torch::kInt64)},
                                      {"hidden_states", torch::zeros({2, 1, 4}, torch::kFloat64)}},
                               {}, false)
                  .ok());
  EXPECT_FALSE(ReadHiddenStatesFile(path).ok());

  // I32 token ids are accepted and widened.
  ASSERT_TRUE(io::WriteTensors(path, {{"token_ids", torch::tensor({7, 8}, torch::kInt32)},
                                      {"hidden_states", torch::zeros({2, 1, 4})}},
                               {}, false)
                  .ok());
  auto widened = ReadHiddenStatesFile(path);
  ASSERT_TRUE(widened.ok()) << widened.status().ToString();
  EXPECT_EQ(widened->token_ids.scalar_type(), torch::kInt64);
  EXPECT_EQ(widened->token_ids[1].item<int64_t>(), 8);
}

TEST(HsFile, WriteRejectsMismatchedShapes) {
  TempDir dir;
  std::string path = dir.str() + "/hs_0.safetensors";
  std::vector<int64_t> ids = {1, 2, 3};
  EXPECT_FALSE(WriteHiddenStatesFile(path, ids, torch::zeros({2, 4, 8})).ok());
  EXPECT_FALSE(WriteHiddenStatesFile(path, ids, torch::zeros({3, 8})).ok());
  EXPECT_FALSE(WriteHiddenStatesFile(path, ids, torch::zeros({3, 4, 8}, torch::kFloat64)).ok());
  EXPECT_FALSE(fs::exists(path));
}

TEST(HsFile, ReadsGoldenFileWithMetadata) {
  DF_REQUIRE_SHARED(golden, "data/stories260k/golden_hs/hs_5.safetensors");
  HiddenStatesExpectation expected;
  expected.num_layers = 4;
  expected.hidden_size = 64;
  auto file = ReadHiddenStatesFile(golden.string(), expected);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->token_ids.size(0), 110);
}

TEST(HsFile, ParsesFileNames) {
  EXPECT_EQ(HiddenStatesFileName(42), "hs_42.safetensors");
  EXPECT_EQ(ParseHiddenStatesFileName("hs_0.safetensors"), 0);
  EXPECT_EQ(ParseHiddenStatesFileName("hs_1234.safetensors"), 1234);
  for (const char* name : {"hs_.safetensors", "hs_-1.safetensors", "hs_1.safetensors.lock",
                           "hs_1a.safetensors", "xs_1.safetensors", "hs_1.safetensors.tmp-ab",
                           "hs_99999999999999999999999.safetensors", "hs_1.pt"}) {
    EXPECT_EQ(ParseHiddenStatesFileName(name), std::nullopt) << name;
  }
}

}  // namespace
}  // namespace draftforge::hidden_states
