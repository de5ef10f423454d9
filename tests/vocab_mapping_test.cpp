#include "draftforge/data/vocab_mapping.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "draftforge/io/token_freq.h"
#include "draftforge/util/fs.h"
#include "test_support.h"

namespace draftforge::data {
namespace {

using draftforge::testing::TempDir;

TEST(VocabMapping, WorkedExampleTiesByAscendingId) {
  auto mapping = BuildVocabMapping({{5, 10}, {2, 10}, {7, 3}, {9, 1}}, 3, 10);
  ASSERT_TRUE(mapping.ok()) << mapping.status().ToString();
  EXPECT_EQ(mapping->d2t, (std::vector<int64_t>{2, 4, 5}));
  EXPECT_EQ(mapping->t2d, (std::vector<uint8_t>{0, 0, 1, 0, 0, 1, 0, 1, 0, 0}));
  EXPECT_TRUE(ValidateVocabMapping(*mapping, 10).ok());
}

TEST(VocabMapping, WorkedExamplePadsWithSmallIds) {
  auto mapping = BuildVocabMapping({{4, 3}}, 3, 6);
  ASSERT_TRUE(mapping.ok()) << mapping.status().ToString();
  EXPECT_EQ(mapping->d2t, (std::vector<int64_t>{0, 0, 2}));
  EXPECT_EQ(mapping->t2d, (std::vector<uint8_t>{1, 1, 0, 0, 1, 0}));
}

TEST(VocabMapping, TrainingSpecToyVector) {
  auto mapping = BuildVocabMapping({{5, 10}, {2, 10}, {7, 3}, {1, 1}}, 6, 10);
  ASSERT_TRUE(mapping.ok()) << mapping.status().ToString();
  EXPECT_EQ(mapping->d2t, (std::vector<int64_t>{0, 0, 0, 0, 1, 2}));
  EXPECT_EQ(mapping->t2d, (std::vector<uint8_t>{1, 1, 1, 1, 0, 1, 0, 1, 0, 0}));
  for (int64_t i = 0; i < 6; ++i) {
    EXPECT_EQ(mapping->TargetId(i), (std::vector<int64_t>{0, 1, 2, 3, 5, 7})[i]);
  }
}

TEST(VocabMapping, RejectsIdOutsideTargetVocab) {
  auto mapping = BuildVocabMapping({{10, 1}}, 2, 10);
  ASSERT_FALSE(mapping.ok());
  EXPECT_NE(mapping.status().message().find("token id 10"), std::string::npos);
}

TEST(VocabMapping, RejectsBadDraftSize) {
  EXPECT_FALSE(BuildVocabMapping({}, 0, 10).ok());
  EXPECT_FALSE(BuildVocabMapping({}, 11, 10).ok());
}

TEST(VocabMapping, SaveLoadMatchesSpecFiles) {
  DF_REQUIRE_SHARED(d2t_path, "spec/testvectors/d2t_example.npy");
  DF_REQUIRE_SHARED(t2d_path, "spec/testvectors/t2d_example.npy");
  auto reference = LoadVocabMapping(d2t_path.string(), t2d_path.string());
  ASSERT_TRUE(reference.ok()) << reference.status().ToString();
  auto built = BuildVocabMapping({{5, 10}, {2, 10}, {7, 3}, {9, 1}}, 3, 10).ValueOrDie();
  EXPECT_EQ(built.d2t, reference->d2t);
  EXPECT_EQ(built.t2d, reference->t2d);

  TempDir dir;
  ASSERT_TRUE(SaveVocabMapping(built, dir.str() + "/d2t.npy", dir.str() + "/t2d.npy").ok());
  auto loaded = LoadVocabMapping(dir.str() + "/d2t.npy", dir.str() + "/t2d.npy");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->d2t, built.d2t);
}

TEST(VocabMapping, ValidateCatchesMismatchedFiles) {
  VocabMapping mapping;
  mapping.d2t = {0, 1};
  mapping.t2d = {1, 0, 1, 0};
  EXPECT_TRUE(ValidateVocabMapping(mapping, 4).ok());
  mapping.d2t = {0, 2};
  EXPECT_FALSE(ValidateVocabMapping(mapping, 4).ok());
  mapping.d2t = {0, 1, 2};
  EXPECT_FALSE(ValidateVocabMapping(mapping, 4).ok());
  EXPECT_FALSE(ValidateVocabMapping(VocabMapping{{0}, {1, 0}}, 3).ok());
}

TEST(VocabMapping, CliWritesNpyFiles) {
  TempDir dir;
  ASSERT_TRUE(io::WriteTokenFreq(dir.str() + "/token_freq.pt", {{4, 3}}).ok());
  auto result = draftforge::testing::RunDraftforge(
      {"vocab", "--token-freq-path", dir.str() + "/token_freq.pt", "--draft-vocab-size", "3",
       "--target-vocab-size", "6", "--output-path", dir.str() + "/out"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto mapping = LoadVocabMapping(dir.str() + "/out/d2t.npy", dir.str() + "/out/t2d.npy");
  ASSERT_TRUE(mapping.ok()) << mapping.status().ToString();
  EXPECT_EQ(mapping->d2t, (std::vector<int64_t>{0, 0, 2}));
  EXPECT_EQ(mapping->t2d, (std::vector<uint8_t>{1, 1, 0, 0, 1, 0}));
}

TEST(VocabMapping, CliReadsTargetModelConfig) {
  TempDir dir;
  ASSERT_TRUE(io::WriteTokenFreq(dir.str() + "/token_freq.pt", {{4, 3}, {9, 2}}).ok());
  std::filesystem::create_directories(dir.path() / "model");
  ASSERT_TRUE(WriteFileAtomic((dir.path() / "model" / "config.json").string(),
                              R"({"text_config": {"vocab_size": 12, "hidden_size": 8,
                                  "intermediate_size": 16, "num_hidden_layers": 2,
                                  "num_attention_heads": 2}})")
                  .ok());
  auto result = draftforge::testing::RunDraftforge(
      {"vocab", "--token-freq-path", dir.str() + "/token_freq.pt", "--draft-vocab-size", "2",
       "--target-model-path", (dir.path() / "model").string(), "--output-path", dir.str()});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto mapping = LoadVocabMapping(dir.str() + "/d2t.npy", dir.str() + "/t2d.npy");
  ASSERT_TRUE(mapping.ok()) << mapping.status().ToString();
  EXPECT_EQ(mapping->target_vocab_size(), 12);
  EXPECT_EQ(mapping->d2t, (std::vector<int64_t>{4, 8}));
}

TEST(VocabMapping, CliRejectsBothTargetOptions) {
  auto result = draftforge::testing::RunDraftforge(
      {"vocab", "--token-freq-path", "x.pt", "--draft-vocab-size", "2", "--target-vocab-size",
       "6", "--target-model-path", "/m", "--output-path", "/tmp"});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("excludes"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace draftforge::data
