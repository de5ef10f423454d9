// The training-time-test (TTT) loop of EAGLE-3: K draft steps over one packed
// row, each feeding the previous step's hidden state and token back in, with
// a KL loss against the verifier and chain accuracies per step.
//
// Step k (0-based) predicts, at slot i, the token whose verifier target sits
// at slot i + k, so only n_k = L - k slots have a target:
//   Z_k = z[0 : L-k], T_k = T[k : L], m_k = m[k : L].
// step_loss_k = decay^k * sum_i m_k[i] * KL(softmax(T_k[i]) || softmax(Z_k[i]))
//                        / (sum_i m_k[i] + 1e-5), loss = sum_k step_loss_k.
// Softmaxes and KL run in float32 (float64 when the model is float64).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "draftforge/train/batch.h"
#include "draftforge/train/eagle3_model.h"

namespace draftforge::train {

struct TttOptions {
  int64_t steps = 3;          // K
  double loss_decay = 1.0;    // gamma
  bool teacher_forcing = false;  // feed the ground-truth next ids instead of the draft's argmax
  bool keep_logits = false;   // store each step's logits (detached) in the output, for tests
};

struct StepMetrics {
  double loss = 0;      // step_loss_k, decay included
  double full_acc = 0;  // num / (sum of m_k + 1e-5)
  double cond_acc = 0;  // num / (chains alive before the step + 1e-5)
  // The counts behind the ratios, for token-weighted means over rows.
  double correct = 0;           // num
  double counted = 0;           // sum of m_k
  double alive_before = 0;      // chains alive before the step
};

struct TttOutput {
  torch::Tensor loss;                      // scalar with the autograd graph
  std::vector<StepMetrics> steps;          // K entries
  std::vector<torch::Tensor> draft_tokens;  // K tensors [L] of draft indices (argmax)
  std::vector<torch::Tensor> logits;       // K tensors [L, Vd] when keep_logits
};

// Runs the K steps on `batch` (already on the model's device).
TttOutput RunTtt(Eagle3DraftModel& model, const PackedBatch& batch, const TttOptions& options);

// Masked mean KL(softmax(targets) || softmax(logits)) over rows: logits and
// targets [n, Vd], mask [n]. Returns a scalar in the logits' dtype.
torch::Tensor StepKlLoss(const torch::Tensor& logits, const torch::Tensor& targets, const torch::Tensor& mask);

// Chain accuracy of one step. `alive` [L] bool holds, per start slot, whether
// the chain of drafts starting there has been right at every step so far (it
// starts as the loss mask); it is updated in place for slots < n.
// draft_argmax and target_argmax are the aligned [n] argmaxes, mask the
// aligned [n] loss mask m_k. Returns full and conditional accuracy.
StepMetrics UpdateChainAccuracy(const torch::Tensor& draft_argmax, const torch::Tensor& target_argmax,
                                const torch::Tensor& mask, torch::Tensor& alive);

}  // namespace draftforge::train
