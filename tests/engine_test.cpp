#include "draftforge/engine/llama_model.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "draftforge/engine/rope.h"
#include "draftforge/io/safetensors.h"
#include "draftforge/io/torch_tensors.h"
#include "draftforge/util/fs.h"
#include "test_support.h"

namespace draftforge::engine {
namespace {

namespace fs = std::filesystem;
using draftforge::testing::TempDir;

std::vector<std::vector<int64_t>> ReadTrainLines(const fs::path& path) {
  std::vector<std::vector<int64_t>> rows;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    rows.push_back(nlohmann::json::parse(line)["input_ids"].get<std::vector<int64_t>>());
  }
  return rows;
}

torch::Tensor ReadGolden(const fs::path& path, const std::string& name) {
  auto file = io::SafetensorsFile::Open(path.string()).ValueOrDie();
  return io::ReadTensor(file, name).ValueOrDie();
}

// Copies the stories260k checkpoint into a fresh temporary directory so a
// test can damage the copy.
void CopyModel(const fs::path& source, const fs::path& target) {
  for (const char* name : {"config.json", "model.safetensors"}) {
    fs::copy_file(source / name, target / name);
    fs::permissions(target / name, fs::perms::owner_read | fs::perms::owner_write);
  }
}

TEST(Engine, ReproducesGoldenHiddenStatesAndLogits) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  DF_REQUIRE_SHARED(golden_dir, "data/stories260k/golden_hs");
  DF_REQUIRE_SHARED(train_path, "data/stories260k/train.jsonl");
  auto model = LlamaModel::Load(model_dir.string());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto rows = ReadTrainLines(train_path);
  ASSERT_EQ(rows.size(), 3000u);

  auto index = nlohmann::json::parse(ReadFileToString((golden_dir / "index.json").string()).ValueOrDie());
  auto layer_ids = index["layer_ids"].get<std::vector<int64_t>>();
  ASSERT_EQ(index["entries"].size(), 8u);
  double max_hidden_error = 0;
  double max_logits_error = 0;
  for (const auto& entry : index["entries"]) {
    SCOPED_TRACE(entry.dump());
    const auto& ids = rows.at(entry["train_line"].get<size_t>());
    ASSERT_EQ(static_cast<int64_t>(ids.size()), entry["seq_len"].get<int64_t>());
    auto golden_ids = ReadGolden(golden_dir / entry["hs_file"].get<std::string>(), "token_ids");
    ASSERT_TRUE(torch::equal(golden_ids, torch::tensor(ids, torch::kInt64)));

    auto result = (*model)->Forward(ids, layer_ids, /*compute_logits=*/true);
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    auto golden_hidden = ReadGolden(golden_dir / entry["hs_file"].get<std::string>(), "hidden_states");
    auto golden_logits = ReadGolden(golden_dir / entry["logits_file"].get<std::string>(), "logits");
    ASSERT_EQ(result->hidden_states.sizes(), golden_hidden.sizes());
    ASSERT_EQ(result->logits.sizes(), golden_logits.sizes());
    double hidden_error = (result->hidden_states - golden_hidden).abs().max().item<double>();
    double logits_error = (result->logits - golden_logits).abs().max().item<double>();
    EXPECT_LT(hidden_error, 1e-4);
    EXPECT_LT(logits_error, 1e-4);
    max_hidden_error = std::max(max_hidden_error, hidden_error);
    max_logits_error = std::max(max_logits_error, logits_error);
  }
  std::printf("max abs error over 8 golden samples: hidden states %.3g, logits %.3g\n",
              max_hidden_error, max_logits_error);
}

TEST(Engine, LayerIdSemantics) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  auto model = LlamaModel::Load(model_dir.string()).ValueOrDie();
  std::vector<int64_t> ids = {1, 403, 407, 261, 378, 432, 383};
  std::vector<int64_t> unordered = {5, 0, 3};
  auto result = model->Forward(ids, unordered, /*compute_logits=*/true);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->layer_ids, (std::vector<int64_t>{0, 3, 5}));
  ASSERT_EQ(result->hidden_states.sizes(), (std::vector<int64_t>{7, 3, 64}));

  // Id 0 is the embedding output.
  auto embeddings = ReadGolden(model_dir / "model.safetensors", "model.embed_tokens.weight")
                        .index_select(0, torch::tensor(ids, torch::kInt64));
  EXPECT_TRUE(torch::equal(result->hidden_states.select(1, 0), embeddings));

  // Id N is the last layer's output before the final norm: the norm and the
  // tied LM head applied to it give the logits.
  auto norm = ReadGolden(model_dir / "model.safetensors", "model.norm.weight");
  auto last = result->hidden_states.select(1, 2);
  auto normed = last * torch::rsqrt(last.pow(2).mean(-1, true) + 1e-5) * norm;
  auto logits = torch::matmul(normed, ReadGolden(model_dir / "model.safetensors",
                                                  "model.embed_tokens.weight").t());
  EXPECT_LT((logits - result->logits).abs().max().item<double>(), 1e-5);

  // The greedy story from the model card: argmax of each row is the next token.
  std::vector<int64_t> greedy = {1, 403, 407, 261, 378, 432, 383, 286};
  auto greedy_result = model->Forward(greedy, std::vector<int64_t>{}, true).ValueOrDie();
  EXPECT_EQ(greedy_result.hidden_states.size(1), 0);
  auto predicted = greedy_result.logits.argmax(-1);
  for (size_t t = 0; t + 1 < greedy.size(); ++t) {
    EXPECT_EQ(predicted[t].item<int64_t>(), greedy[t + 1]) << "position " << t;
  }
}

