// The incremental engine forward, EAGLE-3 draft loading and `draftforge
// eval`: speculative decoding must reproduce plain greedy decoding token for
// token, and drafts that do not fit the verifier must be rejected by field.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "draftforge/engine/llama_model.h"
#include "draftforge/eval/eagle3_drafter.h"
#include "draftforge/eval/report.h"
#include "draftforge/eval/run_eval.h"
#include "draftforge/io/safetensors.h"
#include "draftforge/io/torch_tensors.h"
#include "draftforge/tokenizer/tokenizer.h"
#include "draftforge/train/attention.h"
#include "draftforge/train/checkpoint.h"
#include "draftforge/train/draft_config.h"
#include "draftforge/train/eagle3_model.h"
#include "draftforge/train/verifier_weights.h"
#include "test_support.h"

namespace draftforge {
namespace {

namespace fs = std::filesystem;
using testing::RunDraftforge;
using testing::TempDir;

std::unique_ptr<engine::LlamaModel> LoadModel(const fs::path& dir) {
  auto model = engine::LlamaModel::Load(dir.string());
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  return model.ok() ? std::move(*model) : nullptr;
}

// Returns the whole input_ids (prompt and greedy continuation) of line 1.
std::vector<int64_t> FirstGreedySequence(const fs::path& greedy_jsonl) {
  std::ifstream stream(greedy_jsonl);
  std::string line;
  std::getline(stream, line);
  return nlohmann::json::parse(line)["input_ids"].get<std::vector<int64_t>>();
}

// Saves an untrained draft (random init, seed 7) for `model` with a draft
// vocabulary of the even token ids, so d2t is not trivial.
void SaveRandomDraft(const engine::LlamaModel& model, const fs::path& dir) {
  train::DraftOptions options;
  options.draft_vocab_size = model.config().vocab_size / 2;
  auto config = train::MakeDraftConfig(model.config(), options);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  torch::manual_seed(7);
  train::Eagle3DraftModel draft(*config, torch::TensorOptions().dtype(torch::kFloat32));
  std::vector<int64_t> d2t(config->draft_vocab_size);
  std::vector<uint8_t> t2d(config->vocab_size, 0);
  for (int64_t i = 0; i < config->draft_vocab_size; ++i) {
    d2t[i] = i;  // draft index i is token 2i
    t2d[2 * i] = 1;
  }
  ASSERT_TRUE(train::SetVocabMapping(draft, d2t, t2d).ok());
  auto weights = train::LoadVerifierWeights(model.model_dir());
  ASSERT_TRUE(weights.ok()) << weights.status().ToString();
  ASSERT_TRUE(train::InstallVerifierWeights(draft, *weights, /*keep_lm_head=*/false).ok());
  train::SpeculatorInfo info;
  info.verifier_name_or_path = model.model_dir();
  info.aux_layer_ids = {1, 2, 3};
  auto status = train::SaveDraftModel(dir.string(), draft, train::SpeculatorConfigJson(*config, info));
  ASSERT_TRUE(status.ok()) << status.ToString();
}

// Rewrites DIR/config.json through `edit`.
void EditConfig(const fs::path& dir, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json config;
  {
    std::ifstream in(dir / "config.json");
    config = nlohmann::json::parse(in);
  }
  edit(config);
  std::ofstream out(dir / "config.json");
  out << config.dump(2);
}

TEST(EngineIncremental, MatchesFullForward) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  DF_REQUIRE_SHARED(greedy, "data/stories260k/greedy.jsonl");
  auto model = LoadModel(model_dir);
  ASSERT_NE(model, nullptr);
  std::vector<int64_t> ids = FirstGreedySequence(greedy);
  ids.resize(40);
  const std::vector<int64_t> layer_ids = {1, 3, 5};
  auto full = model->Forward(ids, layer_ids, /*compute_logits=*/true);
  ASSERT_TRUE(full.ok()) << full.status().ToString();

