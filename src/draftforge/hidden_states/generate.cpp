#include "draftforge/hidden_states/generate.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "draftforge/hidden_states/hs_file.h"
#include "draftforge/util/fs.h"
#include "draftforge/util/progress.h"

namespace draftforge::hidden_states {
namespace {

namespace fs = std::filesystem;

std::string FilePath(const std::string& dir, int64_t row) {
  return (fs::path(dir) / HiddenStatesFileName(row)).string();
}

}  // namespace

std::string CaptureSettings::ToString() const {
  return fmt::format("model {}, layer ids [{}], dtype {}", model_dir, fmt::join(layer_ids, ", "),
                     dtype);
}

std::string DtypeName(torch::Dtype dtype) {
  if (dtype == torch::kBFloat16) return "bfloat16";
  if (dtype == torch::kFloat16) return "float16";
  if (dtype == torch::kFloat32) return "float32";
  return std::string(c10::toString(dtype));
}

namespace {

Result<CaptureSettings> ReadSettingsFile(const std::string& path) {
  DF_ASSIGN_OR_RAISE(std::string text, ReadFileToString(path));
  CaptureSettings settings;
  try {
    nlohmann::json json = nlohmann::json::parse(text);
    settings.model_dir = json.at("model").get<std::string>();
    settings.layer_ids = json.at("layer_ids").get<std::vector<int64_t>>();
    settings.dtype = json.at("dtype").get<std::string>();
  } catch (const nlohmann::json::exception& error) {
    return Status::Invalid("{} is not a valid settings file ({}); delete it if the hidden-states "
                           "files next to it match this run",
                           path, error.what());
  }
  return settings;
}

}  // namespace

Result<std::optional<CaptureSettings>> ReadCaptureSettings(const std::string& dir) {
  const std::string path = (fs::path(dir) / kGenerateSettingsFileName).string();
  std::error_code error;
  if (!fs::exists(path, error)) return std::optional<CaptureSettings>();
  DF_ASSIGN_OR_RAISE(CaptureSettings stored, ReadSettingsFile(path));
  return std::optional<CaptureSettings>(std::move(stored));
}

Status CheckOrWriteSettings(const std::string& output_dir, const CaptureSettings& current,
                            bool has_existing_files) {
  const std::string path = (fs::path(output_dir) / kGenerateSettingsFileName).string();
  std::error_code error;
  if (fs::exists(path, error)) {
    DF_ASSIGN_OR_RAISE(CaptureSettings stored, ReadSettingsFile(path));
    if (stored == current) return Status::OK();
    return Status::Invalid(
        "{} contains hidden states generated with {}, but this run requests {}; mixing them "
        "would give the draft inconsistent inputs. Use another directory (generate --output, "
        "train --hidden-states-path), or delete {} to regenerate everything with the new settings",
        output_dir, stored.ToString(), current.ToString(), output_dir);
  }
  if (has_existing_files) {
    spdlog::info("{} has hidden-states files but no {}; their model, layer ids and dtype cannot "
                 "be checked against this run",
                 output_dir, kGenerateSettingsFileName);
    return Status::OK();
  }
  nlohmann::ordered_json json;
  json["model"] = current.model_dir;
  json["layer_ids"] = current.layer_ids;
  json["dtype"] = current.dtype;
  return WriteFileAtomic(path, json.dump(2) + "\n");
}

namespace {

// Fails when `stored` (the hidden states after the cast to the stored dtype)
// has NaN or Inf. `computed` is the model's output before the cast, so a
// finite `computed` means the cast overflowed, not the model.
Status CheckFiniteHiddenStates(const torch::Tensor& stored, const torch::Tensor& computed,
                               int64_t row, const std::vector<int64_t>& layer_ids,
                               const std::string& model_dir) {
  torch::Tensor bad = torch::logical_not(torch::isfinite(stored));
  if (!bad.any().item<bool>()) return Status::OK();
  torch::Tensor first = bad.nonzero()[0];  // [3]: token, slot, feature
  const int64_t token = first[0].item<int64_t>();
  const int64_t layer_id = layer_ids[first[1].item<int64_t>()];
  const int64_t count = bad.sum().item<int64_t>();
  if (torch::isfinite(computed).all().item<bool>()) {
    return Status::Invalid("dataset row {}: {} hidden-state values overflow the stored dtype {} "
                           "(the first at token {}, layer id {}); no file was written. Pass "
                           "--hidden-states-dtype bfloat16 or float32",
                           row, count, DtypeName(stored.scalar_type()), token, layer_id);
  }
  return Status::Invalid("dataset row {}: the model produced {} non-finite values (NaN or Inf) in "
                         "the hidden states, the first at token {}, layer id {}; no file was "
                         "written. Regenerating will not help: check the weights in {}",
                         row, count, token, layer_id, model_dir);
}

}  // namespace

std::vector<int64_t> KeepValidExisting(const data::TokenDataset& dataset,
                                       const std::vector<int64_t>& existing,
                                       const HiddenStatesExpectation& shape_expectation,
                                       const std::string& output_dir, int64_t& invalid_count) {
  std::vector<int64_t> valid;
  for (int64_t row : existing) {
    if (row >= dataset.num_rows()) {
      valid.push_back(row);  // no row to compare with; counted like the Python script does
      continue;
    }
    HiddenStatesExpectation expected = shape_expectation;
    expected.token_ids = dataset.input_ids(row);
    auto file = ReadHiddenStatesFile(FilePath(output_dir, row), expected);
    if (file.ok()) {
      valid.push_back(row);
    } else {
      spdlog::warn("existing file will be regenerated: {}", file.status().ToString());
      ++invalid_count;
    }
  }
  return valid;
}

std::vector<int64_t> SelectRowsToGenerate(int64_t num_rows, const std::vector<int64_t>& existing,
                                          std::optional<int64_t> max_samples, int64_t start_index) {
  std::set<int64_t> present(existing.begin(), existing.end());
  int64_t budget = num_rows;
  if (max_samples) {
    const int64_t target = std::min(*max_samples, num_rows);
    budget = std::max<int64_t>(0, target - static_cast<int64_t>(present.size()));
  }
  std::vector<int64_t> rows;
  for (int64_t row = std::max<int64_t>(0, start_index);
       row < num_rows && static_cast<int64_t>(rows.size()) < budget; ++row) {
    if (present.count(row) == 0) rows.push_back(row);
  }
  return rows;
}

Result<c10::ScalarType> ChooseHiddenStatesDtype(const std::string& flag_value,
                                                const std::string& config_torch_dtype,
                                                const std::string& model_dir) {
  auto parse = [](const std::string& name, const std::string& source) -> Result<c10::ScalarType> {
    if (name == "float32") return c10::ScalarType::Float;
    if (name == "bfloat16") return c10::ScalarType::BFloat16;
    if (name == "float16") return c10::ScalarType::Half;
    return Status::Invalid("{} '{}' is not supported; use float32, bfloat16 or float16", source,
                           name);
  };
  if (!flag_value.empty()) return parse(flag_value, "--hidden-states-dtype");
  if (config_torch_dtype.empty()) {
    spdlog::warn("{}/config.json has no torch_dtype; storing hidden states as float32 (pass "
                 "--hidden-states-dtype to choose)",
                 model_dir);
    return c10::ScalarType::Float;
  }
  return parse(config_torch_dtype, fmt::format("{}/config.json torch_dtype", model_dir));
}

Result<std::vector<int64_t>> ListHiddenStatesFiles(const std::string& dir) {
  std::vector<int64_t> rows;
  std::error_code error;
  if (!fs::exists(dir, error)) return rows;
  fs::directory_iterator it(dir, error);
  if (error) return Status::IOError("cannot list {}: {}", dir, error.message());
  for (const auto& entry : it) {
    if (auto row = ParseHiddenStatesFileName(entry.path().filename().string())) rows.push_back(*row);
  }
  std::sort(rows.begin(), rows.end());
  return rows;
}

Result<GenerateSummary> GenerateHiddenStates(const data::TokenDataset& dataset,
                                             const engine::LlamaModel& model,
                                             const GenerateOptions& options) {
  DF_ASSIGN_OR_RAISE(std::vector<int64_t> layer_ids, model.CheckLayerIds(options.layer_ids));
  if (options.start_index < 0) {
    return Status::Invalid("start index {} is negative; pass a row index >= 0", options.start_index);
  }
  if (options.max_samples && *options.max_samples < 0) {
    return Status::Invalid("max samples {} is negative; pass a count >= 0", *options.max_samples);
  }
  if (options.start_index > 0 && options.start_index >= dataset.num_rows()) {
    return Status::Invalid("--start-idx {} is past the last dataset row {} (the dataset has {} "
                           "rows); pass a smaller --start-idx",
                           options.start_index, dataset.num_rows() - 1, dataset.num_rows());
  }
  DF_RETURN_NOT_OK(CreateDirectories(options.output_dir));

  GenerateSummary summary;
  HiddenStatesExpectation shape_expectation;
  shape_expectation.num_layers = static_cast<int64_t>(layer_ids.size());
  shape_expectation.hidden_size = model.config().hidden_size;

  DF_ASSIGN_OR_RAISE(std::vector<int64_t> existing, ListHiddenStatesFiles(options.output_dir));
  CaptureSettings settings;
  std::error_code error;
  settings.model_dir = fs::weakly_canonical(model.model_dir(), error).string();
  if (error) settings.model_dir = fs::absolute(model.model_dir()).string();
  settings.layer_ids = layer_ids;
  settings.dtype = DtypeName(options.dtype);
  DF_RETURN_NOT_OK(CheckOrWriteSettings(options.output_dir, settings, !existing.empty()));
  if (options.validate_outputs) {
    existing = KeepValidExisting(dataset, existing, shape_expectation, options.output_dir,
                                 summary.invalid_existing);
  }
  summary.existing = static_cast<int64_t>(existing.size());
  std::vector<int64_t> rows =
      SelectRowsToGenerate(dataset.num_rows(), existing, options.max_samples, options.start_index);
  spdlog::info("generate: {} rows in the dataset, {} hidden-states files present in {}, {} to "
               "generate with layer ids [{}]",
               dataset.num_rows(), summary.existing, options.output_dir, rows.size(),
               fmt::join(layer_ids, ", "));

  std::optional<ProgressBar> progress;
  if (options.show_progress && !rows.empty()) {
    progress.emplace("generate", static_cast<int64_t>(rows.size()), "samples");
  }
  const auto start = std::chrono::steady_clock::now();
  // TODO: run several rows at once for small models. One row at a time keeps
  // the matrices small, so libtorch's intra-op threads help little: stories260k
  // reached about 20k tokens/s with --threads 1 and 1.8k with --threads 2 on a
  // 2-core machine shared with other jobs.
  for (int64_t row : rows) {
    std::span<const int64_t> ids = dataset.input_ids(row);
    auto forward = model.Forward(ids, layer_ids);
    if (!forward.ok()) return forward.status().WithContext(fmt::format("dataset row {}", row));
    torch::Tensor hidden = forward->hidden_states.to(options.dtype);  // [T, L, H]
    DF_RETURN_NOT_OK(CheckFiniteHiddenStates(hidden, forward->hidden_states, row, layer_ids,
                                             model.model_dir()));

    const std::string path = FilePath(options.output_dir, row);
    DF_RETURN_NOT_OK(WriteHiddenStatesFile(path, ids, hidden));
    if (options.validate_outputs) {
      HiddenStatesExpectation expected = shape_expectation;
      expected.token_ids = ids;
      DF_RETURN_NOT_OK(ReadHiddenStatesFile(path, expected).status());
    }

    const int64_t bytes = static_cast<int64_t>(ids.size() * sizeof(int64_t)) +
                          hidden.numel() * static_cast<int64_t>(hidden.element_size());
    ++summary.generated;
    summary.tokens += static_cast<int64_t>(ids.size());
    summary.bytes += bytes;
    if (progress) progress->Advance(1, static_cast<int64_t>(ids.size()), bytes);
  }
  if (progress) progress->Finish();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace draftforge::hidden_states
