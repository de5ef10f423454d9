// Online and hybrid training: hidden states generated on demand by the
// embedded engine or a `draftforge serve` process on 127.0.0.1, then cached
// or deleted. Also covers the --on-missing policies, damaged files, resume
// after SIGKILL and TensorBoard event files.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "draftforge/hidden_states/hs_file.h"
#include "draftforge/train/online_hidden_states.h"
#include "draftforge/train/tensorboard.h"
#include "serve_process.h"
#include "test_support.h"

namespace draftforge {
namespace {

namespace fs = std::filesystem;
using testing::RunDraftforge;
using testing::ReadFileText;
using testing::TempDir;

constexpr int kRows = 40;  // 36 training rows, 4 validation rows

bool Contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }


std::vector<nlohmann::json> ReadJsonLines(const fs::path& path) {
  std::ifstream stream(path);
  std::vector<nlohmann::json> records;
  for (std::string line; std::getline(stream, line);) records.push_back(nlohmann::json::parse(line));
  return records;
}

int CountHiddenStatesFiles(const fs::path& dir) {
  if (!fs::exists(dir)) return 0;
  int count = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (hidden_states::ParseHiddenStatesFileName(entry.path().filename().string())) ++count;
  }
  return count;
}

// Entries of `dir` that are not hs files or the generate settings file:
// temporary files a generator should not leave behind.
std::vector<std::string> StrayFiles(const fs::path& dir) {
  std::vector<std::string> stray;
  if (!fs::exists(dir)) return stray;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (!hidden_states::ParseHiddenStatesFileName(name) && name != "draftforge_generate.json") stray.push_back(name);
  }
  return stray;
}

// Validation metrics of every epoch, from metrics.jsonl.
std::map<int64_t, nlohmann::json> ValidationByEpoch(const fs::path& log_dir) {
  std::map<int64_t, nlohmann::json> by_epoch;
  for (const auto& record : ReadJsonLines(log_dir / "metrics.jsonl")) {
    if (record.contains("val/loss_epoch")) by_epoch[record["epoch"].get<int64_t>()] = record;
  }
  return by_epoch;
}

// "data/generated" of every epoch, from metrics.jsonl.
std::map<int64_t, int64_t> GeneratedByEpoch(const fs::path& log_dir) {
  std::map<int64_t, int64_t> by_epoch;
  for (const auto& record : ReadJsonLines(log_dir / "metrics.jsonl")) {
    if (record.contains("data/generated")) by_epoch[record["epoch"].get<int64_t>()] = record["data/generated"];
  }
  return by_epoch;
}

// A prepared dataset of kRows stories in WORK/data (no hidden states).
class OnlineTrain : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = testing::SharedPath("models/stories260k");
    auto stories = testing::SharedPath("data/stories260k/train.jsonl");
    if (!model || !stories) {
      GTEST_SKIP() << "shared fixtures models/stories260k and data/stories260k/train.jsonl not found; set "
                      "DRAFTFORGE_TEST_DATA to the fixtures directory";
    }
    model_ = model->string();
    auto prepare = RunDraftforge({"prepare", "--model", model_, "--data", stories->string(), "--output",
                                  Data().string(), "--max-samples", std::to_string(kRows)});
    ASSERT_EQ(prepare.exit_code, 0) << prepare.output;
  }

  fs::path Data() const { return work_.path() / "data"; }

  // Arguments of `draftforge train` for 2 epochs into WORK/<name>/{ckpt,logs};
  // `extra` flags replace the value of a flag already present.
  std::vector<std::string> TrainArgs(const std::string& name, const std::vector<std::string>& extra) const {
    std::vector<std::string> args = {"train", "--verifier", model_, "--data-path", Data().string(), "--save-path",
                                     (work_.path() / name / "ckpt").string(), "--log-dir",
                                     (work_.path() / name / "logs").string(), "--epochs", "2", "--total-seq-len",
                                     "512", "--layer-ids", "1,2,3,5", "--lr", "1e-3", "--draft-vocab-size", "256",
                                     "--num-workers", "2"};
    for (size_t i = 0; i < extra.size(); ++i) {
      auto it = std::find(args.begin(), args.end(), extra[i]);
      if (it != args.end() && i + 1 < extra.size() && !extra[i + 1].starts_with("--")) {
        *(it + 1) = extra[++i];
      } else {
        args.push_back(extra[i]);
      }
    }
    return args;
  }
  // threads > 0 passes the global --threads flag.
  testing::CommandOutput Train(const std::string& name, const std::vector<std::string>& extra, int threads = 0) {
    std::vector<std::string> args = TrainArgs(name, extra);
    if (threads > 0) args.insert(args.begin(), {"--threads", std::to_string(threads)});
    return RunDraftforge(args);
  }

  std::string Weights(const std::string& name) const {
    return ReadFileText(work_.path() / name / "ckpt" / "1" / "model.safetensors");
  }
  fs::path Logs(const std::string& name) const { return work_.path() / name / "logs"; }

  TempDir work_;
  std::string model_;
};

