#include "draftforge/data/hf_dataset.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>

#include "draftforge/util/fs.h"

namespace draftforge::data {
namespace {

namespace fs = std::filesystem;
using io::arrow::ArrayData;
using io::arrow::Field;
using io::arrow::TypeTag;

template <typename Json>
Result<Json> ReadJsonFile(const std::string& path) {
  DF_ASSIGN_OR_RAISE(std::string text, ReadFileToString(path));
  Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return Status::Invalid("{}: invalid JSON; the file is damaged or not a datasets file", path);
  }
  return json;
}

// Arrow type string that a datasets Value dtype maps to; empty when the dtype
// is not one whose mapping is checked here (timestamps, decimals, ...).
std::string ArrowTypeOfValueDtype(const std::string& dtype) {
  static const std::map<std::string, std::string> kTypes = {
      {"bool", "bool"},       {"int8", "int8"},         {"int16", "int16"},
      {"int32", "int32"},     {"int64", "int64"},       {"uint8", "uint8"},
      {"uint16", "uint16"},   {"uint32", "uint32"},     {"uint64", "uint64"},
      {"float16", "halffloat"}, {"float32", "float"},   {"float64", "double"},
      {"string", "string"},   {"large_string", "large_string"}, {"binary", "binary"},
      {"large_binary", "large_binary"}, {"null", "null"}};
  auto it = kTypes.find(dtype);
  return it == kTypes.end() ? std::string() : it->second;
}

Status CheckFeature(const nlohmann::ordered_json& feature, const Field& field,
                    const std::string& path, const std::string& source) {
  auto mismatch = [&](const std::string& expected) {
    return Status::Invalid(
        "{}: feature of column '{}' is {} but the Arrow data has type {} (expected {}); the "
        "dataset_info.json does not belong to these shards",
        source, path, feature.dump(), field.TypeString(), expected);
  };
  if (!feature.is_object() || !feature.contains("_type") || !feature["_type"].is_string()) {
    return Status::OK();  // struct-of-features dicts and legacy forms are not checked
  }
  const std::string kind = feature["_type"].get<std::string>();
  if (kind == "Value") {
    if (!feature.contains("dtype") || !feature["dtype"].is_string()) {
      return Status::Invalid("{}: Value feature of column '{}' has no string 'dtype'", source,
                             path);
    }
    std::string expected = ArrowTypeOfValueDtype(feature["dtype"].get<std::string>());
    if (!expected.empty() && expected != field.TypeString()) return mismatch(expected);
    return Status::OK();
  }
  if (kind == "List" || kind == "Sequence" || kind == "LargeList") {
    const bool fixed_size = feature.contains("length") && feature["length"].is_number_integer() &&
                            feature["length"].get<int64_t>() >= 0;
    if (fixed_size) return Status::OK();
    const auto& inner = feature.contains("feature") ? feature["feature"] : nlohmann::ordered_json();
    // Sequence of a dict of features is stored as a struct of lists.
    if (kind == "Sequence" && inner.is_object() && !inner.contains("_type")) return Status::OK();
    const TypeTag expected_tag = kind == "LargeList" ? TypeTag::kLargeList : TypeTag::kList;
    if (field.type != expected_tag || field.children.size() != 1) {
      return mismatch(kind == "LargeList" ? "large_list" : "list");
    }
    return CheckFeature(inner, field.children[0], path + ".item", source);
  }
  return Status::OK();  // ClassLabel, Image, Translation, ... are not checked
}

bool SameFields(const std::vector<Field>& a, const std::vector<Field>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].TypeString() != b[i].TypeString() ||
        !SameFields(a[i].children, b[i].children)) {
      return false;
    }
  }
  return true;
}

