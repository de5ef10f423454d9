// TokenDataset::Open and WriteTokenDataset: the save_to_disk directory form of
// a prepared dataset (shards, state.json, dataset_info.json).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <regex>
#include <functional>
#include <cerrno>
#include <cstdio>
#include <unistd.h>

#include "draftforge/data/hf_dataset.h"
#include "draftforge/data/token_dataset.h"
#include "draftforge/io/arrow_ipc.h"
#include "draftforge/util/fs.h"

namespace draftforge::data {
namespace {

namespace fs = std::filesystem;
namespace arrow = io::arrow;

// datasets' default max_shard_size for save_to_disk.
constexpr int64_t kMaxShardBytes = 500'000'000;
// datasets' default writer batch size.
constexpr int64_t kRowsPerBatch = 1000;

constexpr const char* kHuggingfaceMetadata =
    R"({"info": {"features": {"input_ids": {"feature": {"dtype": "int64", "_type": "Value"}, )"
    R"("_type": "List"}, "loss_mask": {"feature": {"dtype": "int64", "_type": "Value"}, )"
    R"("_type": "List"}, "seq_len": {"dtype": "int64", "_type": "Value"}}}})";

bool IsIntegerList(const arrow::Field& field, bool allow_bool) {
  if (field.type != arrow::TypeTag::kList && field.type != arrow::TypeTag::kLargeList) {
    return false;
  }
  if (field.children.size() != 1 || field.children[0].dictionary_encoded) return false;
  const auto item = field.children[0].type;
  return item == arrow::TypeTag::kInt || (allow_bool && item == arrow::TypeTag::kBool);
}

// Rejects nulls, which have no meaning in token ids or loss masks.
Status CheckNoNulls(const arrow::ArrayData& list, const std::string& shard,
                    const std::string& column, int64_t first_row) {
  if (list.null_count == 0 && list.children[0].null_count == 0) return Status::OK();
  for (int64_t r = 0; r < list.length; ++r) {
    if (!list.IsValid(r)) {
      return Status::Invalid("{}: row {} of column '{}' is null; prepared datasets have no nulls",
                             shard, first_row + r, column);
    }
    auto [begin, end] = list.GetListRange(r);
    for (int64_t i = begin; i < end; ++i) {
      if (!list.children[0].IsValid(i)) {
        return Status::Invalid("{}: row {} of column '{}' has a null at position {}", shard,
                               first_row + r, column, i - begin);
      }
    }
  }
  return Status::OK();
}

uint64_t Fnv1a(uint64_t hash, const void* data, size_t size) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < size; ++i) hash = (hash ^ bytes[i]) * 0x100000001b3ULL;
  return hash;
}

template <typename T>
std::string RawBytes(const T* values, size_t count) {
  return std::string(reinterpret_cast<const char*>(values), count * sizeof(T));
}

arrow::Schema PreparedSchema() {
  arrow::Schema schema;
  schema.fields.push_back(arrow::ListField("input_ids", arrow::Int64Field("item")));
  schema.fields.push_back(arrow::ListField("loss_mask", arrow::Int64Field("item")));
  schema.fields.push_back(arrow::Int64Field("seq_len"));
  schema.metadata.emplace_back("huggingface", kHuggingfaceMetadata);
  return schema;
}

// One record batch of rows [begin, end) in the layout of PreparedSchema().
std::vector<arrow::WriteArray> BuildBatch(const TokenDataset& dataset, int64_t begin, int64_t end) {
  const int64_t rows = end - begin;
  std::vector<int32_t> offsets(rows + 1, 0);
  std::vector<int64_t> seq_lens(rows);
  std::string ids;
  std::string mask;
  for (int64_t r = 0; r < rows; ++r) {
    auto row_ids = dataset.input_ids(begin + r);
    auto row_mask = dataset.loss_mask(begin + r);
    ids += RawBytes(row_ids.data(), row_ids.size());
    for (uint8_t bit : row_mask) {
      int64_t value = bit != 0 ? 1 : 0;
      mask.append(reinterpret_cast<const char*>(&value), sizeof(value));
    }
    seq_lens[r] = static_cast<int64_t>(row_ids.size());
    offsets[r + 1] = offsets[r] + static_cast<int32_t>(row_ids.size());
  }
  const int64_t elements = offsets[rows];

  auto make_list = [&](std::string values) {
    arrow::WriteArray list;
    list.length = rows;
    list.offsets = RawBytes(offsets.data(), offsets.size());
    arrow::WriteArray item;
    item.length = elements;
    item.values = std::move(values);
    list.children.push_back(std::move(item));
    return list;
  };
  std::vector<arrow::WriteArray> columns;
  columns.push_back(make_list(std::move(ids)));
  columns.push_back(make_list(std::move(mask)));
  arrow::WriteArray seq_len;
  seq_len.length = rows;
  seq_len.values = RawBytes(seq_lens.data(), seq_lens.size());
  columns.push_back(std::move(seq_len));
  return columns;
}

