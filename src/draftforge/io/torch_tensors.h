// Bridge between safetensors files and libtorch tensors.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "draftforge/io/safetensors.h"

namespace draftforge::io {

// Maps a safetensors dtype to the libtorch scalar type (F8 and unsigned types
// wider than 8 bits have no libtorch 1.13 equivalent: Unimplemented).
Result<torch::Dtype> TorchDtypeOf(DType dtype);
Result<DType> SafetensorsDtypeOf(torch::Dtype dtype);

// Copies one tensor out of the mapped file into a new CPU tensor of the same
// dtype and shape. NotFound names the file and the missing tensor.
Result<torch::Tensor> ReadTensor(const SafetensorsFile& file, std::string_view name);

// Writes CPU tensors (made contiguous first) to `path` atomically.
Status WriteTensors(const std::string& path,
                    const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                    const std::map<std::string, std::string>& metadata = {},
                    bool write_metadata = true);

}  // namespace draftforge::io
