#include "draftforge/train/rotary.h"

#include <cmath>
#include <numbers>
#include <string>

namespace draftforge::train {
namespace {

Result<double> RequireNumber(const nlohmann::json& scaling, const char* key) {
  auto it = scaling.find(key);
  if (it == scaling.end() || !it->is_number()) {
    return Status::Invalid("rope_scaling {} has no numeric '{}'", scaling.dump(), key);
  }
  return it->get<double>();
}

// Llama-3 scaling: wavelengths shorter than original/high_freq_factor keep
// their frequency, those longer than original/low_freq_factor are divided by
// `factor`, and the band in between blends the two linearly in 1/wavelength.
Status ApplyLlama3Scaling(const nlohmann::json& scaling, std::vector<double>& inv_freq) {
  DF_ASSIGN_OR_RAISE(double factor, RequireNumber(scaling, "factor"));
  DF_ASSIGN_OR_RAISE(double low, RequireNumber(scaling, "low_freq_factor"));
  DF_ASSIGN_OR_RAISE(double high, RequireNumber(scaling, "high_freq_factor"));
  DF_ASSIGN_OR_RAISE(double original, RequireNumber(scaling, "original_max_position_embeddings"));
  double low_wavelength = original / low;
  double high_wavelength = original / high;
  for (double& frequency : inv_freq) {
    double wavelength = 2.0 * std::numbers::pi / frequency;
    if (wavelength < high_wavelength) continue;
    if (wavelength > low_wavelength) {
      frequency /= factor;
      continue;
    }
    double smooth = (original / wavelength - low) / (high - low);
    frequency = (1.0 - smooth) * frequency / factor + smooth * frequency;
  }
  return Status::OK();
}

}  // namespace

Result<std::vector<double>> RopeInverseFrequencies(int64_t head_dim, double theta,
                                                   const nlohmann::json& rope_scaling) {
  if (head_dim <= 0 || head_dim % 2 != 0) {
    return Status::Invalid("head_dim must be a positive even number for RoPE, got {}", head_dim);
  }
  std::vector<double> inv_freq(head_dim / 2);
  for (int64_t j = 0; j < head_dim / 2; ++j) {
    inv_freq[j] = 1.0 / std::pow(theta, static_cast<double>(2 * j) / static_cast<double>(head_dim));
  }
  if (rope_scaling.is_null()) return inv_freq;
  if (!rope_scaling.is_object()) {
    return Status::Invalid("rope_scaling must be an object or null, got {}", rope_scaling.dump());
  }
  std::string type = rope_scaling.value("rope_type", rope_scaling.value("type", std::string("default")));
  if (type == "default") return inv_freq;
  if (type == "linear") {
    DF_ASSIGN_OR_RAISE(double factor, RequireNumber(rope_scaling, "factor"));
    for (double& frequency : inv_freq) frequency /= factor;
    return inv_freq;
  }
  if (type == "llama3") {
    DF_RETURN_NOT_OK(ApplyLlama3Scaling(rope_scaling, inv_freq));
    return inv_freq;
  }
  return Status::Unimplemented("rope_type '{}' is not implemented by the draft trainer (default, "
                               "linear and llama3 are)",
                               type);
}

}  // namespace draftforge::train
