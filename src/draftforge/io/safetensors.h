// safetensors: memory-mapped reader and writer.
//
// Layout: u64 header length N, N bytes of JSON (space-padded to a multiple of
// 8), then the data buffer. The reader enforces the reference implementation's
// checks: N <= 100,000,000, valid JSON, tensors tile the buffer exactly (no
// holes, overlaps or trailing bytes), byte sizes match shape x dtype.
// The writer orders tensors as the reference writer does (dtype descending in
// the reference's dtype order, ties by name) so that each tensor is naturally
// aligned, and emits compact JSON with "__metadata__" first.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "draftforge/util/fs.h"
#include "draftforge/util/status.h"

namespace draftforge::io {

// Element types in the reference implementation's sort order.
enum class DType : int {
  kBool = 0, kU8, kI8, kF8_E5M2, kF8_E4M3, kI16, kU16, kF16, kBF16,
  kI32, kU32, kF32, kF64, kI64, kU64,
};

Result<DType> ParseDType(std::string_view name);
const char* DTypeName(DType dtype);
size_t DTypeSize(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data buffer
  uint64_t end = 0;

  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps the file and validates its header; errors name the file and field.
  static Result<SafetensorsFile> Open(const std::string& path);

  // Tensors in data-offset order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* Find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const uint8_t* DataOf(const TensorInfo& info) const { return data_ + info.begin; }
  const std::string& path() const { return file_->path(); }
  std::shared_ptr<MappedFile> mapping() const { return file_; }

 private:
  std::shared_ptr<MappedFile> file_;
  const uint8_t* data_ = nullptr;  // start of the data buffer inside the map
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write; `data` must hold exactly numel x DTypeSize(dtype) bytes.
struct TensorBytes {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Serialises the header (length prefix + padded JSON) for `tensors`, reordered
// in place into the reference layout.
Result<std::string> BuildSafetensorsHeader(std::vector<TensorBytes>& tensors,
                                           const std::map<std::string, std::string>& metadata,
                                           bool write_metadata);

// Writes a safetensors file atomically (temporary file + rename). With
// `write_metadata` false no "__metadata__" key is written (vLLM's hidden-state
// files have none).
Status WriteSafetensors(const std::string& path, std::vector<TensorBytes> tensors,
                        const std::map<std::string, std::string>& metadata = {},
                        bool write_metadata = true);

}  // namespace draftforge::io
