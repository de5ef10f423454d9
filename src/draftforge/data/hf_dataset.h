// Reader for Hugging Face `datasets` save_to_disk directories.
//
// A Dataset directory contains state.json (the shard list in "_data_files"
// and the format), dataset_info.json (feature types) and Arrow IPC stream
// shards. A DatasetDict directory contains dataset_dict.json ({"splits":
// [...]}) and one Dataset directory per split. Row counts come from the Arrow data, never from
// dataset_info.json, whose "splits" entry may describe a parent dataset.
//
// Like datasets.load_from_disk, Open rejects shards whose schemas differ and
// dataset_info.json features that do not describe the Arrow columns (same
// names, same order, same element types). Feature spellings "List",
// "Sequence" (datasets < 4.0) and "LargeList" are accepted.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "draftforge/io/arrow_ipc.h"
#include "draftforge/util/status.h"

namespace draftforge::data {

// One column of a dataset: its field and its arrays, one per record batch of
// every shard, in row order.
class HfColumn {
 public:
  const io::arrow::Field& field() const { return *field_; }
  int64_t num_rows() const { return num_rows_; }
  const std::vector<const io::arrow::ArrayData*>& chunks() const { return chunks_; }

  // The array that contains global row `row`, and the row's index inside it.
  // Precondition: 0 <= row < num_rows().
  std::pair<const io::arrow::ArrayData*, int64_t> Locate(int64_t row) const;

  bool IsNull(int64_t row) const;
  // Int or Bool value of a row; Invalid for other column types.
  Result<int64_t> GetInt(int64_t row) const;
  Result<double> GetDouble(int64_t row) const;
  Result<std::string> GetString(int64_t row) const;
  // Values of a list<Int|Bool> row; null items read as `null_value`.
  Result<std::vector<int64_t>> GetIntList(int64_t row, int64_t null_value = 0) const;
  Result<std::vector<double>> GetDoubleList(int64_t row) const;

 private:
  friend class HfDataset;
  const io::arrow::Field* field_ = nullptr;
  std::vector<const io::arrow::ArrayData*> chunks_;
  std::vector<int64_t> chunk_starts_;  // global row of each chunk's first row
  int64_t num_rows_ = 0;
};

class HfDataset {
 public:
  // Opens a Dataset directory (not a DatasetDict; see OpenHfDatasetDict).
  static Result<HfDataset> Open(const std::string& dir);

  HfDataset() = default;
  HfDataset(HfDataset&&) = default;
  HfDataset& operator=(HfDataset&&) = default;

  const std::string& dir() const { return dir_; }
  int64_t num_rows() const { return num_rows_; }
  // Schema of the first shard (all shards have the same fields).
  const io::arrow::Schema& schema() const { return shards_.front().schema; }
  std::vector<std::string> column_names() const;
  const std::vector<std::string>& shard_paths() const { return shard_paths_; }
  const std::vector<io::arrow::Stream>& shards() const { return shards_; }

  const nlohmann::json& state() const { return state_; }
  // dataset_info.json with its key order kept (features follow column order).
  const nlohmann::ordered_json& info() const { return info_; }
  // state.json "_format_type" ("torch", ...); nullopt when null.
  std::optional<std::string> format_type() const;
  // state.json "_split"; nullopt when null.
  std::optional<std::string> split() const;

  // NotFound names the directory and lists the existing columns.
  Result<HfColumn> GetColumn(std::string_view name) const;

 private:
  std::string dir_;
  nlohmann::json state_;
  nlohmann::ordered_json info_;
  std::vector<std::string> shard_paths_;
  std::vector<io::arrow::Stream> shards_;
  int64_t num_rows_ = 0;
};

struct HfDatasetDict {
  std::vector<std::string> split_names;  // dataset_dict.json order
  std::map<std::string, HfDataset> splits;
};

// Opens a DatasetDict directory: dataset_dict.json plus one folder per split.
Result<HfDatasetDict> OpenHfDatasetDict(const std::string& dir);

// True when `dir` contains a dataset_dict.json.
bool IsHfDatasetDict(const std::string& dir);

// Checks that a features object (dataset_info.json "features") describes
// `schema`: same column names in the same order and matching types. `source`
// names the file in messages.
Status CheckFeaturesMatchSchema(const nlohmann::ordered_json& features, const io::arrow::Schema& schema,
                                const std::string& source);

}  // namespace draftforge::data
