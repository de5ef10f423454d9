// End-to-end runs of `draftforge train` on the stories260k verifier with a
// few golden hidden-states files (float32, layer ids 1 2 3 5).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "draftforge/data/token_dataset.h"
#include "draftforge/data/vocab_mapping.h"
#include "draftforge/io/safetensors.h"
#include "draftforge/io/torch_tensors.h"
#include "test_support.h"

namespace draftforge {
namespace {

namespace fs = std::filesystem;
using testing::RunDraftforge;
using testing::TempDir;
using testing::WriteGoldenDataset;


nlohmann::json ReadJson(const fs::path& path) {
  std::ifstream stream(path);
  return nlohmann::json::parse(stream);
}

bool Contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }


std::vector<std::string> TrainArgs(const fs::path& model, const TempDir& dir, int64_t epochs) {
  return {"train", "--verifier", model.string(), "--data-path", (dir.path() / "data").string(),
          "--save-path", (dir.path() / "ckpt").string(), "--log-dir", (dir.path() / "logs").string(),
          "--epochs", std::to_string(epochs), "--total-seq-len", "1024", "--layer-ids", "1,2,3,5",
          "--num-workers", "2", "--lr", "1e-3"};
}

std::map<std::string, io::TensorInfo> TensorsOf(const fs::path& path) {
  auto file = io::SafetensorsFile::Open(path.string());
  EXPECT_TRUE(file.ok()) << file.status().ToString();
  std::map<std::string, io::TensorInfo> tensors;
  for (const auto& info : file->tensors()) tensors[info.name] = info;
  return tensors;
}

TEST(TrainCli, CheckpointLayoutWithVocabMapping) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  DF_REQUIRE_SHARED(golden, "data/stories260k/golden_hs");
  DF_REQUIRE_SHARED(jsonl, "data/stories260k/train.jsonl");
  TempDir dir;
  WriteGoldenDataset(golden, jsonl, dir.path() / "data");
  // Draft vocabulary: the 256 most frequent ids of the eight rows.
  std::map<int64_t, int64_t> counts;
  for (const auto& line : testing::ReadFileLines(jsonl)) {
    for (int64_t id : nlohmann::json::parse(line)["input_ids"]) counts[id] += 1;
    if (counts.size() > 400) break;
  }
  auto mapping = data::BuildVocabMapping(counts, 256, 512);
  ASSERT_TRUE(mapping.ok()) << mapping.status().ToString();
  std::string d2t = (dir.path() / "d2t.npy").string();
  std::string t2d = (dir.path() / "t2d.npy").string();
  ASSERT_TRUE(data::SaveVocabMapping(*mapping, d2t, t2d).ok());

  auto args = TrainArgs(model, dir, 2);
  args.insert(args.end(), {"--d2t-path", d2t, "--t2d-path", t2d});
  auto run = RunDraftforge(args);
  ASSERT_EQ(run.exit_code, 0) << run.output;

  fs::path checkpoint = dir.path() / "ckpt" / "1";
  ASSERT_TRUE(fs::exists(dir.path() / "ckpt" / "0" / "model.safetensors")) << run.output;
  ASSERT_TRUE(fs::exists(checkpoint / "model.safetensors")) << run.output;
  EXPECT_TRUE(fs::exists(checkpoint / "optimizer_state_dict.pt"));
  EXPECT_TRUE(fs::exists(checkpoint / "scheduler_state_dict.pt"));
  ASSERT_TRUE(fs::is_symlink(dir.path() / "ckpt" / "checkpoint_best"));
  std::string best = fs::read_symlink(dir.path() / "ckpt" / "checkpoint_best").string();
  EXPECT_TRUE(best == "0" || best == "1") << best;

