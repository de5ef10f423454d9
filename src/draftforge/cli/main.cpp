// Entry point of the `draftforge` executable.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "draftforge/cli/commands.h"
#include "draftforge/util/logging.h"
#include "draftforge/util/process_env.h"

namespace {

// libgomp reads OMP_WAIT_POLICY, and OpenBLAS reads OPENBLAS_THREAD_TIMEOUT,
// once, when the libraries load, so neither can be changed from main(). Both
// defaults let idle worker threads spin, and the spinning threads of one pool
// take the cores the other pool needs:
// - OpenMP: on a 2-core machine with one core busy elsewhere, spinning made
//   `generate` about 10x slower, while passive waiting cost about 2% of
//   training speed on an idle machine.
// - OpenBLAS (pthreads build): after each GEMM its workers spin-yield for up to
//   2^28 cycles. In 30-step training runs of the hidden-size-64 stories260k
//   draft (2 threads, 2 cores), a timeout of 2^4 cycles raised the median from
//   7,040 to 7,840 tokens/s and cut system CPU time from 14.9 s to 4.6 s per
//   run. Large GEMMs still use every BLAS thread; the workers only go to sleep
//   sooner.
// Unless the user set them, the process re-executes itself once with
// OMP_WAIT_POLICY=PASSIVE and OPENBLAS_THREAD_TIMEOUT=4 (the minimum), and
// records the names it added so that `launch-vllm` can remove them again.
void ReexecWithIdleWorkersSleeping(char** argv) {
  const std::vector<std::string> added = draftforge::util::AddEnvironmentDefaults(
      {{"OMP_WAIT_POLICY", "PASSIVE"}, {"OPENBLAS_THREAD_TIMEOUT", "4"}});
  if (added.empty()) return;
  ::execv("/proc/self/exe", argv);
  // execv returns only on failure, and then the process runs on with the library defaults.
}

// torch::set_num_threads sizes the OpenMP pool but not OpenBLAS's own thread
// pool, which defaults to one thread per core. Several ranks on one machine
// would then each run that many GEMM threads. OpenBLAS is found at run time,
// because libtorch may use another BLAS (MKL in official builds) or none.
void MatchOpenBlasThreads(int count) {
  if (std::getenv("OPENBLAS_NUM_THREADS") != nullptr) return;
  using SetThreads = void (*)(int);
  using GetThreads = int (*)();
  auto set_threads = reinterpret_cast<SetThreads>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  auto get_threads = reinterpret_cast<GetThreads>(::dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  if (set_threads == nullptr || get_threads == nullptr) return;
  set_threads(count);
  const char* timeout = std::getenv("OPENBLAS_THREAD_TIMEOUT");
  spdlog::debug("OpenBLAS threads: {}, OPENBLAS_THREAD_TIMEOUT={}", get_threads(), timeout ? timeout : "(unset)");
}

}  // namespace

int main(int argc, char** argv) {
  ReexecWithIdleWorkersSleeping(argv);
  CLI::App app{"draftforge: train EAGLE-3 speculative-decoding drafts for models served by vLLM"};
  app.require_subcommand(1);
  std::string log_level = "info";
  int threads = 0;
  app.add_option("--log-level", log_level,
                 "Log level: trace, debug, info, warn or error (any letter case)")
      ->capture_default_str()
      ->transform(CLI::IsMember(draftforge::LogLevelNames(), CLI::ignore_case));
  app.add_option("--threads", threads,
                 "CPU threads for tensor math, per process (0 = one per hardware thread, divided among the ranks "
                 "that train --nproc-per-node starts on this machine)")
      ->capture_default_str();
  app.parse_complete_callback([&] {
    draftforge::cli::ExitOnError(draftforge::InitLogging(log_level));
    // libtorch may default to a single thread; set the count explicitly.
    // Ranks of one machine (LOCAL_WORLD_SIZE, set by torchrun and by
    // `train --nproc-per-node`) share its hardware threads.
    int count = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    if (const char* local_world = std::getenv("LOCAL_WORLD_SIZE"); threads == 0 && local_world != nullptr) {
      count = std::max(1, count / std::max(1, std::atoi(local_world)));
    }
    torch::set_num_threads(count);
    MatchOpenBlasThreads(count);
  });

  draftforge::cli::AddPrepareCommand(app);
  draftforge::cli::AddVocabCommand(app);
  draftforge::cli::AddGenerateCommand(app);
  draftforge::cli::AddTrainCommand(app);
  draftforge::cli::AddDemoAssetsCommand(app);
  draftforge::cli::AddLaunchVllmCommand(app);
  draftforge::cli::AddServeCommand(app);
  draftforge::cli::AddEvalCommand(app);

  return draftforge::cli::ParseAndRun(app, argc, argv);
}
