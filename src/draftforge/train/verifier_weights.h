// Loading the verifier tensors the draft needs: token embeddings, the LM head
// (restricted to the draft vocabulary) and the final norm.
//
// Keys are looked up in the verifier's safetensors files (index file or single
// file) by exact name first, else the first key ending with the suffix:
// embed_tokens.weight, lm_head.weight, model.norm.weight. A verifier without
// an LM head has tied embeddings; the embedding matrix serves as the head.
#pragma once

#include <torch/torch.h>

#include <string>

#include "draftforge/train/eagle3_model.h"
#include "draftforge/util/status.h"

namespace draftforge::train {

struct VerifierWeights {
  torch::Tensor embed_tokens;  // [V, H]
  torch::Tensor lm_head;       // [V, H]; the embeddings when the verifier ties them
  torch::Tensor norm;          // [H]; undefined when the verifier has no final norm
};

// Reads the three tensors from `model_dir` (float32 copies on the CPU).
Result<VerifierWeights> LoadVerifierWeights(const std::string& model_dir);

// Copies the verifier tensors into `model`: embed_tokens, verifier_norm (a
// missing norm keeps ones and logs a warning), verifier_lm_head = head rows
// where t2d is true in ascending id order, and lm_head = the same rows unless
// `keep_lm_head` (set when lm_head was restored from a checkpoint). Invalid
// when shapes differ from the draft config.
Status InstallVerifierWeights(Eagle3DraftModel& model, const VerifierWeights& weights, bool keep_lm_head);

}  // namespace draftforge::train
