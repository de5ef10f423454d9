#include "draftforge/train/checkpoint.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <system_error>

#include "draftforge/io/torch_tensors.h"
#include "draftforge/util/fs.h"

namespace draftforge::train {
namespace fs = std::filesystem;
namespace {

constexpr const char* kOptimizerFile = "optimizer_state_dict.pt";
constexpr const char* kSchedulerFile = "scheduler_state_dict.pt";
constexpr const char* kStateFile = "training_state.json";
constexpr const char* kBestLink = "checkpoint_best";

std::string EpochDir(const std::string& save_path, int64_t epoch) {
  return save_path + "/" + std::to_string(epoch);
}

// torch::serialize archives write in place; write a temporary file and rename.
Status SaveArchive(torch::serialize::OutputArchive& archive, const std::string& path) {
  std::string temporary = path + ".tmp";
  try {
    archive.save_to(temporary);
  } catch (const c10::Error& error) {
    return Status::IOError("{}: failed to write ({})", path, error.what_without_backtrace());
  }
  std::error_code code;
  fs::rename(temporary, path, code);
  if (code) return Status::IOError("{}: rename from {} failed: {}", path, temporary, code.message());
  return Status::OK();
}

// Epoch directories have names of 1 to 12 decimal digits.
bool IsEpochName(const std::string& name) {
  return !name.empty() && name.size() <= 12 && name.find_first_not_of("0123456789") == std::string::npos;
}

std::string ShapeString(const torch::Tensor& tensor) {
  std::string text = "[";
  for (int64_t i = 0; i < tensor.dim(); ++i) text += (i == 0 ? "" : ", ") + std::to_string(tensor.size(i));
  return text + "]";
}

// Removes the epoch directories of `save_path` other than `keep` (all of them
// when `keep` is empty).
Status RemoveEpochDirectories(const std::string& save_path, const std::string& keep) {
  std::error_code code;
  if (!fs::is_directory(save_path, code)) return Status::OK();
  std::vector<fs::path> doomed;
  for (const auto& entry : fs::directory_iterator(save_path, code)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_symlink() || !entry.is_directory() || !IsEpochName(name) || name == keep) continue;
    doomed.push_back(entry.path());
  }
  if (code) return Status::IOError("{}: cannot list: {}", save_path, code.message());
  for (const auto& path : doomed) {
    fs::remove_all(path, code);
    if (code) return Status::IOError("{}: cannot remove: {}", path.string(), code.message());
    spdlog::info("removed checkpoint {}", path.string());
  }
  return Status::OK();
}

nlohmann::json OptionalNumber(const std::optional<double>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

}  // namespace

nlohmann::json SpeculatorConfigJson(const DraftConfig& config, const SpeculatorInfo& info) {
  nlohmann::json json;
  json["architectures"] = {"Eagle3DraftModel"};
  json["draft_vocab_size"] = config.draft_vocab_size;
  json["eagle_aux_hidden_state_layer_ids"] = info.aux_layer_ids;
  json["embed_requires_grad"] = info.embed_requires_grad;
  json["norm_before_fc"] = config.norm_before_fc;
  json["norm_before_residual"] = config.norm_before_residual;
  nlohmann::json method = {{"accept_tolerance", 0.0},
                           {"proposal_type", "greedy"},
                           {"speculative_tokens", info.speculative_tokens},
                           {"verifier_accept_k", 1}};
  json["speculators_config"] = {
      {"algorithm", "eagle3"},
      {"default_proposal_method", "greedy"},
      {"proposal_methods", nlohmann::json::array({method})},
      {"verifier", {{"architectures", info.verifier_architectures}, {"name_or_path", info.verifier_name_or_path}}},
  };
  json["speculators_model_type"] = "eagle3";
  // The speculators config format this file follows (informational).
  json["speculators_version"] = "0.4.0";
  json["target_hidden_size"] = nullptr;
  json["tie_word_embeddings"] = false;
  json["torch_dtype"] = "bfloat16";
  json["transformer_layer_config"] = TransformerLayerConfigJson(config);
  return json;
}

std::string DumpConfigJson(const nlohmann::json& json) { return json.dump(2) + "\n"; }

Status SaveDraftModel(const std::string& dir, const Eagle3DraftModel& model, const nlohmann::json& config) {
  DF_RETURN_NOT_OK(CreateDirectories(dir));
  DF_RETURN_NOT_OK(WriteFileAtomic(dir + "/config.json", DumpConfigJson(config)));
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& [name, tensor] : model.SavedTensors()) {
    torch::Tensor cpu = tensor.detach().to(torch::kCPU);
    if (cpu.is_floating_point()) cpu = cpu.to(torch::kBFloat16);
    tensors.emplace_back(name, cpu);
  }
  return io::WriteTensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
}