TEST_F(OnlineTrain, OfflineOnlineAndHybridReachTheSameWeights) {
  // Offline: every file generated up front.
  auto generate = RunDraftforge({"generate", "--model", model_, "--preprocessed-data", Data().string(),
                                 "--output", (work_.path() / "offline_hs").string(), "--layer-ids", "1", "2", "3",
                                 "5"});
  ASSERT_EQ(generate.exit_code, 0) << generate.output;
  ASSERT_EQ(CountHiddenStatesFiles(work_.path() / "offline_hs"), kRows);
  auto offline = Train("offline", {"--hidden-states-path", (work_.path() / "offline_hs").string(),
                                   "--on-missing", "raise"});
  ASSERT_EQ(offline.exit_code, 0) << offline.output;
  EXPECT_FALSE(Contains(offline.output, "embedded engine")) << offline.output;

  // Online: no file present, none left behind.
  const fs::path online_hs = work_.path() / "online_hs";
  auto online = Train("online", {"--hidden-states-path", online_hs.string(), "--on-generate", "delete"});
  ASSERT_EQ(online.exit_code, 0) << online.output;
  EXPECT_EQ(CountHiddenStatesFiles(online_hs), 0);
  EXPECT_TRUE(StrayFiles(online_hs).empty());
  EXPECT_EQ(GeneratedByEpoch(Logs("online")), (std::map<int64_t, int64_t>{{0, kRows}, {1, kRows}}));

  // Hybrid: every file generated in epoch 0 and read from the cache in epoch 1.
  const fs::path hybrid_hs = work_.path() / "hybrid_hs";
  auto hybrid = Train("hybrid", {"--hidden-states-path", hybrid_hs.string(), "--on-generate", "cache"});
  ASSERT_EQ(hybrid.exit_code, 0) << hybrid.output;
  EXPECT_EQ(CountHiddenStatesFiles(hybrid_hs), kRows);
  EXPECT_TRUE(Contains(hybrid.output, "epoch 1 generated 0 hidden-states samples")) << hybrid.output;
  EXPECT_EQ(GeneratedByEpoch(Logs("hybrid")), (std::map<int64_t, int64_t>{{0, kRows}, {1, 0}}));
  // The cached files equal those of `draftforge generate`, byte for byte.
  for (int row : {0, kRows - 1}) {
    const std::string name = "hs_" + std::to_string(row) + ".safetensors";
    EXPECT_EQ(ReadFileText(hybrid_hs / name), ReadFileText(work_.path() / "offline_hs" / name)) << name;
  }

  // The engine is deterministic and the batches' noise seeds depend only on
  // (seed, epoch, batch), so all three runs train the same weights.
  const std::string weights = Weights("offline");
  ASSERT_FALSE(weights.empty());
  EXPECT_TRUE(Weights("online") == weights);
  EXPECT_TRUE(Weights("hybrid") == weights);
  auto expected = ValidationByEpoch(Logs("offline"));
  ASSERT_EQ(expected.size(), 2u);
  for (const std::string name : {"online", "hybrid"}) {
    auto got = ValidationByEpoch(Logs(name));
    ASSERT_EQ(got.size(), 2u) << name;
    for (int64_t epoch : {0, 1}) {
      EXPECT_DOUBLE_EQ(got[epoch]["val/loss_epoch"].get<double>(), expected[epoch]["val/loss_epoch"].get<double>());
      EXPECT_DOUBLE_EQ(got[epoch]["val/full_acc_0_epoch"].get<double>(),
                       expected[epoch]["val/full_acc_0_epoch"].get<double>());
    }
  }
}