  // config.json, field by field.
  std::ifstream config_stream(checkpoint / "config.json");
  std::string config_text((std::istreambuf_iterator<char>(config_stream)), std::istreambuf_iterator<char>());
  nlohmann::json config = nlohmann::json::parse(config_text);
  EXPECT_EQ(config_text, config.dump(2) + "\n") << "keys sorted, 2-space indent, trailing newline";
  EXPECT_EQ(config["architectures"], nlohmann::json({"Eagle3DraftModel"}));
  EXPECT_EQ(config["speculators_model_type"], "eagle3");
  EXPECT_EQ(config["draft_vocab_size"], 256);
  EXPECT_EQ(config["eagle_aux_hidden_state_layer_ids"], nlohmann::json({1, 2, 3}));
  EXPECT_EQ(config["norm_before_residual"], true);
  EXPECT_EQ(config["norm_before_fc"], false);
  EXPECT_EQ(config["embed_requires_grad"], false);
  EXPECT_TRUE(config["target_hidden_size"].is_null());
  EXPECT_EQ(config["tie_word_embeddings"], false);
  EXPECT_EQ(config["torch_dtype"], "bfloat16");
  EXPECT_FALSE(config.contains("model_type"));
  const auto& speculators = config["speculators_config"];
  EXPECT_EQ(speculators["algorithm"], "eagle3");
  EXPECT_EQ(speculators["default_proposal_method"], "greedy");
  EXPECT_EQ(speculators["proposal_methods"][0]["proposal_type"], "greedy");
  EXPECT_EQ(speculators["proposal_methods"][0]["speculative_tokens"], 3);
  EXPECT_EQ(speculators["proposal_methods"][0]["verifier_accept_k"], 1);
  EXPECT_EQ(speculators["proposal_methods"][0]["accept_tolerance"], 0.0);
  EXPECT_EQ(speculators["verifier"]["name_or_path"], model.string());
  EXPECT_EQ(speculators["verifier"]["architectures"], nlohmann::json({"LlamaForCausalLM"}));
  const auto& layer = config["transformer_layer_config"];
  EXPECT_EQ(layer["model_type"], "llama");
  EXPECT_EQ(layer["hidden_size"], 64);
  EXPECT_EQ(layer["intermediate_size"], 172);
  EXPECT_EQ(layer["num_attention_heads"], 8);
  EXPECT_EQ(layer["num_key_value_heads"], 4);
  EXPECT_EQ(layer["head_dim"], 8);
  EXPECT_EQ(layer["num_hidden_layers"], 1);
  EXPECT_EQ(layer["vocab_size"], 512);
  EXPECT_EQ(layer["rms_norm_eps"], 1e-05);
  EXPECT_EQ(layer["rope_theta"], 10000.0);
  EXPECT_TRUE(layer["rope_scaling"].is_null());
  EXPECT_EQ(layer["hidden_act"], "silu");
  EXPECT_EQ(layer["max_position_embeddings"], 512);
  EXPECT_EQ(layer["attention_bias"], false);
  EXPECT_EQ(layer["mlp_bias"], false);