namespace {

// Moves the finished `staging` directory to `dir` in one step, so a reader
// (or a resume after SIGKILL) finds either the old checkpoint or the new one,
// never a mix. An existing `dir` is swapped with renameat2(RENAME_EXCHANGE)
// and the old content removed afterwards.
Status PublishDirectory(const std::string& staging, const std::string& dir) {
  std::error_code code;
  if (!fs::exists(dir, code)) {
    fs::rename(staging, dir, code);
    if (code) return Status::IOError("cannot rename {} to {}: {}", staging, dir, code.message());
    return Status::OK();
  }
  if (renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) != 0) {
    // File systems without RENAME_EXCHANGE: two renames, with a short
    // window in which `dir` is absent and a resume picks the epoch before.
    const std::string old = staging + ".old";
    fs::rename(dir, old, code);
    if (!code) fs::rename(staging, dir, code);
    if (code) return Status::IOError("cannot replace {} with {}: {}", dir, staging, code.message());
    fs::remove_all(old, code);
    return Status::OK();
  }
  fs::remove_all(staging, code);  // now contains the replaced checkpoint
  if (code) spdlog::warn("could not remove the replaced checkpoint {}: {}", staging, code.message());
  return Status::OK();
}

}  // namespace

Status SaveCheckpoint(const std::string& save_path, const Eagle3DraftModel& model, const nlohmann::json& config,
                      torch::optim::Optimizer& optimizer, bool has_schedule, const TrainingState& state) {
  // Every file goes into a staging directory first (its name is not an
  // epoch number, so FindLastEpoch never picks it), then the directory is
  // published as a whole.
  const std::string final_dir = EpochDir(save_path, state.epoch);
  const std::string dir = fmt::format("{}/.{}.staging-{}", save_path, state.epoch, getpid());
  std::error_code code;
  // Staging directories of runs killed while saving are useless: drop them.
  for (const auto& entry : fs::directory_iterator(save_path, code)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(".") && name.find(".staging-") != std::string::npos) {
      spdlog::info("removing {}, left by a run that stopped while saving a checkpoint", entry.path().string());
      fs::remove_all(entry.path(), code);
    }
  }
  DF_RETURN_NOT_OK(SaveDraftModel(dir, model, config));

  // AdamW moments (float32) and step counters (int64) keep their dtypes. The
  // trainable weights are stored in float32 too, so a resumed run continues
  // from exact values rather than the BF16 copies.
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  torch::serialize::OutputArchive master;
  int64_t index = 0;
  for (const auto& [name, tensor] : model.TrainableTensors()) {
    master.write("p" + std::to_string(index++), tensor.detach().to(torch::kCPU));
  }
  archive.write("master_weights", master);
  DF_RETURN_NOT_OK(SaveArchive(archive, dir + "/" + kOptimizerFile));

  if (has_schedule) {
    torch::serialize::OutputArchive schedule;
    schedule.write("step", torch::tensor(state.schedule_step));
    DF_RETURN_NOT_OK(SaveArchive(schedule, dir + "/" + kSchedulerFile));
  }

  nlohmann::json training = {{"epoch", state.epoch},
                             {"epoch_complete", state.epoch_complete},
                             {"batches_done", state.batches_done},
                             {"global_step", state.global_step},
                             {"schedule_step", state.schedule_step},
                             {"best_val_loss", OptionalNumber(state.best_val_loss)},
                             {"best_epoch", state.best_epoch ? nlohmann::json(*state.best_epoch) : nlohmann::json()},
                             {"world_size", state.world_size},
                             {"gradient_accumulation_steps", state.gradient_accumulation_steps}};
  std::vector<std::string> names;
  for (const auto& [name, tensor] : model.TrainableTensors()) names.push_back(name);
  training["trainable_tensors"] = names;
  DF_RETURN_NOT_OK(WriteFileAtomic(dir + "/" + kStateFile, training.dump(2) + "\n"));
  return PublishDirectory(dir, final_dir);
}

std::optional<int64_t> FindLastEpoch(const std::string& save_path) {
  std::error_code code;
  if (!fs::is_directory(save_path, code)) return std::nullopt;
  std::optional<int64_t> last;
  for (const auto& entry : fs::directory_iterator(save_path, code)) {
    if (entry.is_symlink() || !entry.is_directory()) continue;
    const std::string name = entry.path().filename().string();
    if (!IsEpochName(name)) continue;
    int64_t epoch = std::stoll(name);
    if (!last || epoch > *last) last = epoch;
  }
  return last;
}