  // Chunks of 10, 1, 4 and 25 tokens, with a rejected chunk dropped by
  // Truncate in between, must give the rows of the full forward.
  auto cache = model->NewCache(64);
  ASSERT_TRUE(cache.ok()) << cache.status().ToString();
  std::vector<torch::Tensor> hidden;
  std::vector<torch::Tensor> logits;
  size_t begin = 0;
  for (size_t length : {10, 1, 4, 25}) {
    std::span<const int64_t> chunk(ids.data() + begin, length);
    if (begin == 11) {
      const std::vector<int64_t> rejected = {5, 6, 7};
      ASSERT_TRUE(model->ForwardIncremental(rejected, layer_ids, *cache, true).ok());
      cache->Truncate(11);
    }
    auto step = model->ForwardIncremental(chunk, layer_ids, *cache, true);
    ASSERT_TRUE(step.ok()) << step.status().ToString();
    hidden.push_back(step->hidden_states);
    logits.push_back(step->logits);
    begin += length;
  }
  EXPECT_EQ(cache->length(), 40);
  const double hidden_error = (torch::cat(hidden) - full->hidden_states).abs().max().item<double>();
  const double logits_error = (torch::cat(logits) - full->logits).abs().max().item<double>();
  EXPECT_LT(hidden_error, 1e-4);
  EXPECT_LT(logits_error, 1e-4);
}

TEST(EngineIncremental, RejectsCacheOverflow) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  auto model = LoadModel(model_dir);
  ASSERT_NE(model, nullptr);
  auto cache = model->NewCache(4);
  ASSERT_TRUE(cache.ok());
  const std::vector<int64_t> ids = {1, 2, 3, 4, 5};
  auto result = model->ForwardIncremental(ids, {}, *cache);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("capacity 4"), std::string::npos) << result.status().ToString();
  EXPECT_EQ(cache->length(), 0);
  EXPECT_FALSE(model->NewCache(model->config().max_position_embeddings + 1).ok());
}

TEST(EvalDraft, UntrainedDraftIsLosslessNearOne) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  DF_REQUIRE_SHARED(greedy, "data/stories260k/greedy.jsonl");
  auto model = LoadModel(model_dir);
  ASSERT_NE(model, nullptr);
  TempDir dir;
  SaveRandomDraft(*model, dir.path() / "draft");

  auto prompts = eval::ReadPrompts(greedy.string());
  ASSERT_TRUE(prompts.ok()) << prompts.status().ToString();
  ASSERT_EQ(prompts->size(), 20u);
  eval::EvalOptions options;
  options.decode.max_new_tokens = 64;
  auto report = eval::RunEval(*model, (dir.path() / "draft").string(), *prompts, options);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  for (const auto& request : report->requests) {
    EXPECT_EQ(request.first_greedy_mismatch, -1) << "prompt " << request.index;
    EXPECT_EQ(request.first_reference_mismatch, -1) << "prompt " << request.index;
    EXPECT_EQ(request.speculative.output_ids.size(), 64u) << "prompt " << request.index;
  }
  EXPECT_GE(report->PooledAcceptanceLength(), 1.0);
  EXPECT_LT(report->PooledAcceptanceLength(), 1.1);
}

