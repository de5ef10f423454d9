// Attention of the EAGLE-3 draft over its training-time-test (TTT) KV cache.
//
// At TTT step k every layer's cache holds k+1 blocks of L keys/values (block b
// was computed at step b, key b*L + j belongs to slot j). Query i may attend to
//   (a) the block-0 keys of slots j <= i of its own document, and
//   (b) its own slot i in every block 0..k (its own chain of draft states).
// A padding slot attends only to its own slot in each block. As a dense
// boolean mask of shape [L, (k+1)L]:
//   M_k[i, b*L + j] = (b == 0 && j <= i && doc[i] == doc[j] && doc[i] != -1) || j == i.
//
// CachedAttention never builds that mask. Block 0 is ordinary document-causal
// attention, computed per query chunk of each document (chunks of documents
// with similar lengths are batched into padded [G, n, n] score tensors), and
// blocks 1..k add one score per query, q_i . K^(b)_i. One softmax runs over the
// union of both score sets, then the values are mixed with those weights.
// BuildStepMask and DenseCachedAttention are the dense definitions, for tests.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace draftforge::train {

// Keys and values one layer computed at one TTT step, after RoPE on the keys.
struct KvBlock {
  torch::Tensor keys;    // [L, nKV, d]
  torch::Tensor values;  // [L, nKV, d]
};

// A batch of G query chunks padded to the same shape. Chunk g covers queries
// query_slots[g*nq .. g*nq+nq) and keys key_slots[g*nk .. g*nk+nk); padded
// entries point at slot 0 and are excluded by score_bias (keys) or never read
// back (queries).
struct AttentionGroup {
  int64_t count = 0;      // G
  int64_t query_len = 0;  // nq
  int64_t key_len = 0;    // nk
  torch::Tensor query_slots;  // [G*nq] int64
  torch::Tensor key_slots;    // [G*nk] int64
  torch::Tensor score_bias;   // [G, 1, 1, nq, nk]: 0 where allowed, -inf elsewhere
};

// Block-0 structure of one packed row, shared by all layers and TTT steps.
struct AttentionLayout {
  int64_t length = 0;  // L
  std::vector<AttentionGroup> groups;
  torch::Tensor slot_rows;  // [L] int64: row of slot i in the concatenated padded query rows
};

// Builds the layout of a row whose documents have `document_lengths` slots
// each, packed from slot 0; slots from the sum of the lengths to L are
// padding. Documents longer than `max_query_chunk` are split into query chunks
// that each attend to the document's keys up to their last query.
// `bias_options` sets the dtype and device of the score bias.
AttentionLayout BuildAttentionLayout(const std::vector<int64_t>& document_lengths, int64_t length,
                                     const torch::TensorOptions& bias_options,
                                     int64_t max_query_chunk = 512);

// Returns softmax(q K^T * scale) V under M_k, with k = cache.size() - 1.
// `queries` [L, nH, d]; nH must be a multiple of nKV, and query head h reads
// key/value head h / (nH / nKV). Softmax runs in float32 for half-precision
// inputs. Returns [L, nH, d].
torch::Tensor CachedAttention(const torch::Tensor& queries, const std::vector<KvBlock>& cache,
                              const AttentionLayout& layout, double scale);

// Dense mask M_k as bool [L, (k+1)L] from document ids (-1 = padding).
torch::Tensor BuildStepMask(const torch::Tensor& document_ids, int64_t step);

// Reference attention with the dense mask `mask` [L, (k+1)L].
torch::Tensor DenseCachedAttention(const torch::Tensor& queries, const std::vector<KvBlock>& cache,
                                   const torch::Tensor& mask, double scale);

}  // namespace draftforge::train
