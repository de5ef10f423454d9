// Data-parallel `draftforge train` on 127.0.0.1 with Gloo: 2 ranks against 1
// rank with the same global batch, lost ranks, the launcher, resume checks.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "draftforge/data/token_dataset.h"
#include "test_support.h"

namespace draftforge {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using Clock = std::chrono::steady_clock;

using testing::ReadFileLines;
using testing::ReadFileText;
using testing::WriteGoldenDataset;

// Short rows (64 tokens hold one golden sample each) give several steps per
// epoch, so 20 steps cross epoch boundaries and validation.
std::vector<std::string> TrainArgs(const fs::path& model, const fs::path& data, const fs::path& run_dir) {
  return {"--threads", "1", "train", "--verifier", model.string(), "--data-path", data.string(),
          "--save-path", (run_dir / "ckpt").string(), "--log-dir", (run_dir / "logs").string(),
          "--total-seq-len", "64", "--layer-ids", "1,2,3,5", "--num-workers", "0", "--lr", "1e-3",
          "--dist-timeout", "60"};
}

std::vector<std::string> With(std::vector<std::string> args, const std::vector<std::string>& extra) {
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

int64_t FreePort() {
  int socket_fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(socket_fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  ::getsockname(socket_fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(socket_fd);
  return ntohs(address.sin_port);
}

// Waits for `pid`; returns its wait status, or nullopt after `seconds` (the
// process is then killed).
std::optional<int> WaitFor(pid_t pid, double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return std::nullopt;
}

// Runs `args` to the end; returns the exit code (-1 when killed or timed
// out) and the output.
testing::CommandOutput RunToEnd(const std::vector<std::string>& args, const fs::path& log,
                           const std::map<std::string, std::string>& env = {}, double seconds = 240) {
  std::optional<int> status = WaitFor(testing::SpawnDraftforge(args, env, log), seconds);
  testing::CommandOutput result;
  result.output = ReadFileText(log);
  result.exit_code = status && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
  return result;
}

// Waits until `path` has at least `lines` lines or `seconds` pass.
bool WaitForLines(const fs::path& path, size_t lines, double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    if (ReadFileLines(path).size() >= lines) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// Float32 master weights of the last epoch folder under `save_path`.
std::vector<torch::Tensor> MasterWeights(const fs::path& save_path) {
  std::optional<int64_t> last;
  for (const auto& entry : fs::directory_iterator(save_path)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_symlink() && name.find_first_not_of("0123456789") == std::string::npos) {
      last = std::max<int64_t>(last.value_or(-1), std::stoll(name));
    }
  }
  EXPECT_TRUE(last.has_value()) << "no epoch folder in " << save_path;
  if (!last) return {};
  torch::serialize::InputArchive archive;
  archive.load_from((save_path / std::to_string(*last) / "optimizer_state_dict.pt").string());
  torch::serialize::InputArchive master;
  archive.read("master_weights", master);
  std::vector<torch::Tensor> weights;
  for (int64_t i = 0;; ++i) {
    torch::Tensor value;
    if (!master.try_read("p" + std::to_string(i), value)) break;
    weights.push_back(value);
  }
  return weights;
}

double MaxAbsDifference(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double largest = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    largest = std::max(largest, (a[i] - b[i]).abs().max().item<double>());
  }
  return largest;
}

std::vector<nlohmann::json> TrainRecords(const fs::path& metrics) {
  std::vector<nlohmann::json> records;
  for (const auto& line : ReadFileLines(metrics)) {
    nlohmann::json record = nlohmann::json::parse(line);
    if (record.contains("train/loss")) records.push_back(record);
  }
  return records;
}

class DistributedTrain : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = testing::SharedPath("models/stories260k");
    auto golden = testing::SharedPath("data/stories260k/golden_hs");
    auto jsonl = testing::SharedPath("data/stories260k/train.jsonl");
    if (!model || !golden || !jsonl) {
      GTEST_SKIP() << "shared fixtures models/stories260k and data/stories260k not found; set "
                      "DRAFTFORGE_TEST_DATA to the fixtures directory";
    }
    model_ = *model;
    data_ = dir_.path() / "data";
    WriteGoldenDataset(*golden, *jsonl, data_);
  }

  std::vector<std::string> Args(const std::string& run, const std::vector<std::string>& extra = {}) {
    return With(TrainArgs(model_, data_, dir_.path() / run), extra);
  }

  TempDir dir_;
  fs::path model_;
  fs::path data_;
};

// The global batch is 2 packed rows per optimizer step in both runs: one row
// on each of 2 ranks, or 2 accumulated rows on 1 rank. Each row's loss is
// normalised by its own token count and the step's gradient is the plain mean
// over rows, so the two runs do the same math up to summation order.
TEST_F(DistributedTrain, TwoRanksMatchOneRankAccumulating) {
  const std::vector<std::string> steps = {"--epochs", "100", "--max-steps", "20"};
  auto single = RunToEnd(Args("single", With(steps, {"--gradient-accumulation-steps", "2"})), dir_.path() / "single.log");
  ASSERT_EQ(single.exit_code, 0) << single.output;
  auto ranks = RunToEnd(Args("ranks", With(steps, {"--nproc-per-node", "2"})), dir_.path() / "ranks.log");
  ASSERT_EQ(ranks.exit_code, 0) << ranks.output;
  auto plain = RunToEnd(Args("plain", steps), dir_.path() / "plain.log");
  ASSERT_EQ(plain.exit_code, 0) << plain.output;

  auto single_records = TrainRecords(dir_.path() / "single" / "logs" / "metrics.jsonl");
  auto rank_records = TrainRecords(dir_.path() / "ranks" / "logs" / "metrics.jsonl");
  ASSERT_EQ(single_records.size(), 20u);
  ASSERT_EQ(rank_records.size(), 20u) << "only rank 0 writes metrics";
  for (size_t i = 0; i < 20; ++i) {
    EXPECT_EQ(rank_records[i]["tokens"], single_records[i]["tokens"]) << "step " << i;
    EXPECT_NEAR(rank_records[i]["train/loss"].get<double>(), single_records[i]["train/loss"].get<double>(), 1e-4)
        << "step " << i;
  }
  EXPECT_TRUE(ranks.output.find("[rank 1]") != std::string::npos) << ranks.output;

  auto single_weights = MasterWeights(dir_.path() / "single" / "ckpt");
  auto rank_weights = MasterWeights(dir_.path() / "ranks" / "ckpt");
  auto plain_weights = MasterWeights(dir_.path() / "plain" / "ckpt");
  ASSERT_FALSE(single_weights.empty());
  // Halving is exact in float32, so the runs measured bit-identical here; the
  // tolerance leaves room for another summation order in Gloo.
  const double tolerance = 1e-6;
  const double difference = MaxAbsDifference(single_weights, rank_weights);
  EXPECT_LT(difference, tolerance);
  // One row per step trains other weights, so the tolerance can tell runs apart.
  EXPECT_GT(MaxAbsDifference(single_weights, plain_weights), 100 * tolerance);
}

TEST_F(DistributedTrain, ResumeWithOtherWorldSize) {
  auto ranks = RunToEnd(Args("run", {"--epochs", "100", "--max-steps", "2", "--nproc-per-node", "2"}),
                   dir_.path() / "ranks.log");
  ASSERT_EQ(ranks.exit_code, 0) << ranks.output;
  auto single = RunToEnd(Args("run", {"--epochs", "100", "--max-steps", "2", "--gradient-accumulation-steps", "2"}),
                    dir_.path() / "single.log");
  EXPECT_NE(single.exit_code, 0) << single.output;
  EXPECT_TRUE(single.output.find("is a partial epoch of a run with 2 ranks") != std::string::npos) << single.output;

  // At an epoch boundary another layout may continue, with a warning.
  auto whole = RunToEnd(Args("whole", {"--epochs", "1", "--nproc-per-node", "2"}), dir_.path() / "whole.log");
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  auto more = RunToEnd(Args("whole", {"--epochs", "2"}), dir_.path() / "more.log");
  EXPECT_EQ(more.exit_code, 0) << more.output;
  EXPECT_TRUE(more.output.find("was written with 2 ranks x 1 accumulation steps") != std::string::npos)
      << more.output;
}

// Each rank in turn is killed in the middle of a run whose ranks start as
// under torchrun. The other rank must exit non-zero and name it, well within
// the collective timeout of 60 s.
TEST_F(DistributedTrain, KilledRankStopsPeerWithMessage) {
  for (int64_t victim : {1, 0}) {
    SCOPED_TRACE("killed rank " + std::to_string(victim));
    const std::string run = "killed" + std::to_string(victim);
    const std::string port = std::to_string(FreePort());
    std::vector<pid_t> pids;
    for (int64_t rank = 0; rank < 2; ++rank) {
      std::map<std::string, std::string> env = {{"RANK", std::to_string(rank)}, {"LOCAL_RANK", std::to_string(rank)},
                                                {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"},
                                                {"MASTER_PORT", port}};
      pids.push_back(testing::SpawnDraftforge(Args(run, {"--epochs", "100000"}), env,
                           dir_.path() / (run + "_rank" + std::to_string(rank) + ".log")));
    }
    fs::path metrics = dir_.path() / run / "logs" / "metrics.jsonl";
    bool started = WaitForLines(metrics, 3, 120);
    const int64_t survivor = 1 - victim;
    ::kill(pids[victim], SIGKILL);
    ::waitpid(pids[victim], nullptr, 0);
    auto start = Clock::now();
    std::optional<int> status = WaitFor(pids[survivor], 45);
    double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    std::string output = ReadFileText(dir_.path() / (run + "_rank" + std::to_string(survivor) + ".log"));
    ASSERT_TRUE(started) << output;
    ASSERT_TRUE(status.has_value()) << "rank " << survivor << " still ran 45 s after the kill:\n" << output;
    EXPECT_TRUE(WIFEXITED(*status)) << output;
    EXPECT_NE(WEXITSTATUS(*status), 0) << output;
    EXPECT_TRUE(output.find("lost rank " + std::to_string(victim)) != std::string::npos) << output;
    EXPECT_LT(seconds, 30) << output;
  }
}

TEST_F(DistributedTrain, LauncherNamesKilledRank) {
  fs::path log = dir_.path() / "launcher.log";
  pid_t launcher = testing::SpawnDraftforge(Args("launched", {"--epochs", "100000", "--nproc-per-node", "2"}), {}, log);
  ASSERT_TRUE(WaitForLines(dir_.path() / "launched" / "logs" / "metrics.jsonl", 3, 120)) << ReadFileText(log);
  std::smatch match;
  std::string text = ReadFileText(log);
  ASSERT_TRUE(std::regex_search(text, match, std::regex("started rank 1 of 2 \\(pid ([0-9]+)\\)"))) << text;
  ::kill(static_cast<pid_t>(std::stoll(match[1].str())), SIGKILL);
  std::optional<int> status = WaitFor(launcher, 60);
  std::string output = ReadFileText(log);
  ASSERT_TRUE(status.has_value()) << "the launcher still ran 60 s after a rank was killed:\n" << output;
  EXPECT_TRUE(WIFEXITED(*status)) << output;
  EXPECT_NE(WEXITSTATUS(*status), 0) << output;
  EXPECT_TRUE(output.find("rank 1 of 2 was killed by signal 9") != std::string::npos) << output;
  EXPECT_TRUE(output.find("lost rank 1") != std::string::npos) << output;
}

TEST_F(DistributedTrain, UnreachableStoreFails) {
  const std::map<std::string, std::string> env = {{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"},
                                                  {"MASTER_PORT", std::to_string(FreePort())}};
  auto args = Args("unreachable", {"--epochs", "1"});
  *(std::find(args.begin(), args.end(), "--dist-timeout") + 1) = "3";
  auto run = RunToEnd(args, dir_.path() / "unreachable.log", env, 60);
  EXPECT_NE(run.exit_code, 0) << run.output;
  EXPECT_TRUE(run.output.find("rank 1 could not reach the rendezvous store at 127.0.0.1") != std::string::npos)
      << run.output;
}

}  // namespace
}  // namespace draftforge
