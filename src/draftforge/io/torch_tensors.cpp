#include "draftforge/io/torch_tensors.h"

#include <cstring>

namespace draftforge::io {

Result<torch::Dtype> TorchDtypeOf(DType dtype) {
  switch (dtype) {
    case DType::kBool: return torch::kBool;
    case DType::kU8: return torch::kUInt8;
    case DType::kI8: return torch::kInt8;
    case DType::kI16: return torch::kInt16;
    case DType::kF16: return torch::kFloat16;
    case DType::kBF16: return torch::kBFloat16;
    case DType::kI32: return torch::kInt32;
    case DType::kF32: return torch::kFloat32;
    case DType::kF64: return torch::kFloat64;
    case DType::kI64: return torch::kInt64;
    default: return Status::Unimplemented("safetensors dtype {} has no libtorch type", DTypeName(dtype));
  }
}

Result<DType> SafetensorsDtypeOf(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kBool: return DType::kBool;
    case torch::kUInt8: return DType::kU8;
    case torch::kInt8: return DType::kI8;
    case torch::kInt16: return DType::kI16;
    case torch::kFloat16: return DType::kF16;
    case torch::kBFloat16: return DType::kBF16;
    case torch::kInt32: return DType::kI32;
    case torch::kFloat32: return DType::kF32;
    case torch::kFloat64: return DType::kF64;
    case torch::kInt64: return DType::kI64;
    default: return Status::Unimplemented("libtorch dtype {} cannot be stored in safetensors",
                                          std::string(c10::toString(dtype)));
  }
}

Result<torch::Tensor> ReadTensor(const SafetensorsFile& file, std::string_view name) {
  const TensorInfo* info = file.Find(name);
  if (info == nullptr) {
    return Status::NotFound("{}: no tensor named '{}'", file.path(), name);
  }
  DF_ASSIGN_OR_RAISE(torch::Dtype dtype, TorchDtypeOf(info->dtype));
  torch::Tensor tensor = torch::empty(info->shape, torch::TensorOptions().dtype(dtype));
  std::memcpy(tensor.data_ptr(), file.DataOf(*info), info->end - info->begin);
  return tensor;
}

Status WriteTensors(const std::string& path,
                    const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                    const std::map<std::string, std::string>& metadata, bool write_metadata) {
  std::vector<torch::Tensor> keep_alive;
  std::vector<TensorBytes> entries;
  for (const auto& [name, tensor] : tensors) {
    torch::Tensor cpu = tensor.detach().to(torch::kCPU).contiguous();
    DF_ASSIGN_OR_RAISE(DType dtype, SafetensorsDtypeOf(cpu.scalar_type()));
    TensorBytes entry;
    entry.name = name;
    entry.dtype = dtype;
    entry.shape = cpu.sizes().vec();
    entry.data = cpu.data_ptr();
    entry.nbytes = cpu.numel() * cpu.element_size();
    entries.push_back(std::move(entry));
    keep_alive.push_back(std::move(cpu));
  }
  return WriteSafetensors(path, std::move(entries), metadata, write_metadata);
}

}  // namespace draftforge::io
