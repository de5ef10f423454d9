#include "draftforge/train/verifier_weights.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <optional>
#include <vector>

#include "draftforge/engine/model_config.h"
#include "draftforge/io/safetensors.h"
#include "draftforge/io/torch_tensors.h"

namespace draftforge::train {
namespace {

bool EndsWith(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Finds `exact` in any file, else the first key ending with `suffix`.
Result<std::optional<torch::Tensor>> FindTensor(const std::vector<io::SafetensorsFile>& files,
                                                const std::string& exact, const std::string& suffix) {
  for (const auto& file : files) {
    if (file.Find(exact) != nullptr) {
      DF_ASSIGN_OR_RAISE(torch::Tensor tensor, io::ReadTensor(file, exact));
      return std::optional<torch::Tensor>(tensor.to(torch::kFloat32));
    }
  }
  for (const auto& file : files) {
    for (const auto& info : file.tensors()) {
      if (EndsWith(info.name, suffix)) {
        DF_ASSIGN_OR_RAISE(torch::Tensor tensor, io::ReadTensor(file, info.name));
        return std::optional<torch::Tensor>(tensor.to(torch::kFloat32));
      }
    }
  }
  return std::optional<torch::Tensor>();
}

}  // namespace

Result<VerifierWeights> LoadVerifierWeights(const std::string& model_dir) {
  DF_ASSIGN_OR_RAISE(std::vector<std::string> paths, engine::ListWeightFiles(model_dir));
  std::vector<io::SafetensorsFile> files;
  for (const auto& path : paths) {
    DF_ASSIGN_OR_RAISE(io::SafetensorsFile file, io::SafetensorsFile::Open(path));
    files.push_back(std::move(file));
  }
  VerifierWeights weights;
  DF_ASSIGN_OR_RAISE(auto embed, FindTensor(files, "model.embed_tokens.weight", "embed_tokens.weight"));
  if (!embed) {
    return Status::NotFound("{}: no tensor named model.embed_tokens.weight or ending with "
                            "embed_tokens.weight; is this a Llama-family checkpoint?",
                            model_dir);
  }
  weights.embed_tokens = *embed;
  DF_ASSIGN_OR_RAISE(auto head, FindTensor(files, "lm_head.weight", "lm_head.weight"));
  weights.lm_head = head ? *head : weights.embed_tokens;
  DF_ASSIGN_OR_RAISE(auto norm, FindTensor(files, "model.norm.weight", "model.norm.weight"));
  if (norm) weights.norm = *norm;
  return weights;
}

Status InstallVerifierWeights(Eagle3DraftModel& model, const VerifierWeights& weights, bool keep_lm_head) {
  const DraftConfig& config = model.config();
  const std::vector<int64_t> embed_shape = {config.vocab_size, config.hidden_size};
  if (weights.embed_tokens.sizes().vec() != embed_shape || weights.lm_head.sizes().vec() != embed_shape) {
    return Status::Invalid("verifier embeddings {} / lm_head {} do not match the draft's [vocab_size {}, "
                           "hidden_size {}]",
                           weights.embed_tokens.sizes().vec(), weights.lm_head.sizes().vec(), config.vocab_size,
                           config.hidden_size);
  }
  torch::NoGradGuard no_grad;
  auto options = model.options();
  model.embed_tokens.copy_(weights.embed_tokens.to(options));
  torch::Tensor head = weights.lm_head;
  if (model.t2d.defined()) {
    torch::Tensor selected = model.t2d.to(torch::kCPU).nonzero().squeeze(1);  // ascending verifier ids
    head = head.index_select(0, selected);
  }
  model.verifier_lm_head.copy_(head.to(options));
  if (!keep_lm_head) model.lm_head->weight.copy_(head.to(options));
  if (weights.norm.defined()) {
    if (weights.norm.size(0) != config.hidden_size) {
      return Status::Invalid("verifier final norm has {} entries, the draft hidden_size is {}",
                             weights.norm.size(0), config.hidden_size);
    }
    model.verifier_norm.copy_(weights.norm.to(options));
  } else {
    spdlog::warn("verifier has no tensor model.norm.weight; the targets use a final norm of ones");
  }
  return Status::OK();
}

}  // namespace draftforge::train
