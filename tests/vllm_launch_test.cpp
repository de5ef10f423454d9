#include "draftforge/hidden_states/vllm_launch.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "test_support.h"

namespace draftforge::hidden_states {
namespace {

using draftforge::testing::RunDraftforge;
using draftforge::testing::TempDir;

constexpr const char* kStoriesSpeculativeConfig =
    R"({"method": "extract_hidden_states", "num_speculative_tokens": 1, "draft_model_config": )"
    R"({"hf_config": {"eagle_aux_hidden_state_layer_ids": [1, 2, 3, 5]}}})";
constexpr const char* kDefaultKvTransferConfig =
    R"({"kv_connector": "ExampleHiddenStatesConnector", "kv_role": "kv_producer", )"
    R"("kv_connector_extra_config": {"shared_storage_path": "/tmp/hidden_states"}})";

engine::ModelConfig Qwen3StyleConfig(bool nested_in_text_config) {
  nlohmann::json text = {{"model_type", "qwen3"},       {"hidden_size", 4096},
                         {"intermediate_size", 12288},  {"num_hidden_layers", 36},
                         {"num_attention_heads", 32},   {"num_key_value_heads", 8},
                         {"head_dim", 128},             {"vocab_size", 151936}};
  nlohmann::json root = nested_in_text_config
                            ? nlohmann::json{{"architectures", {"Qwen3VLForConditionalGeneration"}},
                                             {"text_config", text}}
                            : text;
  return engine::ModelConfig::FromJson(root, "config.json").ValueOrDie();
}

TEST(VllmLaunch, StoriesCommandMatchesLaunchScript) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  auto config = engine::ModelConfig::Load(model.string()).ValueOrDie();
  VllmLaunchOptions options;
  options.model = model.string();
  options.layer_ids = std::vector<int64_t>{1, 2, 3, 5};
  options.extra_args = {"--port", "8000"};
  auto args = BuildVllmServeCommand(config, options);
  ASSERT_TRUE(args.ok()) << args.status().ToString();
  std::vector<std::string> expected = {"vllm",          "serve",
                                       model.string(),  "--speculative_config",
                                       kStoriesSpeculativeConfig, "--kv_transfer_config",
                                       kDefaultKvTransferConfig, "--port",
                                       "8000"};
  EXPECT_EQ(*args, expected);
}

TEST(VllmLaunch, StoriesDefaultIdsRepeatAndFail) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  auto config = engine::ModelConfig::Load(model.string()).ValueOrDie();
  VllmLaunchOptions options;
  options.model = model.string();
  auto args = BuildVllmServeCommand(config, options);
  ASSERT_FALSE(args.ok());
  EXPECT_NE(args.status().message().find("[2,2,2,5] repeat 2"), std::string::npos)
      << args.status().message();
  EXPECT_NE(args.status().message().find("--layers"), std::string::npos);
}

TEST(VllmLaunch, Qwen3DefaultLayerIdsFieldByField) {
  for (bool nested : {false, true}) {
    VllmLaunchOptions options;
    options.model = "Qwen/Qwen3-8B";
    options.hidden_states_path = "/data/hs";
    auto args = BuildVllmServeCommand(Qwen3StyleConfig(nested), options);
    ASSERT_TRUE(args.ok()) << args.status().ToString();
    ASSERT_EQ(args->size(), 7u);
    auto speculative = nlohmann::json::parse((*args)[4]);
    EXPECT_EQ(speculative["method"], "extract_hidden_states");
    EXPECT_EQ(speculative["num_speculative_tokens"], 1);
    EXPECT_EQ(speculative["draft_model_config"]["hf_config"]["eagle_aux_hidden_state_layer_ids"],
              nlohmann::json({2, 18, 33, 36}))
        << "nested " << nested;
    auto kv = nlohmann::json::parse((*args)[6]);
    EXPECT_EQ(kv["kv_connector"], "ExampleHiddenStatesConnector");
    EXPECT_EQ(kv["kv_role"], "kv_producer");
    EXPECT_EQ(kv["kv_connector_extra_config"]["shared_storage_path"], "/data/hs");
    EXPECT_EQ(kv.size(), 3u);
  }
}

