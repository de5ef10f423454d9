// Helpers shared by the test files: fixture lookup, temporary directories and
// running the draftforge executable.
#pragma once

#include <gtest/gtest.h>

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace draftforge::testing {

// Directory of the shared fixtures: $DRAFTFORGE_TEST_DATA, else ../shared next
// to the source tree. Empty when it does not exist.
std::optional<std::filesystem::path> SharedDataDir();

// Returns SharedDataDir()/relative when that path exists.
std::optional<std::filesystem::path> SharedPath(const std::string& relative);

// A fresh directory under the system temp dir, removed when the object dies
// (kept when DRAFTFORGE_KEEP_TEST_DIRS is set, for debugging).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

struct CommandOutput {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs the built draftforge executable with `args` and captures its output.
CommandOutput RunDraftforge(const std::vector<std::string>& args);

// Absolute path of the draftforge executable under test.
std::string DraftforgeBinary();

// Starts the draftforge executable with `args` in a child process, with
// `env` added to its environment and stdout and stderr written to `log`
// (discarded when `log` is empty). Returns the child's pid.
pid_t SpawnDraftforge(const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
                      const std::filesystem::path& log);

// Contents of a file, "" when it cannot be read.
std::string ReadFileText(const std::filesystem::path& path);
// Lines of a text file without their newlines.
std::vector<std::string> ReadFileLines(const std::filesystem::path& path);

// Writes a prepared dataset to DATA_DIR with one row per golden hidden-states
// file of GOLDEN_DIR (the stories in STORIES_JSONL, loss mask all ones but
// the first token), and copies the golden files to DATA_DIR/hidden_states.
void WriteGoldenDataset(const std::filesystem::path& golden_dir, const std::filesystem::path& stories_jsonl,
                        const std::filesystem::path& data_dir);

}  // namespace draftforge::testing

// Skips the current test, with the reason, when a shared fixture is missing.
#define DF_REQUIRE_SHARED(var, relative)                                              \
  auto var##_optional = ::draftforge::testing::SharedPath(relative);                  \
  if (!var##_optional) {                                                              \
    GTEST_SKIP() << "shared fixture '" << (relative)                                  \
                 << "' not found; set DRAFTFORGE_TEST_DATA to the fixtures directory"; \
  }                                                                                   \
  const std::filesystem::path var = *var##_optional
