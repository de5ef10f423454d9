#include "draftforge/hidden_states/generate.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "draftforge/hidden_states/hs_file.h"
#include "draftforge/io/safetensors.h"
#include "draftforge/io/torch_tensors.h"
#include "draftforge/util/fs.h"
#include "test_support.h"

namespace draftforge::hidden_states {
namespace {

namespace fs = std::filesystem;
using draftforge::testing::RunDraftforge;
using draftforge::testing::TempDir;

const std::vector<int64_t> kLayerIds = {1, 2, 3, 5};

// The first `count` stories of train.jsonl as dataset rows.
data::TokenDataset LoadStories(const fs::path& train_path, size_t count) {
  std::vector<data::TokenRow> rows;
  std::ifstream in(train_path);
  std::string line;
  while (rows.size() < count && std::getline(in, line)) {
    data::TokenRow row;
    row.input_ids = nlohmann::json::parse(line)["input_ids"].get<std::vector<int64_t>>();
    row.loss_mask.assign(row.input_ids.size(), 1);
    rows.push_back(std::move(row));
  }
  return data::TokenDataset::FromRows(std::move(rows));
}

std::vector<std::string> ListNames(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

GenerateOptions Options(const std::string& output_dir) {
  GenerateOptions options;
  options.output_dir = output_dir;
  options.layer_ids = kLayerIds;
  options.show_progress = false;
  return options;
}

class GenerateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model_dir = draftforge::testing::SharedPath("models/stories260k");
    auto train_path = draftforge::testing::SharedPath("data/stories260k/train.jsonl");
    golden_dir_ = draftforge::testing::SharedPath("data/stories260k/golden_hs").value_or("");
    if (!model_dir || !train_path || golden_dir_.empty()) {
      GTEST_SKIP() << "shared stories260k fixtures not found; set DRAFTFORGE_TEST_DATA";
    }
    model_ = engine::LlamaModel::Load(model_dir->string()).ValueOrDie();
    dataset_ = LoadStories(*train_path, 5);
  }

  fs::path golden_dir_;
  std::unique_ptr<engine::LlamaModel> model_;
  data::TokenDataset dataset_;
};

TEST_F(GenerateTest, WritesVllmLayoutMatchingGolden) {
  TempDir dir;
  auto summary = GenerateHiddenStates(dataset_, *model_, Options(dir.str()));
  ASSERT_TRUE(summary.ok()) << summary.status().ToString();
  EXPECT_EQ(summary->generated, 5);
  EXPECT_EQ(summary->existing, 0);
  EXPECT_EQ(summary->tokens, dataset_.total_tokens());
  EXPECT_EQ(ListNames(dir.path()),
            (std::vector<std::string>{kGenerateSettingsFileName, "hs_0.safetensors",
                                      "hs_1.safetensors", "hs_2.safetensors", "hs_3.safetensors",
                                      "hs_4.safetensors"}));

  for (int64_t row = 0; row < 5; ++row) {
    SCOPED_TRACE(row);
    const int64_t tokens = dataset_.seq_len(row);
    auto file = io::SafetensorsFile::Open((dir.path() / HiddenStatesFileName(row)).string()).ValueOrDie();
    EXPECT_TRUE(file.metadata().empty());
    ASSERT_EQ(file.tensors().size(), 2u);
    EXPECT_EQ(file.tensors()[0].name, "token_ids");
    EXPECT_EQ(file.tensors()[0].dtype, io::DType::kI64);
    EXPECT_EQ(file.tensors()[0].shape, (std::vector<int64_t>{tokens}));
    EXPECT_EQ(file.tensors()[0].begin, 0u);
    EXPECT_EQ(file.tensors()[1].name, "hidden_states");
    EXPECT_EQ(file.tensors()[1].dtype, io::DType::kF32);
    EXPECT_EQ(file.tensors()[1].shape, (std::vector<int64_t>{tokens, 4, 64}));

    // Rows 0..4 of train.jsonl are golden samples 0..4.
    auto golden = io::SafetensorsFile::Open((golden_dir_ / HiddenStatesFileName(row)).string()).ValueOrDie();
    auto expected = io::ReadTensor(golden, "hidden_states").ValueOrDie();
    auto actual = io::ReadTensor(file, "hidden_states").ValueOrDie();
    EXPECT_LT((actual - expected).abs().max().item<double>(), 1e-4);
    EXPECT_TRUE(torch::equal(io::ReadTensor(file, "token_ids").ValueOrDie(),
                             io::ReadTensor(golden, "token_ids").ValueOrDie()));
  }
}

TEST_F(GenerateTest, StoresRequestedDtype) {
  TempDir dir;
  GenerateOptions options = Options(dir.str());
  options.dtype = torch::kBFloat16;
  options.max_samples = 1;
  options.validate_outputs = true;
  ASSERT_TRUE(GenerateHiddenStates(dataset_, *model_, options).ok());
  auto file = io::SafetensorsFile::Open((dir.path() / "hs_0.safetensors").string()).ValueOrDie();
  EXPECT_EQ(file.Find("hidden_states")->dtype, io::DType::kBF16);
  const io::TensorInfo* hidden = file.Find("hidden_states");
  EXPECT_EQ(hidden->end - hidden->begin, 2u * 256 * 4 * 64);  // 2 bytes per bf16 value
}

TEST_F(GenerateTest, ResumeSkipsExistingFiles) {
  TempDir dir;
  GenerateOptions options = Options(dir.str());
  options.max_samples = 2;
  auto first = GenerateHiddenStates(dataset_, *model_, options);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->generated, 2);