TEST(Engine, RejectsBadLayerIdsAndTokens) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  auto model = LlamaModel::Load(model_dir.string()).ValueOrDie();
  std::vector<int64_t> ids = {1, 403, 407};

  auto duplicate = model->Forward(ids, std::vector<int64_t>{2, 2, 2, 5});
  ASSERT_FALSE(duplicate.ok());
  EXPECT_EQ(duplicate.status().code(), StatusCode::kInvalid);
  EXPECT_NE(duplicate.status().message().find("layer id 2 is given twice"), std::string::npos)
      << duplicate.status().message();

  auto out_of_range = model->Forward(ids, std::vector<int64_t>{1, 6});
  ASSERT_FALSE(out_of_range.ok());
  EXPECT_NE(out_of_range.status().message().find("layer id 6 is out of range"), std::string::npos)
      << out_of_range.status().message();
  EXPECT_FALSE(model->Forward(ids, std::vector<int64_t>{-1}).ok());

  auto bad_token = model->Forward(std::vector<int64_t>{1, 512}, std::vector<int64_t>{1});
  ASSERT_FALSE(bad_token.ok());
  EXPECT_NE(bad_token.status().message().find("token id 512 at position 1"), std::string::npos)
      << bad_token.status().message();
  EXPECT_FALSE(model->Forward(std::vector<int64_t>{}, std::vector<int64_t>{1}).ok());
  EXPECT_FALSE(model->Forward(std::vector<int64_t>(513, 1), std::vector<int64_t>{1}).ok());
}

TEST(Engine, MissingWeightFileNamesDirectory) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  TempDir dir;
  CopyModel(model_dir, dir.path());
  fs::remove(dir.path() / "model.safetensors");
  auto model = LlamaModel::Load(dir.str());
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), StatusCode::kNotFound);
  EXPECT_NE(model.status().message().find(dir.str()), std::string::npos) << model.status().message();

  fs::remove(dir.path() / "config.json");
  auto no_config = LlamaModel::Load(dir.str());
  ASSERT_FALSE(no_config.ok());
  EXPECT_NE(no_config.status().message().find("config.json"), std::string::npos)
      << no_config.status().message();
}

TEST(Engine, TruncatedWeightFileIsCorrupt) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  for (uintmax_t size : {uintmax_t{4}, uintmax_t{100}, uintmax_t{500'000}}) {
    SCOPED_TRACE(size);
    TempDir dir;
    CopyModel(model_dir, dir.path());
    fs::resize_file(dir.path() / "model.safetensors", size);
    auto model = LlamaModel::Load(dir.str());
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().code(), StatusCode::kCorrupt);
    EXPECT_NE(model.status().message().find((dir.path() / "model.safetensors").string()),
              std::string::npos)
        << model.status().message();
  }
}

TEST(Engine, MissingTensorIsNamed) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  TempDir dir;
  CopyModel(model_dir, dir.path());
  std::string weights = (dir.path() / "model.safetensors").string();
  std::vector<std::pair<std::string, torch::Tensor>> remaining;
  {
    auto file = io::SafetensorsFile::Open(weights).ValueOrDie();
    for (const auto& info : file.tensors()) {
      if (info.name == "model.layers.3.mlp.up_proj.weight") continue;
      remaining.emplace_back(info.name, io::ReadTensor(file, info.name).ValueOrDie());
    }
  }
  ASSERT_TRUE(io::WriteTensors(weights, remaining).ok());
  auto model = LlamaModel::Load(dir.str());
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), StatusCode::kNotFound);
  EXPECT_NE(model.status().message().find("'model.layers.3.mlp.up_proj.weight'"), std::string::npos)
      << model.status().message();
  EXPECT_NE(model.status().message().find(weights), std::string::npos) << model.status().message();
}