  // model.safetensors: exact names, dtypes and shapes.
  using io::DType;
  const std::map<std::string, std::pair<DType, std::vector<int64_t>>> expected = {
      {"d2t", {DType::kI64, {256}}},
      {"t2d", {DType::kBool, {512}}},
      {"embed_tokens.weight", {DType::kBF16, {512, 64}}},
      {"fc.weight", {DType::kBF16, {64, 192}}},
      {"layers.0.hidden_norm.weight", {DType::kBF16, {64}}},
      {"layers.0.input_layernorm.weight", {DType::kBF16, {64}}},
      {"layers.0.self_attn.q_proj.weight", {DType::kBF16, {64, 128}}},
      {"layers.0.self_attn.k_proj.weight", {DType::kBF16, {32, 128}}},
      {"layers.0.self_attn.v_proj.weight", {DType::kBF16, {32, 128}}},
      {"layers.0.self_attn.o_proj.weight", {DType::kBF16, {64, 64}}},
      {"layers.0.post_attention_layernorm.weight", {DType::kBF16, {64}}},
      {"layers.0.mlp.gate_proj.weight", {DType::kBF16, {172, 64}}},
      {"layers.0.mlp.up_proj.weight", {DType::kBF16, {172, 64}}},
      {"layers.0.mlp.down_proj.weight", {DType::kBF16, {64, 172}}},
      {"norm.weight", {DType::kBF16, {64}}},
      {"lm_head.weight", {DType::kBF16, {256, 64}}},
  };
  auto tensors = TensorsOf(checkpoint / "model.safetensors");
  EXPECT_EQ(tensors.size(), expected.size());
  for (const auto& [name, dtype_shape] : expected) {
    auto it = tensors.find(name);
    ASSERT_NE(it, tensors.end()) << "missing tensor " << name;
    EXPECT_EQ(it->second.dtype, dtype_shape.first) << name;
    EXPECT_EQ(it->second.shape, dtype_shape.second) << name;
  }
  auto file = io::SafetensorsFile::Open((checkpoint / "model.safetensors").string());
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->metadata().at("format"), "pt");
  auto saved_d2t = io::ReadTensor(*file, "d2t");
  ASSERT_TRUE(saved_d2t.ok());
  EXPECT_EQ(saved_d2t->index({0}).item<int64_t>(), mapping->d2t[0]);
  EXPECT_EQ(saved_d2t->index({255}).item<int64_t>(), mapping->d2t[255]);

  // metrics.jsonl: one line per optimizer step plus one validation line per epoch.
  std::vector<std::string> lines = testing::ReadFileLines(dir.path() / "logs" / "metrics.jsonl");
  int train_lines = 0;
  int val_lines = 0;
  for (const auto& line : lines) {
    nlohmann::json record = nlohmann::json::parse(line);
    if (record.contains("train/loss")) {
      ++train_lines;
      EXPECT_TRUE(record.contains("train/full_acc_2")) << line;
      EXPECT_TRUE(record.contains("lr")) << line;
    }
    if (record.contains("val/loss_epoch")) {
      ++val_lines;
      EXPECT_TRUE(record.contains("val/cond_acc_1_epoch")) << line;
    }
  }
  EXPECT_GE(train_lines, 2);
  EXPECT_EQ(val_lines, 2);
}

TEST(TrainCli, ResumesFromLastEpoch) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  DF_REQUIRE_SHARED(golden, "data/stories260k/golden_hs");
  DF_REQUIRE_SHARED(jsonl, "data/stories260k/train.jsonl");
  TempDir dir;
  WriteGoldenDataset(golden, jsonl, dir.path() / "data");
  auto first = RunDraftforge(TrainArgs(model, dir, 1));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  nlohmann::json state0 = ReadJson(dir.path() / "ckpt" / "0" / "training_state.json");
  ASSERT_GT(state0["global_step"].get<int64_t>(), 0);

  auto second = RunDraftforge(TrainArgs(model, dir, 2));
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("resuming from"), std::string::npos) << second.output;
  EXPECT_EQ(second.output.find("train epoch 0"), std::string::npos) << "epoch 0 ran again:\n" << second.output;
  nlohmann::json state1 = ReadJson(dir.path() / "ckpt" / "1" / "training_state.json");
  EXPECT_EQ(state1["epoch"], 1);
  EXPECT_EQ(state1["global_step"].get<int64_t>(), 2 * state0["global_step"].get<int64_t>())
      << "both epochs pack the same number of batches, so the step count doubles";
  // Without a vocabulary mapping the draft keeps the full vocabulary and writes no d2t/t2d.
  auto tensors = TensorsOf(dir.path() / "ckpt" / "1" / "model.safetensors");
  EXPECT_EQ(tensors.count("d2t"), 0u);
  EXPECT_EQ(tensors.count("t2d"), 0u);
  EXPECT_EQ(tensors.at("lm_head.weight").shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(ReadJson(dir.path() / "ckpt" / "1" / "config.json")["draft_vocab_size"], 512);
}

