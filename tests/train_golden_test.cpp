// The tiny-model forward/backward of the EAGLE-3 trainer against float64
// reference numbers (H = 8, 2 heads, 1 key/value head, V = 16, Vd = 8, K = 3),
// computed by an independent dense-mask float64 implementation of the same
// algorithm. Every weight and input comes from the closed form
// det(shape, t, scale, base)[n] = base + scale * sin(0.37 n + 0.11 t + 0.5).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "draftforge/train/eagle3_model.h"
#include "draftforge/train/ttt.h"

namespace draftforge::train {
namespace {

const std::vector<int64_t> kDraftIds = {0, 2, 3, 5, 8, 9, 12, 15};
const auto kFloat64 = torch::TensorOptions().dtype(torch::kFloat64);

torch::Tensor Det(std::vector<int64_t> shape, int64_t t, double scale, double base = 0.0) {
  torch::Tensor n = torch::arange(c10::multiply_integers(shape), kFloat64);
  return (base + scale * torch::sin(0.37 * n + 0.11 * static_cast<double>(t) + 0.5)).reshape(shape);
}

DraftConfig TinyConfig(int64_t num_layers, const std::string& arch, bool norm_before_residual) {
  DraftConfig config;
  config.arch = arch;
  config.hidden_size = 8;
  config.intermediate_size = 12;
  config.num_attention_heads = 2;
  config.num_key_value_heads = 1;
  config.head_dim = 4;
  config.vocab_size = 16;
  config.draft_vocab_size = 8;
  config.num_layers = num_layers;
  config.rms_norm_eps = 1e-6;
  config.rope_theta = 10000.0;
  config.norm_before_residual = norm_before_residual;
  return config;
}

// Fills the model in the reference's parameter order t = 0, 1, ...
void FillDeterministic(Eagle3DraftModel& model) {
  torch::NoGradGuard no_grad;
  const DraftConfig& config = model.config();
  auto params = model.named_parameters();
  int64_t t = 0;
  auto set_linear = [&](const std::string& name) {
    torch::Tensor& p = params[name];
    p.copy_(Det(p.sizes().vec(), t++, 1.0 / std::sqrt(static_cast<double>(p.size(1)))));
  };
  auto set_norm = [&](const std::string& name) {
    torch::Tensor& p = params[name];
    p.copy_(Det(p.sizes().vec(), t++, 0.1, 1.0));
  };
  set_linear("fc.weight");
  for (int64_t l = 0; l < config.num_layers; ++l) {
    std::string prefix = "layers." + std::to_string(l) + ".";
    for (const char* name : {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                             "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
                             "mlp.down_proj.weight"}) {
      set_linear(prefix + name);
    }
    set_norm(prefix + "input_layernorm.weight");
    set_norm(prefix + "post_attention_layernorm.weight");
    if (l == 0) set_norm(prefix + "hidden_norm.weight");
    if (config.arch == "qwen3") {
      set_norm(prefix + "self_attn.q_norm.weight");
      set_norm(prefix + "self_attn.k_norm.weight");
    }
  }
  set_norm("norm.weight");
  model.verifier_norm.copy_(Det({8}, t++, 0.1, 1.0));
  model.embed_tokens.copy_(Det({16, 8}, t++, 1.0));
  torch::Tensor full_head = Det({16, 8}, t++, 1.0 / std::sqrt(8.0));
  torch::Tensor rows = full_head.index_select(0, torch::tensor(kDraftIds));
  params["lm_head.weight"].copy_(rows);
  model.verifier_lm_head.copy_(rows);
  std::vector<int64_t> d2t;
  for (size_t i = 0; i < kDraftIds.size(); ++i) d2t.push_back(kDraftIds[i] - static_cast<int64_t>(i));
  std::vector<uint8_t> t2d(16, 0);
  for (int64_t id : kDraftIds) t2d[id] = 1;
  ASSERT_TRUE(SetVocabMapping(model, d2t, t2d).ok());
}

// Two documents of 3 and 4 slots plus one padding slot, already shifted.
PackedBatch TinyBatch(const Eagle3DraftModel& model) {
  PackedBatch batch;
  batch.input_ids = torch::tensor(std::vector<int64_t>{3, 7, 1, 12, 5, 9, 0, 0});
  batch.position_ids = torch::tensor(std::vector<int64_t>{1, 2, 3, 1, 2, 3, 4, 0});
  batch.loss_mask = torch::tensor(std::vector<double>{0, 1, 1, 0, 1, 1, 1, 0}, kFloat64);
  batch.document_ids = torch::tensor(std::vector<int64_t>{0, 0, 0, 1, 1, 1, 1, -1});
  batch.lengths = {3, 4};
  batch.aux_hidden = Det({8, 24}, 100, 1.0);
  torch::Tensor e = model.verifier_lm_head[2];
  batch.verifier_hidden = Det({8, 8}, 101, 1.0) + std::sqrt(8.0) * e / e.norm();
  batch.aux_hidden[7].zero_();
  batch.verifier_hidden[7].zero_();
  return batch;
}

struct GoldenCase {
  std::string name;
  int64_t num_layers;
  std::string arch;
  bool norm_before_residual;
  bool teacher_forcing;
  double decay;
  std::vector<double> step_losses;
  double total_loss;
  std::vector<double> full_acc;
  std::vector<double> cond_acc;
  std::vector<std::vector<int64_t>> drafts;
  std::vector<int64_t> target_argmax;
  double grad_fc, grad_lm_head, grad_q_proj, grad_total;
};

// Prints the case name in test listings instead of the struct's raw bytes.
void PrintTo(const GoldenCase& golden, std::ostream* out) { *out << "case " << golden.name; }

const std::vector<GoldenCase>& GoldenCases() {
  static const std::vector<GoldenCase> cases = {
      {"A", 1, "llama", true, false, 1.0,
       {0.5158217181713366, 0.5620524273768632, 0.5567482821468056}, 1.6346224276950054,
       {0.39999920000160005, 0.0, 0.0}, {0.39999920000160005, 0.0, 0.0},
       {{2, 2, 2, 1, 3, 2, 2, 6}, {2, 2, 2, 1, 2, 2, 2, 1}, {2, 2, 2, 1, 2, 2, 2, 1}}, {2, 5, 2, 3, 2, 2, 3, 0},
       0.21737086716143414, 1.5325067570211397, 0.20189709998433733, 2.379831430150757},
      {"B", 1, "llama", false, false, 1.0,
       {0.5362079735177762, 0.5660228026287933, 0.548469918595611}, 1.6507006947421805,
       {0.39999920000160005, 0.0, 0.0}, {0.39999920000160005, 0.0, 0.0},
       {{2, 2, 2, 1, 5, 2, 1, 6}, {2, 2, 2, 1, 2, 2, 2, 1}, {2, 2, 2, 1, 2, 2, 0, 1}}, {2, 5, 2, 3, 2, 2, 3, 0},
       0.21314047249527024, 1.327231008558814, 0.15560107002384954, 1.9972666771773284},
      {"C", 1, "llama", true, true, 1.0,
       {0.5158217181713366, 0.550418781783079, 0.4428733501104114}, 1.5091138500648271,
       {0.39999920000160005, 0.0, 0.0}, {0.39999920000160005, 0.0, 0.0},
       {{2, 2, 2, 1, 3, 2, 2, 6}, {2, 2, 2, 0, 2, 2, 2, 6}, {2, 1, 2, 2, 2, 2, 2, 6}}, {2, 5, 2, 3, 2, 2, 3, 0},
       0.15820671730574243, 2.0978179568438926, 0.17787014401906437, 3.2596284335656613},
      {"D", 2, "llama", true, false, 0.8,
       {0.6714723840310647, 0.622058661669671, 0.4752704449918339}, 1.7688014906925698,
       {0.0, 0.0, 0.0}, {0.0, 0.0, 0.0},
       {{4, 4, 4, 4, 4, 5, 5, 3}, {4, 4, 4, 4, 4, 5, 5, 3}, {4, 4, 4, 4, 4, 5, 5, 3}}, {2, 2, 3, 6, 3, 6, 3, 0},
       0.6401090290653656, 1.5426669564228022, 0.21980320851049884, 2.730945267863338},
      {"E", 1, "qwen3", true, false, 1.0,
       {0.5231211675484392, 0.4980350852358145, 0.46440068290810743}, 1.4855569356923612,
       {0.39999920000160005, 0.0, 0.24999937500156252}, {0.39999920000160005, 0.0, 0.9999900000999989},
       {{2, 2, 2, 1, 7, 2, 6, 2}, {2, 2, 2, 1, 2, 2, 1, 2}, {2, 2, 2, 1, 2, 2, 1, 2}}, {2, 3, 2, 2, 2, 2, 3, 0},
       0.3528666633027192, 1.2439117851776806, 0.18110422018126382, 2.019638712184783},
  };
  return cases;
}

std::vector<int64_t> ToVector(const torch::Tensor& tensor) {
  torch::Tensor contiguous = tensor.to(torch::kInt64).contiguous();
  return {contiguous.data_ptr<int64_t>(), contiguous.data_ptr<int64_t>() + contiguous.numel()};
}

double GradNorm(Eagle3DraftModel& model, const std::string& name) {
  return model.named_parameters()[name].grad().norm().item<double>();
}

class GoldenTest : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(GoldenTest, MatchesFloat64Reference) {
  const GoldenCase& golden = GetParam();
  Eagle3DraftModel model(TinyConfig(golden.num_layers, golden.arch, golden.norm_before_residual), kFloat64);
  FillDeterministic(model);
  PackedBatch batch = TinyBatch(model);
  TttOptions options;
  options.loss_decay = golden.decay;
  options.teacher_forcing = golden.teacher_forcing;
  options.keep_logits = true;
  TttOutput output = RunTtt(model, batch, options);
  output.loss.backward();

