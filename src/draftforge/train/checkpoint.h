// Checkpoints of draft training, in the speculators EAGLE-3 layout that vLLM
// loads:
//   <save_path>/<epoch>/config.json              speculator config (sorted keys, 2-space indent)
//   <save_path>/<epoch>/model.safetensors        draft weights in BF16, d2t I64 and t2d BOOL
//   <save_path>/<epoch>/optimizer_state_dict.pt  libtorch archive: AdamW state and float32 master weights
//   <save_path>/<epoch>/scheduler_state_dict.pt  libtorch archive: schedule step (when a schedule is used)
//   <save_path>/<epoch>/training_state.json      epoch, global step, best validation loss
//   <save_path>/checkpoint_best -> <epoch>       relative symlink
// The two .pt files are libtorch C++ archives, not Python pickles: only
// draftforge can resume from them, Python speculators cannot, and draftforge
// cannot resume from speculators' .pt files either. config.json and
// model.safetensors are the interoperable part, and vLLM reads only those.
#pragma once

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "draftforge/train/eagle3_model.h"
#include "draftforge/util/status.h"

namespace draftforge::train {

// Fields of config.json that do not come from the draft config.
struct SpeculatorInfo {
  std::string verifier_name_or_path;
  std::vector<std::string> verifier_architectures;
  int64_t speculative_tokens = 3;            // --ttt-steps
  std::vector<int64_t> aux_layer_ids;        // the three auxiliary layer ids, vLLM numbering
  bool embed_requires_grad = false;
};

// The speculators config object written to config.json.
nlohmann::json SpeculatorConfigJson(const DraftConfig& config, const SpeculatorInfo& info);

// Serializes `json` as transformers' save_pretrained does: keys sorted,
// 2-space indent, trailing newline.
std::string DumpConfigJson(const nlohmann::json& json);

// Resume bookkeeping stored beside each checkpoint.
struct TrainingState {
  int64_t epoch = -1;        // last epoch trained (completed unless epoch_complete is false)
  // False when the run stopped in the middle of `epoch` (--max-steps or a
  // signal); a resume then trains the rest of that epoch.
  bool epoch_complete = true;
  int64_t batches_done = 0;  // training batches of `epoch` done when epoch_complete is false
  int64_t global_step = 0;   // optimizer steps done so far
  int64_t schedule_step = 0;  // steps the learning-rate schedule has counted
  std::optional<double> best_val_loss;
  std::optional<int64_t> best_epoch;
  // Data-parallel layout of the run: the batches of an epoch, and so
  // batches_done, depend on both. Checkpoints without these fields count as
  // one rank without accumulation.
  int64_t world_size = 1;
  int64_t gradient_accumulation_steps = 1;
};

// Writes <save_path>/<epoch>/ (all files above except the symlink) into a
// staging directory, then publishes it in one rename that also replaces an
// existing <epoch>/: a run killed at any moment leaves the old checkpoint or
// the new one, never a partial one.
Status SaveCheckpoint(const std::string& save_path, const Eagle3DraftModel& model, const nlohmann::json& config,
                      torch::optim::Optimizer& optimizer, bool has_schedule, const TrainingState& state);

// Writes only config.json and model.safetensors into `dir`.
Status SaveDraftModel(const std::string& dir, const Eagle3DraftModel& model, const nlohmann::json& config);

// Returns the largest integer-named directory in `save_path`; nullopt when
// there is none (other names and symlinks are ignored).
std::optional<int64_t> FindLastEpoch(const std::string& save_path);

// Restores the trainable weights (float32 master copies), AdamW state and
// training state from <save_path>/<epoch>/. The verifier tensors are not
// touched.
Result<TrainingState> LoadCheckpoint(const std::string& save_path, int64_t epoch, Eagle3DraftModel& model,
                                     torch::optim::Optimizer& optimizer);

// Points <save_path>/checkpoint_best at <epoch> (relative symlink, replaced atomically).
Status UpdateBestLink(const std::string& save_path, int64_t epoch);

// Removes the integer-named epoch directories of `save_path` except <epoch>/,
// logging each one. Other files and directories stay.
Status RemoveOtherEpochs(const std::string& save_path, int64_t epoch);

// Removes every integer-named epoch directory and the checkpoint_best link of
// `save_path`, logging each one. Other files and directories stay.
Status RemoveAllEpochs(const std::string& save_path);

// Checkpoint actions after the validation of `epoch` (0-based):
// - save_best with a validation loss: save only when the loss improves on the
//   best so far, then point checkpoint_best at it and remove the other epoch
//   directories;
// - otherwise save when epoch == 0 or (epoch + 1) % checkpoint_freq == 0, and
//   point checkpoint_best at it when its loss improves on the best so far.
// A non-finite validation loss never improves on the best.
struct CheckpointDecision {
  bool save = false;
  bool update_best = false;
  bool remove_others = false;
};
CheckpointDecision DecideCheckpoint(int64_t epoch, int64_t checkpoint_freq, bool save_best,
                                    std::optional<double> val_loss, std::optional<double> best_val_loss);

}  // namespace draftforge::train