TEST(TrainCli, SkipsSampleWithNonFiniteHiddenStates) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  DF_REQUIRE_SHARED(golden, "data/stories260k/golden_hs");
  DF_REQUIRE_SHARED(jsonl, "data/stories260k/train.jsonl");
  TempDir dir;
  WriteGoldenDataset(golden, jsonl, dir.path() / "data");
  fs::path target = dir.path() / "data" / "hidden_states" / "hs_3.safetensors";
  auto file = io::SafetensorsFile::Open(target.string());
  ASSERT_TRUE(file.ok());
  torch::Tensor ids = io::ReadTensor(*file, "token_ids").ValueOrDie();
  torch::Tensor hidden = io::ReadTensor(*file, "hidden_states").ValueOrDie();
  hidden[5][1][7] = std::numeric_limits<float>::quiet_NaN();
  fs::remove(target);
  ASSERT_TRUE(io::WriteTensors(target.string(), {{"token_ids", ids}, {"hidden_states", hidden}}, {}, false).ok());

  auto args = TrainArgs(model, dir, 1);
  args.insert(args.end(), {"--no-resume-from-checkpoint", "--on-missing", "warn"});
  auto run = RunDraftforge(args);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("skipping dataset row 3"), std::string::npos) << run.output;
  EXPECT_TRUE(fs::exists(dir.path() / "ckpt" / "0" / "model.safetensors"));

  // Under the default --on-missing generate the file is generated again.
  args.back() = "generate";
  auto regenerated = RunDraftforge(args);
  ASSERT_EQ(regenerated.exit_code, 0) << regenerated.output;
  EXPECT_TRUE(Contains(regenerated.output, "non-finite values")) << regenerated.output;
  EXPECT_TRUE(Contains(regenerated.output, "generating it again")) << regenerated.output;
}

TEST(TrainCli, RejectsRepeatedLayerIds) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  TempDir dir;
  auto run = RunDraftforge({"train", "--verifier", model.string(), "--data-path", dir.str(), "--save-path",
                            (dir.path() / "ckpt").string()});
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("--layer-ids"), std::string::npos) << run.output;
}

// Returns TrainArgs plus `extra` for the golden dataset in `dir`. A flag of
// `extra` that TrainArgs already sets replaces the value there, since
// the command rejects repeated options.
std::vector<std::string> TrainArgsWith(const fs::path& model, const TempDir& dir, int64_t epochs,
                                       const std::vector<std::string>& extra) {
  auto args = TrainArgs(model, dir, epochs);
  for (size_t i = 0; i < extra.size(); ++i) {
    auto it = std::find(args.begin(), args.end(), extra[i]);
    if (it != args.end() && i + 1 < extra.size()) {
      *(it + 1) = extra[++i];
    } else {
      args.push_back(extra[i]);
    }
  }
  return args;
}

testing::CommandOutput RunTrain(const fs::path& model, const TempDir& dir, int64_t epochs,
                                const std::vector<std::string>& extra = {}) {
  return RunDraftforge(TrainArgsWith(model, dir, epochs, extra));
}

TEST(TrainCli, EpochWithoutSamplesFails) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  DF_REQUIRE_SHARED(golden, "data/stories260k/golden_hs");
  DF_REQUIRE_SHARED(jsonl, "data/stories260k/train.jsonl");
  TempDir dir;
  WriteGoldenDataset(golden, jsonl, dir.path() / "data");
  fs::remove_all(dir.path() / "data" / "hidden_states");
  fs::create_directories(dir.path() / "data" / "hidden_states");

  auto run = RunTrain(model, dir, 1, {"--on-missing", "skip"});
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_TRUE(Contains(run.output, "no usable training sample")) << run.output;
  EXPECT_TRUE(Contains(run.output, "all 7 training rows were skipped")) << run.output;
  EXPECT_TRUE(Contains(run.output, "draftforge generate")) << run.output;
  EXPECT_FALSE(fs::exists(dir.path() / "ckpt" / "0"));
}

