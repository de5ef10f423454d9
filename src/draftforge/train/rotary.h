// Rotary position embedding frequencies (default RoPE, linear and Llama-3
// scaling), following the transformers definitions.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::train {

// Returns inv_freq[j] = 1 / theta^(2j/head_dim) for j = 0 .. head_dim/2 - 1,
// computed in float64 and adjusted by `rope_scaling`. A null scaling or
// rope_type "default" leaves the values unchanged, "linear" divides them by
// factor, and "llama3" applies the wavelength-dependent blend. Dynamic, yarn
// and longrope scaling return Unimplemented.
Result<std::vector<double>> RopeInverseFrequencies(int64_t head_dim, double theta,
                                                   const nlohmann::json& rope_scaling);

}  // namespace draftforge::train