TEST(Engine, ShardedCheckpointWithBf16Weights) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  auto reference = LlamaModel::Load(model_dir.string()).ValueOrDie();

  // Two shards in bfloat16 with an index, and the LM head stored explicitly.
  TempDir dir;
  fs::copy_file(model_dir / "config.json", dir.path() / "config.json");
  auto source = io::SafetensorsFile::Open((model_dir / "model.safetensors").string()).ValueOrDie();
  std::vector<std::pair<std::string, torch::Tensor>> shards[2];
  nlohmann::json weight_map;
  for (const auto& info : source.tensors()) {
    int shard = info.name.find("layers.") != std::string::npos && info.name < "model.layers.3" ? 0 : 1;
    shards[shard].emplace_back(info.name, io::ReadTensor(source, info.name).ValueOrDie().to(torch::kBFloat16));
    weight_map[info.name] = fmt::format("model-0000{}-of-00002.safetensors", shard + 1);
  }
  shards[1].emplace_back("lm_head.weight",
                         io::ReadTensor(source, "model.embed_tokens.weight").ValueOrDie().to(torch::kBFloat16));
  weight_map["lm_head.weight"] = "model-00002-of-00002.safetensors";
  for (int shard = 0; shard < 2; ++shard) {
    auto path = dir.path() / fmt::format("model-0000{}-of-00002.safetensors", shard + 1);
    ASSERT_TRUE(io::WriteTensors(path.string(), shards[shard]).ok());
  }
  ASSERT_TRUE(WriteFileAtomic((dir.path() / "model.safetensors.index.json").string(),
                              nlohmann::json{{"weight_map", weight_map}}.dump())
                  .ok());

  auto model = LlamaModel::Load(dir.str());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  std::vector<int64_t> ids = {1, 403, 407, 261, 378, 432, 383, 286};
  auto expected = reference->Forward(ids, std::vector<int64_t>{1, 5}, true).ValueOrDie();
  auto actual = (*model)->Forward(ids, std::vector<int64_t>{1, 5}, true).ValueOrDie();
  EXPECT_EQ(actual.hidden_states.scalar_type(), torch::kFloat32);
  // bf16 rounding of the weights (8 significant bits) moves outputs slightly.
  double difference = (actual.logits - expected.logits).abs().max().item<double>();
  EXPECT_GT(difference, 0.0);
  EXPECT_LT(difference, 1.0);
}

TEST(Rope, Llama3ScalingBands) {
  ModelConfig config;
  config.head_dim = 128;
  config.rope_theta = 500000.0;
  config.rope_scaling = {{"rope_type", "llama3"},
                         {"factor", 8.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 8192}};
  auto frequencies = ComputeRopeInverseFrequencies(config);
  ASSERT_TRUE(frequencies.ok()) << frequencies.status().ToString();
  ASSERT_EQ(frequencies->size(0), 64);
  // Expected values from the transformers formula evaluated in Python floats.
  EXPECT_DOUBLE_EQ((*frequencies)[0].item<double>(), 1.0);                     // high band: unchanged
  EXPECT_NEAR((*frequencies)[20].item<double>(), 0.016560440080994446, 1e-15);  // high band
  EXPECT_NEAR((*frequencies)[31].item<double>(), 0.0008567514129196321, 1e-15);  // blended band
  EXPECT_NEAR((*frequencies)[34].item<double>(), 0.00017850781276799638, 1e-15);  // blended band
  EXPECT_NEAR((*frequencies)[40].item<double>(), 3.428102195952591e-05, 1e-17);  // low band: / 8

  config.rope_scaling = {{"rope_type", "yarn"}, {"factor", 4.0}};
  auto unsupported = ComputeRopeInverseFrequencies(config);
  ASSERT_FALSE(unsupported.ok());
  EXPECT_EQ(unsupported.status().code(), StatusCode::kUnimplemented);

  config.rope_scaling = {{"type", "linear"}, {"factor", 4.0}};
  auto linear = ComputeRopeInverseFrequencies(config).ValueOrDie();
  EXPECT_DOUBLE_EQ(linear[0].item<double>(), 0.25);
}

TEST(Rope, RotateHalfConvention) {
  // d = 4: pairs are (x0, x2) and (x1, x3), not adjacent elements.
  auto inverse_frequencies = torch::tensor({1.0, 0.5}, torch::kFloat64);
  auto tables = ComputeRotaryTables(inverse_frequencies, torch::tensor({0, 2}, torch::kInt64));
  auto x = torch::tensor({{1.0f, 2.0f, 3.0f, 4.0f}, {1.0f, 2.0f, 3.0f, 4.0f}});  // [T=2, d=4]
  auto rotated = ApplyRotary(x, tables);
  EXPECT_TRUE(torch::allclose(rotated[0], x[0]));  // position 0 is the identity
  // Position 2: pair (x0, x2) turns by angle 2, pair (x1, x3) by angle 1.
  auto expected = torch::tensor({1.0 * std::cos(2.0) - 3.0 * std::sin(2.0),
                                 2.0 * std::cos(1.0) - 4.0 * std::sin(1.0),
                                 3.0 * std::cos(2.0) + 1.0 * std::sin(2.0),
                                 4.0 * std::cos(1.0) + 2.0 * std::sin(1.0)},
                                torch::kFloat32);
  EXPECT_TRUE(torch::allclose(rotated[1], expected, 1e-6, 1e-6)) << rotated[1];
}

}  // namespace
}  // namespace draftforge::engine