TEST(EvalCli, TinyTrainedDraftMatchesGreedy) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  DF_REQUIRE_SHARED(train_jsonl, "data/stories260k/train.jsonl");
  DF_REQUIRE_SHARED(greedy, "data/stories260k/greedy.jsonl");
  TempDir dir;
  {
    std::ifstream in(train_jsonl);
    std::ofstream out(dir.path() / "slice.jsonl");
    std::string line;
    for (int i = 0; i < 60 && std::getline(in, line); ++i) out << line << "\n";
  }
  const fs::path data = dir.path() / "data";
  const fs::path checkpoints = dir.path() / "ckpt";
  auto prepare = RunDraftforge({"prepare", "--model", model.string(), "--data",
                                (dir.path() / "slice.jsonl").string(), "--output", data.string()});
  ASSERT_EQ(prepare.exit_code, 0) << prepare.output;
  auto generate = RunDraftforge({"--threads", "1", "generate", "--model", model.string(), "--preprocessed-data",
                                 data.string(), "--layer-ids", "1", "2", "3", "5"});
  ASSERT_EQ(generate.exit_code, 0) << generate.output;
  auto train = RunDraftforge({"train", "--verifier", model.string(), "--data-path", data.string(), "--save-path",
                              checkpoints.string(), "--log-dir", (dir.path() / "logs").string(),
                              "--draft-vocab-size", "128", "--epochs", "1", "--lr", "3e-3", "--total-seq-len",
                              "2048", "--layer-ids", "1", "2", "3", "5"});
  ASSERT_EQ(train.exit_code, 0) << train.output;

  const fs::path report_path = dir.path() / "report.json";
  auto result = RunDraftforge({"--threads", "1", "eval", "--verifier", model.string(), "--draft",
                               (checkpoints / "0").string(), "--prompts", greedy.string(),
                               "--num-speculative-tokens", "3", "--max-new-tokens", "64", "--output",
                               report_path.string()});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("acceptance length, pooled (vLLM)"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("the draft was trained for verifier"), std::string::npos) << result.output;
  std::ifstream in(report_path);
  auto report = nlohmann::json::parse(in);
  EXPECT_EQ(report["lossless"]["compared"], 20);
  EXPECT_EQ(report["lossless"]["mismatches"], 0);
  EXPECT_EQ(report["reference"]["mismatches"], 0);
  // Some drafts are accepted, so the accept-and-rewind path runs.
  EXPECT_GT(report["accepted_draft_tokens"].get<int64_t>(), 20);
  EXPECT_EQ(report["position_acceptance_rate"].size(), 3u);
  EXPECT_GT(report["speculative"]["tokens_per_second"].get<double>(), 0.0);

  // Bad settings fail before any decode: a K past the context, and an
  // --output that is a directory.
  const std::vector<std::string> base = {"--threads", "1", "eval", "--verifier", model.string(), "--draft",
                                         (checkpoints / "0").string(), "--prompts", greedy.string(),
                                         "--max-new-tokens", "8"};
  auto huge_k = base;
  huge_k.insert(huge_k.end(), {"--num-speculative-tokens", "3000000000"});
  auto too_long = RunDraftforge(huge_k);
  EXPECT_EQ(too_long.exit_code, 1) << too_long.output;
  EXPECT_NE(too_long.output.find("plus 3000000000 speculative tokens exceeds max_position_embeddings"),
            std::string::npos)
      << too_long.output;
  EXPECT_EQ(too_long.output.find("loaded draft"), std::string::npos) << too_long.output;
  auto into_directory = base;
  into_directory.insert(into_directory.end(), {"--output", dir.str()});
  auto directory = RunDraftforge(into_directory);
  EXPECT_EQ(directory.exit_code, 1) << directory.output;
  EXPECT_NE(directory.output.find("is a directory; pass a file path"), std::string::npos) << directory.output;
  EXPECT_EQ(directory.output.find("acceptance length"), std::string::npos) << directory.output;
}