Result<TrainingState> LoadCheckpoint(const std::string& save_path, int64_t epoch, Eagle3DraftModel& model,
                                     torch::optim::Optimizer& optimizer) {
  std::string dir = EpochDir(save_path, epoch);
  std::error_code code;
  if (!fs::exists(dir + "/" + kStateFile, code)) {
    return Status::NotFound(
        "{} has no {}, so draftforge train did not write it (speculators, for one, writes no such file) and "
        "cannot resume from it; pass --no-resume-from-checkpoint to start at epoch 0 (this removes the epoch "
        "folders of --save-path {}) or choose another --save-path",
        dir, kStateFile, save_path);
  }
  DF_ASSIGN_OR_RAISE(std::string state_text, ReadFileToString(dir + "/" + kStateFile));
  nlohmann::json state_json = nlohmann::json::parse(state_text, nullptr, false);
  if (state_json.is_discarded() || !state_json.is_object()) {
    return Status::Corrupt("{}/{}: not a JSON object; delete the folder or pass --no-resume-from-checkpoint", dir,
                           kStateFile);
  }
  const std::string different_configuration = fmt::format(
      "--save-path {} holds a checkpoint of a different configuration", save_path);
  const std::string what_to_do = "choose another --save-path, or pass --no-resume-from-checkpoint to start over "
                                 "(this removes its epoch folders)";
  auto trainable = model.TrainableTensors();
  std::vector<std::string> names;
  for (const auto& [name, tensor] : trainable) names.push_back(name);
  if (state_json.value("trainable_tensors", std::vector<std::string>()) != names) {
    return Status::Invalid("{}: {} trains other tensors than this run (changed --num-layers, --draft-arch, "
                           "--norm-before-fc or --freeze-lm-head?); {}",
                           different_configuration, dir, what_to_do);
  }

  // The master weights are read and shape-checked before anything is copied,
  // so a mismatch leaves the model and optimizer untouched.
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(dir + "/" + kOptimizerFile);
    torch::serialize::InputArchive master;
    archive.read("master_weights", master);
    std::vector<torch::Tensor> values(trainable.size());
    for (size_t i = 0; i < trainable.size(); ++i) {
      master.read("p" + std::to_string(i), values[i]);
      if (!values[i].sizes().equals(trainable[i].second.sizes())) {
        return Status::Invalid("{}: {} has shape {} in {} but {} in this run (changed --draft-vocab-size, the "
                               "vocabulary mapping or the verifier?); {}",
                               different_configuration, trainable[i].first, ShapeString(values[i]), dir,
                               ShapeString(trainable[i].second), what_to_do);
      }
    }
    optimizer.load(archive);
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < trainable.size(); ++i) {
      trainable[i].second.copy_(values[i].to(trainable[i].second.options()));
    }
  } catch (const c10::Error& error) {
    return Status::Corrupt("{}/{}: cannot be read ({}); delete the folder or pass --no-resume-from-checkpoint",
                           dir, kOptimizerFile, error.what_without_backtrace());
  }

  TrainingState state;
  state.epoch = state_json.value("epoch", epoch);
  state.epoch_complete = state_json.value("epoch_complete", true);
  state.batches_done = state_json.value("batches_done", int64_t{0});
  state.global_step = state_json.value("global_step", int64_t{0});
  state.schedule_step = state_json.value("schedule_step", state.global_step);
  state.world_size = state_json.value("world_size", int64_t{1});
  state.gradient_accumulation_steps = state_json.value("gradient_accumulation_steps", int64_t{1});
  if (state_json.contains("best_val_loss") && state_json["best_val_loss"].is_number()) {
    state.best_val_loss = state_json["best_val_loss"].get<double>();
  }
  if (state_json.contains("best_epoch") && state_json["best_epoch"].is_number_integer()) {
    state.best_epoch = state_json["best_epoch"].get<int64_t>();
  }
  return state;
}

Status UpdateBestLink(const std::string& save_path, int64_t epoch) {
  std::string link = save_path + "/" + kBestLink;
  std::string temporary = link + ".tmp";
  std::error_code code;
  fs::remove(temporary, code);
  fs::create_directory_symlink(std::to_string(epoch), temporary, code);
  if (code) return Status::IOError("{}: cannot create symlink: {}", temporary, code.message());
  fs::rename(temporary, link, code);
  if (code) return Status::IOError("{}: cannot replace symlink: {}", link, code.message());
  return Status::OK();
}

Status RemoveOtherEpochs(const std::string& save_path, int64_t epoch) {
  return RemoveEpochDirectories(save_path, std::to_string(epoch));
}

Status RemoveAllEpochs(const std::string& save_path) {
  DF_RETURN_NOT_OK(RemoveEpochDirectories(save_path, ""));
  std::string link = save_path + "/" + kBestLink;
  std::error_code code;
  if (fs::is_symlink(fs::symlink_status(link, code))) {
    fs::remove(link, code);
    if (code) return Status::IOError("{}: cannot remove: {}", link, code.message());
    spdlog::info("removed {}", link);
  }
  return Status::OK();
}

CheckpointDecision DecideCheckpoint(int64_t epoch, int64_t checkpoint_freq, bool save_best,
                                    std::optional<double> val_loss, std::optional<double> best_val_loss) {
  CheckpointDecision decision;
  bool improves = val_loss && std::isfinite(*val_loss) && (!best_val_loss || *val_loss < *best_val_loss);
  if (save_best && val_loss) {
    decision.save = improves;
    decision.update_best = improves;
    decision.remove_others = improves;
    return decision;
  }
  decision.save = epoch == 0 || (epoch + 1) % checkpoint_freq == 0;
  decision.update_best = decision.save && improves;
  return decision;
}

}  // namespace draftforge::train
