#include "draftforge/io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "draftforge/util/bytes.h"

namespace draftforge::io {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::kBool, "BOOL", 1},         {DType::kU8, "U8", 1},   {DType::kI8, "I8", 1},
    {DType::kF8_E5M2, "F8_E5M2", 1},   {DType::kF8_E4M3, "F8_E4M3", 1},
    {DType::kI16, "I16", 2},           {DType::kU16, "U16", 2}, {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2},         {DType::kI32, "I32", 4}, {DType::kU32, "U32", 4},
    {DType::kF32, "F32", 4},           {DType::kF64, "F64", 8}, {DType::kI64, "I64", 8},
    {DType::kU64, "U64", 8},
};

Result<TensorInfo> ParseTensorEntry(const std::string& path, const std::string& name,
                                    const nlohmann::json& entry) {
  if (!entry.is_object()) {
    return Status::Corrupt("{}: header entry '{}' is not a JSON object", path, name);
  }
  TensorInfo info;
  info.name = name;
  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return Status::Corrupt("{}: tensor '{}' has no string field 'dtype'", path, name);
  }
  auto dtype = ParseDType(dtype_it->get<std::string>());
  if (!dtype.ok()) return dtype.status().WithContext(fmt::format("{}: tensor '{}'", path, name));
  info.dtype = *dtype;

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return Status::Corrupt("{}: tensor '{}' has no array field 'shape'", path, name);
  }
  for (const auto& dim : *shape_it) {
    if (!dim.is_number_unsigned()) {
      return Status::Corrupt("{}: tensor '{}' has a non-integer or negative shape entry {}", path,
                             name, dim.dump());
    }
    info.shape.push_back(dim.get<int64_t>());
  }

  auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    return Status::Corrupt("{}: tensor '{}' needs 'data_offsets' = [begin, end] (got {})", path,
                           name, offsets_it == entry.end() ? "nothing" : offsets_it->dump());
  }
  info.begin = (*offsets_it)[0].get<uint64_t>();
  info.end = (*offsets_it)[1].get<uint64_t>();
  if (info.end < info.begin) {
    return Status::Corrupt("{}: tensor '{}' has data_offsets [{}, {}] with end < begin", path, name,
                           info.begin, info.end);
  }
  uint64_t expected = static_cast<uint64_t>(info.numel()) * DTypeSize(info.dtype);
  if (info.end - info.begin != expected) {
    return Status::Corrupt(
        "{}: tensor '{}' ({} {}) spans {} bytes but its shape needs {} bytes", path, name,
        DTypeName(info.dtype), nlohmann::json(info.shape).dump(), info.end - info.begin, expected);
  }
  return info;
}

}  // namespace

Result<DType> ParseDType(std::string_view name) {
  for (const auto& entry : kDTypes) {
    if (name == entry.name) return entry.dtype;
  }
  return Status::Unimplemented("unsupported safetensors dtype '{}'", name);
}

const char* DTypeName(DType dtype) { return kDTypes[static_cast<int>(dtype)].name; }
size_t DTypeSize(DType dtype) { return kDTypes[static_cast<int>(dtype)].size; }

int64_t TensorInfo::numel() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

