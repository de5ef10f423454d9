#include "draftforge/train/ttt.h"

#include <cmath>

namespace draftforge::train {
namespace {

torch::Dtype LossDtype(torch::Dtype dtype) { return dtype == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32; }

// Token ids fed to step k+1.
torch::Tensor NextInputIds(Eagle3DraftModel& model, const torch::Tensor& draft_argmax,
                           const torch::Tensor& original_ids, int64_t step, bool teacher_forcing) {
  if (!teacher_forcing) return model.DraftToVerifierIds(draft_argmax);
  // Teacher forcing: ids[i] = ids0[i + 1 + k] for i < L - 1 - k, else 0.
  const int64_t length = original_ids.size(0);
  const int64_t shift = std::min<int64_t>(step + 1, length);
  torch::Tensor next = torch::zeros_like(original_ids);
  next.narrow(0, 0, length - shift).copy_(original_ids.narrow(0, shift, length - shift));
  return next;
}

}  // namespace

torch::Tensor StepKlLoss(const torch::Tensor& logits, const torch::Tensor& targets, const torch::Tensor& mask) {
  torch::Dtype dtype = LossDtype(logits.scalar_type());
  torch::Tensor log_q = torch::log_softmax(logits.to(dtype), -1);
  torch::Tensor log_p = torch::log_softmax(targets.to(dtype), -1);
  // KL_i = sum_v p_v (log p_v - log q_v); log_p is finite, so p_v = 0 terms are 0.
  torch::Tensor kl = (log_p.exp() * (log_p - log_q)).sum(-1);  // [n]
  torch::Tensor weights = mask.to(dtype);
  return ((kl * weights).sum() / (weights.sum() + 1e-5)).to(logits.scalar_type());
}

StepMetrics UpdateChainAccuracy(const torch::Tensor& draft_argmax, const torch::Tensor& target_argmax,
                                const torch::Tensor& mask, torch::Tensor& alive) {
  const int64_t n = draft_argmax.size(0);
  torch::Tensor alive_before = alive.narrow(0, 0, n);
  double conditional_denominator = alive_before.sum().item<double>();
  torch::Tensor still_alive = alive_before & (draft_argmax == target_argmax);  // [n]
  alive.narrow(0, 0, n).copy_(still_alive);
  torch::Tensor counted = mask.to(torch::kBool);
  double numerator = (still_alive & counted).sum().item<double>();
  double full_denominator = counted.sum().item<double>();
  StepMetrics metrics;
  metrics.full_acc = numerator / (full_denominator + 1e-5);
  metrics.cond_acc = numerator / (conditional_denominator + 1e-5);
  metrics.correct = numerator;
  metrics.counted = full_denominator;
  metrics.alive_before = conditional_denominator;
  return metrics;
}

TttOutput RunTtt(Eagle3DraftModel& model, const PackedBatch& batch, const TttOptions& options) {
  const int64_t length = batch.input_ids.size(0);
  const torch::Tensor& mask = batch.loss_mask;  // [L]
  AttentionLayout layout = BuildAttentionLayout(batch.lengths, length, model.options());

  torch::Tensor hidden = model.ProjectFeatures(batch.aux_hidden);        // [L, H]
  torch::Tensor targets = model.ComputeTargets(batch.verifier_hidden);   // [L, Vd]
  torch::Tensor target_argmax = targets.argmax(-1);                      // [L]
  torch::Tensor ids = batch.input_ids;
  torch::Tensor alive = mask.to(torch::kBool).clone();                   // [L]
  std::vector<std::vector<KvBlock>> caches;

  TttOutput output;
  std::vector<torch::Tensor> step_losses;
  for (int64_t step = 0; step < options.steps; ++step) {
    torch::Tensor x = torch::cat({model.Embed(ids), hidden}, -1);        // [L, 2H]
    RotaryTables rotary = model.Rotary(batch.position_ids + step);
    hidden = model.ForwardLayers(x, rotary, caches, layout);             // [L, H], pre-norm
    torch::Tensor logits = model.Logits(hidden);                         // [L, Vd]

    const int64_t n = length - step;
    torch::Tensor aligned_mask = mask.narrow(0, step, n);
    torch::Tensor step_loss = StepKlLoss(logits.narrow(0, 0, n), targets.narrow(0, step, n), aligned_mask) *
                              std::pow(options.loss_decay, static_cast<double>(step));
    step_losses.push_back(step_loss);

    torch::Tensor draft_argmax = logits.detach().argmax(-1);  // [L], first maximum wins
    StepMetrics metrics = UpdateChainAccuracy(draft_argmax.narrow(0, 0, n), target_argmax.narrow(0, step, n),
                                              aligned_mask, alive);
    metrics.loss = step_loss.item<double>();
    output.steps.push_back(metrics);
    output.draft_tokens.push_back(draft_argmax);
    if (options.keep_logits) output.logits.push_back(logits.detach());

    ids = NextInputIds(model, draft_argmax, batch.input_ids, step, options.teacher_forcing);
  }
  output.loss = torch::stack(step_losses).sum();
  return output;
}

}  // namespace draftforge::train