// Returns rows [begin, end) of the dataset being written, in output order.
using RowChunkLoader = std::function<Result<TokenDataset>(int64_t begin, int64_t end)>;

// Writes rows [begin, end) as one shard and folds them into `fingerprint`.
Status WriteShard(const std::string& path, const RowChunkLoader& load, int64_t begin, int64_t end,
                  uint64_t* fingerprint) {
  DF_ASSIGN_OR_RAISE(auto file, AtomicFileWriter::Open(path));
  arrow::StreamWriter writer([&file](std::string_view bytes) { return file->Append(bytes); },
                             PreparedSchema());
  DF_RETURN_NOT_OK(writer.Begin());
  for (int64_t row = begin; row < end; row += kRowsPerBatch) {
    const int64_t batch_end = std::min(end, row + kRowsPerBatch);
    DF_ASSIGN_OR_RAISE(TokenDataset chunk, load(row, batch_end));
    for (int64_t r = 0; r < chunk.num_rows(); ++r) {
      auto ids = chunk.input_ids(r);
      auto mask = chunk.loss_mask(r);
      *fingerprint = Fnv1a(*fingerprint, ids.data(), ids.size_bytes());
      *fingerprint = Fnv1a(*fingerprint, mask.data(), mask.size_bytes());
      const int64_t length = static_cast<int64_t>(ids.size());
      *fingerprint = Fnv1a(*fingerprint, &length, sizeof(length));
    }
    DF_RETURN_NOT_OK(writer.WriteBatch(batch_end - row, BuildBatch(chunk, 0, chunk.num_rows())));
  }
  DF_RETURN_NOT_OK(writer.Finish());
  return file->Commit();
}

std::string StateJson(const std::vector<std::string>& shard_names, uint64_t fingerprint) {
  nlohmann::json state;  // std::map keys: serialised sorted, as datasets writes it
  state["_data_files"] = nlohmann::json::array();
  for (const auto& name : shard_names) state["_data_files"].push_back({{"filename", name}});
  state["_fingerprint"] = fmt::format("{:016x}", fingerprint);
  state["_format_columns"] = {"input_ids", "loss_mask", "seq_len"};
  state["_format_kwargs"] = nlohmann::json::object();
  // The Python trainers call tensor methods on rows, so the format must be torch.
  state["_format_type"] = "torch";
  state["_output_all_columns"] = false;
  state["_split"] = nullptr;
  return state.dump(2);
}

std::string DatasetInfoJson() {
  auto int64_value = [] {
    nlohmann::ordered_json value;
    value["dtype"] = "int64";
    value["_type"] = "Value";
    return value;
  };
  auto int64_list = [&] {
    nlohmann::ordered_json list;
    list["feature"] = int64_value();
    list["_type"] = "List";
    return list;
  };
  nlohmann::ordered_json features;
  features["input_ids"] = int64_list();
  features["loss_mask"] = int64_list();
  features["seq_len"] = int64_value();
  nlohmann::ordered_json info;
  info["citation"] = "";
  info["description"] = "";
  info["features"] = std::move(features);
  info["homepage"] = "";
  info["license"] = "";
  return info.dump(2);
}

}  // namespace

