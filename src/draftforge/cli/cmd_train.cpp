// `draftforge train`: trains an EAGLE-3 draft from a prepared dataset and its
// hidden-states files (offline, online or hybrid), with the flag names of
// speculators' train.py.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <memory>

#include "draftforge/cli/commands.h"
#include "draftforge/train/distributed.h"
#include "draftforge/train/trainer.h"

namespace draftforge::cli {
namespace {

// Flags whose "unset" state matters are read into these holders and copied
// into the options only when given, so that RunTraining validates every
// value the user passed.
struct TrainFlags {
  train::TrainOptions options;
  int64_t draft_vocab_size = 0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;
  int64_t max_steps = 0;
  bool no_resume = false;
  train::LaunchOptions launch;
  CLI::Option* draft_vocab_size_option = nullptr;
  CLI::Option* warmup_steps_option = nullptr;
  CLI::Option* total_steps_option = nullptr;
  CLI::Option* max_steps_option = nullptr;
};

void AddFlags(CLI::App& command, TrainFlags& flags) {
  train::TrainOptions& o = flags.options;
  command.add_option("--verifier-name-or-path,--verifier", o.verifier_path,
                     "Verifier (target) model directory in Hugging Face format; also written to config.json")
      ->required();
  command.add_option("--data-path", o.data_path, "Prepared dataset directory (draftforge prepare output)")
      ->capture_default_str();
  command.add_option("--hidden-states-path", o.hidden_states_path,
                     "Directory of hs_{row}.safetensors files (default: DATA_PATH/hidden_states)");
  command.add_option("--save-path", o.save_path,
                     "Checkpoint directory, one subdirectory per saved epoch. config.json and model.safetensors "
                     "are the interoperable part (vLLM, speculators); optimizer_state_dict.pt and "
                     "scheduler_state_dict.pt are libtorch archives that only draftforge can resume from, "
                     "Python speculators cannot")
      ->capture_default_str();
  command.add_option("--log-dir", o.log_dir,
                     "Directory of metrics.jsonl (one JSON object per step and epoch) and TensorBoard event files")
      ->capture_default_str();
  command.add_option("--epochs", o.epochs, "Number of epochs")->capture_default_str();
  command.add_option("--lr", o.lr, "Peak AdamW learning rate")->capture_default_str();
  command.add_option("--total-seq-len", o.total_seq_len, "Tokens per packed training row (L)")->capture_default_str();
  command.add_option("--ttt-steps", o.ttt_steps, "Training-time-test steps (K), also the speculative tokens")
      ->capture_default_str();
  command.add_option("--ttt-step-loss-decay", o.ttt_step_loss_decay, "Loss weight factor per TTT step (gamma^k)")
      ->capture_default_str();
  flags.draft_vocab_size_option = command.add_option(
      "--draft-vocab-size", flags.draft_vocab_size,
      "Draft vocabulary size Vd; builds the mapping from token_freq.pt when no d2t/t2d exist. Vd equal to the "
      "verifier vocabulary size means no mapping");
  command.add_option("--token-freq-path", o.token_freq_path, "token_freq.pt (default: DATA_PATH/token_freq.pt)");
  command.add_option("--d2t-path", o.d2t_path, "d2t.npy of an existing vocabulary mapping (with --t2d-path)");
  command.add_option("--t2d-path", o.t2d_path, "t2d.npy of an existing vocabulary mapping (with --d2t-path)");

  command.add_option("--num-layers", o.num_layers, "Draft decoder layers")->capture_default_str();
  command.add_option("--draft-arch", o.draft_arch, "Draft decoder layer type: llama or qwen3")->capture_default_str();
  command.add_option("--seed", o.seed,
                     "Seed of the weight initialisation and noise (the batch order depends only on the epoch, "
                     "as in speculators)")
      ->check(Seed())->capture_default_str();
  command.add_option("--noise-std", o.noise_std,
                     "Half-width of the uniform noise added to the auxiliary hidden states of training samples")
      ->capture_default_str();
  command.add_flag("--norm-before-residual,!--no-norm-before-residual", o.norm_before_residual,
                   "Use the normed hidden state as the first layer's residual (default on)");
  command.add_flag("--norm-before-fc", o.norm_before_fc, "Apply an RMSNorm over the 3H features before fc");
  command.add_flag("--use-off-policy-tokens", o.use_off_policy_tokens,
                   "Teacher forcing: feed the dataset's next tokens to later TTT steps instead of the draft's argmax");
  command.add_flag("--embed-requires-grad", o.embed_requires_grad,
                   "Recorded in config.json only: the embeddings never receive gradients, as in speculators");
  command.add_flag("--freeze-lm-head", o.freeze_lm_head,
                   "Keep lm_head at the verifier's rows instead of training it");

  command.add_option("--checkpoint-freq", o.checkpoint_freq,
                     "Save epoch 0 and every epoch e with (e + 1) % N == 0; the final epoch is saved only when "
                     "it matches")
      ->capture_default_str();
  command.add_flag("--save-best", o.save_best,
                   "Save only epochs whose validation loss improves, and delete the other epoch folders "
                   "(integer names) of SAVE_PATH; other files there stay");
  command.add_option("--scheduler-type", o.scheduler_type, "Learning-rate schedule: linear, cosine or none")
      ->capture_default_str();
  flags.warmup_steps_option = command.add_option("--scheduler-warmup-steps", flags.warmup_steps,
                                                 "Warm-up optimizer steps (default: 1% of the total steps)");
  flags.total_steps_option = command.add_option(
      "--scheduler-total-steps", flags.total_steps, "Schedule length in optimizer steps (default: epochs x batches of epoch 0)");
  command.add_option("--scheduler-num-cosine-cycles", o.scheduler_num_cosine_cycles, "Cosine cycles over the schedule")
      ->capture_default_str();

  command.add_option("--hidden-states-dtype", o.hidden_states_dtype,
                     "Precision the hidden states are rounded to (bfloat16, float16, float32); the math runs in float32")
      ->capture_default_str();
  command.add_flag("--no-resume-from-checkpoint", flags.no_resume,
                   "Start at epoch 0: first delete the epoch folders (integer names) and the checkpoint_best "
                   "link of SAVE_PATH, logging each one");
  command.add_option("--layer-ids", o.layer_ids,
                     "The four layer ids the hidden-states files were captured with (default 2 N/2 N-3 N); "
                     "the first three go to config.json")
      ->delimiter(',');
  flags.max_steps_option = command.add_option(
      "--max-steps", flags.max_steps,
      "Stop after this many optimizer steps in this run; a stop inside an epoch saves it as partial, and the "
      "next run trains the rest of it");
  command.add_option("--num-workers", o.num_workers, "Threads loading batches in the background (0 = none)")
      ->capture_default_str();
  command.add_option("--prefetch-factor", o.prefetch_factor, "Batches each loading thread may prepare ahead")
      ->capture_default_str();
  command.add_option("--on-missing", o.on_missing,
                     "When a hidden-states file is missing: generate it (with --vllm-endpoint servers, else the "
                     "embedded engine on the verifier), skip, warn (skip with a warning) or raise (also on a "
                     "rejected file). generate also replaces unreadable or damaged files; a file of other token "
                     "ids is skipped with a warning")
      ->check(CLI::IsMember({"generate", "skip", "warn", "raise"}))
      ->capture_default_str();
  command.add_option("--on-generate", o.on_generate,
                     "What happens to generated hidden states: delete (online; nothing stays on disk) or cache "
                     "(hybrid; written to --hidden-states-path for later epochs and runs)")
      ->check(CLI::IsMember({"delete", "cache"}))
      ->capture_default_str();
  command.add_option("--vllm-endpoint", o.vllm_endpoints,
                     "Hidden-states server base URL with /v1 (vLLM from `draftforge launch-vllm`, or `draftforge "
                     "serve`); repeat for several. The server must serve the model under the name given to "
                     "--verifier-name-or-path and share the file system. Default: the embedded CPU engine");
  command.add_option("--request-timeout", o.request_timeout_seconds,
                     "Seconds one hidden-states request may take before it is retried")
      ->capture_default_str();
  command.add_flag("--tensorboard,!--no-tensorboard", o.tensorboard,
                   "Write TensorBoard event files into --log-dir beside metrics.jsonl (default on)");
  command.add_option("--device", o.device, "auto (CUDA when available), cpu, cuda or cuda:N")->capture_default_str();

  command.add_option("--gradient-accumulation-steps", o.gradient_accumulation_steps,
                     "Packed rows each rank trains per optimizer step; the gradient is the mean over all rows "
                     "of all ranks")
      ->capture_default_str();
  command.add_option("--nproc-per-node", flags.launch.nproc_per_node,
                     "Start this many ranks on this machine and supervise them (data-parallel over Gloo); "
                     "ignored in a process that already has RANK set, as under torchrun")
      ->capture_default_str()
      ->check(AtLeast(1));
  command.add_option("--master-addr", flags.launch.master_addr,
                     "With --nproc-per-node: address of the rendezvous store that rank 0 hosts")
      ->capture_default_str();
  command.add_option("--master-port", flags.launch.master_port,
                     "With --nproc-per-node: TCP port of the rendezvous store (0 = a free port)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  command.add_option("--dist-timeout", o.distributed_timeout_seconds,
                     "Seconds a rank waits for the rendezvous or for one collective before it stops with an error")
      ->capture_default_str();
}

}  // namespace

void AddTrainCommand(CLI::App& app) {
  auto flags = std::make_shared<TrainFlags>();
  auto* command = app.add_subcommand("train", "Train an EAGLE-3 draft model from hidden-states files");
  AddFlags(*command, *flags);
  command->callback([flags] {
    train::TrainOptions options = flags->options;
    if (flags->draft_vocab_size_option->count() > 0) options.draft_vocab_size = flags->draft_vocab_size;
    if (flags->warmup_steps_option->count() > 0) options.scheduler_warmup_steps = flags->warmup_steps;
    if (flags->total_steps_option->count() > 0) options.scheduler_total_steps = flags->total_steps;
    if (flags->max_steps_option->count() > 0) options.max_steps = flags->max_steps;
    options.resume_from_checkpoint = !flags->no_resume;
    if (flags->launch.nproc_per_node > 1 && std::getenv("RANK") == nullptr) {
      // The launcher re-runs this command line once per rank; RANK, set for
      // each of them, sends them to the training below.
      auto arguments = train::CurrentArguments();
      ExitOnError(arguments.status());
      ExitOnError(train::LaunchRanks(flags->launch, *arguments));
      return;
    }
    if (const char* rank = std::getenv("RANK"); rank != nullptr && std::getenv("WORLD_SIZE") != nullptr) {
      spdlog::default_logger()->set_pattern(fmt::format("%Y-%m-%d %H:%M:%S.%e %^%l%$ [rank {}] %v", rank));
    }
    ExitOnError(train::RunTraining(options));
  });
}

}  // namespace draftforge::cli
