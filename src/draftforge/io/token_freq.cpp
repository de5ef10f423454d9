#include "draftforge/io/token_freq.h"

#include <array>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <limits>
#include <vector>

#include "draftforge/util/bytes.h"
#include "draftforge/util/fs.h"

namespace draftforge::io {
namespace {

constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr uint32_t kEndOfCentralDirSignature = 0x06054b50;
constexpr uint32_t kZip64EndSignature = 0x06064b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr size_t kEndOfCentralDirSize = 22;
constexpr size_t kMaxCommentSize = 65535;

// CPython's pickler writes SETITEMS batches of this many items.
constexpr size_t kPickleBatchSize = 1000;


template <typename T>
void Store(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

// ---------------------------------------------------------------------------
// Pickle

void AppendPickleInt(std::string& out, int64_t value) {
  if (value >= 0 && value <= 0xff) {
    out += '\x4b';  // BININT1
    out += static_cast<char>(value);
  } else if (value >= 0 && value <= 0xffff) {
    out += '\x4d';  // BININT2
    Store<uint16_t>(out, static_cast<uint16_t>(value));
  } else if (value >= std::numeric_limits<int32_t>::min() &&
             value <= std::numeric_limits<int32_t>::max()) {
    out += '\x4a';  // BININT
    Store<int32_t>(out, static_cast<int32_t>(value));
  } else {
    // LONG1: the shortest little-endian two's complement form, as
    // pickle.encode_long builds it.
    std::string bytes;
    uint64_t bits = static_cast<uint64_t>(value);
    for (int i = 0; i < 8; ++i) bytes += static_cast<char>((bits >> (8 * i)) & 0xff);
    while (bytes.size() > 1) {
      auto last = static_cast<uint8_t>(bytes.back());
      auto before = static_cast<uint8_t>(bytes[bytes.size() - 2]);
      bool redundant = (value >= 0 && last == 0x00 && (before & 0x80) == 0) ||
                       (value < 0 && last == 0xff && (before & 0x80) != 0);
      if (!redundant) break;
      bytes.pop_back();
    }
    out += '\x8a';
    out += static_cast<char>(bytes.size());
    out += bytes;
  }
}

class PickleParser {
 public:
  PickleParser(std::string_view data, const std::string& source) : data_(data), source_(source) {}

  Result<std::map<int64_t, int64_t>> Parse() {
    std::map<int64_t, int64_t> dict;
    bool have_dict = false;
    std::vector<int64_t> stack;          // integers pushed since the last MARK
    std::vector<size_t> marks;           // stack sizes at each MARK
    while (pos_ < data_.size()) {
      const size_t opcode_pos = pos_;
      const auto opcode = static_cast<uint8_t>(data_[pos_++]);
      switch (opcode) {
        case 0x80: {  // PROTO
          DF_ASSIGN_OR_RAISE(uint8_t protocol, Take<uint8_t>());
          if (protocol < 2 || protocol > 5) {
            return Error(opcode_pos, fmt::format("pickle protocol {} (expected 2 to 5)", protocol));
          }
          break;
        }
        case 0x95: {  // FRAME: the frame length is informational here
          DF_ASSIGN_OR_RAISE(uint64_t ignored, Take<uint64_t>());
          (void)ignored;
          break;
        }
        case 0x7d:  // EMPTY_DICT
          if (have_dict) return Error(opcode_pos, "a second dict (nested containers)");
          have_dict = true;
          break;
        case 0x71: {  // BINPUT
          DF_ASSIGN_OR_RAISE(uint8_t ignored, Take<uint8_t>());
          (void)ignored;
          break;
        }
        case 0x72: {  // LONG_BINPUT
          DF_ASSIGN_OR_RAISE(uint32_t ignored, Take<uint32_t>());
          (void)ignored;
          break;
        }
        case 0x94:  // MEMOIZE
          break;
        case 0x28:  // MARK
          if (!have_dict) return Error(opcode_pos, "MARK before the dict");
          marks.push_back(stack.size());
          break;
        case 0x75: {  // SETITEMS
          if (marks.empty()) return Error(opcode_pos, "SETITEMS without MARK");
          const size_t mark = marks.back();
          marks.pop_back();
          if ((stack.size() - mark) % 2 != 0) {
            return Error(opcode_pos, "SETITEMS with an odd number of values");
          }
          for (size_t i = mark; i < stack.size(); i += 2) {
            DF_RETURN_NOT_OK(Insert(dict, stack[i], stack[i + 1], opcode_pos));
          }
          stack.resize(mark);
          break;
        }
        case 0x73: {  // SETITEM
          const size_t floor = marks.empty() ? 0 : marks.back();
          if (!have_dict || stack.size() < floor + 2) {
            return Error(opcode_pos, "SETITEM without a key and a value");
          }
          DF_RETURN_NOT_OK(Insert(dict, stack[stack.size() - 2], stack.back(), opcode_pos));
          stack.resize(stack.size() - 2);
          break;
        }
        case 0x4b: {  // BININT1
          DF_ASSIGN_OR_RAISE(uint8_t value, Take<uint8_t>());
          stack.push_back(value);
          break;
        }
        case 0x4d: {  // BININT2
          DF_ASSIGN_OR_RAISE(uint16_t value, Take<uint16_t>());
          stack.push_back(value);
          break;
        }
        case 0x4a: {  // BININT
          DF_ASSIGN_OR_RAISE(int32_t value, Take<int32_t>());
          stack.push_back(value);
          break;
        }
        case 0x8a: {  // LONG1
          DF_ASSIGN_OR_RAISE(uint8_t length, Take<uint8_t>());
          DF_ASSIGN_OR_RAISE(int64_t value, TakeLong(length, opcode_pos));
          stack.push_back(value);
          break;
        }
        case 0x8b: {  // LONG4
          DF_ASSIGN_OR_RAISE(uint32_t length, Take<uint32_t>());
          DF_ASSIGN_OR_RAISE(int64_t value, TakeLong(length, opcode_pos));
          stack.push_back(value);
          break;
        }
        case 0x49:    // INT: decimal text, newline
        case 0x4c: {  // LONG: decimal text, optional 'L', newline
          DF_ASSIGN_OR_RAISE(int64_t value, TakeDecimalLine(opcode == 0x4c, opcode_pos));
          stack.push_back(value);
          break;
        }
        case 0x2e:  // STOP
          if (!have_dict) return Error(opcode_pos, "STOP before any dict");
          if (!stack.empty() || !marks.empty()) {
            return Error(opcode_pos, "STOP with values left on the stack");
          }
          return dict;
        default:
          return Error(opcode_pos,
                       fmt::format("opcode 0x{:02x}, which a dict of ints never contains; the "
                                   "file holds some other Python object",
                                   opcode));
      }
    }
    return Status::Corrupt("{}: the pickle ends after {} bytes without STOP", source_,
                           data_.size());
  }

 private:
  Status Error(size_t pos, const std::string& problem) const {
    return Status::Invalid("{}: data.pkl byte {}: {}; expected a pickled dict[int, int]",
                           source_, pos, problem);
  }

  template <typename T>
  Result<T> Take() {
    if (data_.size() - pos_ < sizeof(T)) {
      return Status::Corrupt("{}: the pickle is truncated at byte {}", source_, pos_);
    }
    T value = LoadLittleEndian<T>(reinterpret_cast<const uint8_t*>(data_.data()) + pos_);
    pos_ += sizeof(T);
    return value;
  }

  Result<int64_t> TakeLong(uint64_t length, size_t opcode_pos) {
    if (length > 8) {
      return Error(opcode_pos, fmt::format("a {}-byte integer (at most 8 bytes fit int64)", length));
    }
    if (data_.size() - pos_ < length) {
      return Status::Corrupt("{}: the pickle is truncated at byte {}", source_, pos_);
    }
    uint64_t bits = 0;
    for (uint64_t i = 0; i < length; ++i) {
      bits |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
    }
    if (length > 0 && length < 8 && (static_cast<uint8_t>(data_[pos_ + length - 1]) & 0x80)) {
      bits |= ~uint64_t{0} << (8 * length);  // sign-extend
    }
    pos_ += length;
    return static_cast<int64_t>(bits);
  }

  Result<int64_t> TakeDecimalLine(bool long_form, size_t opcode_pos) {
    size_t end = data_.find('\n', pos_);
    if (end == std::string_view::npos) return Error(opcode_pos, "INT/LONG text without newline");
    std::string_view text = data_.substr(pos_, end - pos_);
    pos_ = end + 1;
    if (long_form && !text.empty() && text.back() == 'L') text.remove_suffix(1);
    int64_t value = 0;
    auto [ptr, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || ptr != text.data() + text.size()) {
      return Error(opcode_pos, fmt::format("integer text '{}'", text));
    }
    return value;
  }

  Status Insert(std::map<int64_t, int64_t>& dict, int64_t key, int64_t value, size_t pos) const {
    if (key < 0) return Error(pos, fmt::format("negative token id {}", key));
    if (value < 1) return Error(pos, fmt::format("count {} for token id {} (must be >= 1)", value, key));
    dict[key] = value;
    return Status::OK();
  }

  std::string_view data_;
  const std::string& source_;
  size_t pos_ = 0;
};

// ---------------------------------------------------------------------------
// ZIP

struct ZipEntry {
  std::string name;
  uint16_t flags = 0;
  uint16_t method = 0;
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  uint64_t local_header_offset = 0;
};

Result<std::vector<ZipEntry>> ReadCentralDirectory(const uint8_t* data, size_t size,
                                                   const std::string& path) {
  if (size < kEndOfCentralDirSize) {
    return Status::Corrupt("{}: {} bytes is too short for a ZIP archive", path, size);
  }
  size_t eocd = std::string::npos;
  const size_t lowest = size > kEndOfCentralDirSize + kMaxCommentSize
                            ? size - kEndOfCentralDirSize - kMaxCommentSize
                            : 0;
  for (size_t at = size - kEndOfCentralDirSize + 1; at-- > lowest;) {
    if (LoadLittleEndian<uint32_t>(data + at) == kEndOfCentralDirSignature) {
      eocd = at;
      break;
    }
  }
  if (eocd == std::string::npos) {
    return Status::Corrupt("{}: no ZIP end-of-central-directory record; the file is not a "
                           "torch.save archive (or is truncated)",
                           path);
  }
  uint64_t entry_count = LoadLittleEndian<uint16_t>(data + eocd + 10);
  uint64_t directory_size = LoadLittleEndian<uint32_t>(data + eocd + 12);
  uint64_t directory_offset = LoadLittleEndian<uint32_t>(data + eocd + 16);
  if (entry_count == 0xffff || directory_size == 0xffffffff || directory_offset == 0xffffffff) {
    // ZIP64: the locator (20 bytes) sits right before the classic record.
    if (eocd < 20 || LoadLittleEndian<uint32_t>(data + eocd - 20) != kZip64LocatorSignature) {
      return Status::Corrupt("{}: the end record holds ZIP64 escape values but no ZIP64 locator "
                             "precedes it",
                             path);
    }
    const uint64_t zip64_end = LoadLittleEndian<uint64_t>(data + eocd - 20 + 8);
    if (zip64_end > size || size - zip64_end < 56 ||
        LoadLittleEndian<uint32_t>(data + zip64_end) != kZip64EndSignature) {
      return Status::Corrupt("{}: the ZIP64 end record at byte {} is missing or damaged", path,
                             zip64_end);
    }
    entry_count = LoadLittleEndian<uint64_t>(data + zip64_end + 32);
    directory_size = LoadLittleEndian<uint64_t>(data + zip64_end + 40);
    directory_offset = LoadLittleEndian<uint64_t>(data + zip64_end + 48);
  }
  if (directory_offset > size || directory_size > size - directory_offset) {
    return Status::Corrupt("{}: the central directory (offset {}, {} bytes) lies outside the file",
                           path, directory_offset, directory_size);
  }

  std::vector<ZipEntry> entries;
  size_t at = directory_offset;
  const size_t end = directory_offset + directory_size;
  for (uint64_t i = 0; i < entry_count; ++i) {
    if (end - at < 46 || LoadLittleEndian<uint32_t>(data + at) != kCentralHeaderSignature) {
      return Status::Corrupt("{}: central directory entry {} at byte {} is damaged", path, i, at);
    }
    ZipEntry entry;
    entry.flags = LoadLittleEndian<uint16_t>(data + at + 8);
    entry.method = LoadLittleEndian<uint16_t>(data + at + 10);
    entry.crc32 = LoadLittleEndian<uint32_t>(data + at + 16);
    entry.compressed_size = LoadLittleEndian<uint32_t>(data + at + 20);
    entry.uncompressed_size = LoadLittleEndian<uint32_t>(data + at + 24);
    const uint16_t name_length = LoadLittleEndian<uint16_t>(data + at + 28);
    const uint16_t extra_length = LoadLittleEndian<uint16_t>(data + at + 30);
    const uint16_t comment_length = LoadLittleEndian<uint16_t>(data + at + 32);
    entry.local_header_offset = LoadLittleEndian<uint32_t>(data + at + 42);
    if (end - at - 46 < size_t{name_length} + extra_length + comment_length) {
      return Status::Corrupt("{}: central directory entry {} overruns the directory", path, i);
    }
    entry.name.assign(reinterpret_cast<const char*>(data + at + 46), name_length);

    // ZIP64 extended information: the 64-bit values of the fields that hold
    // 0xFFFFFFFF, in the order uncompressed size, compressed size, offset.
    const uint8_t* extra = data + at + 46 + name_length;
    for (size_t e = 0; e + 4 <= extra_length;) {
      const uint16_t id = LoadLittleEndian<uint16_t>(extra + e);
      const uint16_t length = LoadLittleEndian<uint16_t>(extra + e + 2);
      if (e + 4 + length > extra_length) break;
      if (id == 0x0001) {
        size_t field = e + 4;
        auto take = [&](uint64_t& target) {
          if (target == 0xffffffff && field + 8 <= e + 4 + length) {
            target = LoadLittleEndian<uint64_t>(extra + field);
            field += 8;
          }
        };
        take(entry.uncompressed_size);
        take(entry.compressed_size);
        take(entry.local_header_offset);
      }
      e += 4 + length;
    }
    at += 46 + name_length + extra_length + comment_length;
    entries.push_back(std::move(entry));
  }
  return entries;
}

Result<std::string_view> EntryData(const uint8_t* data, size_t size, const ZipEntry& entry,
                                   const std::string& path) {
  const uint64_t header = entry.local_header_offset;
  if (header > size || size - header < 30 ||
      LoadLittleEndian<uint32_t>(data + header) != kLocalHeaderSignature) {
    return Status::Corrupt("{}: the local header of '{}' at byte {} is missing", path, entry.name,
                           header);
  }
  // Only the name and extra lengths come from the local header: torch.save's
  // writer leaves CRC and sizes zero there (data descriptor follows).
  const uint64_t start =
      header + 30 + LoadLittleEndian<uint16_t>(data + header + 26) + LoadLittleEndian<uint16_t>(data + header + 28);
  if (start > size || entry.compressed_size > size - start) {
    return Status::Corrupt("{}: the data of '{}' ({} bytes at byte {}) runs past the end of the "
                           "file",
                           path, entry.name, entry.compressed_size, start);
  }
  if (entry.method != 0) {
    // NOTE: deflated entries would need zlib, which this target does not link;
    // torch.save never compresses, so only hand-made archives hit this.
    return Status::Unimplemented("{}: entry '{}' uses compression method {}; only stored "
                                 "(uncompressed) entries are supported, as torch.save writes them",
                                 path, entry.name, entry.method);
  }
  std::string_view bytes(reinterpret_cast<const char*>(data + start), entry.compressed_size);
  if (Crc32(bytes) != entry.crc32) {
    return Status::Corrupt("{}: CRC-32 mismatch in entry '{}' (stored {:08x}, computed {:08x}); "
                           "the file is damaged",
                           path, entry.name, entry.crc32, Crc32(bytes));
  }
  return bytes;
}

}  // namespace

uint32_t Crc32(std::string_view bytes) {
  static const std::array<uint32_t, 256> kTable = [] {
    std::array<uint32_t, 256> table{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    return table;
  }();
  uint32_t crc = 0xffffffffu;
  for (char ch : bytes) crc = kTable[(crc ^ static_cast<uint8_t>(ch)) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

std::string PickleIntDict(const std::map<int64_t, int64_t>& dict) {
  std::string out = "\x80\x02\x7d\x71\x00";  // PROTO 2, EMPTY_DICT, BINPUT 0
  out.resize(5);                              // the literal contains a NUL
  if (dict.size() == 1) {
    AppendPickleInt(out, dict.begin()->first);
    AppendPickleInt(out, dict.begin()->second);
    out += '\x73';  // SETITEM
  } else if (dict.size() >= 2) {
    // CPython's batch_setitems: full batches of 1000, and a final empty
    // MARK/SETITEMS when the count is an exact multiple of 1000.
    auto it = dict.begin();
    size_t remaining = dict.size();
    while (true) {
      const size_t batch = std::min(remaining, kPickleBatchSize);
      out += '\x28';  // MARK
      for (size_t i = 0; i < batch; ++i, ++it) {
        AppendPickleInt(out, it->first);
        AppendPickleInt(out, it->second);
      }
      out += '\x75';  // SETITEMS
      remaining -= batch;
      if (batch < kPickleBatchSize) break;
    }
  }
  out += '\x2e';  // STOP
  return out;
}

Result<std::map<int64_t, int64_t>> UnpickleIntDict(std::string_view pickle,
                                                   const std::string& source) {
  return PickleParser(pickle, source).Parse();
}

std::string BuildStoredZip(const std::vector<std::pair<std::string, std::string>>& entries) {
  constexpr uint16_t kVersion = 20;
  constexpr uint16_t kDosDate = (0 << 9) | (1 << 5) | 1;  // 1980-01-01
  std::string out;
  std::string directory;
  for (const auto& [name, bytes] : entries) {
    const uint32_t crc = Crc32(bytes);
    const auto offset = static_cast<uint32_t>(out.size());
    Store<uint32_t>(out, kLocalHeaderSignature);
    Store<uint16_t>(out, kVersion);
    Store<uint16_t>(out, 0);  // flags
    Store<uint16_t>(out, 0);  // method: stored
    Store<uint16_t>(out, 0);  // time
    Store<uint16_t>(out, kDosDate);
    Store<uint32_t>(out, crc);
    Store<uint32_t>(out, static_cast<uint32_t>(bytes.size()));
    Store<uint32_t>(out, static_cast<uint32_t>(bytes.size()));
    Store<uint16_t>(out, static_cast<uint16_t>(name.size()));
    Store<uint16_t>(out, 0);  // extra length
    out += name;
    out += bytes;

    Store<uint32_t>(directory, kCentralHeaderSignature);
    Store<uint16_t>(directory, kVersion);  // made by
    Store<uint16_t>(directory, kVersion);  // needed
    Store<uint16_t>(directory, 0);
    Store<uint16_t>(directory, 0);
    Store<uint16_t>(directory, 0);
    Store<uint16_t>(directory, kDosDate);
    Store<uint32_t>(directory, crc);
    Store<uint32_t>(directory, static_cast<uint32_t>(bytes.size()));
    Store<uint32_t>(directory, static_cast<uint32_t>(bytes.size()));
    Store<uint16_t>(directory, static_cast<uint16_t>(name.size()));
    Store<uint16_t>(directory, 0);  // extra
    Store<uint16_t>(directory, 0);  // comment
    Store<uint16_t>(directory, 0);  // disk
    Store<uint16_t>(directory, 0);  // internal attributes
    Store<uint32_t>(directory, 0);  // external attributes
    Store<uint32_t>(directory, offset);
    directory += name;
  }
  const auto directory_offset = static_cast<uint32_t>(out.size());
  out += directory;
  Store<uint32_t>(out, kEndOfCentralDirSignature);
  Store<uint16_t>(out, 0);
  Store<uint16_t>(out, 0);
  Store<uint16_t>(out, static_cast<uint16_t>(entries.size()));
  Store<uint16_t>(out, static_cast<uint16_t>(entries.size()));
  Store<uint32_t>(out, static_cast<uint32_t>(directory.size()));
  Store<uint32_t>(out, directory_offset);
  Store<uint16_t>(out, 0);  // comment length
  return out;
}

Status WriteTokenFreq(const std::string& path, const std::map<int64_t, int64_t>& token_freq) {
  for (const auto& [id, count] : token_freq) {
    if (id < 0 || count < 1) {
      return Status::Invalid("token_freq entry {} -> {}: ids must be >= 0 and counts >= 1", id,
                             count);
    }
  }
  // torch.save names the archive folder after the file stem.
  const std::string prefix = std::filesystem::path(path).stem().string();
  std::string archive = BuildStoredZip({{prefix + "/data.pkl", PickleIntDict(token_freq)},
                                        {prefix + "/byteorder", "little"},
                                        {prefix + "/version", "3\n"}});
  return WriteFileAtomic(path, archive);
}

Result<std::map<int64_t, int64_t>> ReadTokenFreq(const std::string& path) {
  DF_ASSIGN_OR_RAISE(std::shared_ptr<MappedFile> file, MappedFile::Open(path));
  const uint8_t* data = file->data();
  const size_t size = file->size();
  if (size < 4 || LoadLittleEndian<uint32_t>(data) != kLocalHeaderSignature) {
    return Status::Invalid("{}: not a ZIP archive (torch.save files start with 'PK\\x03\\x04'); "
                           "legacy pre-1.6 torch.save files are not supported",
                           path);
  }
  DF_ASSIGN_OR_RAISE(std::vector<ZipEntry> entries, ReadCentralDirectory(data, size, path));
  if (entries.empty()) return Status::Corrupt("{}: the ZIP archive has no entries", path);

  // PyTorch takes the prefix from the first entry and requires it everywhere.
  const std::string prefix = entries.front().name.substr(0, entries.front().name.find('/'));
  const ZipEntry* pickle = nullptr;
  for (const auto& entry : entries) {
    if (entry.name.compare(0, prefix.size() + 1, prefix + "/") != 0) {
      return Status::Corrupt("{}: entry '{}' is outside the archive folder '{}/'", path,
                             entry.name, prefix);
    }
    const std::string relative = entry.name.substr(prefix.size() + 1);
    if (relative == "data.pkl") {
      pickle = &entry;
    } else if (relative == "byteorder") {
      DF_ASSIGN_OR_RAISE(std::string_view order, EntryData(data, size, entry, path));
      if (order != "little") {
        return Status::Unimplemented("{}: byteorder is '{}'; only little-endian files are "
                                     "supported",
                                     path, order);
      }
    } else if (relative == "version" || relative == ".data/version") {
      DF_ASSIGN_OR_RAISE(std::string_view text, EntryData(data, size, entry, path));
      while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
        text.remove_suffix(1);
      }
      int version = 0;
      auto [ptr, error] = std::from_chars(text.data(), text.data() + text.size(), version);
      if (error != std::errc() || ptr != text.data() + text.size() || version < 1 ||
          version > 10) {
        return Status::Unimplemented("{}: serialization version '{}' (expected 1 to 10)", path,
                                     text);
      }
    } else if (relative.rfind("data/", 0) == 0) {
      return Status::Invalid("{}: the archive holds tensor storage '{}'; token_freq.pt must be a "
                             "plain dict of ints",
                             path, entry.name);
    }
  }
  if (pickle == nullptr) {
    return Status::Corrupt("{}: the archive has no '{}/data.pkl' entry", path, prefix);
  }
  DF_ASSIGN_OR_RAISE(std::string_view bytes, EntryData(data, size, *pickle, path));
  return UnpickleIntDict(bytes, path);
}

}  // namespace draftforge::io