TEST(TrainCli, ValidationWithoutSamplesIsNeverBest) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  DF_REQUIRE_SHARED(golden, "data/stories260k/golden_hs");
  DF_REQUIRE_SHARED(jsonl, "data/stories260k/train.jsonl");
  TempDir dir;
  WriteGoldenDataset(golden, jsonl, dir.path() / "data");
  fs::remove(dir.path() / "data" / "hidden_states" / "hs_7.safetensors");  // the only validation row

  auto run = RunTrain(model, dir, 1, {"--on-missing", "warn"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(Contains(run.output, "validation had no usable sample")) << run.output;
  nlohmann::json state = ReadJson(dir.path() / "ckpt" / "0" / "training_state.json");
  EXPECT_TRUE(state["best_val_loss"].is_null()) << state.dump();
  EXPECT_FALSE(fs::is_symlink(dir.path() / "ckpt" / "checkpoint_best"));
}

TEST(TrainCli, DivergedLossStopsWithError) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  DF_REQUIRE_SHARED(golden, "data/stories260k/golden_hs");
  DF_REQUIRE_SHARED(jsonl, "data/stories260k/train.jsonl");
  TempDir dir;
  WriteGoldenDataset(golden, jsonl, dir.path() / "data");

  auto run = RunTrain(model, dir, 1, {"--lr", "1e30", "--total-seq-len", "256", "--scheduler-type", "none"});
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_TRUE(Contains(run.output, "training loss is")) << run.output;
  EXPECT_TRUE(Contains(run.output, "lower --lr")) << run.output;
  EXPECT_FALSE(fs::exists(dir.path() / "ckpt" / "0"));
  EXPECT_FALSE(fs::is_symlink(dir.path() / "ckpt" / "checkpoint_best"));
}

TEST(TrainCli, RejectsInvalidNumericFlags) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--lr", "-1"},
      {"--lr", "nan"},
      {"--epochs", "0"},
      {"--draft-vocab-size", "0"},
      {"--draft-vocab-size", "513"},
      {"--noise-std", "nan"},
  };  // the other flags and values: TrainOptions.ValidateRejectsOutOfRangeValues
  for (const auto& [flag, value] : cases) {
    auto run = RunTrain(model, dir, 1, {flag, value});
    EXPECT_EQ(run.exit_code, 1) << flag << " " << value << ":\n" << run.output;
    EXPECT_TRUE(Contains(run.output, "Invalid")) << flag << " " << value << ":\n" << run.output;
    EXPECT_TRUE(Contains(run.output, flag)) << flag << " " << value << ":\n" << run.output;
    EXPECT_FALSE(Contains(run.output, "c10::Error")) << run.output;
  }
}

