#include "test_support.h"

#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>

#include "draftforge/data/token_dataset.h"

namespace draftforge::testing {

std::optional<std::filesystem::path> SharedDataDir() {
  std::filesystem::path dir;
  if (const char* env = std::getenv("DRAFTFORGE_TEST_DATA"); env != nullptr && *env != '\0') {
    dir = env;
  } else {
    dir = std::filesystem::path(DRAFTFORGE_SOURCE_DIR) / ".." / "shared";
  }
  if (!std::filesystem::is_directory(dir)) return std::nullopt;
  return std::filesystem::canonical(dir);
}

std::optional<std::filesystem::path> SharedPath(const std::string& relative) {
  auto dir = SharedDataDir();
  if (!dir) return std::nullopt;
  auto path = *dir / relative;
  if (!std::filesystem::exists(path)) return std::nullopt;
  return path;
}

TempDir::TempDir() {
  std::random_device device;
  auto base = std::filesystem::temp_directory_path();
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto candidate = base / ("draftforge-test-" + std::to_string(::getpid()) + "-" +
                             std::to_string(device()));
    if (std::filesystem::create_directory(candidate)) {
      path_ = candidate;
      return;
    }
  }
  throw std::runtime_error("cannot create a temporary test directory");
}

TempDir::~TempDir() {
  if (std::getenv("DRAFTFORGE_KEEP_TEST_DIRS") != nullptr) return;
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string DraftforgeBinary() { return DRAFTFORGE_BINARY; }

CommandOutput RunDraftforge(const std::vector<std::string>& args) {
  std::string command = "'" + DraftforgeBinary() + "'";
  for (const auto& arg : args) {
    std::string quoted = "'";
    for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    command += " " + quoted + "'";
  }
  command += " 2>&1";
  CommandOutput result;
  std::FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer{};
  size_t count = 0;
  while ((count = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) {
    result.output.append(buffer.data(), count);
  }
  int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

pid_t SpawnDraftforge(const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
                      const std::filesystem::path& log) {
  std::string binary = DraftforgeBinary();
  std::vector<std::string> strings{binary};
  strings.insert(strings.end(), args.begin(), args.end());
  const std::string log_path = log.empty() ? std::string("/dev/null") : log.string();
  pid_t pid = ::fork();
  if (pid == 0) {
    for (const auto& [name, value] : env) ::setenv(name.c_str(), value.c_str(), 1);
    int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
    }
    std::vector<char*> argv;
    for (std::string& text : strings) argv.push_back(text.data());
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

std::string ReadFileText(const std::filesystem::path& path) {
  std::ifstream stream(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
}

std::vector<std::string> ReadFileLines(const std::filesystem::path& path) {
  std::ifstream stream(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(stream, line);) lines.push_back(line);
  return lines;
}

void WriteGoldenDataset(const std::filesystem::path& golden_dir, const std::filesystem::path& stories_jsonl,
                        const std::filesystem::path& data_dir) {
  nlohmann::json index = nlohmann::json::parse(ReadFileText(golden_dir / "index.json"));
  std::vector<std::string> lines = ReadFileLines(stories_jsonl);
  std::vector<data::TokenRow> rows;
  std::filesystem::create_directories(data_dir / "hidden_states");
  for (const auto& entry : index["entries"]) {
    nlohmann::json line = nlohmann::json::parse(lines.at(entry["train_line"].get<size_t>()));
    data::TokenRow row;
    row.input_ids = line["input_ids"].get<std::vector<int64_t>>();
    row.loss_mask.assign(row.input_ids.size(), 1);
    row.loss_mask[0] = 0;
    rows.push_back(row);
    std::filesystem::copy_file(
        golden_dir / entry["hs_file"].get<std::string>(),
        data_dir / "hidden_states" / ("hs_" + std::to_string(entry["i"].get<int64_t>()) + ".safetensors"));
  }
  ASSERT_TRUE(data::WriteTokenDataset(data_dir.string(), data::TokenDataset::FromRows(rows)).ok());
}

}  // namespace draftforge::testing
