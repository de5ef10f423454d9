// `draftforge launch-vllm`: prints and runs the `vllm serve` command of a
// hidden-states extraction server, with the flags of speculators'
// launch_vllm.py. Arguments after `--` go to vLLM unchanged.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "draftforge/cli/commands.h"
#include "draftforge/hidden_states/vllm_launch.h"
#include "draftforge/util/process_env.h"

namespace draftforge::cli {
namespace {

struct LaunchOptions {
  hidden_states::VllmLaunchOptions launch;
  std::vector<int64_t> layers;
  bool no_include_last_layer = false;
  bool dry_run = false;
};

Status RunLaunchVllm(LaunchOptions& options) {
  if (!options.layers.empty()) options.launch.layer_ids = options.layers;
  options.launch.include_last_layer = !options.no_include_last_layer;
  DF_ASSIGN_OR_RAISE(engine::ModelConfig config, engine::ModelConfig::Load(options.launch.model));
  DF_ASSIGN_OR_RAISE(std::vector<std::string> args,
                     hidden_states::BuildVllmServeCommand(config, options.launch));
  std::printf("%s\n", hidden_states::ShellQuoteCommand(args).c_str());
  std::fflush(stdout);
  if (options.dry_run) return Status::OK();

  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  // vLLM gets the user's environment, so it runs as the printed command would.
  util::RemoveAddedEnvironment();
  ::execvp(argv[0], argv.data());
  // execvp returns only on failure.
  return Status::NotFound("cannot run '{}': {}; install vLLM, name its executable with "
                          "--vllm-executable, or print the command only with --dry-run",
                          options.launch.vllm_executable, std::strerror(errno));
}

}  // namespace

void AddLaunchVllmCommand(CLI::App& app) {
  auto options = std::make_shared<LaunchOptions>();
  auto* command = app.add_subcommand(
      "launch-vllm",
      "Print and run `vllm serve MODEL` as a hidden-states extraction server "
      "(extract_hidden_states + ExampleHiddenStatesConnector); arguments after -- go to vLLM");
  command->add_option("model", options->launch.model,
                      "Model directory (its config.json gives the layer count)")
      ->required();
  command->add_option("--hidden-states-path", options->launch.hidden_states_path,
                      "Directory where vLLM writes one safetensors file per request")
      ->capture_default_str();
  command->add_option("--layers,--target-layer-ids", options->layers,
                      "Layer ids to capture, in vLLM's numbering (default: 2 N/2 N-3 N for N "
                      "decoder layers)");
  command->add_flag("--no-include-last-layer", options->no_include_last_layer,
                    "Do not append the last layer N to --layers when it is missing");
  command->add_option("--vllm-executable", options->launch.vllm_executable,
                      "vLLM command to run")
      ->capture_default_str();
  command->add_flag("--dry-run", options->dry_run, "Print the command without running it");
  command->add_option("vllm_args", options->launch.extra_args,
                      "Arguments passed to vLLM unchanged (after --), e.g. --port 8000");
  command->callback([options] {
    const auto& passthrough = PassthroughArgs();
    options->launch.extra_args.insert(options->launch.extra_args.end(), passthrough.begin(), passthrough.end());
    ExitOnError(RunLaunchVllm(*options));
  });
}

}  // namespace draftforge::cli
