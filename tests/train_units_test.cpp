// Unit checks of the EAGLE-3 trainer parts against small worked examples:
// attention masks, shift and collate, loss and accuracy toys, schedules, RoPE
// frequencies, multipack batches and checkpoint cadence.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "draftforge/data/vocab_mapping.h"
#include "draftforge/train/attention.h"
#include "draftforge/train/batch.h"
#include "draftforge/train/batch_loader.h"
#include "draftforge/train/checkpoint.h"
#include "draftforge/train/rotary.h"
#include "draftforge/train/sampler.h"
#include "draftforge/util/numpy_random.h"
#include "draftforge/train/schedule.h"
#include "draftforge/train/trainer.h"
#include "draftforge/train/ttt.h"
#include "test_support.h"

namespace draftforge::train {
namespace {

const auto kFloat64 = torch::TensorOptions().dtype(torch::kFloat64);

std::vector<int64_t> ToVector(const torch::Tensor& tensor) {
  torch::Tensor contiguous = tensor.to(torch::kInt64).contiguous();
  return {contiguous.data_ptr<int64_t>(), contiguous.data_ptr<int64_t>() + contiguous.numel()};
}

std::vector<std::string> MaskRows(const torch::Tensor& mask) {
  std::vector<std::string> rows;
  for (int64_t i = 0; i < mask.size(0); ++i) {
    std::string row;
    for (int64_t j = 0; j < mask.size(1); ++j) {
      if (j > 0 && j % mask.size(0) == 0) row += ' ';
      row += mask[i][j].item<bool>() ? '1' : '0';
    }
    rows.push_back(row);
  }
  return rows;
}

TEST(StepMask, WorkedExampleLengths2And3) {
  torch::Tensor doc = DocumentIds({2, 3}, 6);
  EXPECT_EQ(ToVector(doc), (std::vector<int64_t>{0, 0, 1, 1, 1, -1}));
  EXPECT_EQ(MaskRows(BuildStepMask(doc, 0)),
            (std::vector<std::string>{"100000", "110000", "001000", "001100", "001110", "000001"}));
  EXPECT_EQ(MaskRows(BuildStepMask(doc, 2)),
            (std::vector<std::string>{"100000 100000 100000", "110000 010000 010000", "001000 001000 001000",
                                      "001100 000100 000100", "001110 000010 000010", "000001 000001 000001"}));
}

// Runs the chunked attention and the dense reference on the same random
// inputs for steps 0..2 and compares outputs and input gradients.
void CompareWithDense(const std::vector<int64_t>& lengths, int64_t length, int64_t max_query_chunk) {
  torch::manual_seed(7);
  const int64_t heads = 4, kv_heads = 2, head_dim = 3;
  AttentionLayout layout = BuildAttentionLayout(lengths, length, kFloat64, max_query_chunk);
  torch::Tensor doc = DocumentIds(lengths, length);
  std::vector<KvBlock> cache;
  for (int64_t step = 0; step < 3; ++step) {
    cache.push_back({torch::randn({length, kv_heads, head_dim}, kFloat64).requires_grad_(),
                     torch::randn({length, kv_heads, head_dim}, kFloat64).requires_grad_()});
    torch::Tensor q = torch::randn({length, heads, head_dim}, kFloat64).requires_grad_();
    torch::Tensor weights = torch::randn({length, heads, head_dim}, kFloat64);
    torch::Tensor fast = CachedAttention(q, cache, layout, 0.5);
    torch::Tensor dense = DenseCachedAttention(q, cache, BuildStepMask(doc, step), 0.5);
    EXPECT_LT((fast - dense).abs().max().item<double>(), 1e-12) << "step " << step;
    auto fast_grads = torch::autograd::grad({(fast * weights).sum()}, {q, cache[0].keys, cache[step].values});
    auto dense_grads = torch::autograd::grad({(dense * weights).sum()}, {q, cache[0].keys, cache[step].values});
    for (size_t i = 0; i < fast_grads.size(); ++i) {
      EXPECT_LT((fast_grads[i] - dense_grads[i]).abs().max().item<double>(), 1e-12)
          << "gradient " << i << " at step " << step;
    }
  }
}

TEST(CachedAttention, MatchesDenseMaskPerDocument) { CompareWithDense({2, 3}, 6, 512); }

TEST(CachedAttention, MatchesDenseMaskWithChunksAndPadding) { CompareWithDense({5, 1, 11, 3, 9}, 34, 4); }

TEST(CachedAttention, MatchesDenseMaskWithoutPadding) { CompareWithDense({7, 9}, 16, 3); }

TEST(Shift, UpstreamExample) {
  torch::Tensor ids = torch::arange(5, torch::kInt64);
  torch::Tensor mask = torch::tensor(std::vector<int64_t>{0, 0, 1, 1, 1});
  // hidden[t, j, :] = 10 t + j, so rows identify their position and layer.
  torch::Tensor hidden = (torch::arange(5, kFloat64).view({5, 1, 1}) * 10 +
                          torch::arange(4, kFloat64).view({1, 4, 1})).expand({5, 4, 2}).contiguous();
  ShiftedSample sample = ShiftSample(ids, mask, hidden);
  EXPECT_EQ(ToVector(sample.input_ids), (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(ToVector(sample.loss_mask), (std::vector<int64_t>{0, 1, 1, 1}));
  ASSERT_EQ(sample.aux_hidden.sizes().vec(), (std::vector<int64_t>{4, 6}));
  EXPECT_EQ(sample.aux_hidden[3][0].item<double>(), 30.0) << "A[3] = layer 0 of position 3";
  EXPECT_EQ(sample.aux_hidden[3][5].item<double>(), 32.0) << "layer 2 of position 3";
  EXPECT_EQ(sample.verifier_hidden[0][0].item<double>(), 13.0) << "Y[0] = last layer of position 1";
  EXPECT_EQ(sample.verifier_hidden[3][1].item<double>(), 43.0);

  PackedBatch batch = Collate({sample}, 4, 2, torch::kFloat64);
  EXPECT_EQ(ToVector(batch.position_ids), (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(batch.lengths, (std::vector<int64_t>{4}));
}

TEST(Collate, LengthsWalk) {
  EXPECT_EQ(PackedLengths({5, 7}, 11), (std::vector<int64_t>{5, 6}));
  EXPECT_EQ(PackedLengths({2, 6}, 10), (std::vector<int64_t>{2, 6}));
  EXPECT_EQ(PackedLengths({4, 6, 3}, 10), (std::vector<int64_t>{4, 6}));
}

ShiftedSample SampleOf(std::vector<int64_t> ids, int64_t hidden_size) {
  int64_t n = static_cast<int64_t>(ids.size());
  ShiftedSample sample;
  sample.input_ids = torch::tensor(ids);
  sample.loss_mask = torch::ones({n}, torch::kUInt8);
  sample.aux_hidden = torch::ones({n, 3 * hidden_size}, kFloat64);
  sample.verifier_hidden = torch::ones({n, hidden_size}, kFloat64);
  return sample;
}

TEST(Collate, PadsAndAssignsDocuments) {
  PackedBatch batch = Collate({SampleOf({0, 1}, 2), SampleOf({2, 3, 4, 5, 6, 7}, 2)}, 10, 2, torch::kFloat32);
  EXPECT_EQ(ToVector(batch.input_ids), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 0, 0}));
  EXPECT_EQ(ToVector(batch.position_ids), (std::vector<int64_t>{1, 2, 1, 2, 3, 4, 5, 6, 0, 0}));
  EXPECT_EQ(ToVector(batch.document_ids), (std::vector<int64_t>{0, 0, 1, 1, 1, 1, 1, 1, -1, -1}));
  EXPECT_EQ(ToVector(batch.loss_mask), (std::vector<int64_t>{1, 1, 1, 1, 1, 1, 1, 1, 0, 0}));
  EXPECT_EQ(batch.lengths, (std::vector<int64_t>{2, 6}));
  EXPECT_EQ(batch.aux_hidden.scalar_type(), torch::kFloat32);
  EXPECT_EQ(batch.aux_hidden[8].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(batch.verifier_hidden.sizes().vec(), (std::vector<int64_t>{10, 2}));
}

TEST(Collate, TruncatesTheLastSample) {
  PackedBatch batch = Collate({SampleOf({1, 2, 3, 4, 5}, 2), SampleOf({6, 7, 8, 9, 10, 11, 12}, 2)}, 8, 2,
                              torch::kFloat32);
  EXPECT_EQ(ToVector(batch.input_ids), (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(batch.lengths, (std::vector<int64_t>{5, 3}));
  EXPECT_EQ(ToVector(batch.document_ids), (std::vector<int64_t>{0, 0, 0, 0, 0, 1, 1, 1}));
}

TEST(Collate, EmptyRowIsTypedPadding) {
  PackedBatch batch = Collate({}, 6, 4, torch::kFloat32);
  EXPECT_EQ(batch.input_ids.scalar_type(), torch::kInt64);
  EXPECT_EQ(batch.aux_hidden.sizes().vec(), (std::vector<int64_t>{6, 12}));
  EXPECT_EQ(batch.aux_hidden.scalar_type(), torch::kFloat32);
  EXPECT_EQ(ToVector(batch.document_ids), (std::vector<int64_t>(6, -1)));
  EXPECT_EQ(batch.lengths, (std::vector<int64_t>{0}));
}

TEST(Noise, UniformWithinStd) {
  torch::manual_seed(3);
  torch::Tensor features = torch::zeros({200000}, torch::kFloat32);
  AddUniformNoise(features, 0.05);
  EXPECT_GE(features.min().item<double>(), -0.05);
  EXPECT_LT(features.max().item<double>(), 0.05);
  EXPECT_NEAR(features.mean().item<double>(), 0.0, 1e-3);
  EXPECT_NEAR(features.var().item<double>(), 0.05 * 0.05 / 3.0, 2e-5);
}

TEST(StepKlLoss, Toy) {
  torch::Tensor logits = torch::tensor({1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0}, kFloat64).view({3, 3});
  torch::Tensor targets = torch::tensor({3.0, 2.0, 1.0, 1.0, 0.0, 0.0, 5.0, 0.0, 0.0}, kFloat64).view({3, 3});
  EXPECT_NEAR(StepKlLoss(logits, targets, torch::tensor({1.0, 1.0, 0.0}, kFloat64)).item<double>(),
              0.6368494281082447, 1e-14);
  EXPECT_NEAR(StepKlLoss(logits, logits, torch::ones({3}, kFloat64)).item<double>(), 0.0, 1e-14);
  torch::Tensor leaf = logits.clone().requires_grad_();
  torch::Tensor masked = StepKlLoss(leaf, targets, torch::zeros({3}, kFloat64));
  EXPECT_EQ(masked.item<double>(), 0.0);
  masked.backward();
  EXPECT_EQ(leaf.grad().abs().sum().item<double>(), 0.0);
  // Adding a constant per row to the logits changes nothing.
  torch::Tensor shifted = logits + torch::tensor({10.0, -3.0, 0.5}, kFloat64).unsqueeze(1);
  EXPECT_NEAR(StepKlLoss(shifted, targets, torch::tensor({1.0, 1.0, 0.0}, kFloat64)).item<double>(),
              0.6368494281082447, 1e-12);
}

TEST(ChainAccuracy, Toy) {
  const std::vector<int64_t> target = {4, 1, 2, 3, 3, 0};
  const std::vector<std::vector<int64_t>> drafts = {{4, 1, 2, 0, 3, 0}, {1, 2, 3, 3, 9, 9}, {2, 3, 0, 9, 9, 9}};
  torch::Tensor mask = torch::tensor(std::vector<int64_t>{0, 1, 1, 1, 1, 1});
  torch::Tensor alive = mask.to(torch::kBool);
  torch::Tensor target_tensor = torch::tensor(target);
  const std::vector<double> full = {0.7999984000032001, 0.39999920000160005, 0.24999937500156252};
  const std::vector<double> cond = {0.7999984000032001, 0.6666644444518518, 0.49999750001249993};
  // The counts behind the ratios: num, sum of m_k, chains alive before step k.
  const std::vector<std::array<double, 3>> counts = {{4, 5, 5}, {2, 5, 3}, {1, 4, 2}};
  for (int64_t k = 0; k < 3; ++k) {
    int64_t n = 6 - k;
    StepMetrics metrics = UpdateChainAccuracy(torch::tensor(drafts[k]).narrow(0, 0, n), target_tensor.narrow(0, k, n),
                                              mask.narrow(0, k, n), alive);
    EXPECT_NEAR(metrics.full_acc, full[k], 1e-15) << "step " << k;
    EXPECT_NEAR(metrics.cond_acc, cond[k], 1e-15) << "step " << k;
    EXPECT_EQ(metrics.correct, counts[k][0]) << "step " << k;
    EXPECT_EQ(metrics.counted, counts[k][1]) << "step " << k;
    EXPECT_EQ(metrics.alive_before, counts[k][2]) << "step " << k;
  }
}

TEST(Schedule, LinearToy) {
  LrSchedule schedule{ScheduleType::kLinear, 2, 10, 0.5};
  const std::vector<double> expected = {0, 0.5, 1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0, 0};
  for (int64_t t = 0; t < 12; ++t) EXPECT_NEAR(schedule.Factor(t), expected[t], 1e-12) << "t = " << t;
}

TEST(Schedule, CosineToy) {
  LrSchedule schedule{ScheduleType::kCosine, 2, 10, 0.5};
  const std::vector<double> expected = {0, 0.5, 1, 0.961939766256, 0.853553390593, 0.691341716183, 0.5,
                                        0.308658283817, 0.146446609407, 0.038060233744, 0, 0.038060233744};
  for (int64_t t = 0; t < 12; ++t) EXPECT_NEAR(schedule.Factor(t), expected[t], 1e-11) << "t = " << t;
}

TEST(Schedule, DefaultsAndNames) {
  LrSchedule schedule = ResolveSchedule(ScheduleType::kLinear, std::nullopt, std::nullopt, 0.5, 3, 250);
  EXPECT_EQ(schedule.total_steps, 750);
  EXPECT_EQ(schedule.warmup_steps, 7);
  EXPECT_EQ(ResolveSchedule(ScheduleType::kLinear, 0, std::nullopt, 0.5, 3, 250).warmup_steps, 0);
  EXPECT_EQ(LrSchedule{ScheduleType::kNone}.Factor(5), 1.0);
  EXPECT_FALSE(ParseScheduleType("cosine_with_restarts").ok());
}

TEST(DraftRope, DefaultFrequencies) {
  auto frequencies = RopeInverseFrequencies(8, 1e4, nullptr);
  ASSERT_TRUE(frequencies.ok());
  const std::vector<float> expected = {1.0f, 0.10000000149011612f, 0.009999999776482582f, 0.0010000000474974513f};
  for (size_t j = 0; j < 4; ++j) EXPECT_EQ(static_cast<float>((*frequencies)[j]), expected[j]) << j;
}

TEST(DraftRope, Llama3Frequencies) {
  nlohmann::json scaling = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  auto frequencies = RopeInverseFrequencies(128, 5e5, scaling);
  ASSERT_TRUE(frequencies.ok());
  const std::vector<std::pair<int, double>> expected = {
      {0, 1.0}, {10, 0.12868738174438477}, {20, 0.016560440883040428}, {30, 0.0013718936825171113},
      {40, 3.428102354519069e-05}, {45, 1.2297638932068367e-05}, {50, 4.411534519022098e-06},
      {63, 3.068925877869333e-07}};
  // The reference values were computed in float32.
  for (const auto& [index, value] : expected) EXPECT_NEAR((*frequencies)[index], value, value * 1e-6) << index;
  EXPECT_FALSE(RopeInverseFrequencies(128, 5e5, {{"rope_type", "yarn"}, {"factor", 4.0}}).ok());
}

using Batches = std::vector<std::vector<int64_t>>;

TEST(Multipack, Toy) {
  const std::vector<int64_t> lengths = {7, 3, 5, 5, 2, 9, 4, 1, 6, 8, 2, 3};
  EXPECT_EQ(PackMultipack(lengths, 10, 1, 0), (Batches{{0, 1}, {3, 2}, {4}, {5}, {6, 7}, {8}, {9, 10}, {11}}));
  EXPECT_EQ(PackMultipack(lengths, 10, 2, 0, false), (Batches{{0, 1}, {5}, {9, 10}}));
  EXPECT_EQ(PackMultipack(lengths, 10, 2, 1, false), (Batches{{3, 2}, {6, 4, 7}, {8, 11}}));
  EXPECT_EQ(PackMultipack(lengths, 10, 2, 0, true), (Batches{{0, 1}, {6, 4, 7}, {9, 10}}));
  EXPECT_EQ(PackMultipack(lengths, 10, 2, 1, true), (Batches{{3, 2}, {5}, {8, 11}}));
}

TEST(Multipack, EpochBatchesAreDeterministicAndFit) {
  std::vector<int64_t> lengths;
  for (int64_t i = 0; i < 300; ++i) lengths.push_back(1 + (i * 37) % 120);
  Batches first = EpochBatches(lengths, 512, 1, 0, 0, 3);
  EXPECT_EQ(first, EpochBatches(lengths, 512, 1, 0, 0, 3));
  EXPECT_NE(first, EpochBatches(lengths, 512, 1, 0, 0, 4));
  std::vector<int> seen(lengths.size(), 0);
  for (const auto& batch : first) {
    int64_t tokens = 0;
    for (int64_t sample : batch) {
      tokens += lengths[sample];
      seen[sample] += 1;
    }
    EXPECT_LE(tokens, 512);
  }
  for (int count : seen) EXPECT_LE(count, 1);
}

TEST(Multipack, EpochOrderIsNumpyPermutation) {
  // With one rank and rows that contain one sample each, the batches list the
  // shuffled order itself: default_rng(0 + 2).permutation(10) in NumPy 1.24.
  const std::vector<int64_t> lengths(10, 8);
  Batches batches = EpochBatches(lengths, 8, 1, 0, 0, 2);
  Batches expected;
  for (int64_t sample : util::NumpyPermutation(2, 10)) expected.push_back({sample});
  EXPECT_EQ(batches, expected);
}

TEST(NumpyRandom, RawOutputsMatchNumpy) {
  // numpy.random.default_rng(seed).bit_generator.random_raw(3), NumPy 1.24.2.
  const std::vector<std::pair<uint64_t, std::vector<uint64_t>>> cases = {
      {0, {0xa30febcfd9c2825fULL, 0x4510bdf882d9d721ULL, 0x0a7d3da94ecde8b8ULL}},
      {1, {0x8306bdf37922e4ffULL, 0xf35196bbc152a866ULL, 0x24e7a4f608ec18cdULL}},
      {42, {0xc621fbcd16d92688ULL, 0x705a5661a791ffc1ULL, 0xdbcd12c26eda1624ULL}},
      {(uint64_t{1} << 32) + 5, {0xc6323ec321deb8d1ULL, 0x78814821c73a0583ULL, 0xb22536d8e0ec17c0ULL}},
  };
  for (const auto& [seed, expected] : cases) {
    util::NumpyPcg64 generator(seed);
    for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(generator.Next64(), expected[i]) << "seed " << seed;
  }
}

TEST(NumpyRandom, PermutationsMatchNumpy) {
  EXPECT_EQ(util::NumpyPermutation(0, 10), (std::vector<int64_t>{4, 6, 2, 7, 3, 5, 9, 0, 8, 1}));
  EXPECT_EQ(util::NumpyPermutation(1, 10), (std::vector<int64_t>{8, 4, 7, 0, 1, 2, 5, 9, 6, 3}));
  // Longer permutations: the first four values and sum(p[i] * i), from
  // numpy.random.default_rng(seed).permutation(n), NumPy 1.24.2.
  struct Case {
    uint64_t seed;
    int64_t n;
    std::vector<int64_t> head;
    int64_t weighted_sum;
  };
  const std::vector<Case> cases = {
      {0, 3000, {1432, 2618, 562, 46}, 6720264911},
      {7, 2700, {871, 608, 1410, 2691}, 4927332650},
      {42, 300, {261, 293, 61, 253}, 6462538},
      {(uint64_t{1} << 40) + 3, 1000, {517, 234, 394, 267}, 248605401},
  };
  for (const Case& test_case : cases) {
    const std::vector<int64_t> permutation = util::NumpyPermutation(test_case.seed, test_case.n);
    ASSERT_EQ(static_cast<int64_t>(permutation.size()), test_case.n);
    EXPECT_EQ(std::vector<int64_t>(permutation.begin(), permutation.begin() + 4), test_case.head)
        << "seed " << test_case.seed;
    int64_t weighted_sum = 0;
    for (int64_t i = 0; i < test_case.n; ++i) weighted_sum += permutation[i] * i;
    EXPECT_EQ(weighted_sum, test_case.weighted_sum) << "seed " << test_case.seed;
  }
}

TEST(TrainVocabMapping, SpecToy) {
  auto mapping = data::BuildVocabMapping({{5, 10}, {2, 10}, {7, 3}, {1, 1}}, 6, 10);
  ASSERT_TRUE(mapping.ok());
  EXPECT_EQ(mapping->d2t, (std::vector<int64_t>{0, 0, 0, 0, 1, 2}));
  EXPECT_EQ(mapping->t2d, (std::vector<uint8_t>{1, 1, 1, 1, 0, 1, 0, 1, 0, 0}));
}

// Saved epochs and best epoch for a run with the given validation losses.
std::pair<std::vector<int64_t>, std::optional<int64_t>> Cadence(const std::vector<double>& losses, int64_t freq,
                                                                bool save_best) {
  std::vector<int64_t> saved;
  std::optional<double> best_loss;
  std::optional<int64_t> best_epoch;
  for (int64_t epoch = 0; epoch < static_cast<int64_t>(losses.size()); ++epoch) {
    CheckpointDecision decision = DecideCheckpoint(epoch, freq, save_best, losses[epoch], best_loss);
    if (decision.save) saved.push_back(epoch);
    if (decision.update_best) {
      best_loss = losses[epoch];
      best_epoch = epoch;
    }
  }
  return {saved, best_epoch};
}

TEST(CheckpointCadence, UpstreamExamples) {
  auto [saved_a, best_a] = Cadence({0.9, 0.6, 0.1, 0.7}, 2, false);
  EXPECT_EQ(saved_a, (std::vector<int64_t>{0, 1, 3}));
  EXPECT_EQ(best_a, 1);
  auto [saved_b, best_b] = Cadence({0.9, 0.1, 0.8, 0.2, 0.7, 0.6, 0.3}, 3, false);
  EXPECT_EQ(saved_b, (std::vector<int64_t>{0, 2, 5}));
  EXPECT_EQ(best_b, 5);
  auto [saved_c, best_c] = Cadence({0.9, 0.8, 0.85, 0.7}, 1, true);
  EXPECT_EQ(saved_c, (std::vector<int64_t>{0, 1, 3}));
  EXPECT_EQ(best_c, 3);
  EXPECT_TRUE(DecideCheckpoint(3, 1, true, 0.7, 0.8).remove_others);
  EXPECT_TRUE(DecideCheckpoint(3, 1, true, std::nullopt, 0.8).save) << "no validation: frequency rule";
}

TEST(CheckpointCadence, NonFiniteLossNeverBest) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_FALSE(DecideCheckpoint(0, 1, false, nan, std::nullopt).update_best);
  EXPECT_TRUE(DecideCheckpoint(0, 1, false, nan, std::nullopt).save) << "epoch 0 is saved by the frequency rule";
  EXPECT_FALSE(DecideCheckpoint(2, 1, false, nan, 0.5).update_best);
  EXPECT_FALSE(DecideCheckpoint(2, 1, true, nan, 0.5).save);
  EXPECT_FALSE(DecideCheckpoint(2, 1, true, std::numeric_limits<double>::infinity(), std::nullopt).update_best);
  EXPECT_TRUE(DecideCheckpoint(3, 1, false, 0.9, std::nullopt).update_best);
}

TEST(CheckpointFiles, BestLinkAndPruning) {
  testing::TempDir dir;
  for (const char* name : {"0", "1", "3", "notes"}) std::filesystem::create_directories(dir.path() / name);
  std::ofstream(dir.path() / "7") << "a file with an epoch-like name\n";
  EXPECT_EQ(FindLastEpoch(dir.str()), 3);
  ASSERT_TRUE(UpdateBestLink(dir.str(), 1).ok());
  ASSERT_TRUE(UpdateBestLink(dir.str(), 3).ok());
  EXPECT_EQ(std::filesystem::read_symlink(dir.path() / "checkpoint_best").string(), "3");
  ASSERT_TRUE(RemoveOtherEpochs(dir.str(), 3).ok());
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "0"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "1"));
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "notes")) << "not an epoch directory";
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "7")) << "a regular file, not an epoch directory";
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "3"));
  EXPECT_TRUE(std::filesystem::is_symlink(dir.path() / "checkpoint_best"));
  EXPECT_EQ(FindLastEpoch(dir.str()), 3);
  EXPECT_EQ(FindLastEpoch((dir.path() / "absent").string()), std::nullopt);
}

