#include "draftforge/train/sampler.h"

#include <algorithm>
#include <numeric>
#include <optional>

#include "draftforge/util/numpy_random.h"

namespace draftforge::train {
namespace {

// LPT packing of lengths[begin, begin + count) into `num_ranks` bins; returns
// the positions placed into bin `bin`, or nullopt when a bin overflows.
std::optional<std::vector<int64_t>> PackLpt(const std::vector<int64_t>& lengths, int64_t begin, int64_t count,
                                            int64_t max_tokens, int64_t num_ranks, int64_t bin) {
  std::vector<int64_t> order(count);
  std::iota(order.begin(), order.end(), begin);
  // Descending by (length, position): equal lengths visit the later position first.
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return lengths[a] != lengths[b] ? lengths[a] > lengths[b] : a > b;
  });
  std::vector<int64_t> fill(num_ranks, 0);
  std::vector<int64_t> placed;
  for (int64_t position : order) {
    int64_t target = static_cast<int64_t>(std::min_element(fill.begin(), fill.end()) - fill.begin());
    if (fill[target] + lengths[position] > max_tokens) return std::nullopt;
    fill[target] += lengths[position];
    if (target == bin) placed.push_back(position);
  }
  return placed;
}

}  // namespace

std::vector<std::vector<int64_t>> PackMultipack(const std::vector<int64_t>& lengths, int64_t max_tokens,
                                                int64_t num_ranks, int64_t rank, bool rotate) {
  const int64_t total = static_cast<int64_t>(lengths.size());
  std::vector<int64_t> cumulative(total);
  std::partial_sum(lengths.begin(), lengths.end(), cumulative.begin());
  std::vector<std::vector<int64_t>> batches;
  int64_t index = 0;
  int64_t consumed = 0;  // tokens before `index`
  while (total - index >= num_ranks) {
    int64_t batch_number = static_cast<int64_t>(batches.size());
    int64_t bin = rotate ? ((rank - batch_number) % num_ranks + num_ranks) % num_ranks : rank;
    // hi = 1 + number of next samples whose running total fits R * L.
    int64_t fitting = std::upper_bound(cumulative.begin() + index, cumulative.end(),
                                       consumed + max_tokens * num_ranks) -
                      (cumulative.begin() + index);
    int64_t low = 1;
    int64_t high = 1 + fitting;
    std::optional<std::vector<int64_t>> batch;
    while (high - low > 1 && high > num_ranks) {
      int64_t middle = (low + high) / 2;
      batch = PackLpt(lengths, index, middle, max_tokens, num_ranks, bin);
      if (batch) {
        low = middle;
      } else {
        high = middle;
      }
    }
    // The last probe may have been a failure or a larger count; pack `low` again.
    batch = PackLpt(lengths, index, low, max_tokens, num_ranks, bin);
    batches.push_back(batch.value_or(std::vector<int64_t>{}));
    index += low;
    consumed = cumulative[index - 1];
  }
  return batches;
}

std::vector<std::vector<int64_t>> EpochBatches(const std::vector<int64_t>& sample_lengths, int64_t max_tokens,
                                               int64_t num_ranks, int64_t rank, uint64_t seed, int64_t epoch) {
  const std::vector<int64_t> permutation = util::NumpyPermutation(
      seed + static_cast<uint64_t>(epoch), static_cast<int64_t>(sample_lengths.size()));
  std::vector<int64_t> lengths;
  for (int64_t sample : permutation) lengths.push_back(std::min(sample_lengths[sample], max_tokens));
  std::vector<std::vector<int64_t>> batches = PackMultipack(lengths, max_tokens, num_ranks, rank);
  for (auto& batch : batches) {
    for (int64_t& position : batch) position = permutation[position];
  }
  return batches;
}

std::vector<std::vector<std::vector<int64_t>>> ReplicaEpochBatches(const std::vector<int64_t>& sample_lengths,
                                                                   int64_t max_tokens, int64_t world_size,
                                                                   int64_t rank, int64_t accumulation_steps,
                                                                   uint64_t seed, int64_t epoch) {
  const int64_t replicas = world_size * accumulation_steps;
  std::vector<std::vector<std::vector<int64_t>>> per_replica;
  for (int64_t a = 0; a < accumulation_steps; ++a) {
    per_replica.push_back(
        EpochBatches(sample_lengths, max_tokens, replicas, rank * accumulation_steps + a, seed, epoch));
  }
  // Every replica gets the same number of batches, because all of them run
  // the same packing and keep their own bin.
  std::vector<std::vector<std::vector<int64_t>>> steps(per_replica[0].size());
  for (size_t b = 0; b < steps.size(); ++b) {
    for (int64_t a = 0; a < accumulation_steps; ++a) steps[b].push_back(per_replica[a][b]);
  }
  return steps;
}

}  // namespace draftforge::train