std::optional<std::string> OptionalString(const nlohmann::json& json, const char* key) {
  auto it = json.find(key);
  if (it == json.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

}  // namespace

// ---------------------------------------------------------------------------
// HfColumn

std::pair<const ArrayData*, int64_t> HfColumn::Locate(int64_t row) const {
  auto it = std::upper_bound(chunk_starts_.begin(), chunk_starts_.end(), row);
  size_t chunk = static_cast<size_t>(it - chunk_starts_.begin()) - 1;
  // Empty batches share their start with the next chunk; upper_bound picks the last.
  return {chunks_[chunk], row - chunk_starts_[chunk]};
}

bool HfColumn::IsNull(int64_t row) const {
  auto [array, index] = Locate(row);
  return !array->IsValid(index);
}

Result<int64_t> HfColumn::GetInt(int64_t row) const {
  if (field_->type != TypeTag::kInt && field_->type != TypeTag::kBool) {
    return Status::Invalid("column '{}' has type {}, not an integer or bool type", field_->name,
                           field_->TypeString());
  }
  auto [array, index] = Locate(row);
  return array->GetInt(index);
}

Result<double> HfColumn::GetDouble(int64_t row) const {
  if (field_->type != TypeTag::kInt && field_->type != TypeTag::kBool &&
      field_->type != TypeTag::kFloatingPoint) {
    return Status::Invalid("column '{}' has type {}, not a numeric type", field_->name,
                           field_->TypeString());
  }
  auto [array, index] = Locate(row);
  return array->GetDouble(index);
}

Result<std::string> HfColumn::GetString(int64_t row) const {
  switch (field_->type) {
    case TypeTag::kUtf8:
    case TypeTag::kBinary:
    case TypeTag::kLargeUtf8:
    case TypeTag::kLargeBinary:
      break;
    default:
      return Status::Invalid("column '{}' has type {}, not a string or binary type",
                             field_->name, field_->TypeString());
  }
  auto [array, index] = Locate(row);
  return std::string(array->GetString(index));
}

Result<std::vector<int64_t>> HfColumn::GetIntList(int64_t row, int64_t null_value) const {
  const bool is_list = field_->type == TypeTag::kList || field_->type == TypeTag::kLargeList;
  if (!is_list || (field_->children[0].type != TypeTag::kInt &&
                   field_->children[0].type != TypeTag::kBool) ||
      field_->children[0].dictionary_encoded) {
    return Status::Invalid("column '{}' has type {}, not a list of integers or bools",
                           field_->name, field_->TypeString());
  }
  auto [array, index] = Locate(row);
  auto [begin, end] = array->GetListRange(index);
  const ArrayData& items = array->children[0];
  std::vector<int64_t> values;
  values.reserve(end - begin);
  for (int64_t i = begin; i < end; ++i) {
    values.push_back(items.IsValid(i) ? items.GetInt(i) : null_value);
  }
  return values;
}

Result<std::vector<double>> HfColumn::GetDoubleList(int64_t row) const {
  const bool is_list = field_->type == TypeTag::kList || field_->type == TypeTag::kLargeList;
  const TypeTag item = is_list ? field_->children[0].type : TypeTag::kNone;
  if (!is_list || (item != TypeTag::kInt && item != TypeTag::kBool &&
                   item != TypeTag::kFloatingPoint)) {
    return Status::Invalid("column '{}' has type {}, not a list of numbers", field_->name,
                           field_->TypeString());
  }
  auto [array, index] = Locate(row);
  auto [begin, end] = array->GetListRange(index);
  std::vector<double> values;
  for (int64_t i = begin; i < end; ++i) values.push_back(array->children[0].GetDouble(i));
  return values;
}

// ---------------------------------------------------------------------------
// HfDataset

Result<HfDataset> HfDataset::Open(const std::string& dir) {
  HfDataset dataset;
  dataset.dir_ = dir;
  const std::string state_path = (fs::path(dir) / "state.json").string();
  if (!fs::exists(state_path)) {
    if (IsHfDatasetDict(dir)) {
      return Status::Invalid(
          "{} is a DatasetDict (it has dataset_dict.json); pass one of its split folders, "
          "e.g. {}/train",
          dir, dir);
    }
    if (!fs::is_directory(dir)) return Status::NotFound("dataset directory not found: {}", dir);
    return Status::NotFound(
        "{} has no state.json; it is not a datasets save_to_disk directory", dir);
  }
  DF_ASSIGN_OR_RAISE(dataset.state_, ReadJsonFile<nlohmann::json>(state_path));

  const std::string info_path = (fs::path(dir) / "dataset_info.json").string();
  if (!fs::exists(info_path)) {
    return Status::NotFound("{} has no dataset_info.json; datasets.load_from_disk needs it too",
                            dir);
  }
  DF_ASSIGN_OR_RAISE(dataset.info_, ReadJsonFile<nlohmann::ordered_json>(info_path));

  auto files = dataset.state_.find("_data_files");
  if (!dataset.state_.is_object() || files == dataset.state_.end() || !files->is_array() ||
      files->empty()) {
    return Status::Invalid("{}: '_data_files' must be a non-empty array of {{\"filename\": ...}}",
                           state_path);
  }
  for (size_t i = 0; i < files->size(); ++i) {
    const auto& entry = (*files)[i];
    if (!entry.is_object() || !entry.contains("filename") || !entry["filename"].is_string()) {
      return Status::Invalid("{}: _data_files[{}] = {} has no string 'filename'", state_path, i,
                             entry.dump());
    }
    std::string path = (fs::path(dir) / entry["filename"].get<std::string>()).string();
    DF_ASSIGN_OR_RAISE(io::arrow::Stream stream, io::arrow::ReadStreamFile(path));
    if (!dataset.shards_.empty() &&
        !SameFields(stream.schema.fields, dataset.shards_.front().schema.fields)) {
      return Status::Invalid("{}: its schema differs from that of {}; all shards need the same "
                             "columns and types",
                             path, dataset.shard_paths_.front());
    }
    dataset.num_rows_ += stream.num_rows();
    dataset.shard_paths_.push_back(std::move(path));
    dataset.shards_.push_back(std::move(stream));
  }

  if (dataset.info_.is_object() && dataset.info_.contains("features") &&
      dataset.info_["features"].is_object()) {
    DF_RETURN_NOT_OK(
        CheckFeaturesMatchSchema(dataset.info_["features"], dataset.schema(), info_path));
  }
  return dataset;
}

std::vector<std::string> HfDataset::column_names() const {
  std::vector<std::string> names;
  for (const auto& field : schema().fields) names.push_back(field.name);
  return names;
}

std::optional<std::string> HfDataset::format_type() const {
  return OptionalString(state_, "_format_type");
}

std::optional<std::string> HfDataset::split() const { return OptionalString(state_, "_split"); }

Result<HfColumn> HfDataset::GetColumn(std::string_view name) const {
  const int index = schema().FieldIndex(name);
  if (index < 0) {
    std::string names;
    for (const auto& column : column_names()) names += (names.empty() ? "" : ", ") + column;
    return Status::NotFound("{}: no column '{}' (columns: {})", dir_, name, names);
  }
  HfColumn column;
  column.field_ = &schema().fields[index];
  for (const auto& shard : shards_) {
    for (const auto& batch : shard.batches) {
      column.chunks_.push_back(&batch.columns[index]);
      column.chunk_starts_.push_back(column.num_rows_);
      column.num_rows_ += batch.num_rows;
    }
  }
  return column;
}

// ---------------------------------------------------------------------------
// DatasetDict

bool IsHfDatasetDict(const std::string& dir) {
  return fs::exists(fs::path(dir) / "dataset_dict.json");
}

Result<HfDatasetDict> OpenHfDatasetDict(const std::string& dir) {
  const std::string path = (fs::path(dir) / "dataset_dict.json").string();
  DF_ASSIGN_OR_RAISE(nlohmann::json json, ReadJsonFile<nlohmann::json>(path));
  if (!json.is_object() || !json.contains("splits") || !json["splits"].is_array()) {
    return Status::Invalid("{}: expected {{\"splits\": [names...]}}, got {}", path, json.dump());
  }
  HfDatasetDict dict;
  for (const auto& name : json["splits"]) {
    if (!name.is_string()) {
      return Status::Invalid("{}: split name {} is not a string", path, name.dump());
    }
    const std::string split = name.get<std::string>();
    DF_ASSIGN_OR_RAISE(HfDataset dataset, HfDataset::Open((fs::path(dir) / split).string()));
    dict.split_names.push_back(split);
    dict.splits.emplace(split, std::move(dataset));
  }
  return dict;
}

Status CheckFeaturesMatchSchema(const nlohmann::ordered_json& features,
                                const io::arrow::Schema& schema, const std::string& source) {
  std::vector<std::string> feature_names;
  for (const auto& item : features.items()) feature_names.push_back(item.key());
  std::vector<std::string> column_names;
  for (const auto& field : schema.fields) column_names.push_back(field.name);
  if (feature_names != column_names) {
    return Status::Invalid(
        "{}: features list columns [{}] but the Arrow shards have [{}]; the dataset_info.json "
        "does not belong to these shards",
        source, fmt::join(feature_names, ", "), fmt::join(column_names, ", "));
  }
  for (const auto& field : schema.fields) {
    DF_RETURN_NOT_OK(CheckFeature(features[field.name], field, field.name, source));
  }
  return Status::OK();
}

}  // namespace draftforge::data
