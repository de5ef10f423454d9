// One hidden-states file, `hs_{row}.safetensors`, in exactly the layout that
// vLLM's ExampleHiddenStatesConnector writes: two tensors and no
// "__metadata__", `token_ids` I64 [T] at offset 0, then `hidden_states`
// [T, L, H] in the model dtype (BF16, F16 or F32). Slot j of the layer axis
// is the j-th smallest captured layer id.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "draftforge/util/status.h"

namespace draftforge::hidden_states {

inline constexpr const char* kTokenIdsKey = "token_ids";
inline constexpr const char* kHiddenStatesKey = "hidden_states";

// Returns "hs_<row>.safetensors".
std::string HiddenStatesFileName(int64_t row);

// Parses the row index out of a file name of the form hs_<decimal>.safetensors;
// nullopt for any other name (temporary files, *.lock, ...).
std::optional<int64_t> ParseHiddenStatesFileName(const std::string& name);

// Writes `hidden_states` [T, L, H] (float32, bfloat16 or float16; stored in
// that dtype) with `token_ids` [T] to `path` atomically: a crash never leaves
// a partial file under `path`. Invalid when the shapes disagree.
Status WriteHiddenStatesFile(const std::string& path, std::span<const int64_t> token_ids,
                             const torch::Tensor& hidden_states);

struct HiddenStatesFile {
  torch::Tensor token_ids;      // [T] int64 (I32 files are widened)
  torch::Tensor hidden_states;  // [T, L, H] in the stored dtype
};

// Checks that ReadHiddenStatesFile applies on top of the structural ones;
// unset fields are not checked.
struct HiddenStatesExpectation {
  std::optional<std::span<const int64_t>> token_ids;  // the dataset row's input_ids
  std::optional<int64_t> num_layers;                  // L
  std::optional<int64_t> hidden_size;                 // H
};

// Reads and validates one file: both keys present, `token_ids` rank 1 (I64 or
// I32), `hidden_states` rank 3 in BF16/F16/F32 with shape[0] == T, every
// value finite, plus whatever `expected` sets. Corrupt for a damaged or
// malformed file and Invalid for a well-formed file that does not match
// `expected`; messages name the file and what differs.
Result<HiddenStatesFile> ReadHiddenStatesFile(const std::string& path,
                                              const HiddenStatesExpectation& expected = {});

}  // namespace draftforge::hidden_states