TEST(TrainCli, DraftVocabEqualToVerifierMeansNoMapping) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  DF_REQUIRE_SHARED(golden, "data/stories260k/golden_hs");
  DF_REQUIRE_SHARED(jsonl, "data/stories260k/train.jsonl");
  TempDir dir;
  WriteGoldenDataset(golden, jsonl, dir.path() / "data");

  auto run = RunTrain(model, dir, 1, {"--draft-vocab-size", "512", "--max-steps", "1"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(Contains(run.output, "without a vocabulary mapping")) << run.output;
  EXPECT_FALSE(fs::exists(dir.path() / "data" / "d2t.npy"));
  EXPECT_FALSE(fs::exists(dir.path() / "data" / "t2d.npy"));

  // A cached mapping of another size conflicts with --draft-vocab-size 512.
  std::map<int64_t, int64_t> counts;
  for (int64_t id = 0; id < 300; ++id) counts[id] = 300 - id;
  auto mapping = data::BuildVocabMapping(counts, 256, 512);
  ASSERT_TRUE(mapping.ok()) << mapping.status().ToString();
  fs::path d2t = fs::absolute(dir.path() / "data" / "d2t.npy");
  ASSERT_TRUE(data::SaveVocabMapping(*mapping, d2t.string(), (dir.path() / "data" / "t2d.npy").string()).ok());
  auto stale = RunTrain(model, dir, 1, {"--draft-vocab-size", "512", "--no-resume-from-checkpoint"});
  EXPECT_EQ(stale.exit_code, 1) << stale.output;
  EXPECT_TRUE(Contains(stale.output, d2t.lexically_normal().string())) << stale.output;
  EXPECT_TRUE(Contains(stale.output, "delete")) << stale.output;
}

TEST(TrainCli, NoResumeRemovesOldEpochsOnly) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  DF_REQUIRE_SHARED(golden, "data/stories260k/golden_hs");
  DF_REQUIRE_SHARED(jsonl, "data/stories260k/train.jsonl");
  TempDir dir;
  WriteGoldenDataset(golden, jsonl, dir.path() / "data");
  fs::path ckpt = dir.path() / "ckpt";
  fs::create_directories(ckpt / "5");
  fs::create_directories(ckpt / "notes");
  std::ofstream(ckpt / "readme.txt") << "user file\n";
  fs::create_directory_symlink("5", ckpt / "checkpoint_best");

  auto run = RunTrain(model, dir, 1, {"--no-resume-from-checkpoint", "--max-steps", "1"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(Contains(run.output, "removed checkpoint " + (ckpt / "5").string())) << run.output;
  EXPECT_FALSE(fs::exists(ckpt / "5"));
  EXPECT_TRUE(fs::exists(ckpt / "notes"));
  EXPECT_TRUE(fs::exists(ckpt / "readme.txt"));
  EXPECT_FALSE(fs::is_symlink(ckpt / "checkpoint_best") &&
               fs::read_symlink(ckpt / "checkpoint_best").string() == "5");
}

TEST(TrainCli, RejectsUnwritableOutputDirectories) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  DF_REQUIRE_SHARED(golden, "data/stories260k/golden_hs");
  DF_REQUIRE_SHARED(jsonl, "data/stories260k/train.jsonl");
  TempDir dir;
  WriteGoldenDataset(golden, jsonl, dir.path() / "data");
  fs::path regular_file = dir.path() / "file";
  std::ofstream(regular_file) << "x";

  auto save = RunTrain(model, dir, 1, {"--save-path", regular_file.string()});
  EXPECT_EQ(save.exit_code, 1) << save.output;
  EXPECT_TRUE(Contains(save.output, "--save-path " + regular_file.string())) << save.output;
  EXPECT_TRUE(Contains(save.output, "not a directory")) << save.output;
  EXPECT_FALSE(Contains(save.output, "train epoch")) << save.output;

  auto log = RunTrain(model, dir, 1, {"--log-dir", "/proc/nope"});
  EXPECT_EQ(log.exit_code, 1) << log.output;
  EXPECT_TRUE(Contains(log.output, "--log-dir /proc/nope")) << log.output;
  EXPECT_FALSE(Contains(log.output, "train epoch")) << log.output;
}

TEST(TrainCli, MaxStepsMidEpochResumesRest) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  DF_REQUIRE_SHARED(golden, "data/stories260k/golden_hs");
  DF_REQUIRE_SHARED(jsonl, "data/stories260k/train.jsonl");
  TempDir dir;
  WriteGoldenDataset(golden, jsonl, dir.path() / "data");
  const std::vector<std::string> short_rows = {"--total-seq-len", "256"};

  auto full = RunTrain(model, dir, 1, {"--total-seq-len", "256", "--save-path", (dir.path() / "full").string()});
  ASSERT_EQ(full.exit_code, 0) << full.output;
  int64_t epoch_steps = ReadJson(dir.path() / "full" / "0" / "training_state.json")["global_step"].get<int64_t>();
  ASSERT_GE(epoch_steps, 2);

  auto first = RunTrain(model, dir, 1, {"--total-seq-len", "256", "--max-steps", "1"});
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_TRUE(Contains(first.output, "stopped after --max-steps 1 in the middle of epoch 0")) << first.output;
  nlohmann::json partial = ReadJson(dir.path() / "ckpt" / "0" / "training_state.json");
  EXPECT_EQ(partial["epoch_complete"], false);
  EXPECT_EQ(partial["batches_done"], 1);

  auto second = RunTrain(model, dir, 1, short_rows);
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_TRUE(Contains(second.output, "training the rest of epoch 0")) << second.output;
  nlohmann::json done = ReadJson(dir.path() / "ckpt" / "0" / "training_state.json");
  EXPECT_EQ(done["epoch_complete"], true);
  EXPECT_EQ(done["global_step"].get<int64_t>(), epoch_steps);

  auto third = RunTrain(model, dir, 1, short_rows);
  ASSERT_EQ(third.exit_code, 0) << third.output;
  EXPECT_TRUE(Contains(third.output, "training is already complete")) << third.output;
  EXPECT_FALSE(Contains(third.output, "train epoch")) << third.output;
}

