// In-memory part of TokenDataset; the Arrow directory reader and writer live
// in token_dataset_io.cpp.
#include "draftforge/data/token_dataset.h"

#include <cassert>

namespace draftforge::data {

TokenDataset TokenDataset::FromRows(std::vector<TokenRow> rows) {
  TokenDataset dataset;
  for (const auto& row : rows) dataset.AppendRow(row.input_ids, row.loss_mask);
  return dataset;
}

void TokenDataset::AppendRow(std::span<const int64_t> ids, std::span<const uint8_t> mask) {
  assert(ids.size() == mask.size());
  input_ids_.insert(input_ids_.end(), ids.begin(), ids.end());
  loss_mask_.insert(loss_mask_.end(), mask.begin(), mask.end());
  offsets_.push_back(static_cast<int64_t>(input_ids_.size()));
}

}  // namespace draftforge::data
