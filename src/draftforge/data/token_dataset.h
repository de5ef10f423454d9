// The prepared dataset: rows of token ids with a per-token loss mask, stored
// as a Hugging Face `datasets` save_to_disk directory (Arrow IPC stream shards,
// state.json, dataset_info.json) with columns input_ids, loss_mask, seq_len.
//
// Python's `datasets.load_from_disk` reads what WriteTokenDataset writes, and
// TokenDataset::Open reads what Python's prepare writes (loss_mask as
// list<bool> or list<intX>, input_ids as list<int32|int64>, extra columns
// ignored). The global row index (position across shards in state.json order)
// is the key of the hidden-states file hs_{index}.safetensors.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::data {

// One row held in memory.
struct TokenRow {
  std::vector<int64_t> input_ids;
  std::vector<uint8_t> loss_mask;  // 0 or 1 per token, same length as input_ids
};

// All rows of a prepared dataset, held in memory in CSR form.
class TokenDataset {
 public:
  // Opens a save_to_disk directory. Errors name the directory, shard file and
  // column. A dataset without a loss_mask column trains on every token.
  static Result<TokenDataset> Open(const std::string& dir);

  // Builds a dataset from rows in memory (tests, prepare).
  static TokenDataset FromRows(std::vector<TokenRow> rows);

  int64_t num_rows() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t seq_len(int64_t row) const { return offsets_[row + 1] - offsets_[row]; }
  std::span<const int64_t> input_ids(int64_t row) const {
    return {input_ids_.data() + offsets_[row], static_cast<size_t>(seq_len(row))};
  }
  std::span<const uint8_t> loss_mask(int64_t row) const {
    return {loss_mask_.data() + offsets_[row], static_cast<size_t>(seq_len(row))};
  }
  int64_t total_tokens() const { return offsets_.back(); }

  // Appends one row; input_ids and loss_mask must have equal lengths.
  void AppendRow(std::span<const int64_t> ids, std::span<const uint8_t> mask);

 private:
  std::vector<int64_t> offsets_{0};
  std::vector<int64_t> input_ids_;
  std::vector<uint8_t> loss_mask_;
};

// Writes `dataset` to `dir` as a save_to_disk directory: shards of at most
// ~500 MB named data-SSSSS-of-NNNNN.arrow, record batches of at most 1000 rows,
// loss_mask as list<int64>, state.json with _format_type "torch", and the
// minimal dataset_info.json. Files are written atomically.
Status WriteTokenDataset(const std::string& dir, const TokenDataset& dataset);

// Writes a prepared dataset without holding its rows in memory. Append()
// stores each row in a temporary spool file inside `dir` (8 bytes of index
// per row stay in memory); Finish(order) writes the rows in that order, in the
// layout WriteTokenDataset produces. The spool file is removed when the writer
// is destroyed, whether or not Finish ran.
class TokenDatasetWriter {
 public:
  static Result<std::unique_ptr<TokenDatasetWriter>> Open(const std::string& dir);
  ~TokenDatasetWriter();
  TokenDatasetWriter(const TokenDatasetWriter&) = delete;
  TokenDatasetWriter& operator=(const TokenDatasetWriter&) = delete;

  Status Append(std::span<const int64_t> ids, std::span<const uint8_t> mask);
  int64_t num_rows() const { return static_cast<int64_t>(row_lengths_.size()); }
  int64_t seq_len(int64_t row) const { return row_lengths_[row]; }
  int64_t total_tokens() const { return total_tokens_; }

  // Writes the rows listed in `order` (indices into the appended rows) and
  // calls `visit`, when given, on each written row in output order.
  using RowVisitor = std::function<void(std::span<const int64_t> ids, std::span<const uint8_t> mask)>;
  Status Finish(const std::vector<int64_t>& order, const RowVisitor& visit = nullptr);

 private:
  TokenDatasetWriter() = default;
  std::string dir_;
  std::string spool_path_;
  std::FILE* spool_ = nullptr;
  int64_t spool_bytes_ = 0;
  int64_t total_tokens_ = 0;
  std::vector<int64_t> row_offsets_;
  std::vector<int64_t> row_lengths_;
};

}  // namespace draftforge::data
