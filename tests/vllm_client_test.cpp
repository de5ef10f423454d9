// `draftforge generate --endpoint` and HiddenStatesClient against a real
// `draftforge serve` process: equality with the embedded engine, resume after
// a server crash, retries, and rejection of responses that do not match.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "draftforge/data/token_dataset.h"
#include "draftforge/engine/llama_model.h"
#include "draftforge/hidden_states/generate.h"
#include "draftforge/hidden_states/hs_file.h"
#include "draftforge/hidden_states/vllm_client.h"
#include "draftforge/util/fs.h"
#include "serve_process.h"
#include "test_support.h"

namespace draftforge {
namespace {

namespace fs = std::filesystem;
using testing::RunDraftforge;
using testing::ServeProcess;
using testing::TempDir;

const std::vector<std::string> kLayerArgs = {"--layer-ids", "1", "2", "3", "5"};

class RemoteGenerateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = testing::SharedPath("models/stories260k");
    auto jsonl = testing::SharedPath("data/stories260k/train.jsonl");
    if (!model || !jsonl) {
      GTEST_SKIP() << "shared stories260k fixtures not found; set DRAFTFORGE_TEST_DATA";
    }
    model_ = model->string();
    PrepareRows(*jsonl, 16);
  }

  // Prepares the first `rows` stories with `draftforge prepare`.
  void PrepareRows(const fs::path& jsonl, size_t rows) {
    const fs::path slice = dir_.path() / "slice.jsonl";
    {
      std::ifstream in(jsonl);
      std::ofstream out(slice);
      std::string line;
      for (size_t i = 0; i < rows && std::getline(in, line); ++i) out << line << "\n";
    }
    data_ = dir_.path() / "data";
    auto result = RunDraftforge({"prepare", "--model", model_, "--data", slice.string(), "--output",
                                 data_.string()});
    ASSERT_EQ(result.exit_code, 0) << result.output;
    dataset_ = data::TokenDataset::Open(data_.string()).ValueOrDie();
  }