  // Replace hs_1 by a recognisable file; a resumed run must keep it.
  std::vector<int64_t> marker_ids = {7};
  ASSERT_TRUE(WriteHiddenStatesFile((dir.path() / "hs_1.safetensors").string(), marker_ids,
                                    torch::zeros({1, 4, 64}))
                  .ok());
  const std::string marker = ReadFileToString((dir.path() / "hs_1.safetensors").string()).ValueOrDie();
  // Names that are not hs_<int>.safetensors are ignored.
  for (const char* name : {"hs_3.safetensors.lock", "notes.txt", "hs_x.safetensors"}) {
    ASSERT_TRUE(WriteFileAtomic((dir.path() / name).string(), "x").ok());
  }

  options.max_samples.reset();
  auto second = GenerateHiddenStates(dataset_, *model_, options);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->existing, 2);
  EXPECT_EQ(second->generated, 3);
  EXPECT_EQ(ReadFileToString((dir.path() / "hs_1.safetensors").string()).ValueOrDie(), marker);
  EXPECT_TRUE(fs::exists(dir.path() / "hs_3.safetensors"));

  auto third = GenerateHiddenStates(dataset_, *model_, options);
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->generated, 0);
  // 5 hs files, the settings file and 3 ignored names, no temporaries.
  EXPECT_EQ(ListNames(dir.path()).size(), 9u);
}

TEST_F(GenerateTest, ValidationDetectsTruncatedFile) {
  TempDir dir;
  ASSERT_TRUE(GenerateHiddenStates(dataset_, *model_, Options(dir.str())).ok());
  const fs::path damaged = dir.path() / "hs_2.safetensors";
  const auto full_size = fs::file_size(damaged);
  fs::resize_file(damaged, full_size - 1000);

  auto read = ReadHiddenStatesFile(damaged.string());
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(read.status().message().find(damaged.string()), std::string::npos);

  // Without validation the damaged file counts as present; with it, the file
  // is regenerated.
  auto plain = GenerateHiddenStates(dataset_, *model_, Options(dir.str()));
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->generated, 0);
  GenerateOptions options = Options(dir.str());
  options.validate_outputs = true;
  auto validated = GenerateHiddenStates(dataset_, *model_, options);
  ASSERT_TRUE(validated.ok()) << validated.status().ToString();
  EXPECT_EQ(validated->invalid_existing, 1);
  EXPECT_EQ(validated->generated, 1);
  EXPECT_EQ(fs::file_size(damaged), full_size);
  EXPECT_TRUE(ReadHiddenStatesFile(damaged.string()).ok());
}

TEST_F(GenerateTest, RejectsDuplicateLayerIds) {
  TempDir dir;
  GenerateOptions options = Options(dir.str());
  options.layer_ids = {2, 2, 2, 5};
  auto result = GenerateHiddenStates(dataset_, *model_, options);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("layer id 2 is given twice"), std::string::npos);
  EXPECT_TRUE(ListNames(dir.path()).empty());
}