TEST_F(OnlineTrain, OnlineThroughServeLeavesNoFiles) {
  // The test server runs one intra-op thread, and the engine's float sums
  // depend on the thread count (last-bit differences from 128 tokens on), so
  // the reference run uses one thread as well.
  auto offline = Train("offline", {"--on-generate", "cache"}, /*threads=*/1);
  ASSERT_EQ(offline.exit_code, 0) << offline.output;

  const fs::path server_dir = work_.path() / "server_files";
  testing::ServeProcess server(work_.path(), model_,
                               {"--layer-ids", "1", "2", "3", "5", "--hidden-states-path", server_dir.string()});
  ASSERT_TRUE(server.ok()) << server.Log();
  const fs::path online_hs = work_.path() / "online_hs";
  auto online = Train("online", {"--hidden-states-path", online_hs.string(), "--vllm-endpoint", server.url()},
                      /*threads=*/1);
  ASSERT_EQ(online.exit_code, 0) << online.output << server.Log();
  EXPECT_TRUE(Contains(online.output, "generated by the servers " + server.url())) << online.output;
  EXPECT_EQ(GeneratedByEpoch(Logs("online")), (std::map<int64_t, int64_t>{{0, kRows}, {1, kRows}}));
  EXPECT_EQ(CountHiddenStatesFiles(online_hs), 0);
  EXPECT_TRUE(StrayFiles(online_hs).empty());
  std::vector<std::string> server_files;
  for (const auto& entry : fs::directory_iterator(server_dir)) server_files.push_back(entry.path().filename());
  EXPECT_TRUE(server_files.empty()) << "the server's files are moved to the trainer and removed; left: "
                                    << (server_files.empty() ? "" : server_files.front());
  EXPECT_TRUE(Weights("online") == Weights("offline"));
}

// Sum of "epoch E generated N hidden-states samples" over every rank's log line.
int64_t GeneratedInLog(const std::string& output, int epoch) {
  const std::regex line("epoch " + std::to_string(epoch) + " generated ([0-9]+) hidden-states samples");
  int64_t total = 0;
  for (auto it = std::sregex_iterator(output.begin(), output.end(), line); it != std::sregex_iterator(); ++it) {
    total += std::stoll((*it)[1].str());
  }
  return total;
}

// Two ranks share one server: the distributed sampler gives each row to one
// rank, so every row is requested once and cached once.
TEST_F(OnlineTrain, TwoRanksShareServerWithoutDuplicates) {
  testing::ServeProcess server(work_.path(), model_,
                               {"--layer-ids", "1", "2", "3", "5", "--hidden-states-path",
                                (work_.path() / "server_files").string()});
  ASSERT_TRUE(server.ok()) << server.Log();
  const fs::path hs = work_.path() / "hybrid_hs";
  auto run = Train("ranks", {"--hidden-states-path", hs.string(), "--vllm-endpoint", server.url(), "--on-generate",
                             "cache", "--nproc-per-node", "2", "--num-workers", "1"});
  ASSERT_EQ(run.exit_code, 0) << run.output << server.Log();
  EXPECT_TRUE(Contains(run.output, "[rank 1]")) << run.output;
  EXPECT_EQ(GeneratedInLog(run.output, 0), kRows) << run.output;
  EXPECT_EQ(GeneratedInLog(run.output, 1), 0) << run.output;
  EXPECT_EQ(CountHiddenStatesFiles(hs), kRows);
  EXPECT_TRUE(StrayFiles(hs).empty());
}

