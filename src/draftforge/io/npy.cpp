#include "draftforge/io/npy.h"

#include <fmt/ranges.h>

#include <cctype>
#include <charconv>
#include <cstring>
#include <map>

#include "draftforge/util/fs.h"

namespace draftforge::io {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
constexpr size_t kArrayAlign = 64;
// numpy.lib.format.GROWTH_AXIS_MAX_DIGITS (numpy 1.24).
constexpr size_t kGrowthAxisMaxDigits = 21;

// Item size in bytes of the supported descriptors, keyed without byte order.
int64_t ItemSize(const std::string& descr) {
  static const std::map<std::string, int64_t> kSizes = {
      {"b1", 1}, {"u1", 1}, {"i1", 1}, {"i2", 2}, {"u2", 2}, {"f2", 2}, {"i4", 4},
      {"u4", 4}, {"f4", 4}, {"i8", 8}, {"u8", 8}, {"f8", 8}};
  if (descr.size() != 3 || (descr[0] != '<' && descr[0] != '|' && descr[0] != '=')) return 0;
  auto it = kSizes.find(descr.substr(1));
  return it == kSizes.end() ? 0 : it->second;
}

// Parser for the header dict literal; only the forms numpy writes.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& path) : text_(text), path_(path) {}

  Status Parse(NpyArray* array) {
    bool have_descr = false, have_order = false, have_shape = false;
    DF_RETURN_NOT_OK(Expect('{'));
    while (true) {
      SkipSpaces();
      if (Peek() == '}') break;
      DF_ASSIGN_OR_RAISE(std::string key, ParseQuoted());
      DF_RETURN_NOT_OK(Expect(':'));
      SkipSpaces();
      if (key == "descr") {
        DF_ASSIGN_OR_RAISE(array->descr, ParseQuoted());
        have_descr = true;
      } else if (key == "fortran_order") {
        if (text_.substr(pos_, 4) == "True") {
          array->fortran_order = true;
          pos_ += 4;
        } else if (text_.substr(pos_, 5) == "False") {
          array->fortran_order = false;
          pos_ += 5;
        } else {
          return Error("fortran_order must be True or False");
        }
        have_order = true;
      } else if (key == "shape") {
        DF_RETURN_NOT_OK(ParseShape(&array->shape));
        have_shape = true;
      } else {
        return Error(fmt::format("unknown key '{}'", key));
      }
      SkipSpaces();
      if (Peek() == ',') ++pos_;
    }
    if (!have_descr || !have_order || !have_shape) {
      return Error("the header needs 'descr', 'fortran_order' and 'shape'");
    }
    return Status::OK();
  }

 private:
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void SkipSpaces() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  Status Error(const std::string& problem) const {
    return Status::Corrupt("{}: invalid .npy header at character {}: {} (header: {})", path_,
                           pos_, problem, text_);
  }
  Status Expect(char c) {
    SkipSpaces();
    if (Peek() != c) return Error(fmt::format("expected '{}'", c));
    ++pos_;
    return Status::OK();
  }
  Result<std::string> ParseQuoted() {
    SkipSpaces();
    const char quote = Peek();
    if (quote != '\'' && quote != '"') return Error("expected a quoted string");
    size_t end = text_.find(quote, pos_ + 1);
    if (end == std::string_view::npos) return Error("unterminated string");
    std::string value(text_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return value;
  }
  Status ParseShape(std::vector<int64_t>* shape) {
    DF_RETURN_NOT_OK(Expect('('));
    while (true) {
      SkipSpaces();
      if (Peek() == ')') {
        ++pos_;
        return Status::OK();
      }
      int64_t dim = 0;
      auto [ptr, error] = std::from_chars(text_.data() + pos_, text_.data() + text_.size(), dim);
      if (error != std::errc() || dim < 0) return Error("shape entries must be integers >= 0");
      pos_ = ptr - text_.data();
      shape->push_back(dim);
      SkipSpaces();
      if (Peek() == 'L') ++pos_;  // Python 2 long suffix
      SkipSpaces();
      if (Peek() == ',') ++pos_;
    }
  }

  std::string_view text_;
  const std::string& path_;
  size_t pos_ = 0;
};

}  // namespace

int64_t NpyArray::num_elements() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