TEST_F(GenerateTest, SettingsFileRejectsOtherLayerIds) {
  TempDir dir;
  GenerateOptions options = Options(dir.str());
  options.max_samples = 2;
  ASSERT_TRUE(GenerateHiddenStates(dataset_, *model_, options).ok());
  ASSERT_TRUE(fs::exists(dir.path() / kGenerateSettingsFileName));

  // Same number of layers, so the shape check alone would accept the files.
  options.max_samples.reset();
  options.layer_ids = {1, 2, 3, 4};
  options.validate_outputs = true;
  auto other_layers = GenerateHiddenStates(dataset_, *model_, options);
  ASSERT_FALSE(other_layers.ok());
  const std::string message = other_layers.status().message();
  EXPECT_NE(message.find("layer ids [1, 2, 3, 5]"), std::string::npos) << message;
  EXPECT_NE(message.find("layer ids [1, 2, 3, 4]"), std::string::npos) << message;
  EXPECT_NE(message.find("--output"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir.path() / "hs_2.safetensors"));

  GenerateOptions other_dtype = Options(dir.str());
  other_dtype.dtype = torch::kBFloat16;
  auto dtype_result = GenerateHiddenStates(dataset_, *model_, other_dtype);
  ASSERT_FALSE(dtype_result.ok());
  EXPECT_NE(dtype_result.status().message().find("dtype bfloat16"), std::string::npos)
      << dtype_result.status().message();
}

TEST_F(GenerateTest, FilesWithoutSettingsFileAreKept) {
  TempDir dir;
  GenerateOptions options = Options(dir.str());
  options.max_samples = 2;
  ASSERT_TRUE(GenerateHiddenStates(dataset_, *model_, options).ok());
  // Output of vLLM or speculators has no settings file.
  fs::remove(dir.path() / kGenerateSettingsFileName);

  options.max_samples.reset();
  options.validate_outputs = true;
  auto resumed = GenerateHiddenStates(dataset_, *model_, options);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  EXPECT_EQ(resumed->existing, 2);
  EXPECT_EQ(resumed->generated, 3);
  // The settings of the older files are unknown, so none is recorded.
  EXPECT_FALSE(fs::exists(dir.path() / kGenerateSettingsFileName));
}

TEST_F(GenerateTest, StartIndexPastLastRowFails) {
  TempDir dir;
  GenerateOptions options = Options(dir.str());
  options.start_index = 5;
  auto result = GenerateHiddenStates(dataset_, *model_, options);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("--start-idx 5 is past the last dataset row 4"),
            std::string::npos)
      << result.status().message();
  EXPECT_TRUE(ListNames(dir.path()).empty());
}