Result<TokenDataset> TokenDataset::Open(const std::string& dir) {
  DF_ASSIGN_OR_RAISE(HfDataset hf, HfDataset::Open(dir));
  const arrow::Schema& schema = hf.schema();
  const int ids_index = schema.FieldIndex("input_ids");
  if (ids_index < 0) {
    return Status::NotFound("{}: the dataset has no 'input_ids' column; is it a prepared "
                            "(tokenized) dataset?",
                            dir);
  }
  if (!IsIntegerList(schema.fields[ids_index], /*allow_bool=*/false)) {
    return Status::Invalid("{}: column 'input_ids' has type {}; expected list<int32> or "
                           "list<int64>",
                           dir, schema.fields[ids_index].TypeString());
  }
  const int mask_index = schema.FieldIndex("loss_mask");
  if (mask_index >= 0 && !IsIntegerList(schema.fields[mask_index], /*allow_bool=*/true)) {
    return Status::Invalid("{}: column 'loss_mask' has type {}; expected list<bool> or "
                           "list<intX>",
                           dir, schema.fields[mask_index].TypeString());
  }

  TokenDataset dataset;
  dataset.offsets_.reserve(hf.num_rows() + 1);
  int64_t global_row = 0;
  for (size_t s = 0; s < hf.shards().size(); ++s) {
    const std::string& shard = hf.shard_paths()[s];
    for (const auto& batch : hf.shards()[s].batches) {
      const arrow::ArrayData& ids = batch.columns[ids_index];
      DF_RETURN_NOT_OK(CheckNoNulls(ids, shard, "input_ids", global_row));
      const arrow::ArrayData* mask = mask_index >= 0 ? &batch.columns[mask_index] : nullptr;
      if (mask != nullptr) DF_RETURN_NOT_OK(CheckNoNulls(*mask, shard, "loss_mask", global_row));
      const arrow::ArrayData& id_items = ids.children[0];
      const bool ids_are_int64 = id_items.field->bit_width == 64;

      for (int64_t r = 0; r < batch.num_rows; ++r, ++global_row) {
        auto [begin, end] = ids.GetListRange(r);
        const int64_t length = end - begin;
        if (ids_are_int64) {
          const size_t old_size = dataset.input_ids_.size();
          dataset.input_ids_.resize(old_size + length);
          std::memcpy(dataset.input_ids_.data() + old_size,
                      id_items.values.data + begin * sizeof(int64_t), length * sizeof(int64_t));
        } else {
          for (int64_t i = begin; i < end; ++i) dataset.input_ids_.push_back(id_items.GetInt(i));
        }
        if (mask == nullptr) {
          dataset.loss_mask_.insert(dataset.loss_mask_.end(), length, uint8_t{1});
        } else {
          auto [mask_begin, mask_end] = mask->GetListRange(r);
          if (mask_end - mask_begin != length) {
            return Status::Invalid(
                "{}: row {} has {} input_ids but {} loss_mask values; both must have the same "
                "length",
                shard, global_row, length, mask_end - mask_begin);
          }
          for (int64_t i = mask_begin; i < mask_end; ++i) {
            dataset.loss_mask_.push_back(mask->children[0].GetInt(i) != 0 ? 1 : 0);
          }
        }
        dataset.offsets_.push_back(static_cast<int64_t>(dataset.input_ids_.size()));
      }
    }
  }
  return dataset;
}

namespace {

// Writes `rows` rows holding `tokens` tokens, fetched in chunks from `load`,
// as save_to_disk shards plus state.json and dataset_info.json.
Status WriteRows(const std::string& dir, int64_t rows, int64_t tokens, const RowChunkLoader& load) {
  DF_RETURN_NOT_OK(CreateDirectories(dir));
  // datasets' shard count: floor(estimated table bytes / 500 MB) + 1, at most
  // one shard per row. An empty dataset still gets one (empty) shard so that
  // the directory loads.
  const int64_t table_bytes = 2 * (4 * (rows + 1) + 8 * tokens) + 8 * rows;
  const int64_t num_shards = std::max<int64_t>(1, std::min(rows, table_bytes / kMaxShardBytes + 1));
  std::vector<std::string> shard_names;
  uint64_t fingerprint = 0xcbf29ce484222325ULL;
  const int64_t div = rows / num_shards;
  const int64_t mod = rows % num_shards;
  for (int64_t k = 0; k < num_shards; ++k) {
    const int64_t begin = k * div + std::min(k, mod);
    const int64_t end = begin + div + (k < mod ? 1 : 0);
    std::string name = fmt::format("data-{:05d}-of-{:05d}.arrow", k, num_shards);
    DF_RETURN_NOT_OK(WriteShard((fs::path(dir) / name).string(), load, begin, end, &fingerprint)
                         .WithContext(fmt::format("writing shard {} of {}", name, dir)));
    shard_names.push_back(std::move(name));
  }
  // Shards of an earlier, differently sharded write would be ignored by the
  // loader but confuse people and globbing tools, so remove them.
  static const std::regex kShardName(R"(data-\d{5}-of-\d{5}\.arrow)");
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (std::regex_match(name, kShardName) &&
        std::find(shard_names.begin(), shard_names.end(), name) == shard_names.end()) {
      fs::remove(entry.path(), error);
    }
  }
  DF_RETURN_NOT_OK(WriteFileAtomic((fs::path(dir) / "dataset_info.json").string(),
                                   DatasetInfoJson()));
  return WriteFileAtomic((fs::path(dir) / "state.json").string(),
                         StateJson(shard_names, fingerprint));
}