Result<NpyArray> ReadNpy(const std::string& path) {
  DF_ASSIGN_OR_RAISE(std::string bytes, ReadFileToString(path));
  if (bytes.size() < 10 || bytes.compare(0, kMagicSize, kMagic, kMagicSize) != 0) {
    return Status::Corrupt("{}: not a .npy file (missing the \\x93NUMPY magic)", path);
  }
  const auto major = static_cast<uint8_t>(bytes[6]);
  size_t header_length = 0;
  size_t header_start = 0;
  if (major == 1) {
    header_length = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return Status::Corrupt("{}: truncated .npy preamble", path);
    uint32_t length = 0;
    std::memcpy(&length, bytes.data() + 8, 4);
    header_length = length;
    header_start = 12;
  } else {
    return Status::Unimplemented("{}: .npy format version {}.{}; versions 1.0 to 3.0 are "
                                 "supported",
                                 path, major, static_cast<uint8_t>(bytes[7]));
  }

  if (bytes.size() - header_start < header_length) {
    return Status::Corrupt("{}: the .npy header ({} bytes) runs past the end of the file", path,
                           header_length);
  }
  NpyArray array;
  std::string_view header(bytes.data() + header_start, header_length);
  DF_RETURN_NOT_OK(HeaderParser(header, path).Parse(&array));
  if (array.fortran_order && array.shape.size() > 1) {
    return Status::Unimplemented("{}: Fortran-order arrays are not supported; save with "
                                 "np.ascontiguousarray",
                                 path);
  }

  const int64_t item_size = ItemSize(array.descr);
  if (item_size == 0) {
    return Status::Unimplemented("{}: dtype descr '{}' is not supported (little-endian bool, "
                                 "integer and float types are)",
                                 path, array.descr);
  }
  const size_t data_start = header_start + header_length;
  const int64_t expected = array.num_elements() * item_size;
  if (static_cast<int64_t>(bytes.size() - data_start) != expected) {
    return Status::Corrupt("{}: shape {} of '{}' needs {} data bytes but the file has {}", path,
                           fmt::format("{}", fmt::join(array.shape, ",")), array.descr, expected,
                           bytes.size() - data_start);
  }
  array.data = bytes.substr(data_start);
  return array;
}

std::string NpyHeader(const std::string& descr, const std::vector<int64_t>& shape) {
  std::string shape_text = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    shape_text += std::to_string(shape[i]);
    shape_text += shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : "");
  }
  shape_text += ")";
  std::string header =
      fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", descr, shape_text);
  if (!shape.empty()) header.append(kGrowthAxisMaxDigits - std::to_string(shape.back()).size(), ' ');
  // 6 magic + 2 version + 2 length bytes, then header + padding + '\n'.
  const size_t unpadded = kMagicSize + 2 + 2 + header.size() + 1;
  header.append((kArrayAlign - unpadded % kArrayAlign) % kArrayAlign, ' ');
  header += '\n';
  std::string preamble(kMagic, kMagicSize);
  preamble += '\x01';
  preamble += '\x00';
  preamble += static_cast<char>(header.size() & 0xff);
  preamble += static_cast<char>((header.size() >> 8) & 0xff);
  return preamble + header;
}

Status WriteNpy(const std::string& path, const NpyArray& array) {
  const int64_t item_size = ItemSize(array.descr);
  if (item_size == 0 || static_cast<int64_t>(array.data.size()) != array.num_elements() * item_size) {
    return Status::Invalid("{}: cannot write '{}' data of {} bytes with shape [{}]", path,
                           array.descr, array.data.size(), fmt::join(array.shape, ", "));
  }
  return WriteFileAtomic(path, NpyHeader(array.descr, array.shape) + array.data);
}

Result<std::vector<int64_t>> ReadNpyInt64Vector(const std::string& path) {
  DF_ASSIGN_OR_RAISE(NpyArray array, ReadNpy(path));
  if (array.shape.size() != 1) {
    return Status::Invalid("{}: expected a 1-D array, got {} dimensions", path, array.shape.size());
  }
  std::vector<int64_t> values(array.shape[0]);
  if (array.descr == "<i8") {
    std::memcpy(values.data(), array.data.data(), array.data.size());
  } else if (array.descr == "<i4") {
    for (size_t i = 0; i < values.size(); ++i) {
      int32_t value = 0;
      std::memcpy(&value, array.data.data() + 4 * i, 4);
      values[i] = value;
    }
  } else {
    return Status::Invalid("{}: dtype '{}'; expected int64 ('<i8') or int32 ('<i4')", path,
                           array.descr);
  }
  return values;
}

Result<std::vector<uint8_t>> ReadNpyBoolVector(const std::string& path) {
  DF_ASSIGN_OR_RAISE(NpyArray array, ReadNpy(path));
  if (array.shape.size() != 1) {
    return Status::Invalid("{}: expected a 1-D array, got {} dimensions", path, array.shape.size());
  }
  if (array.descr != "|b1" && array.descr != "|u1") {
    return Status::Invalid("{}: dtype '{}'; expected bool ('|b1') or uint8 ('|u1')", path,
                           array.descr);
  }
  std::vector<uint8_t> values(array.data.begin(), array.data.end());
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i] > 1) {
      return Status::Invalid("{}: element {} is {}; a mask holds only 0 and 1", path, i,
                             values[i]);
    }
  }
  return values;
}

}  // namespace draftforge::io