TEST_F(OnlineTrain, FilesOfOtherLayerIdsAreRejected) {
  auto generate = RunDraftforge({"generate", "--model", model_, "--preprocessed-data", Data().string(),
                                 "--layer-ids", "1", "2", "3", "4"});
  ASSERT_EQ(generate.exit_code, 0) << generate.output;
  for (const std::string policy : {"raise", "generate"}) {
    auto run = Train("other_ids_" + policy, {"--on-missing", policy, "--epochs", "1"});
    EXPECT_EQ(run.exit_code, 1) << run.output;
    EXPECT_TRUE(Contains(run.output, "captured at layer ids [1, 2, 3, 4]")) << run.output;
    EXPECT_TRUE(Contains(run.output, "Pass --layer-ids 1 2 3 4")) << run.output;
  }
}

TEST_F(OnlineTrain, ServerOfOtherLayerIdsIsRejected) {
  testing::ServeProcess server(work_.path(), model_,
                               {"--layer-ids", "1", "2", "3", "4", "--hidden-states-path",
                                (work_.path() / "server_files").string()});
  ASSERT_TRUE(server.ok()) << server.Log();
  auto run = Train("online", {"--vllm-endpoint", server.url(), "--epochs", "1"});
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_TRUE(Contains(run.output, "captures layer ids [1, 2, 3, 4] but [1, 2, 3, 5] are expected")) << run.output;
}

TEST_F(OnlineTrain, FailedGenerationExitsNonZero) {
  // Every 5th response carries other prompt ids, which the client rejects
  // without retrying, so 8 of the 40 samples fail.
  testing::ServeProcess server(work_.path(), model_,
                               {"--layer-ids", "1", "2", "3", "5", "--hidden-states-path",
                                (work_.path() / "server_files").string(), "--test-wrong-prompt-ids-every", "5"});
  ASSERT_TRUE(server.ok()) << server.Log();
  auto run = Train("online", {"--vllm-endpoint", server.url(), "--epochs", "1"});
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_TRUE(Contains(run.output, "8 failed")) << run.output;
  EXPECT_TRUE(Contains(run.output, "8 hidden-states samples could not be generated")) << run.output;
  EXPECT_TRUE(fs::exists(work_.path() / "online" / "ckpt" / "0" / "model.safetensors"));
}

TEST_F(OnlineTrain, ServerWithOtherModelNameFailsWithHint) {
  testing::ServeProcess server(work_.path(), model_,
                               {"--layer-ids", "1", "2", "3", "5", "--served-model-name", "other-name",
                                "--hidden-states-path", (work_.path() / "server_files").string()});
  ASSERT_TRUE(server.ok()) << server.Log();
  auto run = Train("online", {"--vllm-endpoint", server.url(), "--request-timeout", "10"});
  EXPECT_NE(run.exit_code, 0) << run.output;
  EXPECT_TRUE(Contains(run.output, "serves model 'other-name'")) << run.output;
  EXPECT_TRUE(Contains(run.output, "--served-model-name")) << run.output;
}