TEST_F(GenerateTest, NonFiniteModelOutputWritesNoFile) {
  TempDir dir;
  const fs::path model_dir = dir.path() / "nan_model";
  fs::create_directories(model_dir);
  const fs::path source_dir = model_->model_dir();
  fs::copy_file(source_dir / "config.json", model_dir / "config.json");
  auto weights = io::SafetensorsFile::Open((source_dir / "model.safetensors").string()).ValueOrDie();
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  bool poisoned = false;
  for (const auto& info : weights.tensors()) {
    torch::Tensor tensor = io::ReadTensor(weights, info.name).ValueOrDie();
    if (!poisoned && info.name.find("layers.0.") != std::string::npos && tensor.dim() == 2) {
      tensor = tensor.clone();
      tensor.view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
      poisoned = true;
    }
    tensors.emplace_back(info.name, tensor);
  }
  ASSERT_TRUE(poisoned);
  ASSERT_TRUE(io::WriteTensors((model_dir / "model.safetensors").string(), tensors).ok());
  auto model = engine::LlamaModel::Load(model_dir.string()).ValueOrDie();

  const fs::path output = dir.path() / "hs";
  auto result = GenerateHiddenStates(dataset_, *model, Options(output.string()));
  ASSERT_FALSE(result.ok());
  const std::string message = result.status().message();
  EXPECT_NE(message.find("dataset row 0"), std::string::npos) << message;
  EXPECT_NE(message.find("non-finite values"), std::string::npos) << message;
  EXPECT_NE(message.find("Regenerating will not help"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(output / "hs_0.safetensors"));
}

TEST(SelectRowsToGenerate, FollowsMaxSamplesRule) {
  struct Case {
    int64_t rows;
    std::vector<int64_t> existing;
    std::optional<int64_t> max_samples;
    int64_t start;
    std::vector<int64_t> expected;
  };
  const std::vector<Case> cases = {
      {5, {}, std::nullopt, 0, {0, 1, 2, 3, 4}},
      {5, {1, 3}, std::nullopt, 0, {0, 2, 4}},
      {5, {}, 3, 0, {0, 1, 2}},
      // Existing files count against max_samples even when they lie beyond it.
      {5, {3}, 3, 0, {0, 1}},
      {5, {0, 1, 2}, 3, 0, {}},
      {5, {0, 1, 2}, 10, 0, {3, 4}},
      {5, {}, 0, 0, {}},
      {5, {7, 8}, std::nullopt, 0, {0, 1, 2, 3, 4}},
      {5, {}, std::nullopt, 3, {3, 4}},
      {5, {4}, 2, 3, {3}},
      {5, {}, std::nullopt, 9, {}},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(SelectRowsToGenerate(c.rows, c.existing, c.max_samples, c.start), c.expected)
        << "rows " << c.rows << " existing " << c.existing.size() << " max "
        << c.max_samples.value_or(-1) << " start " << c.start;
  }
}

TEST(GenerateCli, WritesFilesAndReportsErrors) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  DF_REQUIRE_SHARED(train_path, "data/stories260k/train.jsonl");
  TempDir dir;
  const std::string data_dir = dir.str() + "/data";
  ASSERT_TRUE(data::WriteTokenDataset(data_dir, LoadStories(train_path, 4)).ok());

  auto defaults = RunDraftforge({"generate", "--model", model_dir.string(), "--preprocessed-data",
                                 data_dir});
  EXPECT_NE(defaults.exit_code, 0);
  EXPECT_NE(defaults.output.find("pass --layer-ids"), std::string::npos) << defaults.output;

  auto endpoint = RunDraftforge({"generate", "--endpoint", "http://127.0.0.1:8000/v1",
                                 "--preprocessed-data", data_dir});
  EXPECT_NE(endpoint.exit_code, 0);
  EXPECT_NE(endpoint.output.find("--layer-ids is required with --endpoint"), std::string::npos)
      << endpoint.output;

  auto run = RunDraftforge({"generate", "--model", model_dir.string(), "--preprocessed-data",
                            data_dir, "--layer-ids", "1", "2", "3", "5", "--max-samples", "3",
                            "--validate-outputs", "--hidden-states-dtype", "float16"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("wrote 3 files"), std::string::npos) << run.output;
  EXPECT_EQ(ListNames(data_dir + "/hidden_states"),
            (std::vector<std::string>{kGenerateSettingsFileName, "hs_0.safetensors",
                                      "hs_1.safetensors", "hs_2.safetensors"}));
  auto file = io::SafetensorsFile::Open(data_dir + "/hidden_states/hs_2.safetensors").ValueOrDie();
  EXPECT_EQ(file.Find("hidden_states")->dtype, io::DType::kF16);

  auto bad_dtype = RunDraftforge({"generate", "--model", model_dir.string(), "--preprocessed-data",
                                  data_dir, "--layer-ids", "1", "2", "3", "5",
                                  "--hidden-states-dtype", "int8"});
  EXPECT_NE(bad_dtype.exit_code, 0);
  EXPECT_NE(bad_dtype.output.find("'int8' is not supported"), std::string::npos) << bad_dtype.output;

  for (const char* flag : {"--max-samples", "--start-idx"}) {
    SCOPED_TRACE(flag);
    auto negative = RunDraftforge({"generate", "--model", model_dir.string(), "--preprocessed-data",
                                   data_dir, "--layer-ids", "1", "2", "3", "5", flag, "-1"});
    EXPECT_NE(negative.exit_code, 0);
    EXPECT_NE(negative.output.find(flag), std::string::npos) << negative.output;
  }

  auto other_layers = RunDraftforge({"generate", "--model", model_dir.string(),
                                     "--preprocessed-data", data_dir, "--layer-ids", "1", "2", "3",
                                     "4", "--validate-outputs"});
  EXPECT_EQ(other_layers.exit_code, 1);
  EXPECT_NE(other_layers.output.find("layer ids [1, 2, 3, 5]"), std::string::npos)
      << other_layers.output;
}

}  // namespace
}  // namespace draftforge::hidden_states
