// From hidden-states samples to one packed training row.
//
// Shift (per sample of n tokens x[0..n-1], loss flags l, aux features A and
// last-layer states Y): slot i pairs the verifier features of position i with
// the next token, so the sample becomes n-1 long with
//   input_ids[i] = x[i+1], aux_hidden[i] = A[i], verifier_hidden[i] = Y[i+1],
//   loss_mask[i] = l[i+1], position_ids[i] = i+1.
// Collate concatenates shifted samples in order, truncates to L and right-pads
// to exactly L (ids 0, features 0, mask 0, position 0). Document lengths walk a
// running sum c: a sample of n slots adds min(n, L - c) and ends the walk when
// c + n >= L.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace draftforge::train {

// One shifted sample.
struct ShiftedSample {
  torch::Tensor input_ids;        // [n-1] int64
  torch::Tensor loss_mask;        // [n-1] uint8
  torch::Tensor aux_hidden;       // [n-1, 3H] training dtype
  torch::Tensor verifier_hidden;  // [n-1, H] training dtype
  int64_t length() const { return input_ids.size(0); }
};

// Applies the shift to ids [n] int64, mask [n] (any integer type) and
// hidden_states [n, 4, H] (slots 0..2 = auxiliary layers, slot 3 = last layer).
ShiftedSample ShiftSample(const torch::Tensor& input_ids, const torch::Tensor& loss_mask,
                          const torch::Tensor& hidden_states);

// Adds uniform noise on [-std, std) to `features` in place (float32 or wider),
// drawn from `generator`, or from torch's global generator when it is empty.
void AddUniformNoise(torch::Tensor& features, double std, c10::optional<at::Generator> generator = c10::nullopt);

// One packed row of exactly L slots.
struct PackedBatch {
  torch::Tensor input_ids;        // [L] int64
  torch::Tensor position_ids;     // [L] int64
  torch::Tensor loss_mask;        // [L] training dtype, 0 or 1
  torch::Tensor document_ids;     // [L] int64, -1 for padding
  torch::Tensor aux_hidden;       // [L, 3H]
  torch::Tensor verifier_hidden;  // [L, H]
  std::vector<int64_t> lengths;   // document lengths in slots; {0} for an all-padding row
  int64_t num_samples = 0;        // samples packed into the row
  int64_t num_tokens() const;     // sum of lengths

  // Copies every tensor to `device`.
  PackedBatch To(const torch::Device& device) const;
};

// Document lengths of a row of `max_length` slots holding samples of
// `sample_lengths` slots (the running-sum rule above).
std::vector<int64_t> PackedLengths(const std::vector<int64_t>& sample_lengths, int64_t max_length);

// Document id of every slot, -1 for padding: [max_length] int64.
torch::Tensor DocumentIds(const std::vector<int64_t>& lengths, int64_t max_length);

// Packs `samples` into one row of `max_length` slots. With no samples the row
// is all padding, typed like a full row. `hidden_size` (H) and `dtype` shape
// the feature tensors of that empty row.
PackedBatch Collate(const std::vector<ShiftedSample>& samples, int64_t max_length, int64_t hidden_size,
                    torch::Dtype dtype);

}  // namespace draftforge::train
