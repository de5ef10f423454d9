// Tests of the CLI shell: global flags, exception handling and flag checks
// of subcommands that have no test file of their own.
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <stdexcept>

#include "draftforge/cli/commands.h"
#include "test_support.h"

namespace draftforge::cli {
namespace {

using draftforge::testing::RunDraftforge;
using draftforge::testing::TempDir;

int RunThrowingCommand(const std::function<void()>& body) {
  CLI::App app{"test"};
  app.require_subcommand(1);
  app.add_subcommand("fail", "Throws")->callback(body);
  const char* argv[] = {"draftforge", "fail"};
  return ParseAndRun(app, 2, argv);
}

TEST(Cli, ExceptionsBecomeExitCodeOne) {
  EXPECT_EQ(RunThrowingCommand([] { throw std::runtime_error("boom"); }), 1);
  EXPECT_EQ(RunThrowingCommand([] { TORCH_CHECK(false, "tensor check failed"); }), 1);
  EXPECT_EQ(RunThrowingCommand([] { ExitOnError(Status::Invalid("bad value")); }), 1);
  EXPECT_EQ(RunThrowingCommand([] {}), 0);
}

TEST(Cli, LogLevelIsCaseInsensitive) {
  TempDir dir;
  // An error must still be printed at level WARN.
  auto result = RunDraftforge({"--log-level", "WARN", "prepare", "--data",
                               (dir.path() / "missing.jsonl").string(), "--output",
                               (dir.path() / "out").string()});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.output.find("missing.jsonl"), std::string::npos) << result.output;
}

TEST(Cli, OpenBlasFollowsThreadCount) {
  if (::dlsym(RTLD_DEFAULT, "openblas_set_num_threads") == nullptr) {
    GTEST_SKIP() << "this libtorch does not use OpenBLAS, so there is no OpenBLAS pool to size";
  }
  if (std::getenv("OPENBLAS_NUM_THREADS") != nullptr) {
    GTEST_SKIP() << "OPENBLAS_NUM_THREADS is set, and draftforge leaves the pool as the user sized it";
  }
  TempDir dir;
  auto result = RunDraftforge({"--log-level", "debug", "--threads", "1", "prepare", "--data",
                               (dir.path() / "missing.jsonl").string(), "--output", (dir.path() / "out").string()});
  // Unless the caller set a timeout, the process restarted itself with 4.
  const char* timeout = std::getenv("OPENBLAS_THREAD_TIMEOUT");
  const std::string expected =
      std::string("OpenBLAS threads: 1, OPENBLAS_THREAD_TIMEOUT=") + (timeout != nullptr ? timeout : "4");
  EXPECT_NE(result.output.find(expected), std::string::npos) << result.output;
}

TEST(Cli, InvalidLogLevelListsChoices) {
  TempDir dir;
  auto result = RunDraftforge({"--log-level", "bogus", "prepare", "--data",
                               (dir.path() / "missing.jsonl").string(), "--output",
                               (dir.path() / "out").string()});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("--log-level"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("bogus"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("trace"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("error"), std::string::npos) << result.output;
}

TEST(Cli, DemoAssetsRejectsNonPositiveSamples) {
  TempDir dir;
  for (const char* samples : {"-1", "0"}) {
    SCOPED_TRACE(samples);
    auto result = RunDraftforge(
        {"demo-assets", "--output", (dir.path() / "demo").string(), "--samples", samples});
    EXPECT_NE(result.exit_code, 0);
    EXPECT_NE(result.output.find("--samples"), std::string::npos) << result.output;
    EXPECT_FALSE(std::filesystem::exists(dir.path() / "demo"));
  }
}

}  // namespace
}  // namespace draftforge::cli