TEST(EvalDraft, PassOneMatchesTrainingForward) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  DF_REQUIRE_SHARED(greedy, "data/stories260k/greedy.jsonl");
  auto model = LoadModel(model_dir);
  ASSERT_NE(model, nullptr);
  TempDir dir;
  SaveRandomDraft(*model, dir.path());
  auto drafter = eval::Eagle3Drafter::Load(dir.str(), *model, 64);
  ASSERT_TRUE(drafter.ok()) << drafter.status().ToString();

  // The training model with the saved (bfloat16-rounded) weights, as the
  // drafter reads them.
  const train::DraftConfig& config = (*drafter)->config().draft;
  torch::manual_seed(7);
  train::Eagle3DraftModel reference(config, torch::TensorOptions().dtype(torch::kFloat32));
  auto file = io::SafetensorsFile::Open((dir.path() / "model.safetensors").string());
  ASSERT_TRUE(file.ok());
  {
    torch::NoGradGuard no_grad;
    for (auto& item : reference.named_parameters()) {
      item.value().copy_(io::ReadTensor(*file, item.key()).ValueOrDie().to(torch::kFloat32));
    }
    reference.embed_tokens = io::ReadTensor(*file, "embed_tokens.weight").ValueOrDie().to(torch::kFloat32);
  }

  // Verifier features of a 24-token prompt, slot i paired with token i+1.
  std::vector<int64_t> ids = FirstGreedySequence(greedy);
  ids.resize(25);
  const std::vector<int64_t> aux_layer_ids = {1, 2, 3};
  auto forward = model->Forward(ids, aux_layer_ids);
  ASSERT_TRUE(forward.ok());
  const int64_t slots = 24;
  torch::Tensor features = forward->hidden_states.narrow(0, 0, slots).reshape({slots, 3 * config.hidden_size});
  torch::Tensor next_ids = torch::tensor(std::vector<int64_t>(ids.begin() + 1, ids.end()), torch::kInt64);

  torch::Tensor expected;
  {
    torch::NoGradGuard no_grad;
    torch::Tensor x = torch::cat({reference.Embed(next_ids), reference.ProjectFeatures(features)}, -1);  // [n, 2H]
    std::vector<std::vector<train::KvBlock>> caches;
    auto layout = train::BuildAttentionLayout({slots}, slots, torch::TensorOptions().dtype(torch::kFloat32));
    expected = reference.ForwardLayers(x, reference.Rotary(torch::arange(1, slots + 1)), caches, layout);  // [n, H]
  }

  // One slot per Extend call exercises the drafter's KV cache.
  for (int64_t i = 0; i < slots; ++i) {
    auto step = (*drafter)->Extend(features.narrow(0, i, 1), {ids[i + 1]});
    ASSERT_TRUE(step.ok()) << step.status().ToString();
    const double error = (step->hidden - expected.narrow(0, i, 1)).abs().max().item<double>();
    EXPECT_LT(error, 1e-4) << "slot " << i;
  }
  EXPECT_EQ((*drafter)->cache_length(), slots);
}

TEST(EvalDraft, MismatchedDraftNamesFields) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  auto model = LoadModel(model_dir);
  ASSERT_NE(model, nullptr);
  struct Case {
    std::string name;
    std::function<void(nlohmann::json&)> edit;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"hidden size", [](nlohmann::json& c) { c["transformer_layer_config"]["hidden_size"] = 128; },
       "hidden_size: draft 128"},
      {"vocabulary", [](nlohmann::json& c) { c["transformer_layer_config"]["vocab_size"] = 32000; },
       "vocab_size: draft 32000"},
      {"layer id range", [](nlohmann::json& c) { c["eagle_aux_hidden_state_layer_ids"] = {1, 2, 9}; },
       "eagle_aux_hidden_state_layer_ids: [1, 2, 9]"},
      {"layer id count", [](nlohmann::json& c) { c["eagle_aux_hidden_state_layer_ids"] = {1, 2}; },
       "eagle_aux_hidden_state_layer_ids: [1, 2] has 2 ids"},
      {"target hidden size", [](nlohmann::json& c) { c["target_hidden_size"] = 4096; },
       "target_hidden_size: draft 4096, verifier hidden_size 64"},
  };
  for (const auto& test_case : cases) {
    TempDir dir;
    SaveRandomDraft(*model, dir.path());
    EditConfig(dir.path(), test_case.edit);
    auto drafter = eval::Eagle3Drafter::Load(dir.str(), *model, 64);
    ASSERT_FALSE(drafter.ok()) << test_case.name;
    EXPECT_NE(drafter.status().message().find(test_case.expected), std::string::npos)
        << test_case.name << ": " << drafter.status().ToString();
  }
}