constexpr const char* kSpoolName = ".draftforge-prepare.spool";

}  // namespace

Status WriteTokenDataset(const std::string& dir, const TokenDataset& dataset) {
  auto load = [&dataset](int64_t begin, int64_t end) -> Result<TokenDataset> {
    TokenDataset chunk;
    for (int64_t r = begin; r < end; ++r) chunk.AppendRow(dataset.input_ids(r), dataset.loss_mask(r));
    return chunk;
  };
  return WriteRows(dir, dataset.num_rows(), dataset.total_tokens(), load);
}

Result<std::unique_ptr<TokenDatasetWriter>> TokenDatasetWriter::Open(const std::string& dir) {
  DF_RETURN_NOT_OK(CreateDirectories(dir));
  std::unique_ptr<TokenDatasetWriter> writer(new TokenDatasetWriter());
  writer->dir_ = dir;
  writer->spool_path_ = (fs::path(dir) / kSpoolName).string();
  writer->spool_ = std::fopen(writer->spool_path_.c_str(), "w+b");
  if (writer->spool_ == nullptr) {
    return Status::IOError("cannot create the temporary file {}: {}", writer->spool_path_, std::strerror(errno));
  }
  return writer;
}

TokenDatasetWriter::~TokenDatasetWriter() {
  if (spool_ != nullptr) std::fclose(spool_);
  std::error_code error;
  if (!spool_path_.empty()) fs::remove(spool_path_, error);
}

Status TokenDatasetWriter::Append(std::span<const int64_t> ids, std::span<const uint8_t> mask) {
  if (ids.size() != mask.size()) {
    return Status::Internal("TokenDatasetWriter::Append: {} ids but {} mask values", ids.size(), mask.size());
  }
  const int64_t length = static_cast<int64_t>(ids.size());
  row_offsets_.push_back(spool_bytes_);
  row_lengths_.push_back(length);
  bool ok = std::fwrite(&length, sizeof(length), 1, spool_) == 1;
  ok = ok && (length == 0 || std::fwrite(ids.data(), sizeof(int64_t), ids.size(), spool_) == ids.size());
  ok = ok && (length == 0 || std::fwrite(mask.data(), 1, mask.size(), spool_) == mask.size());
  if (!ok) return Status::IOError("write failed on {}: {}", spool_path_, std::strerror(errno));
  spool_bytes_ += static_cast<int64_t>(sizeof(length) + length * (sizeof(int64_t) + 1));
  total_tokens_ += length;
  return Status::OK();
}

Status TokenDatasetWriter::Finish(const std::vector<int64_t>& order, const RowVisitor& visit) {
  if (std::fflush(spool_) != 0) return Status::IOError("write failed on {}: {}", spool_path_, std::strerror(errno));
  int64_t tokens = 0;
  for (int64_t row : order) {
    if (row < 0 || row >= num_rows()) {
      return Status::Internal("TokenDatasetWriter::Finish: row {} outside [0, {})", row, num_rows());
    }
    tokens += row_lengths_[row];
  }
  const int fd = fileno(spool_);
  auto load = [&](int64_t begin, int64_t end) -> Result<TokenDataset> {
    TokenDataset chunk;
    std::vector<int64_t> ids;
    std::vector<uint8_t> mask;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t row = order[i];
      const int64_t length = row_lengths_[row];
      ids.resize(length);
      mask.resize(length);
      const off_t base = static_cast<off_t>(row_offsets_[row] + sizeof(int64_t));
      const size_t id_bytes = length * sizeof(int64_t);
      if (pread(fd, ids.data(), id_bytes, base) != static_cast<ssize_t>(id_bytes) ||
          pread(fd, mask.data(), length, base + static_cast<off_t>(id_bytes)) != static_cast<ssize_t>(length)) {
        return Status::IOError("read failed on {}: {}", spool_path_, std::strerror(errno));
      }
      chunk.AppendRow(ids, mask);
      if (visit) visit(ids, mask);
    }
    return chunk;
  };
  return WriteRows(dir_, static_cast<int64_t>(order.size()), tokens, load);
}

}  // namespace draftforge::data
