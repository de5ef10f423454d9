// `draftforge train`: EAGLE-3 draft training from a prepared dataset and its
// hidden-states files: offline (all files present), online (missing files
// generated on demand and deleted) or hybrid (generated and cached).
//
// Per run: seed, resolve the vocabulary mapping, and build the draft from the
// verifier config and weights. The dataset splits 90/10: rows [0, floor(0.9 n))
// train and the rest validate, and hidden-states files keep the global row
// index. After resuming from the last checkpoint, each epoch trains (AdamW,
// gradient clipping at norm 1, scheduled learning rate), validates and saves.
// A run that stops in the middle of an epoch (--max-steps, SIGINT, SIGTERM)
// saves that epoch as partial, and a resume trains the rest of it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::train {

struct TrainOptions {
  std::string verifier_path;        // local Hugging Face model directory
  std::string data_path = "./data";
  std::string hidden_states_path;   // "" = <data_path>/hidden_states
  std::string save_path = "./checkpoints";
  std::string log_dir = "./logs";
  int64_t epochs = 20;
  double lr = 1e-4;
  int64_t total_seq_len = 8192;
  int64_t ttt_steps = 3;
  double ttt_step_loss_decay = 1.0;
  std::optional<int64_t> draft_vocab_size;
  std::string token_freq_path;
  std::string d2t_path;
  std::string t2d_path;
  int64_t num_layers = 1;
  std::string draft_arch = "llama";
  uint64_t seed = 42;
  double noise_std = 0.05;
  bool norm_before_residual = true;
  bool norm_before_fc = false;
  bool use_off_policy_tokens = false;
  bool embed_requires_grad = false;  // recorded in config.json only; the embeddings never train
  bool freeze_lm_head = false;
  int64_t checkpoint_freq = 1;
  bool save_best = false;
  std::string scheduler_type = "linear";
  std::optional<int64_t> scheduler_warmup_steps;
  std::optional<int64_t> scheduler_total_steps;
  double scheduler_num_cosine_cycles = 0.5;
  std::string hidden_states_dtype = "bfloat16";
  bool resume_from_checkpoint = true;
  std::vector<int64_t> layer_ids;  // ids the files were captured with; empty = [2, N/2, N-3, N]
  std::optional<int64_t> max_steps;
  int64_t num_workers = 12;
  int64_t prefetch_factor = 4;
  // Missing hidden-states files (FORMATS.md 4.8): generate, skip, warn or
  // raise; generated ones are kept (cache) or not (delete).
  std::string on_missing = "generate";
  std::string on_generate = "delete";
  // Servers that generate missing files; empty: the embedded engine.
  std::vector<std::string> vllm_endpoints;
  double request_timeout_seconds = 120;
  bool tensorboard = true;  // event files in log_dir beside metrics.jsonl
  std::string device = "auto";  // "auto" (CUDA when available), "cpu", "cuda", "cuda:N"
  // Rows each rank packs per optimizer step; the gradient is the mean over
  // all world_size * gradient_accumulation_steps rows of the step.
  int64_t gradient_accumulation_steps = 1;
  // Bound on the rendezvous and on each collective of a distributed run.
  double distributed_timeout_seconds = 600;
};

// Checks every numeric option and its range before any work starts; the
// error names the flag and the value.
Status ValidateTrainOptions(const TrainOptions& options);

// Runs the whole training job; errors name the file or option at fault. On
// SIGINT or SIGTERM it saves the current epoch as a partial checkpoint and
// returns a Cancelled status. With WORLD_SIZE > 1 in the environment it runs
// as one rank of a data-parallel job (see distributed.h): all ranks stop at
// the same step when any of them gets a signal, and only rank 0 writes
// checkpoints and metrics.
Status RunTraining(const TrainOptions& options);

}  // namespace draftforge::train