TEST(EvalReport, PooledAndPerRequestDiffer) {
  eval::EvalReport report;
  report.num_speculative_tokens = 2;
  eval::RequestRecord first;
  first.speculative.verification_steps = 10;
  first.speculative.accepted_tokens = 10;  // 2.0
  first.speculative.accepted_at_position = {6, 4};
  eval::RequestRecord second;
  second.speculative.verification_steps = 30;
  second.speculative.accepted_tokens = 0;  // 1.0
  second.speculative.accepted_at_position = {0, 0};
  report.requests = {first, second};
  EXPECT_DOUBLE_EQ(report.PooledAcceptanceLength(), 1.25);  // 1 + 10 / 40
  EXPECT_DOUBLE_EQ(report.PerRequestMeanAcceptanceLength(), 1.5);
  const std::vector<double> rates = report.PositionAcceptanceRates();
  ASSERT_EQ(rates.size(), 2u);
  EXPECT_DOUBLE_EQ(rates[0], 6.0 / 40);
  EXPECT_DOUBLE_EQ(rates[1], 4.0 / 40);
  const std::vector<double> conditional = report.ConditionalAcceptanceRates();
  EXPECT_DOUBLE_EQ(conditional[0], 6.0 / 40);
  EXPECT_DOUBLE_EQ(conditional[1], 4.0 / 6);
}

TEST(EvalPrompts, RejectsMalformedRecords) {
  TempDir dir;
  const fs::path path = dir.path() / "prompts.jsonl";
  {
    std::ofstream out(path);
    out << "{\"input_ids\": [1, 2, 3], \"prefix_len\": 2}\n";
    out << "{\"input_ids\": [1, 2], \"prefix_len\": 5}\n";
  }
  auto prompts = eval::ReadPrompts(path.string());
  ASSERT_FALSE(prompts.ok());
  EXPECT_NE(prompts.status().message().find(":2: field 'prefix_len'"), std::string::npos)
      << prompts.status().ToString();
  auto first = eval::ReadPrompts(path.string(), 1);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ((*first)[0].input_ids, std::vector<int64_t>({1, 2}));
  EXPECT_EQ(*(*first)[0].reference, std::vector<int64_t>({3}));
}

TEST(EvalPrompts, RendersChatMessages) {
  DF_REQUIRE_SHARED(tokenizer_dir, "tokenizers/qwen3");
  TempDir dir;
  const fs::path path = dir.path() / "prompts.jsonl";
  {
    std::ofstream out(path);
    out << "{\"messages\": [{\"role\": \"user\", \"content\": \"Hello there\"}]}\n";
    out << "{\"input_ids\": [7, 8]}\n";
  }
  auto prompts = eval::ReadPrompts(path.string(), 0, tokenizer_dir.string());
  ASSERT_TRUE(prompts.ok()) << prompts.status().ToString();
  ASSERT_EQ(prompts->size(), 2u);

  // The Qwen3 template ends the prompt with the assistant header.
  auto tokenizer = tokenizer::Tokenizer::FromFile((tokenizer_dir / "tokenizer.json").string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();
  auto expected = tokenizer->EncodeIds("<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n");
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ((*prompts)[0].input_ids, std::vector<int64_t>(expected->begin(), expected->end()));
  EXPECT_FALSE((*prompts)[0].reference.has_value());
  EXPECT_EQ((*prompts)[1].input_ids, std::vector<int64_t>({7, 8}));

  // Without a tokenizer directory the record is rejected with the fix.
  auto missing = eval::ReadPrompts(path.string(), 0, "");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("--tokenizer"), std::string::npos) << missing.status().ToString();

  // A directory without tokenizer.json (a model saved without its tokenizer)
  // gets the same fix, naming the missing file.
  auto no_tokenizer = eval::ReadPrompts(path.string(), 0, dir.str());
  ASSERT_FALSE(no_tokenizer.ok());
  EXPECT_NE(no_tokenizer.status().message().find("tokenizer.json"), std::string::npos)
      << no_tokenizer.status().ToString();
  EXPECT_NE(no_tokenizer.status().message().find("--tokenizer"), std::string::npos)
      << no_tokenizer.status().ToString();
}

