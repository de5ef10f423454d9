// Reading one training sample: the dataset row plus its hidden-states file
// hs_{row}.safetensors, validated, noised and shifted.
//
// A sample is skipped (nullopt, with a warning that names the row and file)
// when its file is missing (and `on_missing` is not raise), damaged, contains non-finite
// values, has a row count or token ids that differ from the dataset row, or
// has fewer than 2 tokens.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "draftforge/data/token_dataset.h"
#include "draftforge/train/batch.h"
#include "draftforge/util/status.h"

namespace draftforge::train {

enum class MissingFilePolicy { kSkip, kWarn, kRaise };

// Parses "skip", "warn" or "raise" ("generate" is not implemented yet).
Result<MissingFilePolicy> ParseMissingFilePolicy(const std::string& name);

struct SampleSource {
  const data::TokenDataset* dataset = nullptr;
  std::string hidden_states_dir;
  int64_t hidden_size = 0;            // H
  torch::Dtype dtype = torch::kFloat32;   // dtype of the features handed to the model
  // Precision the features are rounded to first (--hidden-states-dtype); a
  // no-op when the files already hold that dtype.
  torch::Dtype rounding_dtype = torch::kBFloat16;
  double noise_std = 0.0;             // uniform noise on the auxiliary features; 0 for validation
  MissingFilePolicy on_missing = MissingFilePolicy::kWarn;
};

// Loads global row `row`, drawing its noise from `generator` (torch's global
// generator when empty). Errors only for a missing file under kRaise.
Result<std::optional<ShiftedSample>> LoadSample(const SampleSource& source, int64_t row,
                                                c10::optional<at::Generator> generator = c10::nullopt);

}  // namespace draftforge::train