Result<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  DF_ASSIGN_OR_RAISE(auto file, MappedFile::Open(path));
  if (file->size() < 8) {
    return Status::Corrupt("{}: file has {} bytes, fewer than the 8-byte header length; "
                           "the file is truncated, regenerate it",
                           path, file->size());
  }
  uint64_t header_size = LoadLittleEndian<uint64_t>(file->data());
  if (header_size > kMaxHeaderBytes) {
    return Status::Corrupt("{}: header length {} exceeds the limit of {} bytes", path, header_size,
                           kMaxHeaderBytes);
  }
  if (8 + header_size > file->size()) {
    return Status::Corrupt("{}: header length {} runs past the end of the {}-byte file; "
                           "the file is truncated, regenerate it",
                           path, header_size, file->size());
  }
  const char* header_begin = reinterpret_cast<const char*>(file->data() + 8);
  if (header_size == 0 || header_begin[0] != '{') {
    return Status::Corrupt("{}: header does not start with '{{'", path);
  }
  nlohmann::json header = nlohmann::json::parse(header_begin, header_begin + header_size, nullptr,
                                                /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return Status::Corrupt("{}: header is not a valid JSON object", path);
  }

  SafetensorsFile result;
  result.file_ = file;
  result.data_ = file->data() + 8 + header_size;
  uint64_t buffer_size = file->size() - 8 - header_size;

  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) return Status::Corrupt("{}: __metadata__ is not an object", path);
      for (auto meta = it->begin(); meta != it->end(); ++meta) {
        if (!meta->is_string()) {
          return Status::Corrupt("{}: __metadata__ value of '{}' is not a string", path, meta.key());
        }
        result.metadata_[meta.key()] = meta->get<std::string>();
      }
      continue;
    }
    DF_ASSIGN_OR_RAISE(TensorInfo info, ParseTensorEntry(path, it.key(), *it));
    result.tensors_.push_back(std::move(info));
  }

  std::sort(result.tensors_.begin(), result.tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
            });
  uint64_t cursor = 0;
  for (const auto& info : result.tensors_) {
    if (info.begin != cursor) {
      return Status::Corrupt("{}: tensor '{}' starts at byte {} but the previous tensor ends at {} "
                             "(tensors must tile the data buffer)",
                             path, info.name, info.begin, cursor);
    }
    cursor = info.end;
  }
  if (cursor != buffer_size) {
    return Status::Corrupt("{}: tensors cover {} bytes but the data buffer has {} bytes; the file is "
                           "truncated or has trailing bytes",
                           path, cursor, buffer_size);
  }
  return result;
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  for (const auto& info : tensors_) {
    if (info.name == name) return &info;
  }
  return nullptr;
}

Result<std::string> BuildSafetensorsHeader(std::vector<TensorBytes>& tensors,
                                           const std::map<std::string, std::string>& metadata,
                                           bool write_metadata) {
  std::stable_sort(tensors.begin(), tensors.end(), [](const TensorBytes& a, const TensorBytes& b) {
    if (a.dtype != b.dtype) return static_cast<int>(a.dtype) > static_cast<int>(b.dtype);
    return a.name < b.name;
  });
  // nlohmann's ordered_json keeps insertion order, which fixes the key order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (write_metadata) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  for (const auto& tensor : tensors) {
    int64_t numel = 1;
    for (int64_t dim : tensor.shape) {
      if (dim < 0) return Status::Invalid("tensor '{}' has negative dimension {}", tensor.name, dim);
      numel *= dim;
    }
    size_t expected = static_cast<size_t>(numel) * DTypeSize(tensor.dtype);
    if (expected != tensor.nbytes) {
      return Status::Invalid("tensor '{}' has {} bytes but shape {} of {} needs {}", tensor.name,
                             tensor.nbytes, nlohmann::json(tensor.shape).dump(),
                             DTypeName(tensor.dtype), expected);
    }
    nlohmann::ordered_json entry;
    entry["dtype"] = DTypeName(tensor.dtype);
    entry["shape"] = tensor.shape;
    entry["data_offsets"] = {offset, offset + tensor.nbytes};
    header[tensor.name] = entry;
    offset += tensor.nbytes;
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t size = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((size >> (8 * i)) & 0xff);
  out += json;
  return out;
}

Status WriteSafetensors(const std::string& path, std::vector<TensorBytes> tensors,
                        const std::map<std::string, std::string>& metadata, bool write_metadata) {
  DF_ASSIGN_OR_RAISE(std::string header, BuildSafetensorsHeader(tensors, metadata, write_metadata));
  DF_ASSIGN_OR_RAISE(auto writer, AtomicFileWriter::Open(path));
  DF_RETURN_NOT_OK(writer->Append(header));
  for (const auto& tensor : tensors) DF_RETURN_NOT_OK(writer->Append(tensor.data, tensor.nbytes));
  return writer->Commit();
}

}  // namespace draftforge::io