TEST(EvalPrompts, RejectsIdsAndMessagesTogether) {
  TempDir dir;
  const fs::path path = dir.path() / "prompts.jsonl";
  {
    std::ofstream out(path);
    // A null or empty "messages" counts as absent.
    out << "{\"input_ids\": [7, 8], \"messages\": null}\n";
    out << "{\"input_ids\": [7, 9], \"messages\": []}\n";
    out << "{\"input_ids\": [7, 8], \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}\n";
  }
  auto first_two = eval::ReadPrompts(path.string(), 2);
  ASSERT_TRUE(first_two.ok()) << first_two.status().ToString();
  EXPECT_EQ((*first_two)[1].input_ids, std::vector<int64_t>({7, 9}));
  auto prompts = eval::ReadPrompts(path.string());
  ASSERT_FALSE(prompts.ok());
  EXPECT_NE(prompts.status().message().find(":3: record has both 'input_ids' and 'messages'"), std::string::npos)
      << prompts.status().ToString();
}

TEST(EvalCli, RejectsPromptOutsideVocabulary) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  auto model = LoadModel(model_dir);
  ASSERT_NE(model, nullptr);
  TempDir dir;
  SaveRandomDraft(*model, dir.path() / "draft");
  const fs::path prompts = dir.path() / "prompts.jsonl";
  {
    std::ofstream out(prompts);
    out << "{\"input_ids\": [1, 2, 3]}\n";
    out << "{\"input_ids\": [1, 151644, 3]}\n";  // a Qwen id, past the 512-token vocabulary
  }
  auto result = RunDraftforge({"eval", "--verifier", model_dir.string(), "--draft", (dir.path() / "draft").string(),
                               "--prompts", prompts.string(), "--max-new-tokens", "4", "--output",
                               (dir.path() / "report.json").string()});
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("prompt on line 2: token id 151644 at position 1 is outside the verifier's vocabulary "
                               "0..511"),
            std::string::npos)
      << result.output;
}

TEST(EvalDraft, WarnsAboutOtherVerifierName) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  DF_REQUIRE_SHARED(greedy, "data/stories260k/greedy.jsonl");
  auto model = LoadModel(model_dir);
  ASSERT_NE(model, nullptr);
  struct Case {
    std::string name_or_path;
    bool warns;
  };
  const std::vector<Case> cases = {
      {"meta-llama/Llama-3.1-8B", true},
      {(model_dir / ".").string(), false},        // the same directory, spelled otherwise
      {"some-org/" + model_dir.filename().string(), false},  // a hub id with the same model name
  };
  for (const Case& test_case : cases) {
    TempDir dir;
    SaveRandomDraft(*model, dir.path() / "draft");
    EditConfig(dir.path() / "draft", [&](nlohmann::json& c) {
      c["speculators_config"]["verifier"]["name_or_path"] = test_case.name_or_path;
    });
    const fs::path report = dir.path() / "report.json";
    auto result = RunDraftforge({"eval", "--verifier", model_dir.string(), "--draft",
                                 (dir.path() / "draft").string(), "--prompts", greedy.string(), "--max-prompts", "1",
                                 "--max-new-tokens", "4", "--output", report.string()});
    EXPECT_EQ(result.exit_code, 0) << result.output;
    const bool warned = result.output.find("the draft was trained for verifier '" + test_case.name_or_path + "'") !=
                        std::string::npos;
    EXPECT_EQ(warned, test_case.warns) << test_case.name_or_path << ": " << result.output;
  }
}

}  // namespace
}  // namespace draftforge