  std::vector<std::string> ServeArgs(std::vector<std::string> extra = {}) const {
    std::vector<std::string> args = kLayerArgs;
    args.push_back("--hidden-states-path");
    args.push_back((dir_.path() / "server_hs").string());
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  testing::CommandOutput Generate(const ServeProcess& server, const fs::path& output,
                                  std::vector<std::string> extra = {}) const {
    std::vector<std::string> args = {"generate", "--endpoint", server.url(), "--model", model_,
                                     "--preprocessed-data", data_.string(), "--output",
                                     output.string(), "--retry-backoff", "0.02", "--timeout", "20"};
    args.insert(args.end(), kLayerArgs.begin(), kLayerArgs.end());
    args.insert(args.end(), extra.begin(), extra.end());
    return RunDraftforge(args);
  }

  // Every file present is complete and belongs to its row; returns how many.
  int64_t CheckFiles(const fs::path& output) const {
    int64_t count = 0;
    for (const auto& entry : fs::directory_iterator(output)) {
      const std::string name = entry.path().filename().string();
      EXPECT_EQ(name.find(".tmp"), std::string::npos) << "temporary file left: " << name;
      auto row = hidden_states::ParseHiddenStatesFileName(name);
      if (!row) continue;
      hidden_states::HiddenStatesExpectation expected;
      expected.token_ids = dataset_.input_ids(*row);
      expected.num_layers = 4;
      expected.hidden_size = 64;
      auto file = hidden_states::ReadHiddenStatesFile(entry.path().string(), expected);
      EXPECT_TRUE(file.ok()) << file.status().ToString();
      ++count;
    }
    return count;
  }

  TempDir dir_;
  std::string model_;
  fs::path data_;
  data::TokenDataset dataset_;
};

TEST_F(RemoteGenerateTest, FilesEqualEmbeddedEngine) {
  ServeProcess server(dir_.path(), model_, ServeArgs());
  ASSERT_TRUE(server.ok()) << server.Log();
  const fs::path remote = dir_.path() / "remote";
  auto result = Generate(server, remote, {"--concurrency", "4", "--validate-outputs"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(CheckFiles(remote), dataset_.num_rows());

  // The embedded engine in this process, one thread like the server.
  const int threads = torch::get_num_threads();
  torch::set_num_threads(1);
  auto model = engine::LlamaModel::Load(model_).ValueOrDie();
  hidden_states::GenerateOptions options;
  options.output_dir = (dir_.path() / "embedded").string();
  options.layer_ids = {1, 2, 3, 5};
  options.show_progress = false;
  auto summary = hidden_states::GenerateHiddenStates(dataset_, *model, options);
  torch::set_num_threads(threads);
  ASSERT_TRUE(summary.ok()) << summary.status().ToString();

  for (int64_t row = 0; row < dataset_.num_rows(); ++row) {
    SCOPED_TRACE(row);
    const std::string name = hidden_states::HiddenStatesFileName(row);
    auto ours = ReadFileToString((remote / name).string());
    auto embedded = ReadFileToString((dir_.path() / "embedded" / name).string());
    ASSERT_TRUE(ours.ok());
    ASSERT_TRUE(embedded.ok());
    EXPECT_TRUE(*ours == *embedded) << "bytes differ from the embedded engine's file";
  }
  // Same settings file as the embedded run.
  EXPECT_EQ(ReadFileToString((remote / hidden_states::kGenerateSettingsFileName).string()).ValueOrDie(),
            ReadFileToString((dir_.path() / "embedded" / hidden_states::kGenerateSettingsFileName).string())
                .ValueOrDie());
  // The client consumed every data file and lock file of the server.
  EXPECT_TRUE(fs::is_empty(dir_.path() / "server_hs"));

  // A rerun has nothing to do.
  auto again = Generate(server, remote);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("0 to request"), std::string::npos) << again.output;
}

TEST_F(RemoteGenerateTest, TwoEndpointsShareTheWork) {
  ServeProcess first(dir_.path(), model_, ServeArgs({"--test-delay-ms", "20"}));
  ServeProcess second(dir_.path(), model_, ServeArgs({"--test-delay-ms", "20"}));
  ASSERT_TRUE(first.ok()) << first.Log();
  ASSERT_TRUE(second.ok()) << second.Log();
  const fs::path output = dir_.path() / "out";
  auto result = RunDraftforge({"generate", "--endpoint", first.url(), "--endpoint", second.url(),
                               "--model", model_, "--preprocessed-data", data_.string(), "--output",
                               output.string(), "--concurrency", "2", "--layer-ids", "1", "2", "3",
                               "5"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(CheckFiles(output), dataset_.num_rows());

  // Each server logs its request count when it stops.
  first.Kill(SIGTERM);
  second.Kill(SIGTERM);
  for (const ServeProcess* server : {&first, &second}) {
    const std::string log = server->Log();
    EXPECT_NE(log.find("stopped after"), std::string::npos) << log;
    EXPECT_EQ(log.find("stopped after 0 completion requests"), std::string::npos) << log;
  }
}

TEST_F(RemoteGenerateTest, ServerKilledMidRunThenRerunCompletes) {
  const fs::path output = dir_.path() / "out";
  int port = 0;
  {
    ServeProcess server(dir_.path(), model_, ServeArgs({"--test-delay-ms", "40"}));
    ASSERT_TRUE(server.ok()) << server.Log();
    port = server.port();
    auto run = std::async(std::launch::async, [&] {
      return Generate(server, output, {"--concurrency", "2", "--max-retries", "1"});
    });
    // Kill the server once a few files are in place.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      std::error_code ignored;
      int files = 0;
      for (const auto& entry : fs::directory_iterator(output, ignored)) {
        files += hidden_states::ParseHiddenStatesFileName(entry.path().filename()) ? 1 : 0;
      }
      if (files >= 3) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    server.Kill(SIGKILL);
    auto first = run.get();
    EXPECT_NE(first.exit_code, 0) << first.output;
    EXPECT_NE(first.output.find("samples failed"), std::string::npos) << first.output;
  }
  const int64_t after_crash = CheckFiles(output);
  EXPECT_GE(after_crash, 3);
  EXPECT_LT(after_crash, dataset_.num_rows());

  ServeProcess restarted(dir_.path(), model_, ServeArgs(), port);
  ASSERT_TRUE(restarted.ok()) << restarted.Log();
  auto second = Generate(restarted, output, {"--concurrency", "4"});
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find(fmt::format("{} existing files kept", after_crash)), std::string::npos)
      << second.output;
  EXPECT_EQ(CheckFiles(output), dataset_.num_rows());
}

TEST_F(RemoteGenerateTest, RetriesServerErrorsAndDroppedConnections) {
  ServeProcess server(dir_.path(), model_,
                      ServeArgs({"--test-fail-every", "3", "--test-drop-connection-every", "5"}));
  ASSERT_TRUE(server.ok()) << server.Log();
  const fs::path output = dir_.path() / "out";
  // One request at a time, so a retry gets the next request number; no run
  // of consecutive numbers that are multiples of 3 or 5 is longer than 2.
  auto result = Generate(server, output, {"--concurrency", "1", "--max-retries", "2"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("HTTP 500"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("retrying"), std::string::npos) << result.output;
  EXPECT_EQ(CheckFiles(output), dataset_.num_rows());
}

TEST_F(RemoteGenerateTest, ReportsSamplesAfterRetriesRunOut) {
  ServeProcess server(dir_.path(), model_, ServeArgs({"--test-fail-every", "1"}));
  ASSERT_TRUE(server.ok()) << server.Log();
  const fs::path output = dir_.path() / "out";
  auto result = Generate(server, output, {"--max-retries", "2", "--max-samples", "3"});
  EXPECT_NE(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("gave up after 3 attempts"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("failed sample: row 2"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("3 samples failed"), std::string::npos) << result.output;
  EXPECT_EQ(CheckFiles(output), 0);
}

TEST_F(RemoteGenerateTest, RejectsMismatchedIdsAndMissingPath) {
  ServeProcess server(dir_.path(), model_,
                      ServeArgs({"--test-wrong-prompt-ids-every", "4", "--test-omit-path-every", "5"}));
  ASSERT_TRUE(server.ok()) << server.Log();
  const fs::path output = dir_.path() / "out";
  // Requests 4, 8, 12, 16 get altered ids and 5, 10, 15 no path; these
  // failures are not retried, so exactly 7 of the 16 samples fail.
  auto result = Generate(server, output, {"--concurrency", "4"});
  EXPECT_NE(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("prompt_token_ids that differ"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("no kv_transfer_params.hidden_states_path"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("7 samples failed"), std::string::npos) << result.output;
  EXPECT_EQ(CheckFiles(output), dataset_.num_rows() - 7);
}

TEST_F(RemoteGenerateTest, RejectsPrefixCachedFiles) {
  ServeProcess server(dir_.path(), model_, ServeArgs({"--test-prefix-cache-rows", "16"}));
  ASSERT_TRUE(server.ok()) << server.Log();
  const fs::path output = dir_.path() / "out";
  auto result = Generate(server, output, {"--max-samples", "2"});
  EXPECT_NE(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("--no-enable-prefix-caching"), std::string::npos) << result.output;
  EXPECT_EQ(CheckFiles(output), 0);
}

TEST_F(RemoteGenerateTest, ValidateOutputsDetectsTruncatedFile) {
  ServeProcess server(dir_.path(), model_, ServeArgs());
  ASSERT_TRUE(server.ok()) << server.Log();
  const fs::path output = dir_.path() / "out";
  ASSERT_EQ(Generate(server, output, {"--max-samples", "4"}).exit_code, 0);
  const fs::path damaged = output / "hs_2.safetensors";
  const auto size = fs::file_size(damaged);
  fs::resize_file(damaged, size - 100);

  auto plain = Generate(server, output, {"--max-samples", "4"});
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  EXPECT_EQ(fs::file_size(damaged), size - 100);
  auto validated = Generate(server, output, {"--max-samples", "4", "--validate-outputs"});
  ASSERT_EQ(validated.exit_code, 0) << validated.output;
  EXPECT_NE(validated.output.find("1 invalid existing files requested again"), std::string::npos)
      << validated.output;
  EXPECT_EQ(fs::file_size(damaged), size);
  EXPECT_EQ(CheckFiles(output), 4);
}

TEST_F(RemoteGenerateTest, RejectsOtherServedModel) {
  ServeProcess server(dir_.path(), model_, ServeArgs({"--served-model-name", "stories"}));
  ASSERT_TRUE(server.ok()) << server.Log();
  auto result = Generate(server, dir_.path() / "out");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("serves model 'stories'"), std::string::npos) << result.output;
}

TEST_F(RemoteGenerateTest, ClientLibraryChecksLayerCount) {
  ServeProcess server(dir_.path(), model_, ServeArgs());
  ASSERT_TRUE(server.ok()) << server.Log();
  hidden_states::ClientOptions options;
  options.endpoints = {server.url()};
  options.num_layers = 4;
  options.hidden_size = 64;
  options.dtype = torch::kFloat32;
  auto client = hidden_states::HiddenStatesClient::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  EXPECT_EQ((*client)->model(), model_);

  const std::string dest = (dir_.path() / "one.safetensors").string();
  auto output = (*client)->Generate(0, dataset_.input_ids(0), dest);
  ASSERT_TRUE(output.ok()) << output.status().ToString();
  EXPECT_EQ(output->tokens, dataset_.seq_len(0));
  EXPECT_EQ(output->attempts, 1);
  EXPECT_EQ(static_cast<uintmax_t>(output->bytes), fs::file_size(dest));

  options.num_layers = 3;
  auto three = hidden_states::HiddenStatesClient::Connect(options);
  ASSERT_TRUE(three.ok());
  const std::string other = (dir_.path() / "two.safetensors").string();
  auto rejected = (*three)->Generate(1, dataset_.input_ids(1), other);
  ASSERT_FALSE(rejected.ok());
  EXPECT_NE(rejected.status().message().find("3 layer ids are configured"), std::string::npos)
      << rejected.status().message();
  EXPECT_FALSE(fs::exists(other));
  EXPECT_TRUE(fs::is_empty(dir_.path() / "server_hs"));
}

}  // namespace
}  // namespace draftforge