TEST(VllmLaunch, AppendsLastLayerUnlessDisabled) {
  VllmLaunchOptions options;
  options.layer_ids = std::vector<int64_t>{2, 18, 33};
  auto ids = ResolveCaptureLayerIds(Qwen3StyleConfig(false), options);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int64_t>{2, 18, 33, 36}));
  options.include_last_layer = false;
  ids = ResolveCaptureLayerIds(Qwen3StyleConfig(false), options);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int64_t>{2, 18, 33}));
  options.layer_ids = std::vector<int64_t>{2, 18, 37};
  EXPECT_FALSE(ResolveCaptureLayerIds(Qwen3StyleConfig(false), options).ok());
}

TEST(VllmLaunch, PythonStyleJsonAndShellQuoting) {
  nlohmann::ordered_json value = {{"a", 1}, {"b", {1.5, "x"}}, {"path", "/tmp/é"}};
  EXPECT_EQ(DumpJsonPythonStyle(value), R"({"a": 1, "b": [1.5, "x"], "path": "/tmp/\u00e9"})");
  EXPECT_EQ(ShellQuoteCommand({"vllm", "serve", "a b", "{\"k\": 1}", "it's"}),
            R"(vllm serve 'a b' '{"k": 1}' 'it'\''s')");
}

TEST(VllmLaunch, DryRunPrintsCommand) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  auto result = RunDraftforge({"launch-vllm", model.string(), "--layers", "1", "2", "3", "5",
                               "--dry-run", "--", "--port", "8000"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  std::string expected = "vllm serve " + model.string() + " --speculative_config '" +
                         kStoriesSpeculativeConfig + "' --kv_transfer_config '" +
                         kDefaultKvTransferConfig + "' --port 8000";
  EXPECT_NE(result.output.find(expected), std::string::npos) << result.output;
}

TEST(VllmLaunch, MissingExecutableIsReported) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  auto result = RunDraftforge({"launch-vllm", model.string(), "--layers", "1", "2", "3", "5",
                               "--vllm-executable", "/nonexistent/vllm"});
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("--dry-run"), std::string::npos) << result.output;
}

TEST(VllmLaunch, ServerGetsTheUserEnvironment) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("OPENBLAS_THREAD_TIMEOUT") != nullptr) {
    GTEST_SKIP() << "OMP_WAIT_POLICY or OPENBLAS_THREAD_TIMEOUT is set here, so draftforge adds neither";
  }
  // A stand-in for vllm that records the environment it was started with.
  TempDir dir;
  const std::filesystem::path fake = dir.path() / "vllm";
  const std::filesystem::path recorded = dir.path() / "environment.txt";
  {
    std::ofstream script(fake);
    script << "#!/bin/sh\nenv > '" << recorded.string() << "'\n";
  }
  std::filesystem::permissions(fake, std::filesystem::perms::owner_all);
  auto result = RunDraftforge({"launch-vllm", model.string(), "--layers", "1", "2", "3", "5", "--vllm-executable",
                               fake.string()});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const std::string environment = draftforge::testing::ReadFileText(recorded);
  ASSERT_FALSE(environment.empty()) << "the stand-in did not run: " << result.output;
  EXPECT_EQ(environment.find("OMP_WAIT_POLICY="), std::string::npos) << environment;
  EXPECT_EQ(environment.find("OPENBLAS_THREAD_TIMEOUT="), std::string::npos) << environment;
  EXPECT_EQ(environment.find("DRAFTFORGE_ADDED_ENV="), std::string::npos) << environment;
}

}  // namespace
}  // namespace draftforge::hidden_states

namespace draftforge::hidden_states {
namespace {

// A "--" right after the --layers list must still pass the rest to vLLM.
TEST(VllmLaunchCli, ArgsAfterLayerList) {
  DF_REQUIRE_SHARED(model, "models/stories260k");
  auto run = ::draftforge::testing::RunDraftforge(
      {"launch-vllm", model.string(), "--dry-run", "--layers", "1", "2", "3", "--", "--port", "8123"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("\"eagle_aux_hidden_state_layer_ids\": [1, 2, 3, 5]"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find(" --port 8123"), std::string::npos) << run.output;
}

}  // namespace
}  // namespace draftforge::hidden_states
