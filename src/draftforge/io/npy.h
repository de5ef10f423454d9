// NumPy .npy files: reader for versions 1.0, 2.0 and 3.0, and a writer that
// produces the bytes of numpy.save (format 1.0) for 1-D and N-D C-order data.
//
// Layout: "\x93NUMPY", major, minor, header length (u16 for 1.0, u32 for 2.0
// and 3.0), then an ASCII Python dict literal {'descr': ..., 'fortran_order':
// ..., 'shape': (...), } padded with spaces so the data starts at a multiple
// of 64 bytes, and a final '\n'. Like numpy, the writer leaves 21 - len(last
// dimension) extra spaces so the header can grow in place.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::io {

struct NpyArray {
  std::string descr;  // e.g. "<i8", "|b1"
  bool fortran_order = false;
  std::vector<int64_t> shape;
  std::string data;  // raw element bytes

  int64_t num_elements() const;
};

// Reads and validates a .npy file: data size must equal shape x item size for
// the descriptors this reader knows (b1, u1, i1, i2, i4, i8, u2, u4, u8, f2,
// f4, f8 with '<' or '|' byte order); big-endian ('>') data is rejected.
Result<NpyArray> ReadNpy(const std::string& path);

// The preamble numpy.save writes (magic through '\n').
std::string NpyHeader(const std::string& descr, const std::vector<int64_t>& shape);

// Writes `array` atomically as format 1.0 (fortran_order False).
Status WriteNpy(const std::string& path, const NpyArray& array);

// Reads a 1-D integer array ("<i8", or "<i4" widened).
Result<std::vector<int64_t>> ReadNpyInt64Vector(const std::string& path);
// Reads a 1-D bool array ("|b1", or "|u1" with values 0/1).
Result<std::vector<uint8_t>> ReadNpyBoolVector(const std::string& path);

}  // namespace draftforge::io
