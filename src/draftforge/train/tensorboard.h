// TensorBoard event files for training metrics, written with protobuf.
//
// A file is a sequence of records, each framed as TensorFlow's TFRecord:
//   uint64 length (little-endian), uint32 masked CRC-32C of those 8 bytes,
//   `length` bytes of a serialized Event, uint32 masked CRC-32C of them.
// The masked CRC is ((crc >> 15) | (crc << 17)) + 0xa282ead8. The first
// record carries file_version "brain.Event:2"; each later one contains scalar
// summaries (tag, float value) at one step. TensorBoard finds the files by
// their name prefix "events.out.tfevents." anywhere under --logdir.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::train {

// CRC-32C (Castagnoli polynomial, reflected 0x82f63b78), and its masked form.
uint32_t Crc32c(std::span<const uint8_t> bytes);
uint32_t MaskedCrc32c(std::span<const uint8_t> bytes);

class TensorBoardWriter {
 public:
  // Creates LOG_DIR/events.out.tfevents.<unix seconds>.<host>.<pid>.draftforge
  // and writes its file_version record. A new file per run, as TensorBoard's
  // own writers do: it merges the files of one directory by step.
  static Result<std::unique_ptr<TensorBoardWriter>> Open(const std::string& log_dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // Writes one record with every (tag, value) pair at `step` and flushes it,
  // so a crash loses at most the record being written.
  Status AddScalars(int64_t step, const std::vector<std::pair<std::string, double>>& scalars);
  const std::string& path() const { return path_; }

 private:
  TensorBoardWriter() = default;
  Status WriteRecord(const std::string& payload);

  std::string path_;
  std::FILE* file_ = nullptr;
};

struct ScalarEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::string tag;
  float value = 0;
};

// Reads every scalar of an event file, checking the framing and both CRCs of
// each record; Corrupt names the record's byte offset. A final record cut
// short (a writer killed mid-write) ends the read without error, as
// TensorBoard does.
Result<std::vector<ScalarEvent>> ReadTensorBoardScalars(const std::string& path);

}  // namespace draftforge::train
