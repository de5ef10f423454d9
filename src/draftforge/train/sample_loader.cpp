#include "draftforge/train/sample_loader.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "draftforge/hidden_states/hs_file.h"

namespace draftforge::train {

Result<MissingFilePolicy> ParseMissingFilePolicy(const std::string& name) {
  if (name == "skip") return MissingFilePolicy::kSkip;
  if (name == "warn") return MissingFilePolicy::kWarn;
  if (name == "raise") return MissingFilePolicy::kRaise;
  if (name == "generate") {
    return Status::Unimplemented("--on-missing generate is not implemented yet; generate the files with "
                                 "`draftforge generate` first, or use skip, warn or raise");
  }
  return Status::Invalid("--on-missing '{}' is not supported; use skip, warn or raise", name);
}

Result<std::optional<ShiftedSample>> LoadSample(const SampleSource& source, int64_t row,
                                                c10::optional<at::Generator> generator) {
  std::string path = source.hidden_states_dir + "/" + hidden_states::HiddenStatesFileName(row);
  if (!std::filesystem::exists(path)) {
    switch (source.on_missing) {
      case MissingFilePolicy::kRaise:
        return Status::NotFound("hidden-states file {} for dataset row {} does not exist; generate it or "
                                "pass --on-missing skip",
                                path, row);
      case MissingFilePolicy::kWarn:
        spdlog::warn("skipping dataset row {}: {} does not exist", row, path);
        return std::optional<ShiftedSample>();
      case MissingFilePolicy::kSkip:
        return std::optional<ShiftedSample>();
    }
  }

  std::span<const int64_t> ids = source.dataset->input_ids(row);
  hidden_states::HiddenStatesExpectation expected;
  expected.token_ids = ids;
  expected.num_layers = 4;
  expected.hidden_size = source.hidden_size;
  auto file = hidden_states::ReadHiddenStatesFile(path, expected);
  if (!file.ok()) {
    spdlog::warn("skipping dataset row {}: {}", row, file.status().message());
    return std::optional<ShiftedSample>();
  }
  if (ids.size() < 2) {
    spdlog::warn("skipping dataset row {}: {} tokens leave nothing to train on after the shift", row, ids.size());
    return std::optional<ShiftedSample>();
  }

  std::span<const uint8_t> mask_span = source.dataset->loss_mask(row);
  torch::Tensor mask = torch::from_blob(const_cast<uint8_t*>(mask_span.data()),
                                        {static_cast<int64_t>(mask_span.size())}, torch::kUInt8);
  // Noise is drawn and added in float32, then the features are rounded to
  // --hidden-states-dtype and cast to the model dtype.
  torch::Tensor hidden = file->hidden_states.to(torch::kFloat32);  // [n, 4, H]
  if (source.noise_std > 0) {
    torch::Tensor aux = hidden.narrow(1, 0, 3);
    AddUniformNoise(aux, source.noise_std, generator);
  }
  hidden = hidden.to(source.rounding_dtype).to(source.dtype);
  ShiftedSample sample = ShiftSample(file->token_ids, mask, hidden);
  sample.loss_mask = sample.loss_mask.clone();  // own the mask, not the dataset's memory
  return std::optional<ShiftedSample>(std::move(sample));
}

}  // namespace draftforge::train
