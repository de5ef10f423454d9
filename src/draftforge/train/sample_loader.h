// Reading one training sample: the dataset row plus its hidden-states file
// hs_{row}.safetensors, validated, noised and shifted.
//
// A missing file is generated (kGenerate, see online_hidden_states.h),
// skipped silently (kSkip), skipped with a warning (kWarn) or an error
// (kRaise, which also fails on every file it rejects). Under kGenerate a
// damaged file (Corrupt: unreadable, truncated, non-finite values) is
// reported and generated again as well.
//
// Otherwise a sample is skipped, with a warning that names the row and file,
// in these cases:
// - its file is damaged and not generated again, or generating it failed;
// - its row count or token ids differ from the dataset row, because the
//   dataset changed after the files were made (regenerate them);
// - it has fewer than 2 tokens.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "draftforge/data/token_dataset.h"
#include "draftforge/train/batch.h"
#include "draftforge/train/online_hidden_states.h"
#include "draftforge/util/status.h"

namespace draftforge::train {

enum class MissingFilePolicy { kGenerate, kSkip, kWarn, kRaise };

// Parses "generate", "skip", "warn" or "raise" (--on-missing).
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
  LazyGenerator* generator = nullptr;  // required by kGenerate; shared by all loader threads
};

// Loads global row `row`, drawing its noise from `generator` (torch's global
// generator when empty). Errors for a missing or rejected file under kRaise, and under
// kGenerate when the generator cannot be built (model or servers unusable).
Result<std::optional<ShiftedSample>> LoadSample(const SampleSource& source, int64_t row,
                                                c10::optional<at::Generator> generator = c10::nullopt);

}  // namespace draftforge::train
