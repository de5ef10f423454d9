#include "draftforge/hidden_states/hs_file.h"

#include <fmt/ranges.h>

#include <charconv>

#include "draftforge/io/safetensors.h"
#include "draftforge/io/torch_tensors.h"

namespace draftforge::hidden_states {
namespace {

constexpr std::string_view kPrefix = "hs_";
constexpr std::string_view kSuffix = ".safetensors";

bool IsStoredFloatType(torch::Dtype dtype) {
  return dtype == torch::kFloat32 || dtype == torch::kBFloat16 || dtype == torch::kFloat16;
}

std::string ShapeString(c10::IntArrayRef shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

Status CheckTokenIds(const std::string& path, const torch::Tensor& stored,
                     std::span<const int64_t> expected) {
  const int64_t count = stored.size(0);
  if (count != static_cast<int64_t>(expected.size())) {
    return Status::Invalid("{}: token_ids has {} tokens but the dataset row has {}; the file "
                           "belongs to another row or dataset, delete it and regenerate",
                           path, count, expected.size());
  }
  const int64_t* values = stored.data_ptr<int64_t>();
  for (int64_t t = 0; t < count; ++t) {
    if (values[t] != expected[t]) {
      return Status::Invalid("{}: token_ids[{}] is {} but the dataset row has {}; the file "
                             "belongs to another row or dataset, delete it and regenerate",
                             path, t, values[t], expected[t]);
    }
  }
  return Status::OK();
}

Status CheckFinite(const std::string& path, const torch::Tensor& hidden_states) {
  torch::Tensor bad = torch::logical_not(torch::isfinite(hidden_states));
  if (!bad.any().item<bool>()) return Status::OK();
  torch::Tensor first = bad.nonzero()[0];  // [3]: token, slot, feature
  return Status::Corrupt("{}: hidden_states has {} non-finite values, the first at [{}, {}, {}]; "
                         "regenerate the file",
                         path, bad.sum().item<int64_t>(), first[0].item<int64_t>(),
                         first[1].item<int64_t>(), first[2].item<int64_t>());
}

}  // namespace

std::string HiddenStatesFileName(int64_t row) { return fmt::format("hs_{}.safetensors", row); }

std::optional<int64_t> ParseHiddenStatesFileName(const std::string& name) {
  if (name.size() <= kPrefix.size() + kSuffix.size() || !name.starts_with(kPrefix) ||
      !name.ends_with(kSuffix)) {
    return std::nullopt;
  }
  std::string_view digits(name.data() + kPrefix.size(), name.size() - kPrefix.size() - kSuffix.size());
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  int64_t row = 0;
  auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), row);
  if (error != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return row;
}

Status WriteHiddenStatesFile(const std::string& path, std::span<const int64_t> token_ids,
                             const torch::Tensor& hidden_states) {
  if (hidden_states.dim() != 3) {
    return Status::Invalid("cannot write {}: hidden_states must be [T, L, H], got shape {}", path,
                           ShapeString(hidden_states.sizes()));
  }
  if (hidden_states.size(0) != static_cast<int64_t>(token_ids.size())) {
    return Status::Invalid("cannot write {}: hidden_states has {} tokens but token_ids has {}", path,
                           hidden_states.size(0), token_ids.size());
  }
  if (!IsStoredFloatType(hidden_states.scalar_type())) {
    return Status::Invalid("cannot write {}: hidden_states dtype {} is not float32, bfloat16 or "
                           "float16",
                           path, std::string(c10::toString(hidden_states.scalar_type())));
  }
  // from_blob does not copy; the span outlives the synchronous write below.
  torch::Tensor ids = torch::from_blob(const_cast<int64_t*>(token_ids.data()),
                                       {static_cast<int64_t>(token_ids.size())}, torch::kInt64);
  // WriteTensors orders tensors like the reference writer (I64 before the
  // float types), which yields vLLM's layout: token_ids at offset 0.
  return io::WriteTensors(path, {{kTokenIdsKey, ids}, {kHiddenStatesKey, hidden_states}}, {},
                          /*write_metadata=*/false);
}

Result<HiddenStatesFile> ReadHiddenStatesFile(const std::string& path,
                                              const HiddenStatesExpectation& expected) {
  DF_ASSIGN_OR_RAISE(io::SafetensorsFile file, io::SafetensorsFile::Open(path));
  for (const char* key : {kTokenIdsKey, kHiddenStatesKey}) {
    if (file.Find(key) == nullptr) {
      return Status::Corrupt("{}: tensor '{}' is missing; a hidden-states file needs '{}' and '{}'",
                             path, key, kTokenIdsKey, kHiddenStatesKey);
    }
  }

  HiddenStatesFile result;
  DF_ASSIGN_OR_RAISE(result.token_ids, io::ReadTensor(file, kTokenIdsKey));
  DF_ASSIGN_OR_RAISE(result.hidden_states, io::ReadTensor(file, kHiddenStatesKey));
  torch::Tensor& ids = result.token_ids;
  torch::Tensor& hidden = result.hidden_states;

  if (ids.dim() != 1) {
    return Status::Corrupt("{}: token_ids must have rank 1, got shape {}", path,
                           ShapeString(ids.sizes()));
  }
  if (ids.scalar_type() == torch::kInt32) {
    ids = ids.to(torch::kInt64);
  } else if (ids.scalar_type() != torch::kInt64) {
    return Status::Corrupt("{}: token_ids dtype is {}, expected I64 (or I32)", path,
                           std::string(c10::toString(ids.scalar_type())));
  }
  if (hidden.dim() != 3) {
    return Status::Corrupt("{}: hidden_states must have rank 3 [T, L, H], got shape {}", path,
                           ShapeString(hidden.sizes()));
  }
  if (!IsStoredFloatType(hidden.scalar_type())) {
    return Status::Corrupt("{}: hidden_states dtype is {}, expected BF16, F16 or F32", path,
                           std::string(c10::toString(hidden.scalar_type())));
  }
  if (hidden.size(0) != ids.size(0)) {
    return Status::Corrupt("{}: hidden_states has {} tokens (shape {}) but token_ids has {}", path,
                           hidden.size(0), ShapeString(hidden.sizes()), ids.size(0));
  }

  if (expected.token_ids) DF_RETURN_NOT_OK(CheckTokenIds(path, ids, *expected.token_ids));
  if (expected.num_layers && hidden.size(1) != *expected.num_layers) {
    return Status::Invalid("{}: hidden_states holds {} layers (shape {}) but {} layer ids are "
                           "configured; the file was generated with other --layer-ids",
                           path, hidden.size(1), ShapeString(hidden.sizes()), *expected.num_layers);
  }
  if (expected.hidden_size && hidden.size(2) != *expected.hidden_size) {
    return Status::Invalid("{}: hidden_states has hidden size {} (shape {}) but the model has {}; "
                           "the file was generated with another model",
                           path, hidden.size(2), ShapeString(hidden.sizes()), *expected.hidden_size);
  }
  DF_RETURN_NOT_OK(CheckFinite(path, hidden));
  return result;
}

}  // namespace draftforge::hidden_states
