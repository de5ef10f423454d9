// Measures the overhead of the hidden-states client (HiddenStatesClient, the
// code behind `generate --endpoint`) against `draftforge serve --zero-work`.
// That server writes zero-valued files without running a model, so the
// figures show the client's cost rather than a model's. Printed per
// concurrency level: requests per second, client CPU per request and files
// moved per second.
//
// Usage: vllm_client_overhead --model MODEL_DIR [--draftforge PATH]
//          [--requests N] [--tokens T] [--concurrency 1,8,64]
// The server runs as a child process; its CPU time is reported separately.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "draftforge/engine/model_config.h"
#include "draftforge/hidden_states/hs_file.h"
#include "draftforge/hidden_states/vllm_client.h"
#include "draftforge/util/logging.h"

namespace fs = std::filesystem;
using namespace draftforge;

namespace {

double ProcessCpuSeconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// utime + stime of another process from /proc/PID/stat, in seconds.
double ChildCpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

std::vector<int> ParseList(const std::string& text) {
  std::vector<int> values;
  std::stringstream stream(text);
  for (std::string item; std::getline(stream, item, ',');) values.push_back(std::stoi(item));
  return values;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir;
  std::string binary = (fs::path(argv[0]).parent_path() / "draftforge").string();
  int requests = 4000;
  int tokens = 256;
  std::vector<int> levels = {1, 8, 64};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--model") model_dir = value;
    else if (flag == "--draftforge") binary = value;
    else if (flag == "--requests") requests = std::stoi(value);
    else if (flag == "--tokens") tokens = std::stoi(value);
    else if (flag == "--concurrency") levels = ParseList(value);
  }
  if (model_dir.empty()) {
    std::fprintf(stderr, "usage: %s --model MODEL_DIR [--draftforge PATH] [--requests N] "
                         "[--tokens T] [--concurrency 1,8,64]\n", argv[0]);
    return 2;
  }
  (void)InitLogging("warn");
  auto config = engine::ModelConfig::Load(model_dir).ValueOrDie();
  std::vector<int64_t> layer_ids = engine::DefaultLayerIds(config.num_hidden_layers);
  if (std::set<int64_t>(layer_ids.begin(), layer_ids.end()).size() != layer_ids.size()) {
    // vLLM's default [2, N/2, N-3, N] repeats ids for small N, such as 5.
    layer_ids = {1, 2, 3, config.num_hidden_layers};
  }

  const fs::path work = fs::temp_directory_path() / ("vllm_client_overhead-" + std::to_string(::getpid()));
  fs::create_directories(work / "out");
  const std::string ready = (work / "ready").string();
  pid_t server = ::fork();
  if (server == 0) {
    std::vector<std::string> args = {binary, "--log-level", "warn", "serve", model_dir, "--port", "0",
                                     "--zero-work", "--ready-file", ready, "--hidden-states-path",
                                     (work / "server").string(), "--layer-ids"};
    for (int64_t id : layer_ids) args.push_back(std::to_string(id));
    std::vector<char*> raw;
    for (auto& arg : args) raw.push_back(arg.data());
    raw.push_back(nullptr);
    ::execv(raw[0], raw.data());
    ::_exit(127);
  }
  int port = 0;
  for (int i = 0; i < 3000 && port == 0; ++i) {
    std::ifstream in(ready);
    if (!(in >> port)) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (port == 0) {
    std::fprintf(stderr, "the server did not start; is %s built?\n", binary.c_str());
    ::kill(server, SIGTERM);
    ::waitpid(server, nullptr, 0);
    fs::remove_all(work);
    return 1;
  }

  hidden_states::ClientOptions options;
  options.endpoints = {"http://127.0.0.1:" + std::to_string(port) + "/v1"};
  options.num_layers = static_cast<int64_t>(layer_ids.size());
  options.hidden_size = config.hidden_size;
  options.dtype = torch::kFloat32;
  auto client = hidden_states::HiddenStatesClient::Connect(options).ValueOrDie();

  std::mt19937 generator(0);
  std::uniform_int_distribution<int64_t> token(0, config.vocab_size - 1);
  std::vector<std::vector<int64_t>> prompts(256);
  for (auto& prompt : prompts) {
    prompt.resize(tokens);
    for (auto& id : prompt) id = token(generator);
  }

  std::printf("model %s (H=%lld, L=%zu), %d tokens per request, %d requests per level, %u "
              "hardware threads\n",
              model_dir.c_str(), static_cast<long long>(config.hidden_size), layer_ids.size(), tokens,
              requests, std::thread::hardware_concurrency());
  std::printf("%11s %12s %16s %17s %16s %14s %10s\n", "concurrency", "requests/s",
              "client CPU us/req", "client req/s/core", "server CPU us/req", "files moved/s", "MB/s");
  for (int concurrency : levels) {
    std::atomic<int> next{0};
    std::atomic<int> failures{0};
    std::atomic<int64_t> bytes{0};
    const double cpu_start = ProcessCpuSeconds();
    const double server_start = ChildCpuSeconds(server);
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < concurrency; ++t) {
      threads.emplace_back([&] {
        for (int i = next.fetch_add(1); i < requests; i = next.fetch_add(1)) {
          const auto& prompt = prompts[i % prompts.size()];
          auto output = client->Generate(i, prompt,
                                         (work / "out" / hidden_states::HiddenStatesFileName(i)).string());
          if (output.ok()) {
            bytes += output->bytes;
          } else if (failures.fetch_add(1) < 3) {
            std::fprintf(stderr, "%s\n", output.status().ToString().c_str());
          }
        }
      });
    }
    for (auto& thread : threads) thread.join();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double cpu = ProcessCpuSeconds() - cpu_start;
    const double server_cpu = ChildCpuSeconds(server) - server_start;
    const int done = requests - failures.load();
    const double cpu_per_request = cpu / std::max(1, done);
    std::printf("%11d %12.0f %16.1f %17.0f %16.1f %14.0f %10.1f\n", concurrency, done / seconds,
                cpu_per_request * 1e6, 1.0 / cpu_per_request, server_cpu / std::max(1, done) * 1e6,
                done / seconds, bytes.load() / seconds / 1e6);
    if (failures > 0) std::printf("  %d requests failed\n", failures.load());
    fs::remove_all(work / "out");
    fs::create_directories(work / "out");
  }
  ::kill(server, SIGTERM);
  ::waitpid(server, nullptr, 0);
  fs::remove_all(work);
  return 0;
}
