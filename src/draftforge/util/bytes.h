// Reading fixed-width integers out of binary file formats.
#pragma once

#include <cstdint>
#include <cstring>

namespace draftforge {

// Reads a value of type T stored little-endian at `bytes`, which need not be
// aligned. Every format draftforge reads (safetensors, Arrow IPC, ZIP,
// pickle) is little-endian.
// NOTE: the copy is byte-for-byte, so this assumes a little-endian host
// (x86-64, AArch64).
template <typename T>
T LoadLittleEndian(const uint8_t* bytes) {
  T value;
  std::memcpy(&value, bytes, sizeof(T));
  return value;
}

}  // namespace draftforge
