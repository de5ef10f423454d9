#include "draftforge/train/sample_loader.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <filesystem>

#include "draftforge/hidden_states/hs_file.h"

namespace draftforge::train {

Result<MissingFilePolicy> ParseMissingFilePolicy(const std::string& name) {
  if (name == "generate") return MissingFilePolicy::kGenerate;
  if (name == "skip") return MissingFilePolicy::kSkip;
  if (name == "warn") return MissingFilePolicy::kWarn;
  if (name == "raise") return MissingFilePolicy::kRaise;
  return Status::Invalid("--on-missing '{}' is not supported; use generate, skip, warn or raise", name);
}

namespace {

// Generates row `row` under kGenerate. nullopt (after a warning) when this
// sample failed; an error when the generator itself cannot be built.
Result<std::optional<hidden_states::HiddenStatesFile>> GenerateSample(const SampleSource& source, int64_t row,
                                                                      std::span<const int64_t> ids,
                                                                      const std::string& path) {
  DF_RETURN_NOT_OK(source.generator->EnsureBuilt());
  auto generated = source.generator->Generate(row, ids, path);
  if (!generated.ok()) {
    spdlog::warn("skipping dataset row {}: generating its hidden states failed: {}", row,
                 generated.status().message());
    return std::optional<hidden_states::HiddenStatesFile>();
  }
  return std::optional<hidden_states::HiddenStatesFile>(std::move(*generated));
}

// The row's hidden states from its file, or generated per `on_missing`;
// nullopt when the sample is skipped.
Result<std::optional<hidden_states::HiddenStatesFile>> ObtainHiddenStates(const SampleSource& source, int64_t row) {
  using Optional = std::optional<hidden_states::HiddenStatesFile>;
  const std::string path = source.hidden_states_dir + "/" + hidden_states::HiddenStatesFileName(row);
  std::span<const int64_t> ids = source.dataset->input_ids(row);
  const bool generate = source.on_missing == MissingFilePolicy::kGenerate && source.generator != nullptr;
  if (!std::filesystem::exists(path)) {
    if (generate) return GenerateSample(source, row, ids, path);
    switch (source.on_missing) {
      case MissingFilePolicy::kRaise:
        return Status::NotFound("hidden-states file {} for dataset row {} does not exist; generate it, or pass "
                                "--on-missing generate (or skip)",
                                path, row);
      case MissingFilePolicy::kWarn:
        spdlog::warn("skipping dataset row {}: {} does not exist", row, path);
        return Optional();
      case MissingFilePolicy::kSkip:
      case MissingFilePolicy::kGenerate:
        return Optional();
    }
  }

  hidden_states::HiddenStatesExpectation expected;
  expected.token_ids = ids;
  expected.num_layers = 4;
  expected.hidden_size = source.hidden_size;
  auto file = hidden_states::ReadHiddenStatesFile(path, expected);
  if (file.ok()) return Optional(std::move(*file));
  if (generate && file.status().code() == StatusCode::kCorrupt) {
    spdlog::warn("dataset row {}: {}; generating it again{}", row, file.status().message(),
                 source.generator->policy() == GeneratedFilePolicy::kCache ? " (the new file replaces it)"
                                                                           : " (the damaged file is removed)");
    DF_ASSIGN_OR_RAISE(Optional generated, GenerateSample(source, row, ids, path));
    if (generated) {
      source.generator->counts().replaced += 1;
      if (source.generator->policy() == GeneratedFilePolicy::kDelete) {
        std::error_code error;
        std::filesystem::remove(path, error);
      }
    }
    return generated;
  }
  if (source.on_missing == MissingFilePolicy::kRaise) {
    return file.status().WithContext(fmt::format("dataset row {} (--on-missing raise)", row));
  }
  spdlog::warn("skipping dataset row {}: {}", row, file.status().message());
  return Optional();
}

}  // namespace

Result<std::optional<ShiftedSample>> LoadSample(const SampleSource& source, int64_t row,
                                                c10::optional<at::Generator> generator) {
  DF_ASSIGN_OR_RAISE(std::optional<hidden_states::HiddenStatesFile> file, ObtainHiddenStates(source, row));
  if (!file) return std::optional<ShiftedSample>();
  std::span<const int64_t> ids = source.dataset->input_ids(row);
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
