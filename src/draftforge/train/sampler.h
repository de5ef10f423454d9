// Multipack batch sampler: per epoch, splits shuffled samples into batches
// whose total length fits one packed row of L tokens on each of R ranks.
//
// Greedy over the shuffled list: take the largest count x of the next samples
// (binary search) that longest-processing-time (LPT) packing fits into R bins
// of capacity L. LPT visits samples by descending length, later index first
// among equal lengths, and puts each into the bin with the smallest
// (fill, bin index). It fails when that bin would overflow. Rank r takes bin (r - b) mod R of batch
// b, so the bin holding the longest sample rotates across ranks. The epoch
// ends when fewer than R samples remain.
#pragma once

#include <cstdint>
#include <vector>

namespace draftforge::train {

// Batches of positions into `lengths` (already in shuffled order) for `rank`
// of `num_ranks`. Each batch lists its samples in LPT visiting order
// (longest first). `rotate` false reproduces the fixed bin-to-rank mapping of
// speculators 2a1443c8.
std::vector<std::vector<int64_t>> PackMultipack(const std::vector<int64_t>& lengths, int64_t max_tokens,
                                                int64_t num_ranks, int64_t rank, bool rotate = true);

// Batches of sample indices for one epoch: the samples are shuffled by
// numpy.random.default_rng(seed + epoch).permutation, bit for bit as
// speculators shuffles them, lengths longer than max_tokens count as
// max_tokens, then PackMultipack runs. Deterministic per (seed, epoch).
std::vector<std::vector<int64_t>> EpochBatches(const std::vector<int64_t>& sample_lengths, int64_t max_tokens,
                                               int64_t num_ranks, int64_t rank, uint64_t seed, int64_t epoch);

// Rows of `rank` for one epoch when each optimizer step packs one row per
// replica, with world_size * accumulation_steps replicas in all. Entry [b][a]
// is the a-th accumulation row of step b, the batch of replica
// rank * accumulation_steps + a. A one-rank run with accumulation A and an
// A-rank run without accumulation therefore train on the same rows.
std::vector<std::vector<std::vector<int64_t>>> ReplicaEpochBatches(const std::vector<int64_t>& sample_lengths,
                                                                   int64_t max_tokens, int64_t world_size,
                                                                   int64_t rank, int64_t accumulation_steps,
                                                                   uint64_t seed, int64_t epoch);

}  // namespace draftforge::train
