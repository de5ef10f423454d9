#include "draftforge/io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "draftforge/io/torch_tensors.h"
#include "test_support.h"

namespace draftforge::io {
namespace {

using draftforge::testing::TempDir;

std::string ReadAll(const std::string& path) { return ReadFileToString(path).ValueOrDie(); }

TEST(Safetensors, HiddenStatesLayoutMatchesSpecExample) {
  TempDir dir;
  std::vector<int64_t> ids = {5, 6, 7};
  std::vector<uint16_t> hidden(3 * 4 * 2, 0x3f80);  // bf16 1.0
  std::string path = dir.str() + "/hs.safetensors";
  ASSERT_TRUE(WriteSafetensors(path,
                               {{"hidden_states", DType::kBF16, {3, 4, 2}, hidden.data(), 48},
                                {"token_ids", DType::kI64, {3}, ids.data(), 24}},
                               {}, /*write_metadata=*/false)
                  .ok());
  std::string bytes = ReadAll(path);
  EXPECT_EQ(bytes.size(), 216u);
  EXPECT_EQ(static_cast<uint8_t>(bytes[0]), 136);
  std::string header = bytes.substr(8, 136);
  EXPECT_EQ(header,
            R"({"token_ids":{"dtype":"I64","shape":[3],"data_offsets":[0,24]},"hidden_states":{"dtype":"BF16","shape":[3,4,2],"data_offsets":[24,72]}} )");
}

TEST(Safetensors, RoundTripThroughTorch) {
  TempDir dir;
  std::string path = dir.str() + "/t.safetensors";
  auto a = torch::arange(12, torch::kFloat32).reshape({3, 4});
  auto b = torch::tensor({true, false, true});
  auto c = torch::arange(5, torch::kInt64);
  ASSERT_TRUE(WriteTensors(path, {{"a", a.to(torch::kBFloat16)}, {"b", b}, {"c", c}},
                           {{"format", "pt"}})
                  .ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->metadata().at("format"), "pt");
  EXPECT_EQ(file->tensors()[0].name, "c");  // I64 first, then BF16, then BOOL
  EXPECT_EQ(file->tensors()[2].name, "b");
  auto read_a = ReadTensor(*file, "a").ValueOrDie();
  EXPECT_TRUE(torch::equal(read_a.to(torch::kFloat32), a));
  EXPECT_TRUE(torch::equal(ReadTensor(*file, "b").ValueOrDie(), b));
  EXPECT_FALSE(ReadTensor(*file, "missing").ok());
}

TEST(Safetensors, RejectsTruncatedFile) {
  TempDir dir;
  std::string path = dir.str() + "/t.safetensors";
  auto a = torch::ones({4, 4});
  ASSERT_TRUE(WriteTensors(path, {{"a", a}}).ok());
  std::string bytes = ReadAll(path);
  for (size_t keep : {size_t{4}, size_t{20}, bytes.size() - 1}) {
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), keep);
    auto file = SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok()) << "kept " << keep << " bytes";
    EXPECT_EQ(file.status().code(), StatusCode::kCorrupt);
    EXPECT_NE(file.status().message().find(path), std::string::npos);
  }
}

TEST(Safetensors, RejectsInconsistentHeader) {
  TempDir dir;
  std::string path = dir.str() + "/t.safetensors";
  std::string json = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}})";
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(json.size());
  bytes += json + std::string(12, '\0');
  std::ofstream(path, std::ios::binary).write(bytes.data(), bytes.size());
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("needs 8 bytes"), std::string::npos)
      << file.status().message();
}

TEST(Safetensors, ReadsGoldenHiddenStates) {
  DF_REQUIRE_SHARED(hs_path, "data/stories260k/golden_hs/hs_0.safetensors");
  auto file = SafetensorsFile::Open(hs_path.string());
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  const TensorInfo* hidden = file->Find("hidden_states");
  ASSERT_NE(hidden, nullptr);
  EXPECT_EQ(hidden->shape, (std::vector<int64_t>{256, 4, 64}));
  EXPECT_EQ(file->metadata().at("layer_ids"), "[1, 2, 3, 5]");
}

}  // namespace
}  // namespace draftforge::io
