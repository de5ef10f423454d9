// The whole pipeline through the CLI, as a user runs it: prepare, generate
// (embedded engine) and train, on a slice of the stories260k fixture and on
// the built-in demo assets.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "draftforge/data/token_dataset.h"
#include "draftforge/hidden_states/hs_file.h"
#include "draftforge/io/safetensors.h"
#include "draftforge/io/torch_tensors.h"
#include "test_support.h"

namespace draftforge {
namespace {

namespace fs = std::filesystem;
using testing::RunDraftforge;
using testing::TempDir;

std::vector<std::string> ReadLines(const fs::path& path, size_t max_lines) {
  std::ifstream stream(path);
  std::vector<std::string> lines;
  for (std::string line; lines.size() < max_lines && std::getline(stream, line);) {
    lines.push_back(line);
  }
  return lines;
}

std::vector<nlohmann::json> ReadJsonLines(const fs::path& path) {
  std::ifstream stream(path);
  std::vector<nlohmann::json> records;
  for (std::string line; std::getline(stream, line);) {
    if (!line.empty()) records.push_back(nlohmann::json::parse(line));
  }
  return records;
}

void ExpectSuccess(const testing::CommandOutput& result, const std::string& step) {
  ASSERT_EQ(result.exit_code, 0) << step << " failed:\n" << result.output;
}

TEST(EndToEnd, StoriesSlicePrepareGenerateTrain) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  DF_REQUIRE_SHARED(jsonl, "data/stories260k/train.jsonl");
  DF_REQUIRE_SHARED(golden, "data/stories260k/golden_hs/hs_0.safetensors");
  TempDir dir;
  const fs::path slice = dir.path() / "slice.jsonl";
  const std::vector<std::string> lines = ReadLines(jsonl, 60);
  {
    std::ofstream out(slice);
    for (const auto& line : lines) out << line << "\n";
  }
  const fs::path data = dir.path() / "data";

  ExpectSuccess(RunDraftforge({"prepare", "--model", model.string(), "--data", slice.string(),
                               "--output", data.string()}),
                "prepare");
  ExpectSuccess(RunDraftforge({"--threads", "1", "generate", "--model", model.string(),
                               "--preprocessed-data", data.string(), "--layer-ids", "1", "2", "3",
                               "5", "--validate-outputs"}),
                "generate");

  // Every row has its file, whose token ids equal the row.
  auto dataset = data::TokenDataset::Open(data.string());
  ASSERT_TRUE(dataset.ok()) << dataset.status().ToString();
  ASSERT_EQ(dataset->num_rows(), 60);
  int64_t golden_row = -1;
  const auto first_story = nlohmann::json::parse(lines[0])["input_ids"].get<std::vector<int64_t>>();
  for (int64_t row = 0; row < dataset->num_rows(); ++row) {
    hidden_states::HiddenStatesExpectation expected;
    expected.token_ids = dataset->input_ids(row);
    expected.num_layers = 4;
    std::string path = (data / "hidden_states" / hidden_states::HiddenStatesFileName(row)).string();
    auto file = hidden_states::ReadHiddenStatesFile(path, expected);
    ASSERT_TRUE(file.ok()) << file.status().ToString();
    auto ids = dataset->input_ids(row);
    if (std::vector<int64_t>(ids.begin(), ids.end()) == first_story) golden_row = row;
  }

  // The row holding train line 0 matches the independent float64 reference.
  ASSERT_GE(golden_row, 0) << "train line 0 is missing from the prepared rows";
  auto ours = hidden_states::ReadHiddenStatesFile(
      (data / "hidden_states" / hidden_states::HiddenStatesFileName(golden_row)).string());
  ASSERT_TRUE(ours.ok());
  auto golden_file = io::SafetensorsFile::Open(golden.string());
  ASSERT_TRUE(golden_file.ok());
  torch::Tensor reference = io::ReadTensor(*golden_file, "hidden_states").ValueOrDie();
  double max_error =
      (ours->hidden_states.to(torch::kFloat64) - reference.to(torch::kFloat64)).abs().max().item<double>();
  EXPECT_LT(max_error, 1e-4);

