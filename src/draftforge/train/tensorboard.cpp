#include "draftforge/train/tensorboard.h"

#include <fmt/format.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>

#include "draftforge/train/tensorboard_event.pb.h"
#include "draftforge/util/fs.h"

namespace draftforge::train {
namespace {

constexpr const char* kFileVersion = "brain.Event:2";

std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) ? 0x82f63b78u : 0u);
    table[i] = crc;
  }
  return table;
}

void AppendLittleEndian(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint64_t ReadLittleEndian(const uint8_t* data, int bytes) {
  uint64_t value = 0;
  for (int i = bytes - 1; i >= 0; --i) value = (value << 8) | data[i];
  return value;
}

std::span<const uint8_t> Bytes(const std::string& text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

double WallTime() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

}  // namespace

uint32_t Crc32c(std::span<const uint8_t> bytes) {
  static const std::array<uint32_t, 256> table = MakeCrcTable();
  uint32_t crc = 0xffffffffu;
  for (uint8_t byte : bytes) crc = table[(crc ^ byte) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

uint32_t MaskedCrc32c(std::span<const uint8_t> bytes) {
  const uint32_t crc = Crc32c(bytes);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

Result<std::unique_ptr<TensorBoardWriter>> TensorBoardWriter::Open(const std::string& log_dir) {
  DF_RETURN_NOT_OK(CreateDirectories(log_dir));
  auto writer = std::unique_ptr<TensorBoardWriter>(new TensorBoardWriter());
  const auto seconds = static_cast<int64_t>(WallTime());
  writer->path_ = fmt::format("{}/events.out.tfevents.{}.{}.{}.draftforge", log_dir, seconds, HostName(), getpid());
  writer->file_ = std::fopen(writer->path_.c_str(), "wb");
  if (writer->file_ == nullptr) {
    return Status::IOError("{}: cannot create the TensorBoard event file: {}; pass a writable --log-dir",
                           writer->path_, std::strerror(errno));
  }
  tensorboard::Event event;
  event.set_wall_time(WallTime());
  event.set_file_version(kFileVersion);
  DF_RETURN_NOT_OK(writer->WriteRecord(event.SerializeAsString()));
  return writer;
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

Status TensorBoardWriter::WriteRecord(const std::string& payload) {
  std::string record;
  record.reserve(payload.size() + 16);
  AppendLittleEndian(record, payload.size(), 8);
  AppendLittleEndian(record, MaskedCrc32c(Bytes(record)), 4);
  record += payload;
  AppendLittleEndian(record, MaskedCrc32c(Bytes(payload)), 4);
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size() || std::fflush(file_) != 0) {
    return Status::IOError("{}: writing a TensorBoard record failed: {}", path_, std::strerror(errno));
  }
  return Status::OK();
}

Status TensorBoardWriter::AddScalars(int64_t step, const std::vector<std::pair<std::string, double>>& scalars) {
  tensorboard::Event event;
  event.set_wall_time(WallTime());
  event.set_step(step);
  tensorboard::Summary* summary = event.mutable_summary();
  for (const auto& [tag, value] : scalars) {
    tensorboard::SummaryValue* entry = summary->add_value();
    entry->set_tag(tag);
    entry->set_simple_value(static_cast<float>(value));
  }
  return WriteRecord(event.SerializeAsString());
}

Result<std::vector<ScalarEvent>> ReadTensorBoardScalars(const std::string& path) {
  DF_ASSIGN_OR_RAISE(std::string text, ReadFileToString(path));
  const auto* data = reinterpret_cast<const uint8_t*>(text.data());
  std::vector<ScalarEvent> scalars;
  size_t offset = 0;
  while (offset + 12 <= text.size()) {
    const uint64_t length = ReadLittleEndian(data + offset, 8);
    const auto length_crc = static_cast<uint32_t>(ReadLittleEndian(data + offset + 8, 4));
    if (length_crc != MaskedCrc32c({data + offset, 8})) {
      return Status::Corrupt("{}: the record at byte {} has a wrong length checksum", path, offset);
    }
    if (offset + 12 + length + 4 > text.size()) break;  // cut short by a killed writer
    std::span<const uint8_t> payload(data + offset + 12, length);
    const auto payload_crc = static_cast<uint32_t>(ReadLittleEndian(data + offset + 12 + length, 4));
    if (payload_crc != MaskedCrc32c(payload)) {
      return Status::Corrupt("{}: the record at byte {} has a wrong data checksum", path, offset);
    }
    tensorboard::Event event;
    if (!event.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
      return Status::Corrupt("{}: the record at byte {} is not an Event message", path, offset);
    }
    if (offset == 0 && event.file_version() != kFileVersion) {
      return Status::Corrupt("{}: the first record has file_version '{}', expected '{}'", path,
                             event.file_version(), kFileVersion);
    }
    for (const auto& value : event.summary().value()) {
      scalars.push_back({event.wall_time(), event.step(), value.tag(), value.simple_value()});
    }
    offset += 12 + length + 4;
  }
  return scalars;
}

}  // namespace draftforge::train