TEST(CheckpointFiles, RemoveAllEpochsKeepsOtherEntries) {
  testing::TempDir dir;
  for (const char* name : {"0", "12", "notes"}) std::filesystem::create_directories(dir.path() / name);
  std::ofstream(dir.path() / "readme.txt") << "user file\n";
  ASSERT_TRUE(UpdateBestLink(dir.str(), 12).ok());
  ASSERT_TRUE(RemoveAllEpochs(dir.str()).ok());
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "0"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "12"));
  EXPECT_FALSE(std::filesystem::is_symlink(dir.path() / "checkpoint_best"));
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "notes"));
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "readme.txt"));
  EXPECT_EQ(FindLastEpoch(dir.str()), std::nullopt);
  EXPECT_TRUE(RemoveAllEpochs((dir.path() / "absent").string()).ok());
}

TEST(TrainOptions, ValidateRejectsOutOfRangeValues) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  struct Case {
    std::string flag;
    std::function<void(TrainOptions&)> set;
  };
  const std::vector<Case> cases = {
      {"--epochs", [](TrainOptions& o) { o.epochs = 0; }},
      {"--lr", [](TrainOptions& o) { o.lr = -1; }},
      {"--lr", [&](TrainOptions& o) { o.lr = nan; }},
      {"--lr", [&](TrainOptions& o) { o.lr = inf; }},
      {"--total-seq-len", [](TrainOptions& o) { o.total_seq_len = 1; }},
      {"--ttt-steps", [](TrainOptions& o) { o.ttt_steps = 0; }},
      {"--ttt-step-loss-decay", [&](TrainOptions& o) { o.ttt_step_loss_decay = nan; }},
      {"--draft-vocab-size", [](TrainOptions& o) { o.draft_vocab_size = 0; }},
      {"--draft-vocab-size", [](TrainOptions& o) { o.draft_vocab_size = -3; }},
      {"--num-layers", [](TrainOptions& o) { o.num_layers = 0; }},
      {"--noise-std", [&](TrainOptions& o) { o.noise_std = nan; }},
      {"--noise-std", [&](TrainOptions& o) { o.noise_std = inf; }},
      {"--noise-std", [](TrainOptions& o) { o.noise_std = -1; }},
      {"--checkpoint-freq", [](TrainOptions& o) { o.checkpoint_freq = 0; }},
      {"--scheduler-warmup-steps", [](TrainOptions& o) { o.scheduler_warmup_steps = -1; }},
      {"--scheduler-total-steps", [](TrainOptions& o) { o.scheduler_total_steps = 0; }},
      {"--scheduler-num-cosine-cycles", [&](TrainOptions& o) { o.scheduler_num_cosine_cycles = nan; }},
      {"--max-steps", [](TrainOptions& o) { o.max_steps = 0; }},
      {"--num-workers", [](TrainOptions& o) { o.num_workers = -1; }},
      {"--prefetch-factor", [](TrainOptions& o) { o.prefetch_factor = 0; }},
  };
  EXPECT_TRUE(ValidateTrainOptions(TrainOptions()).ok());
  for (const auto& test_case : cases) {
    TrainOptions options;
    test_case.set(options);
    Status status = ValidateTrainOptions(options);
    ASSERT_FALSE(status.ok()) << test_case.flag;
    EXPECT_EQ(status.code(), StatusCode::kInvalid) << status.ToString();
    EXPECT_NE(status.message().find(test_case.flag), std::string::npos) << status.ToString();
  }
  TrainOptions zero_noise;
  zero_noise.noise_std = 0;
  zero_noise.scheduler_warmup_steps = 0;
  EXPECT_TRUE(ValidateTrainOptions(zero_noise).ok());
}

TEST(Noise, SeededGeneratorIsReproducible) {
  torch::Tensor a = torch::zeros({4, 6});
  torch::Tensor b = torch::zeros({4, 6});
  AddUniformNoise(a, 0.1, at::detail::createCPUGenerator(BatchNoiseSeed(42, 1, 3)));
  torch::manual_seed(0);
  AddUniformNoise(b, 0.1, at::detail::createCPUGenerator(BatchNoiseSeed(42, 1, 3)));
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_NE(BatchNoiseSeed(42, 1, 3), BatchNoiseSeed(42, 1, 4));
  EXPECT_NE(BatchNoiseSeed(42, 1, 3), BatchNoiseSeed(42, 2, 3));
  EXPECT_NE(BatchNoiseSeed(42, 1, 3), BatchNoiseSeed(43, 1, 3));
}

}  // namespace
}  // namespace draftforge::train