TEST(TrainCli, ResumeRejectsOtherConfiguration) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  DF_REQUIRE_SHARED(golden, "data/stories260k/golden_hs");
  DF_REQUIRE_SHARED(jsonl, "data/stories260k/train.jsonl");
  TempDir dir;
  WriteGoldenDataset(golden, jsonl, dir.path() / "data");
  auto first = RunTrain(model, dir, 1, {"--max-steps", "1"});
  ASSERT_EQ(first.exit_code, 0) << first.output;

  std::map<int64_t, int64_t> counts;
  for (int64_t id = 0; id < 300; ++id) counts[id] = 300 - id;
  auto mapping = data::BuildVocabMapping(counts, 256, 512);
  ASSERT_TRUE(mapping.ok());
  std::string d2t = (dir.path() / "d2t.npy").string();
  std::string t2d = (dir.path() / "t2d.npy").string();
  ASSERT_TRUE(data::SaveVocabMapping(*mapping, d2t, t2d).ok());
  auto other = RunTrain(model, dir, 2, {"--d2t-path", d2t, "--t2d-path", t2d});
  EXPECT_EQ(other.exit_code, 1) << other.output;
  EXPECT_TRUE(Contains(other.output, "different configuration")) << other.output;
  EXPECT_TRUE(Contains(other.output, "lm_head.weight")) << other.output;
  EXPECT_TRUE(Contains(other.output, "--no-resume-from-checkpoint")) << other.output;
  EXPECT_FALSE(Contains(other.output, "Corrupt")) << other.output;

  // An epoch folder without training_state.json, as speculators writes it.
  fs::path foreign = dir.path() / "ckpt" / "7";
  fs::create_directories(foreign);
  std::ofstream(foreign / "config.json") << "{}\n";
  auto speculators = RunTrain(model, dir, 9);
  EXPECT_EQ(speculators.exit_code, 1) << speculators.output;
  EXPECT_TRUE(Contains(speculators.output, "has no training_state.json")) << speculators.output;
  EXPECT_TRUE(Contains(speculators.output, "--no-resume-from-checkpoint")) << speculators.output;
}

TEST(TrainCli, SameSeedIgnoresNumWorkers) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  DF_REQUIRE_SHARED(golden, "data/stories260k/golden_hs");
  DF_REQUIRE_SHARED(jsonl, "data/stories260k/train.jsonl");
  TempDir dir;
  WriteGoldenDataset(golden, jsonl, dir.path() / "data");
  auto serial = RunTrain(model, dir, 1, {"--save-path", (dir.path() / "serial").string(), "--num-workers", "0",
                                         "--total-seq-len", "256", "--noise-std", "0.5"});
  ASSERT_EQ(serial.exit_code, 0) << serial.output;
  auto threaded = RunTrain(model, dir, 1, {"--save-path", (dir.path() / "threaded").string(), "--num-workers",
                                           "3", "--total-seq-len", "256", "--noise-std", "0.5"});
  ASSERT_EQ(threaded.exit_code, 0) << threaded.output;
  auto read_bytes = [](const fs::path& path) {
    std::ifstream stream(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
  };
  std::string serial_bytes = read_bytes(dir.path() / "serial" / "0" / "model.safetensors");
  ASSERT_FALSE(serial_bytes.empty());
  EXPECT_TRUE(serial_bytes == read_bytes(dir.path() / "threaded" / "0" / "model.safetensors"))
      << "--num-workers 0 and 3 trained different weights";
}

