// `draftforge demo-assets`: writes a small random Llama checkpoint and synthetic
// token data so the whole pipeline can be tried offline without downloading a
// model. The model is untrained; what the demo shows is the pipeline and that
// the draft learns to imitate the verifier, not language quality.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "draftforge/cli/commands.h"
#include "draftforge/io/torch_tensors.h"
#include "draftforge/util/fs.h"

namespace draftforge::cli {
namespace {

struct DemoOptions {
  std::string output;
  int64_t samples = 600;
  int64_t max_length = 160;
  uint64_t seed = 0;
};

// A tiny Llama: 8 layers so that vLLM's default capture ids [2, N/2, N-3, N]
// are distinct.
nlohmann::ordered_json DemoModelConfig() {
  nlohmann::ordered_json config;
  config["architectures"] = {"LlamaForCausalLM"};
  config["model_type"] = "llama";
  config["hidden_size"] = 64;
  config["intermediate_size"] = 192;
  config["num_hidden_layers"] = 8;
  config["num_attention_heads"] = 4;
  config["num_key_value_heads"] = 2;
  config["head_dim"] = 16;
  config["vocab_size"] = 320;
  config["max_position_embeddings"] = 512;
  config["rms_norm_eps"] = 1e-5;
  config["rope_theta"] = 10000.0;
  config["rope_scaling"] = nullptr;
  config["hidden_act"] = "silu";
  config["attention_bias"] = false;
  config["mlp_bias"] = false;
  config["initializer_range"] = 0.02;
  config["tie_word_embeddings"] = false;
  config["bos_token_id"] = 1;
  config["eos_token_id"] = 2;
  config["torch_dtype"] = "float32";
  return config;
}

Status WriteDemoModel(const std::string& dir, uint64_t seed) {
  DF_RETURN_NOT_OK(CreateDirectories(dir));
  nlohmann::ordered_json config = DemoModelConfig();
  DF_RETURN_NOT_OK(WriteFileAtomic(dir + "/config.json", config.dump(2) + "\n"));

  torch::manual_seed(seed);
  const int64_t hidden = config["hidden_size"], inter = config["intermediate_size"];
  const int64_t heads = config["num_attention_heads"], kv_heads = config["num_key_value_heads"];
  const int64_t head_dim = config["head_dim"], vocab = config["vocab_size"];
  const int64_t layers = config["num_hidden_layers"];
  // Linear weights use std 1/sqrt(fan_in) so each layer changes the residual
  // stream visibly; the verifier is then a non-trivial function to imitate.
  auto linear = [](int64_t out, int64_t in) {
    return torch::randn({out, in}) / std::sqrt(static_cast<double>(in));
  };
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  tensors.emplace_back("model.embed_tokens.weight", torch::randn({vocab, hidden}));
  tensors.emplace_back("lm_head.weight", linear(vocab, hidden));
  tensors.emplace_back("model.norm.weight", torch::ones({hidden}));
  for (int64_t layer = 0; layer < layers; ++layer) {
    std::string prefix = fmt::format("model.layers.{}.", layer);
    tensors.emplace_back(prefix + "self_attn.q_proj.weight", linear(heads * head_dim, hidden));
    tensors.emplace_back(prefix + "self_attn.k_proj.weight", linear(kv_heads * head_dim, hidden));
    tensors.emplace_back(prefix + "self_attn.v_proj.weight", linear(kv_heads * head_dim, hidden));
    tensors.emplace_back(prefix + "self_attn.o_proj.weight", linear(hidden, heads * head_dim));
    tensors.emplace_back(prefix + "mlp.gate_proj.weight", linear(inter, hidden));
    tensors.emplace_back(prefix + "mlp.up_proj.weight", linear(inter, hidden));
    tensors.emplace_back(prefix + "mlp.down_proj.weight", linear(hidden, inter));
    tensors.emplace_back(prefix + "input_layernorm.weight", torch::ones({hidden}));
    tensors.emplace_back(prefix + "post_attention_layernorm.weight", torch::ones({hidden}));
  }
  return io::WriteTensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
}

// Token sequences with learnable structure: runs of arithmetic progressions
// (start, step) over ids 3..vocab-1 with occasional random jumps, each
// starting with BOS (1). The loss mask covers the second half of each row, as
// an assistant reply would.
Status WriteDemoData(const std::string& path, const DemoOptions& options, int64_t vocab) {
  std::mt19937_64 rng(options.seed + 1);
  std::ofstream out(path, std::ios::trunc);
  if (!out) return Status::IOError("cannot create {}", path);
  std::uniform_int_distribution<int64_t> token(3, vocab - 1), step(1, 7);
  std::uniform_int_distribution<int64_t> length(options.max_length / 2, options.max_length);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  for (int64_t sample = 0; sample < options.samples; ++sample) {
    int64_t n = length(rng);
    std::vector<int64_t> ids = {1};
    std::vector<int> mask = {0};
    int64_t current = token(rng), stride = step(rng);
    while (static_cast<int64_t>(ids.size()) < n) {
      if (coin(rng) < 0.08) {
        current = token(rng);
        stride = step(rng);
      }
      ids.push_back(current);
      mask.push_back(static_cast<int64_t>(ids.size()) > n / 2 ? 1 : 0);
      current = 3 + (current - 3 + stride) % (vocab - 3);
    }
    nlohmann::json record;
    record["input_ids"] = ids;
    record["loss_mask"] = mask;
    out << record.dump() << "\n";
  }
  if (!out) return Status::IOError("write failed on {}", path);
  return Status::OK();
}

}  // namespace

void AddDemoAssetsCommand(CLI::App& app) {
  auto options = std::make_shared<DemoOptions>();
  auto* command = app.add_subcommand(
      "demo-assets",
      "Write a small random Llama checkpoint (OUTPUT/model) and synthetic token data "
      "(OUTPUT/train.jsonl) for trying the pipeline offline");
  command->add_option("--output", options->output, "Directory to create")->required();
  command->add_option("--samples", options->samples, "Number of token sequences (at least 1)")
      ->capture_default_str()
      ->check(AtLeast(1));
  command->add_option("--max-length", options->max_length, "Longest sequence in tokens")
      ->capture_default_str()
      ->check(CLI::Range(8, 512));
  command->add_option("--seed", options->seed, "Random seed for weights and data")
      ->capture_default_str();
  command->callback([options] {
    std::string model_dir = options->output + "/model";
    ExitOnError(WriteDemoModel(model_dir, options->seed));
    ExitOnError(WriteDemoData(options->output + "/train.jsonl", *options,
                              DemoModelConfig()["vocab_size"].get<int64_t>()));
    spdlog::info("wrote demo model to {} and {} sequences to {}/train.jsonl", model_dir,
                 options->samples, options->output);
  });
}

}  // namespace draftforge::cli