  const double tolerance = 1e-12;
  ASSERT_EQ(output.steps.size(), 3u);
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_NEAR(output.steps[k].loss, golden.step_losses[k], tolerance) << "loss_" << k;
    EXPECT_NEAR(output.steps[k].full_acc, golden.full_acc[k], tolerance) << "full_acc_" << k;
    EXPECT_NEAR(output.steps[k].cond_acc, golden.cond_acc[k], tolerance) << "cond_acc_" << k;
    EXPECT_EQ(ToVector(output.draft_tokens[k]), golden.drafts[k]) << "draft tokens of step " << k;
  }
  EXPECT_NEAR(output.loss.item<double>(), golden.total_loss, tolerance);
  EXPECT_EQ(ToVector(model.ComputeTargets(batch.verifier_hidden).argmax(-1)), golden.target_argmax);

  EXPECT_NEAR(GradNorm(model, "fc.weight"), golden.grad_fc, tolerance);
  EXPECT_NEAR(GradNorm(model, "lm_head.weight"), golden.grad_lm_head, tolerance);
  EXPECT_NEAR(GradNorm(model, "layers.0.self_attn.q_proj.weight"), golden.grad_q_proj, tolerance);
  double squared = 0;
  for (const auto& [name, tensor] : model.TrainableTensors()) squared += tensor.grad().pow(2).sum().item<double>();
  EXPECT_NEAR(std::sqrt(squared), golden.grad_total, tolerance);
  EXPECT_FALSE(model.embed_tokens.grad().defined());
  EXPECT_FALSE(model.verifier_lm_head.grad().defined());
}

INSTANTIATE_TEST_SUITE_P(Cases, GoldenTest, ::testing::ValuesIn(GoldenCases()),
                         [](const auto& info) { return info.param.name; });

TEST(GoldenCaseA, LogitsAndOneAdamWStep) {
  Eagle3DraftModel model(TinyConfig(1, "llama", true), kFloat64);
  FillDeterministic(model);
  TttOptions options;
  options.keep_logits = true;
  TttOutput output = RunTtt(model, TinyBatch(model), options);
  const std::vector<double> logits = {-0.6633572334480058, -0.6710789232317952, 0.6417168227226596,
                                      0.521342895596137,   -0.2206701532247978, 0.10112893661220108,
                                      0.2613101059455745,  -0.5480958898671864};
  for (int64_t v = 0; v < 8; ++v) {
    EXPECT_NEAR(output.logits[0][0][v].item<double>(), logits[v], 1e-12) << "logit " << v;
  }

  output.loss.backward();
  std::vector<torch::Tensor> params;
  for (const auto& [name, tensor] : model.TrainableTensors()) params.push_back(tensor);
  torch::nn::utils::clip_grad_norm_(params, 1.0);
  torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(1e-3).betas({0.9, 0.999}).eps(1e-8).weight_decay(0.01));
  optimizer.step();
  const std::vector<double> expected = {0.09686135544744105, 0.1570164249286051,  0.19405541785480912,
                                        0.20496526225098055, 0.18826936460017948, 0.14622743662968382};
  torch::Tensor fc = model.fc->weight;
  for (int64_t j = 0; j < 6; ++j) EXPECT_NEAR(fc[0][j].item<double>(), expected[j], 1e-12) << "fc.weight[0, " << j << "]";
}

}  // namespace
}  // namespace draftforge::train
