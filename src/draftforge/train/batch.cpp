#include "draftforge/train/batch.h"

#include <algorithm>
#include <numeric>

namespace draftforge::train {

ShiftedSample ShiftSample(const torch::Tensor& input_ids, const torch::Tensor& loss_mask,
                          const torch::Tensor& hidden_states) {
  const int64_t n = input_ids.size(0);
  const int64_t kept = std::max<int64_t>(n - 1, 0);
  const int64_t hidden = hidden_states.size(2);
  ShiftedSample sample;
  sample.input_ids = input_ids.narrow(0, n - kept, kept).to(torch::kInt64);
  sample.loss_mask = loss_mask.narrow(0, n - kept, kept).to(torch::kUInt8);
  // A[i] = the three auxiliary layers of position i, layer-major: [n-1, 3H].
  sample.aux_hidden = hidden_states.narrow(0, 0, kept).narrow(1, 0, 3).reshape({kept, 3 * hidden});
  sample.verifier_hidden = hidden_states.narrow(0, n - kept, kept).select(1, 3).contiguous();  // [n-1, H]
  return sample;
}

void AddUniformNoise(torch::Tensor& features, double std, c10::optional<at::Generator> generator) {
  if (std == 0.0) return;
  // U ~ [0, 1) gives std * (2U - 1) in [-std, std).
  torch::Tensor uniform = torch::rand(features.sizes(), generator, features.options());
  features.add_(uniform.mul_(2.0).sub_(1.0).mul_(std));
}

int64_t PackedBatch::num_tokens() const {
  return std::accumulate(lengths.begin(), lengths.end(), int64_t{0});
}

PackedBatch PackedBatch::To(const torch::Device& device) const {
  PackedBatch moved = *this;
  moved.input_ids = input_ids.to(device);
  moved.position_ids = position_ids.to(device);
  moved.loss_mask = loss_mask.to(device);
  moved.document_ids = document_ids.to(device);
  moved.aux_hidden = aux_hidden.to(device);
  moved.verifier_hidden = verifier_hidden.to(device);
  return moved;
}

std::vector<int64_t> PackedLengths(const std::vector<int64_t>& sample_lengths, int64_t max_length) {
  std::vector<int64_t> lengths;
  int64_t used = 0;
  for (int64_t length : sample_lengths) {
    if (used + length >= max_length) {
      lengths.push_back(max_length - used);
      return lengths;
    }
    lengths.push_back(length);
    used += length;
  }
  return lengths;
}

torch::Tensor DocumentIds(const std::vector<int64_t>& lengths, int64_t max_length) {
  std::vector<int64_t> ids(max_length, -1);
  int64_t slot = 0;
  for (size_t document = 0; document < lengths.size(); ++document) {
    for (int64_t i = 0; i < lengths[document] && slot < max_length; ++i) {
      ids[slot++] = static_cast<int64_t>(document);
    }
  }
  return torch::tensor(ids, torch::TensorOptions().dtype(torch::kInt64));
}

namespace {

// Concatenates `parts` along dim 0, truncates to `max_length` rows and pads
// with zeros to exactly `max_length` rows.
torch::Tensor ConcatTruncatePad(const std::vector<torch::Tensor>& parts, int64_t max_length) {
  torch::Tensor joined = torch::cat(parts, 0);
  int64_t rows = std::min<int64_t>(joined.size(0), max_length);
  std::vector<int64_t> shape = joined.sizes().vec();
  shape[0] = max_length;
  torch::Tensor padded = torch::zeros(shape, joined.options());
  padded.narrow(0, 0, rows).copy_(joined.narrow(0, 0, rows));
  return padded;
}

}  // namespace

PackedBatch Collate(const std::vector<ShiftedSample>& samples, int64_t max_length, int64_t hidden_size,
                    torch::Dtype dtype) {
  PackedBatch batch;
  batch.num_samples = static_cast<int64_t>(samples.size());
  if (samples.empty()) {
    auto int_options = torch::TensorOptions().dtype(torch::kInt64);
    batch.input_ids = torch::zeros({max_length}, int_options);
    batch.position_ids = torch::zeros({max_length}, int_options);
    batch.loss_mask = torch::zeros({max_length}, torch::TensorOptions().dtype(dtype));
    batch.document_ids = torch::full({max_length}, -1, int_options);
    batch.aux_hidden = torch::zeros({max_length, 3 * hidden_size}, torch::TensorOptions().dtype(dtype));
    batch.verifier_hidden = torch::zeros({max_length, hidden_size}, torch::TensorOptions().dtype(dtype));
    batch.lengths = {0};
    return batch;
  }
  std::vector<torch::Tensor> ids, masks, positions, aux, verifier;
  std::vector<int64_t> sample_lengths;
  for (const ShiftedSample& sample : samples) {
    ids.push_back(sample.input_ids);
    masks.push_back(sample.loss_mask);
    positions.push_back(torch::arange(1, sample.length() + 1, torch::TensorOptions().dtype(torch::kInt64)));
    aux.push_back(sample.aux_hidden.to(dtype));
    verifier.push_back(sample.verifier_hidden.to(dtype));
    sample_lengths.push_back(sample.length());
  }
  batch.input_ids = ConcatTruncatePad(ids, max_length);
  batch.position_ids = ConcatTruncatePad(positions, max_length);
  batch.loss_mask = ConcatTruncatePad(masks, max_length).to(dtype);
  batch.aux_hidden = ConcatTruncatePad(aux, max_length);
  batch.verifier_hidden = ConcatTruncatePad(verifier, max_length);
  batch.lengths = PackedLengths(sample_lengths, max_length);
  batch.document_ids = DocumentIds(batch.lengths, max_length);
  return batch;
}

}  // namespace draftforge::train