TEST(TrainCli, LogsUnsavedFinalEpoch) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  DF_REQUIRE_SHARED(golden, "data/stories260k/golden_hs");
  DF_REQUIRE_SHARED(jsonl, "data/stories260k/train.jsonl");
  TempDir dir;
  WriteGoldenDataset(golden, jsonl, dir.path() / "data");
  auto run = RunTrain(model, dir, 2, {"--checkpoint-freq", "3"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(Contains(run.output, "the final epoch 1 was not saved")) << run.output;
  EXPECT_FALSE(fs::exists(dir.path() / "ckpt" / "1"));
}

TEST(TrainCli, InterruptSavesPartialEpoch) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  DF_REQUIRE_SHARED(golden, "data/stories260k/golden_hs");
  DF_REQUIRE_SHARED(jsonl, "data/stories260k/train.jsonl");
  TempDir dir;
  WriteGoldenDataset(golden, jsonl, dir.path() / "data");
  // Short rows give many batches per epoch, so the signal lands inside one.
  std::string command = "'" + testing::DraftforgeBinary() + "'";
  for (const auto& arg : TrainArgsWith(model, dir, 1000, {"--total-seq-len", "64"})) command += " '" + arg + "'";
  fs::path metrics = dir.path() / "logs" / "metrics.jsonl";
  fs::path output = dir.path() / "output.txt";
  std::string script = command + " > '" + output.string() + "' 2>&1 & pid=$!; i=0; while [ ! -s '" +
                       metrics.string() + "' ] && kill -0 $pid && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; kill -INT $pid; "
                       "wait $pid";
  int status = std::system(script.c_str());
  std::ifstream stream(output);
  std::string text((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
  ASSERT_TRUE(WIFEXITED(status)) << text;
  EXPECT_EQ(WEXITSTATUS(status), 1) << text;
  EXPECT_TRUE(Contains(text, "interrupted by SIGINT")) << text;
  std::optional<int64_t> epoch;
  for (const auto& entry : fs::directory_iterator(dir.path() / "ckpt")) {
    if (entry.path().filename() != "checkpoint_best") epoch = std::stoll(entry.path().filename().string());
  }
  ASSERT_TRUE(epoch.has_value()) << text;
}

}  // namespace
}  // namespace draftforge

namespace draftforge {
namespace {

// Training throughput on stories260k at the default --total-seq-len 8192 and
// 3 TTT steps. Slow (hidden-states generation for 600 rows plus training), so
// it runs only when DRAFTFORGE_TRAIN_BENCH_DIR names a work directory, which
// keeps the generated data between runs. The floor of 4,400 tokens/s is what
// a PyTorch eager float32 implementation reached on a 2-core machine.
TEST(TrainCli, ThroughputOnStories) {
  const char* bench_dir = std::getenv("DRAFTFORGE_TRAIN_BENCH_DIR");
  if (bench_dir == nullptr) GTEST_SKIP() << "set DRAFTFORGE_TRAIN_BENCH_DIR to run the throughput check";
  DF_REQUIRE_SHARED(model, "models/stories260k");
  DF_REQUIRE_SHARED(jsonl, "data/stories260k/train.jsonl");
  fs::path root(bench_dir);
  fs::path data_dir = root / "data";
  if (!fs::exists(data_dir / "state.json")) {
    std::vector<std::string> lines = testing::ReadFileLines(jsonl);
    std::vector<data::TokenRow> rows;
    for (size_t i = 0; i < 600; ++i) {
      data::TokenRow row;
      row.input_ids = nlohmann::json::parse(lines[i])["input_ids"].get<std::vector<int64_t>>();
      row.loss_mask.assign(row.input_ids.size(), 1);
      rows.push_back(row);
    }
    ASSERT_TRUE(data::WriteTokenDataset(data_dir.string(), data::TokenDataset::FromRows(rows)).ok());
  }
  auto generate = RunDraftforge({"generate", "--model", model.string(), "--preprocessed-data", data_dir.string(),
                                 "--layer-ids", "1", "2", "3", "5"});
  ASSERT_EQ(generate.exit_code, 0) << generate.output;

  auto run = RunDraftforge({"train", "--verifier", model.string(), "--data-path", data_dir.string(), "--save-path",
                            (root / "ckpt").string(), "--log-dir", (root / "logs").string(), "--epochs", "1",
                            "--layer-ids", "1,2,3,5", "--max-steps", "10", "--no-resume-from-checkpoint"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto at = run.output.find("tokens/s");
  ASSERT_NE(at, std::string::npos) << run.output;
  auto start = run.output.rfind(", ", at);
  double tokens_per_second = std::stod(run.output.substr(start + 2, at - start - 2));
  std::cout << "training throughput: " << tokens_per_second << " tokens/s\n";
  EXPECT_GT(tokens_per_second, 4400.0) << run.output;
}

}  // namespace
}  // namespace draftforge