TEST_F(OnlineTrain, MissingFilePolicies) {
  auto cached = Train("cache", {"--on-generate", "cache", "--epochs", "1"});
  ASSERT_EQ(cached.exit_code, 0) << cached.output;
  const fs::path hs = Data() / "hidden_states";
  ASSERT_EQ(CountHiddenStatesFiles(hs), kRows);
  fs::remove(hs / "hs_3.safetensors");

  auto skip = Train("skip", {"--on-missing", "skip", "--epochs", "1"});
  ASSERT_EQ(skip.exit_code, 0) << skip.output;
  EXPECT_FALSE(Contains(skip.output, "skipping dataset row 3")) << skip.output;
  EXPECT_FALSE(Contains(skip.output, "generated")) << skip.output;

  auto warn = Train("warn", {"--on-missing", "warn", "--epochs", "1"});
  ASSERT_EQ(warn.exit_code, 0) << warn.output;
  EXPECT_TRUE(Contains(warn.output, "skipping dataset row 3: " + (hs / "hs_3.safetensors").string() +
                                        " does not exist"))
      << warn.output;
  EXPECT_EQ(CountHiddenStatesFiles(hs), kRows - 1);

  auto raise = Train("raise", {"--on-missing", "raise", "--epochs", "1"});
  EXPECT_EQ(raise.exit_code, 1) << raise.output;
  EXPECT_TRUE(Contains(raise.output, "hs_3.safetensors for dataset row 3 does not exist")) << raise.output;

  auto generate = Train("generate", {"--on-missing", "generate", "--on-generate", "cache", "--epochs", "1"});
  ASSERT_EQ(generate.exit_code, 0) << generate.output;
  EXPECT_TRUE(Contains(generate.output, "epoch 0 generated 1 hidden-states samples")) << generate.output;
  EXPECT_EQ(CountHiddenStatesFiles(hs), kRows);

  auto bad = Train("bad", {"--on-missing", "sometimes"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_TRUE(Contains(bad.output, "--on-missing")) << bad.output;
}

TEST_F(OnlineTrain, DamagedFileIsGeneratedAgain) {
  auto cached = Train("cache", {"--on-generate", "cache", "--epochs", "1"});
  ASSERT_EQ(cached.exit_code, 0) << cached.output;
  const fs::path file = Data() / "hidden_states" / "hs_5.safetensors";
  const std::string good = ReadFileText(file);
  fs::resize_file(file, good.size() / 2);

  // Without generation the damaged file is reported and its sample skipped,
  // or, under raise, the run fails.
  auto warn = Train("warn", {"--on-missing", "warn", "--epochs", "1"});
  ASSERT_EQ(warn.exit_code, 0) << warn.output;
  EXPECT_TRUE(Contains(warn.output, "skipping dataset row 5: " + file.string())) << warn.output;
  auto raise = Train("raise", {"--on-missing", "raise", "--epochs", "1"});
  EXPECT_EQ(raise.exit_code, 1) << raise.output;
  EXPECT_TRUE(Contains(raise.output, "dataset row 5 (--on-missing raise)")) << raise.output;

  // With generation it is reported, generated again and replaced.
  auto regenerate = Train("regenerate", {"--on-generate", "cache", "--epochs", "1"});
  ASSERT_EQ(regenerate.exit_code, 0) << regenerate.output;
  EXPECT_TRUE(Contains(regenerate.output, "dataset row 5: " + file.string())) << regenerate.output;
  EXPECT_TRUE(Contains(regenerate.output, "generating it again (the new file replaces it)")) << regenerate.output;
  EXPECT_TRUE(Contains(regenerate.output, "replaced 1 damaged files")) << regenerate.output;
  EXPECT_EQ(ReadFileText(file), good);

  // A well-formed file of other tokens means the dataset changed: skipped
  // with a warning, never overwritten.
  fs::copy_file(Data() / "hidden_states" / "hs_0.safetensors", file, fs::copy_options::overwrite_existing);
  auto mismatch = Train("mismatch", {"--epochs", "1"});
  ASSERT_EQ(mismatch.exit_code, 0) << mismatch.output;
  EXPECT_TRUE(Contains(mismatch.output, "skipping dataset row 5")) << mismatch.output;
  EXPECT_TRUE(Contains(mismatch.output, "token_ids")) << mismatch.output;
  EXPECT_EQ(ReadFileText(file), ReadFileText(Data() / "hidden_states" / "hs_0.safetensors"));
}

// Runs `args` in a child process and SIGKILLs it once `metrics` contains a
// training step of epoch 1; true when the kill came before the run ended.
bool RunAndKillInEpochOne(const std::vector<std::string>& args, const fs::path& metrics) {
  pid_t pid = testing::SpawnDraftforge(args, {}, {});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return false;  // finished before the kill
    if (Contains(ReadFileText(metrics), "\"epoch\":1,\"lr\"")) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return false;
}

TEST_F(OnlineTrain, ResumeAfterSigkillEndsWithTheSameWeights) {
  auto cached = Train("cache", {"--on-generate", "cache", "--epochs", "1"});
  ASSERT_EQ(cached.exit_code, 0) << cached.output;
  // Short rows make many steps per epoch, so the kill lands inside epoch 1.
  const std::vector<std::string> rows = {"--total-seq-len", "128", "--num-workers", "1"};
  auto full = Train("full", rows);
  ASSERT_EQ(full.exit_code, 0) << full.output;

  ASSERT_TRUE(RunAndKillInEpochOne(TrainArgs("killed", rows), work_.path() / "killed" / "logs" / "metrics.jsonl"));
  EXPECT_FALSE(fs::exists(work_.path() / "killed" / "ckpt" / "1")) << "killed inside epoch 1";
  auto resumed = Train("killed", rows);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_TRUE(Contains(resumed.output, "resuming from")) << resumed.output;
  EXPECT_TRUE(Weights("killed") == Weights("full"));
  // The optimizer archives differ in libtorch's type-name counters, so
  // compare the bookkeeping instead.
  auto state = [&](const std::string& name) {
    return nlohmann::json::parse(ReadFileText(work_.path() / name / "ckpt" / "1" / "training_state.json"));
  };
  EXPECT_EQ(state("killed")["global_step"], state("full")["global_step"]);
}

TEST(OnlineGeneration, RejectsVerifierLargerThanMemory) {
  TempDir dir;
  // A sparse file: its size counts, but it takes no disk space.
  const fs::path weights = dir.path() / "model.safetensors";
  { std::ofstream create(weights); }
  fs::resize_file(weights, uintmax_t{1} << 42);  // 4 TiB
  Status status = train::CheckEngineFitsInMemory(dir.str(), torch::kBFloat16);
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(Contains(status.message(), "8192.0 GiB")) << status.message();  // doubled for float32
  EXPECT_TRUE(Contains(status.message(), "--vllm-endpoint")) << status.message();

  fs::resize_file(weights, 1 << 20);
  EXPECT_TRUE(train::CheckEngineFitsInMemory(dir.str(), torch::kBFloat16).ok());
}

TEST(TensorBoard, Crc32cOfTheCheckString) {
  const std::string check = "123456789";
  EXPECT_EQ(train::Crc32c({reinterpret_cast<const uint8_t*>(check.data()), check.size()}), 0xe3069283u);
}

TEST(TensorBoard, WrittenScalarsReadBack) {
  TempDir dir;
  std::string path;
  {
    auto writer = train::TensorBoardWriter::Open(dir.str());
    ASSERT_TRUE(writer.ok()) << writer.status().ToString();
    path = (*writer)->path();
    ASSERT_TRUE((*writer)->AddScalars(0, {{"train/loss", 2.5}, {"lr", 1e-3}}).ok());
    ASSERT_TRUE((*writer)->AddScalars(7, {{"train/loss", 1.25}}).ok());
  }
  EXPECT_TRUE(fs::path(path).filename().string().starts_with("events.out.tfevents."));
  auto scalars = train::ReadTensorBoardScalars(path);
  ASSERT_TRUE(scalars.ok()) << scalars.status().ToString();
  ASSERT_EQ(scalars->size(), 3u);
  EXPECT_EQ((*scalars)[0].tag, "train/loss");
  EXPECT_EQ((*scalars)[0].step, 0);
  EXPECT_FLOAT_EQ((*scalars)[1].value, 1e-3f);
  EXPECT_EQ((*scalars)[2].step, 7);
  EXPECT_FLOAT_EQ((*scalars)[2].value, 1.25f);

  // A cut-short final record (a killed writer) is ignored, a flipped byte is not.
  std::string bytes = ReadFileText(path);
  {
    std::ofstream cut(path + ".cut", std::ios::binary);
    cut << bytes.substr(0, bytes.size() - 3);
  }
  auto cut = train::ReadTensorBoardScalars(path + ".cut");
  ASSERT_TRUE(cut.ok()) << cut.status().ToString();
  EXPECT_EQ(cut->size(), 2u);
  bytes[bytes.size() - 6] ^= 0x40;
  {
    std::ofstream flipped(path + ".flipped", std::ios::binary);
    flipped << bytes;
  }
  auto flipped = train::ReadTensorBoardScalars(path + ".flipped");
  ASSERT_FALSE(flipped.ok());
  EXPECT_TRUE(Contains(flipped.status().message(), "checksum")) << flipped.status().ToString();
}

// protoc's schema-free decoder is an independent protobuf parser: it must
// see TensorBoard's field numbers (1 wall_time, 2 step, 5 summary { 1 value
// { 1 tag, 2 simple_value } }) in a record we wrote.
TEST(TensorBoard, RecordsDecodeWithProtocRaw) {
  if (std::system("command -v protoc > /dev/null 2>&1") != 0) GTEST_SKIP() << "protoc is not installed";
  TempDir dir;
  std::string path;
  {
    auto writer = train::TensorBoardWriter::Open(dir.str());
    ASSERT_TRUE(writer.ok()) << writer.status().ToString();
    path = (*writer)->path();
    ASSERT_TRUE((*writer)->AddScalars(42, {{"val/full_acc_0_epoch", 0.5}}).ok());
  }
  const std::string bytes = ReadFileText(path);
  // Skip the first record (8-byte length, 4-byte CRC, payload, 4-byte CRC).
  uint64_t first = 0;
  for (int i = 7; i >= 0; --i) first = (first << 8) | static_cast<uint8_t>(bytes[i]);
  const size_t second = 12 + first + 4;
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | static_cast<uint8_t>(bytes[second + i]);
  {
    std::ofstream payload(dir.path() / "payload.bin", std::ios::binary);
    payload << bytes.substr(second + 12, length);
  }
  const fs::path decoded = dir.path() / "decoded.txt";
  const std::string command = "protoc --decode_raw < '" + (dir.path() / "payload.bin").string() + "' > '" +
                              decoded.string() + "' 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << ReadFileText(decoded);
  const std::string text = ReadFileText(decoded);
  EXPECT_TRUE(Contains(text, "2: 42")) << text;
  EXPECT_TRUE(Contains(text, "5 {")) << text;
  EXPECT_TRUE(Contains(text, "1: \"val/full_acc_0_epoch\"")) << text;
  EXPECT_TRUE(Contains(text, "2: 0x3f000000")) << text;  // 0.5f as fixed32
}

TEST_F(OnlineTrain, TrainingWritesTensorBoardScalars) {
  auto run = Train("tb", {"--on-generate", "cache", "--epochs", "1"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::string event_file;
  for (const auto& entry : fs::directory_iterator(Logs("tb"))) {
    if (entry.path().filename().string().starts_with("events.out.tfevents.")) event_file = entry.path().string();
  }
  ASSERT_FALSE(event_file.empty());
  auto scalars = train::ReadTensorBoardScalars(event_file);
  ASSERT_TRUE(scalars.ok()) << scalars.status().ToString();
  std::map<int64_t, double> loss_by_step;
  bool has_validation = false;
  for (const auto& scalar : *scalars) {
    if (scalar.tag == "train/loss") loss_by_step[scalar.step] = scalar.value;
    if (scalar.tag == "val/full_acc_0_epoch") has_validation = true;
  }
  EXPECT_TRUE(has_validation);
  int64_t steps = 0;
  for (const auto& record : ReadJsonLines(Logs("tb") / "metrics.jsonl")) {
    if (!record.contains("train/loss")) continue;
    const int64_t step = record["step"].get<int64_t>();
    ASSERT_TRUE(loss_by_step.count(step)) << "step " << step;
    EXPECT_FLOAT_EQ(static_cast<float>(loss_by_step[step]), static_cast<float>(record["train/loss"].get<double>()));
    ++steps;
  }
  EXPECT_GT(steps, 0);
  EXPECT_EQ(static_cast<int64_t>(loss_by_step.size()), steps);

  auto off = Train("no_tb", {"--no-tensorboard", "--epochs", "1"});
  ASSERT_EQ(off.exit_code, 0) << off.output;
  for (const auto& entry : fs::directory_iterator(Logs("no_tb"))) {
    EXPECT_FALSE(entry.path().filename().string().starts_with("events.out.tfevents.")) << entry.path();
  }
}

}  // namespace
}  // namespace draftforge
