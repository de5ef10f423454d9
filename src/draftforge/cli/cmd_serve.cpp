// `draftforge serve`: the embedded engine behind vLLM's completions API with
// the extract_hidden_states file protocol (see hidden_states/serve.h).
#include <signal.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>
#include <chrono>
#include <thread>

#include "draftforge/cli/commands.h"
#include "draftforge/engine/model_config.h"
#include "draftforge/hidden_states/generate.h"
#include "draftforge/hidden_states/serve.h"
#include "draftforge/util/fs.h"

namespace draftforge::cli {
namespace {

// The signal that asked the server to stop; 0 while none has arrived.
volatile std::sig_atomic_t g_stop_signal = 0;

struct ServeFlags {
  hidden_states::ServeOptions options;
  std::string dtype;       // empty: the model's torch_dtype
  std::string ready_file;  // empty: none
};

Status RunServe(ServeFlags flags) {
  DF_ASSIGN_OR_RAISE(engine::ModelConfig config, engine::ModelConfig::Load(flags.options.model_dir));
  DF_ASSIGN_OR_RAISE(flags.options.dtype, hidden_states::ChooseHiddenStatesDtype(flags.dtype, config.torch_dtype,
                                                                  flags.options.model_dir));

  DF_ASSIGN_OR_RAISE(auto server, hidden_states::HiddenStatesServer::Create(flags.options));
  // A handler rather than sigwait: libtorch's thread pools exist already and
  // do not block signals, so any thread may receive them.
  struct sigaction action {};
  action.sa_handler = [](int signal_number) { g_stop_signal = signal_number; };
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  if (!flags.ready_file.empty()) {
    DF_RETURN_NOT_OK(WriteFileAtomic(flags.ready_file, std::to_string(server->port()) + "\n"));
  }
  std::atomic<bool> run_ended{false};
  std::thread watcher([&server, &run_ended] {
    while (!run_ended && g_stop_signal == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (run_ended) return;
    spdlog::info("serve: received signal {}, stopping", static_cast<int>(g_stop_signal));
    // Repeated because a signal may arrive before Run() has started listening.
    while (!run_ended) {
      server->Stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  Status status = server->Run();
  run_ended = true;
  watcher.join();
  return status;
}

}  // namespace

void AddServeCommand(CLI::App& app) {
  auto flags = std::make_shared<ServeFlags>();
  hidden_states::ServeOptions& options = flags->options;
  auto* command = app.add_subcommand(
      "serve",
      "Serve a model's hidden states through vLLM's completions API and extract_hidden_states "
      "file protocol, with the embedded CPU engine (for `generate --endpoint` without vLLM)");
  command->add_option("model", options.model_dir,
                      "Hugging Face model directory (config.json and safetensors weights)")
      ->required();
  command->add_option("--host", options.host, "Address to listen on")->capture_default_str();
  command->add_option("--port", options.port, "TCP port to listen on; 0 picks a free port")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  command->add_option("--layer-ids", options.layer_ids,
                      "Layer ids to capture, distinct, in 0..N (default: 2 N/2 N-3 N)")
      ->expected(1, -1);
  command->add_option("--hidden-states-path", options.hidden_states_path,
                      "Directory for the <request id>.safetensors files and their .lock files")
      ->capture_default_str();
  command->add_option("--served-model-name", options.served_model_name,
                      "Model id reported by /v1/models and required in requests (default: the "
                      "model argument as given)");
  command->add_option("--hidden-states-dtype", flags->dtype,
                      "Stored dtype of hidden_states: float32, bfloat16 or float16 (default: the "
                      "model's torch_dtype)");
  command->add_option("--max-body-bytes", options.max_body_bytes,
                      "Largest accepted request body in bytes; larger ones get HTTP 413")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  command->add_flag("--allow-custom-save-path", options.allow_custom_save_path,
                    "Honour kv_transfer_params.hidden_states_path in requests (absolute paths "
                    "ending in .safetensors, without '..'); lets clients write wherever this "
                    "process may");
  command->add_flag("--zero-work", options.zero_work,
                    "Do not run the model: write zero hidden states of the right shape (reads "
                    "only config.json); for measuring client overhead");
  command->add_option("--http-threads", options.http_threads,
                      "HTTP worker threads; each open keep-alive connection occupies one")
      ->capture_default_str()
      ->check(AtLeast(1));
  command->add_option("--writer-threads", options.writer_threads, "Threads writing files")
      ->capture_default_str()
      ->check(AtLeast(1));
  command->add_option("--ready-file", flags->ready_file,
                      "Write the listening port to this file once the server accepts connections");

  const std::string faults = "Test-only fault injection";
  hidden_states::ServeFaults& fault = options.faults;
  command->add_option("--test-fail-every", fault.fail_every,
                      "Answer every Nth completion request with HTTP 500")
      ->group(faults)
      ->check(AtLeast(0));
  command->add_option("--test-drop-connection-every", fault.drop_connection_every,
                      "Close the connection of every Nth completion request without a body")
      ->group(faults)
      ->check(AtLeast(0));
  command->add_option("--test-wrong-prompt-ids-every", fault.wrong_prompt_ids_every,
                      "Alter prompt_token_ids in every Nth completion response")
      ->group(faults)
      ->check(AtLeast(0));
  command->add_option("--test-omit-path-every", fault.omit_path_every,
                      "Leave kv_transfer_params out of every Nth completion response")
      ->group(faults)
      ->check(AtLeast(0));
  command->add_option("--test-delay-ms", fault.delay_ms,
                      "Wait this many milliseconds before handling each completion request")
      ->group(faults)
      ->check(AtLeast(0));
  command->add_option("--test-prefix-cache-rows", fault.prefix_cache_rows,
                      "Drop the first N hidden-state rows of every file, like prefix caching")
      ->group(faults)
      ->check(AtLeast(0));

  command->callback([flags] { ExitOnError(RunServe(*flags)); });
}

}  // namespace draftforge::cli