  const fs::path checkpoints = dir.path() / "checkpoints";
  const fs::path logs = dir.path() / "logs";
  ExpectSuccess(RunDraftforge({"train", "--verifier-name-or-path", model.string(), "--data-path",
                               data.string(), "--save-path", checkpoints.string(), "--log-dir",
                               logs.string(), "--draft-vocab-size", "128", "--epochs", "2",
                               "--lr", "1e-3", "--total-seq-len", "2048", "--layer-ids", "1", "2",
                               "3", "5"}),
                "train");

  // The vocabulary mapping is cached next to the data, one checkpoint per epoch.
  EXPECT_TRUE(fs::exists(data / "d2t.npy"));
  EXPECT_TRUE(fs::exists(data / "t2d.npy"));
  for (const char* epoch : {"0", "1"}) {
    EXPECT_TRUE(fs::exists(checkpoints / epoch / "config.json")) << epoch;
    EXPECT_TRUE(fs::exists(checkpoints / epoch / "model.safetensors")) << epoch;
  }
  std::ifstream config_stream(checkpoints / "1" / "config.json");
  auto config = nlohmann::json::parse(config_stream);
  EXPECT_EQ(config["speculators_model_type"], "eagle3");
  EXPECT_EQ(config["draft_vocab_size"], 128);
  EXPECT_EQ(config["eagle_aux_hidden_state_layer_ids"], nlohmann::json({1, 2, 3}));

  // The metrics log contains training steps and one validation record per epoch.
  int validation_records = 0;
  int train_records = 0;
  for (const auto& record : ReadJsonLines(logs / "metrics.jsonl")) {
    if (record.contains("val/full_acc_0_epoch")) {
      ++validation_records;
      EXPECT_GE(record["val/full_acc_0_epoch"].get<double>(), 0.0);
      EXPECT_LE(record["val/full_acc_0_epoch"].get<double>(), 1.0);
    }
    if (record.contains("train/loss")) ++train_records;
  }
  EXPECT_EQ(validation_records, 2);
  EXPECT_GT(train_records, 0);
}

TEST(EndToEnd, DemoAssetsWithDefaultLayerIds) {
  TempDir dir;
  const fs::path assets = dir.path() / "assets";
  const fs::path data = dir.path() / "data";
  ExpectSuccess(RunDraftforge({"demo-assets", "--output", assets.string(), "--samples", "60",
                               "--max-length", "64"}),
                "demo-assets");
  ExpectSuccess(RunDraftforge({"prepare", "--model", (assets / "model").string(), "--data",
                               (assets / "train.jsonl").string(), "--output", data.string()}),
                "prepare");
  ExpectSuccess(RunDraftforge({"--threads", "1", "generate", "--model",
                               (assets / "model").string(), "--preprocessed-data", data.string()}),
                "generate");
  // The 8-layer demo model captures vLLM's default ids [2, 4, 5, 8].
  auto file = hidden_states::ReadHiddenStatesFile((data / "hidden_states" / "hs_0.safetensors").string());
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->hidden_states.size(1), 4);
  EXPECT_EQ(file->hidden_states.size(2), 64);

  const fs::path checkpoints = dir.path() / "checkpoints";
  ExpectSuccess(RunDraftforge({"train", "--verifier-name-or-path", (assets / "model").string(),
                               "--data-path", data.string(), "--save-path", checkpoints.string(),
                               "--log-dir", (dir.path() / "logs").string(), "--draft-vocab-size",
                               "64", "--epochs", "1", "--total-seq-len", "1024"}),
                "train");
  std::ifstream config_stream(checkpoints / "0" / "config.json");
  auto config = nlohmann::json::parse(config_stream);
  EXPECT_EQ(config["eagle_aux_hidden_state_layer_ids"], nlohmann::json({2, 4, 5}));
}

}  // namespace
}  // namespace draftforge
