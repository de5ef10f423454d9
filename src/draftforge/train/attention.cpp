#include "draftforge/train/attention.h"

#include <algorithm>
#include <limits>

namespace draftforge::train {
namespace {

// One query chunk: queries [query_begin, query_begin + query_len) attend to
// keys [key_begin, key_begin + key_len) causally.
struct QueryChunk {
  int64_t query_begin;
  int64_t query_len;
  int64_t key_begin;
  int64_t key_len;
};

std::vector<QueryChunk> SplitIntoChunks(const std::vector<int64_t>& document_lengths, int64_t length,
                                        int64_t max_query_chunk) {
  std::vector<QueryChunk> chunks;
  int64_t start = 0;
  for (int64_t document_length : document_lengths) {
    for (int64_t offset = 0; offset < document_length; offset += max_query_chunk) {
      int64_t query_len = std::min(max_query_chunk, document_length - offset);
      chunks.push_back({start + offset, query_len, start, offset + query_len});
    }
    start += document_length;
  }
  // A padding slot is a document of its own with one slot.
  for (int64_t slot = start; slot < length; ++slot) chunks.push_back({slot, 1, slot, 1});
  return chunks;
}

// Groups chunks sorted by key length so that the padded score area of a
// group stays below twice its real area.
std::vector<std::vector<QueryChunk>> GroupChunks(std::vector<QueryChunk> chunks) {
  std::stable_sort(chunks.begin(), chunks.end(), [](const QueryChunk& a, const QueryChunk& b) {
    return a.key_len > b.key_len;
  });
  std::vector<std::vector<QueryChunk>> groups;
  int64_t max_query = 0;
  int64_t max_key = 0;
  int64_t real_area = 0;
  for (const QueryChunk& chunk : chunks) {
    if (!groups.empty()) {
      int64_t count = static_cast<int64_t>(groups.back().size()) + 1;
      int64_t padded = count * std::max(max_query, chunk.query_len) * std::max(max_key, chunk.key_len);
      int64_t real = real_area + chunk.query_len * chunk.key_len;
      if (padded <= 2 * real) {
        groups.back().push_back(chunk);
        max_query = std::max(max_query, chunk.query_len);
        max_key = std::max(max_key, chunk.key_len);
        real_area = real;
        continue;
      }
    }
    groups.push_back({chunk});
    max_query = chunk.query_len;
    max_key = chunk.key_len;
    real_area = chunk.query_len * chunk.key_len;
  }
  return groups;
}

torch::Dtype SoftmaxDtype(torch::Dtype dtype) {
  return dtype == torch::kBFloat16 || dtype == torch::kFloat16 ? torch::kFloat32 : dtype;
}

// Gathers `rows` [N, heads, x] at `slots` into [G, n, nKV, rep, x] and
// permutes to [G, nKV, rep, n, x].
torch::Tensor GatherHeadMajor(const torch::Tensor& rows, const torch::Tensor& slots, int64_t count,
                              int64_t n, int64_t kv_heads) {
  torch::Tensor gathered = rows.index_select(0, slots);  // [G*n, nH, x]
  int64_t heads = gathered.size(1);
  return gathered.view({count, n, kv_heads, heads / kv_heads, gathered.size(2)})
      .permute({0, 2, 3, 1, 4});
}

// Inverse of GatherHeadMajor's reshaping: [G, nKV, rep, n, x] -> [G*n, nH, x].
torch::Tensor ToSlotRows(const torch::Tensor& head_major) {
  int64_t count = head_major.size(0);
  int64_t heads = head_major.size(1) * head_major.size(2);
  int64_t n = head_major.size(3);
  return head_major.permute({0, 3, 1, 2, 4}).reshape({count * n, heads, head_major.size(4)});
}

}  // namespace

AttentionLayout BuildAttentionLayout(const std::vector<int64_t>& document_lengths, int64_t length,
                                     const torch::TensorOptions& bias_options,
                                     int64_t max_query_chunk) {
  AttentionLayout layout;
  layout.length = length;
  std::vector<int64_t> slot_rows(length, 0);
  int64_t row_offset = 0;
  const float kBlocked = -std::numeric_limits<float>::infinity();
  for (const auto& chunks : GroupChunks(SplitIntoChunks(document_lengths, length, max_query_chunk))) {
    AttentionGroup group;
    group.count = static_cast<int64_t>(chunks.size());
    for (const QueryChunk& chunk : chunks) {
      group.query_len = std::max(group.query_len, chunk.query_len);
      group.key_len = std::max(group.key_len, chunk.key_len);
    }
    int64_t nq = group.query_len;
    int64_t nk = group.key_len;
    std::vector<int64_t> query_slots(group.count * nq, 0);
    std::vector<int64_t> key_slots(group.count * nk, 0);
    std::vector<float> bias(group.count * nq * nk, kBlocked);
    for (int64_t g = 0; g < group.count; ++g) {
      const QueryChunk& chunk = chunks[g];
      int64_t query_offset = chunk.query_begin - chunk.key_begin;  // position of query 0 among the keys
      for (int64_t q = 0; q < chunk.query_len; ++q) {
        query_slots[g * nq + q] = chunk.query_begin + q;
        slot_rows[chunk.query_begin + q] = row_offset + g * nq + q;
      }
      for (int64_t j = 0; j < chunk.key_len; ++j) key_slots[g * nk + j] = chunk.key_begin + j;
      // Padded query rows (q >= query_len) keep key 0 open so that their
      // softmax stays finite; their outputs are never read.
      for (int64_t q = 0; q < nq; ++q) {
        int64_t last_key = std::min(query_offset + q, chunk.key_len - 1);
        float* row = bias.data() + (g * nq + q) * nk;
        std::fill(row, row + last_key + 1, 0.0f);
      }
    }
    auto int_options = torch::TensorOptions().dtype(torch::kInt64);
    group.query_slots = torch::tensor(query_slots, int_options).to(bias_options.device());
    group.key_slots = torch::tensor(key_slots, int_options).to(bias_options.device());
    // clone(): from_blob aliases `bias`, and to() returns the same tensor
    // when the dtype and device already match.
    group.score_bias = torch::from_blob(bias.data(), {group.count, 1, 1, nq, nk}, torch::kFloat32)
                           .clone()
                           .to(bias_options);
    row_offset += group.count * nq;
    layout.groups.push_back(std::move(group));
  }
  layout.slot_rows =
      torch::tensor(slot_rows, torch::TensorOptions().dtype(torch::kInt64)).to(bias_options.device());
  return layout;
}

torch::Tensor CachedAttention(const torch::Tensor& queries, const std::vector<KvBlock>& cache,
                              const AttentionLayout& layout, double scale) {
  const int64_t length = queries.size(0);
  const int64_t heads = queries.size(1);
  const int64_t head_dim = queries.size(2);
  const int64_t kv_heads = cache[0].keys.size(1);
  const int64_t group_size = heads / kv_heads;
  const int64_t extra_blocks = static_cast<int64_t>(cache.size()) - 1;  // k

  // Diagonal scores of blocks 1..k: s[i, h, b-1] = q_i . K^(b)_i * scale.
  torch::Tensor diagonal;  // [L, nH, k]
  if (extra_blocks > 0) {
    torch::Tensor grouped_queries = queries.view({length, kv_heads, group_size, head_dim});
    std::vector<torch::Tensor> scores;
    for (int64_t b = 1; b <= extra_blocks; ++b) {
      torch::Tensor keys = cache[b].keys.unsqueeze(2);                    // [L, nKV, 1, d]
      scores.push_back((grouped_queries * keys).sum(-1).view({length, heads}));  // [L, nH]
    }
    diagonal = torch::stack(scores, -1) * scale;
  }

  std::vector<torch::Tensor> block0_rows;   // per group [G*nq, nH, d]
  std::vector<torch::Tensor> diagonal_rows;  // per group [G*nq, nH, k]
  for (const AttentionGroup& group : layout.groups) {
    const int64_t count = group.count;
    const int64_t nq = group.query_len;
    const int64_t nk = group.key_len;
    // Queries [G, nKV, rep*nq, d] so that one batched matmul serves every
    // query head of a key/value head.
    torch::Tensor q = GatherHeadMajor(queries, group.query_slots, count, nq, kv_heads)
                          .reshape({count, kv_heads, group_size * nq, head_dim});
    torch::Tensor k = cache[0].keys.index_select(0, group.key_slots)
                          .view({count, nk, kv_heads, head_dim})
                          .permute({0, 2, 3, 1});  // [G, nKV, d, nk]
    torch::Tensor v = cache[0].values.index_select(0, group.key_slots)
                          .view({count, nk, kv_heads, head_dim})
                          .permute({0, 2, 1, 3});  // [G, nKV, nk, d]
    torch::Tensor scores = torch::matmul(q, k).mul_(scale)
                               .view({count, kv_heads, group_size, nq, nk})
                               .add_(group.score_bias);  // [G, nKV, rep, nq, nk]
    if (extra_blocks > 0) {
      torch::Tensor diagonal_scores =
          GatherHeadMajor(diagonal, group.query_slots, count, nq, kv_heads);  // [G, nKV, rep, nq, k]
      scores = torch::cat({scores, diagonal_scores}, -1);
    }
    torch::Tensor probs = torch::softmax(scores, -1, SoftmaxDtype(scores.scalar_type()))
                              .to(queries.scalar_type());
    torch::Tensor block0_probs = probs.narrow(-1, 0, nk).reshape({count, kv_heads, group_size * nq, nk});
    torch::Tensor mixed = torch::matmul(block0_probs, v)  // [G, nKV, rep*nq, d]
                              .view({count, kv_heads, group_size, nq, head_dim});
    block0_rows.push_back(ToSlotRows(mixed));
    if (extra_blocks > 0) diagonal_rows.push_back(ToSlotRows(probs.narrow(-1, nk, extra_blocks)));
  }

  torch::Tensor output = torch::cat(block0_rows, 0).index_select(0, layout.slot_rows);  // [L, nH, d]
  if (extra_blocks > 0) {
    torch::Tensor weights = torch::cat(diagonal_rows, 0)
                                .index_select(0, layout.slot_rows)
                                .view({length, kv_heads, group_size, extra_blocks});
    for (int64_t b = 1; b <= extra_blocks; ++b) {
      torch::Tensor values = cache[b].values.unsqueeze(2);  // [L, nKV, 1, d]
      torch::Tensor weight = weights.select(-1, b - 1).unsqueeze(-1);  // [L, nKV, rep, 1]
      output = output + (weight * values).view({length, heads, head_dim});
    }
  }
  return output;
}

torch::Tensor BuildStepMask(const torch::Tensor& document_ids, int64_t step) {
  const int64_t length = document_ids.size(0);
  torch::Tensor doc = document_ids.to(torch::kInt64);
  torch::Tensor i = torch::arange(length, doc.options()).unsqueeze(1);
  torch::Tensor j = torch::arange(length, doc.options()).unsqueeze(0);
  torch::Tensor diagonal = i == j;
  torch::Tensor block0 = (j <= i) & (doc.unsqueeze(1) == doc.unsqueeze(0)) & (doc.unsqueeze(1) != -1);
  std::vector<torch::Tensor> blocks = {block0 | diagonal};
  for (int64_t b = 1; b <= step; ++b) blocks.push_back(diagonal);
  return torch::cat(blocks, 1);
}

torch::Tensor DenseCachedAttention(const torch::Tensor& queries, const std::vector<KvBlock>& cache,
                                   const torch::Tensor& mask, double scale) {
  const int64_t heads = queries.size(1);
  std::vector<torch::Tensor> key_blocks;
  std::vector<torch::Tensor> value_blocks;
  for (const KvBlock& block : cache) {
    key_blocks.push_back(block.keys);
    value_blocks.push_back(block.values);
  }
  int64_t group_size = heads / cache[0].keys.size(1);
  torch::Tensor keys = torch::cat(key_blocks, 0).repeat_interleave(group_size, 1).transpose(0, 1);
  torch::Tensor values = torch::cat(value_blocks, 0).repeat_interleave(group_size, 1).transpose(0, 1);
  torch::Tensor q = queries.transpose(0, 1);  // [nH, L, d]
  torch::Tensor scores = torch::matmul(q, keys.transpose(1, 2)) * scale;  // [nH, L, (k+1)L]
  scores = scores.masked_fill(~mask.unsqueeze(0), -std::numeric_limits<double>::infinity());
  torch::Tensor probs = torch::softmax(scores, -1, SoftmaxDtype(scores.scalar_type())).to(queries.scalar_type());
  return torch::matmul(probs, values).transpose(0, 1);  // [L, nH, d]
}

}  // namespace draftforge::train
