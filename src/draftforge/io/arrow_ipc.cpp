#include "draftforge/io/arrow_ipc.h"

#include <flatbuffers/flatbuffers.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "draftforge/util/bytes.h"
#include "draftforge/util/fs.h"

namespace draftforge::io::arrow {
namespace {

using flatbuffers::Table;
using flatbuffers::Verifier;
using flatbuffers::voffset_t;
using TableVector = flatbuffers::Vector<flatbuffers::Offset<Table>>;

// vtable offset of the field with slot id `slot`; a union takes two slots.
constexpr voffset_t Slot(int slot) { return static_cast<voffset_t>(4 + 2 * slot); }

constexpr uint32_t kContinuation = 0xFFFFFFFFu;
constexpr int16_t kMetadataV4 = 3;
constexpr int16_t kMetadataV5 = 4;
constexpr uint8_t kHeaderSchema = 1;
constexpr uint8_t kHeaderDictionaryBatch = 2;
constexpr uint8_t kHeaderRecordBatch = 3;
constexpr int kMaxTypeDepth = 32;


int64_t Pad8(int64_t n) { return (n + 7) & ~int64_t{7}; }

// ---------------------------------------------------------------------------
// Verification of metadata tables. Every field read later is verified here.

bool VerifyString(Verifier& verifier, const Table* table, int slot) {
  return table->VerifyOffset(verifier, Slot(slot)) &&
         verifier.VerifyString(table->GetPointer<const flatbuffers::String*>(Slot(slot)));
}

bool VerifyStructVector(Verifier& verifier, const Table* table, int slot, size_t struct_size) {
  if (!table->VerifyOffset(verifier, Slot(slot))) return false;
  auto* vec = table->GetPointer<const flatbuffers::Vector<uint8_t>*>(Slot(slot));
  return vec == nullptr ||
         verifier.VerifyVectorOrString(reinterpret_cast<const uint8_t*>(vec), struct_size);
}

template <typename Fn>
bool VerifyTableVector(Verifier& verifier, const Table* table, int slot, Fn&& verify_element) {
  if (!table->VerifyOffset(verifier, Slot(slot))) return false;
  auto* vec = table->GetPointer<const TableVector*>(Slot(slot));
  if (!verifier.VerifyVector(vec)) return false;
  if (vec == nullptr) return true;
  for (flatbuffers::uoffset_t i = 0; i < vec->size(); ++i) {
    if (!verify_element(verifier, vec->Get(i))) return false;
  }
  return true;
}

bool VerifyKeyValue(Verifier& verifier, const Table* table) {
  return table->VerifyTableStart(verifier) && VerifyString(verifier, table, 0) &&
         VerifyString(verifier, table, 1) && verifier.EndTable();
}

bool VerifyIntType(Verifier& verifier, const Table* table) {
  return table->VerifyTableStart(verifier) &&
         table->VerifyField<int32_t>(verifier, Slot(0), sizeof(int32_t)) &&
         table->VerifyField<uint8_t>(verifier, Slot(1), 1) && verifier.EndTable();
}

bool VerifyTypeTable(Verifier& verifier, const Table* table, uint8_t tag) {
  switch (static_cast<TypeTag>(tag)) {
    case TypeTag::kInt:
      return VerifyIntType(verifier, table);
    case TypeTag::kFloatingPoint:
    case TypeTag::kUnion:
      // FloatingPoint.precision and Union.mode are both i16 in slot 0.
      return table->VerifyTableStart(verifier) &&
             table->VerifyField<int16_t>(verifier, Slot(0), sizeof(int16_t)) &&
             verifier.EndTable();
    default:
      // No field of the other type tables is read.
      return table->VerifyTableStart(verifier) && verifier.EndTable();
  }
}

bool VerifyField(Verifier& verifier, const Table* table) {
  if (!table->VerifyTableStart(verifier)) return false;
  if (!VerifyString(verifier, table, 0)) return false;
  if (!table->VerifyField<uint8_t>(verifier, Slot(1), 1)) return false;
  if (!table->VerifyField<uint8_t>(verifier, Slot(2), 1)) return false;
  if (!table->VerifyOffset(verifier, Slot(3))) return false;
  if (auto* type = table->GetPointer<const Table*>(Slot(3));
      type != nullptr && !VerifyTypeTable(verifier, type, table->GetField<uint8_t>(Slot(2), 0))) {
    return false;
  }
  if (!table->VerifyOffset(verifier, Slot(4))) return false;
  if (auto* dictionary = table->GetPointer<const Table*>(Slot(4)); dictionary != nullptr) {
    // DictionaryEncoding: id i64, indexType Int, isOrdered bool, dictionaryKind i16.
    if (!dictionary->VerifyTableStart(verifier) ||
        !dictionary->VerifyField<int64_t>(verifier, Slot(0), sizeof(int64_t)) ||
        !dictionary->VerifyOffset(verifier, Slot(1)) || !verifier.EndTable()) {
      return false;
    }
    auto* index_type = dictionary->GetPointer<const Table*>(Slot(1));
    if (index_type != nullptr && !VerifyIntType(verifier, index_type)) return false;
  }
  if (!VerifyTableVector(verifier, table, 5, VerifyField)) return false;
  if (!VerifyTableVector(verifier, table, 6, VerifyKeyValue)) return false;
  return verifier.EndTable();
}

bool VerifySchema(Verifier& verifier, const Table* table) {
  return table->VerifyTableStart(verifier) &&
         table->VerifyField<int16_t>(verifier, Slot(0), sizeof(int16_t)) &&
         VerifyTableVector(verifier, table, 1, VerifyField) &&
         VerifyTableVector(verifier, table, 2, VerifyKeyValue) &&
         VerifyStructVector(verifier, table, 3, sizeof(int64_t)) && verifier.EndTable();
}

bool VerifyRecordBatch(Verifier& verifier, const Table* table) {
  if (!table->VerifyTableStart(verifier) ||
      !table->VerifyField<int64_t>(verifier, Slot(0), sizeof(int64_t)) ||
      !VerifyStructVector(verifier, table, 1, 16) || !VerifyStructVector(verifier, table, 2, 16) ||
      !table->VerifyOffset(verifier, Slot(3)) ||
      !VerifyStructVector(verifier, table, 4, sizeof(int64_t))) {
    return false;
  }
  if (auto* compression = table->GetPointer<const Table*>(Slot(3)); compression != nullptr) {
    if (!compression->VerifyTableStart(verifier) ||
        !compression->VerifyField<int8_t>(verifier, Slot(0), 1) || !verifier.EndTable()) {
      return false;
    }
  }
  return verifier.EndTable();
}

bool VerifyMessage(Verifier& verifier, const Table* table) {
  if (!table->VerifyTableStart(verifier) ||
      !table->VerifyField<int16_t>(verifier, Slot(0), sizeof(int16_t)) ||
      !table->VerifyField<uint8_t>(verifier, Slot(1), 1) ||
      !table->VerifyOffset(verifier, Slot(2)) ||
      !table->VerifyField<int64_t>(verifier, Slot(3), sizeof(int64_t)) ||
      !VerifyTableVector(verifier, table, 4, VerifyKeyValue)) {
    return false;
  }
  auto* header = table->GetPointer<const Table*>(Slot(2));
  if (header != nullptr) {
    switch (table->GetField<uint8_t>(Slot(1), 0)) {
      case kHeaderSchema:
        if (!VerifySchema(verifier, header)) return false;
        break;
      case kHeaderRecordBatch:
        if (!VerifyRecordBatch(verifier, header)) return false;
        break;
      default:
        if (!header->VerifyTableStart(verifier) || !verifier.EndTable()) return false;
    }
  }
  return verifier.EndTable();
}

// ---------------------------------------------------------------------------
// Schema parsing (on verified metadata).

std::string StringField(const Table* table, int slot) {
  auto* value = table->GetPointer<const flatbuffers::String*>(Slot(slot));
  return value == nullptr ? std::string() : value->str();
}

std::vector<std::pair<std::string, std::string>> ParseKeyValues(const Table* table, int slot) {
  std::vector<std::pair<std::string, std::string>> result;
  auto* vec = table->GetPointer<const TableVector*>(Slot(slot));
  if (vec == nullptr) return result;
  for (flatbuffers::uoffset_t i = 0; i < vec->size(); ++i) {
    result.emplace_back(StringField(vec->Get(i), 0), StringField(vec->Get(i), 1));
  }
  return result;
}

Result<Field> ParseField(const Table* table, const std::string& source, int depth) {
  if (depth > kMaxTypeDepth) {
    return Status::Corrupt("{}: schema nests types deeper than {} levels", source, kMaxTypeDepth);
  }

  Field field;
  field.name = StringField(table, 0);
  field.nullable = table->GetField<uint8_t>(Slot(1), 0) != 0;

  uint8_t tag = table->GetField<uint8_t>(Slot(2), 0);
  if (tag == 0 || tag > static_cast<uint8_t>(TypeTag::kLargeListView)) {
    return Status::Corrupt("{}: field '{}' has unknown type tag {}", source, field.name, tag);
  }
  field.type = static_cast<TypeTag>(tag);
  auto* type = table->GetPointer<const Table*>(Slot(3));
  if (type == nullptr) {
    return Status::Corrupt("{}: field '{}' has no type table", source, field.name);
  }
  if (field.type == TypeTag::kInt) {
    field.bit_width = type->GetField<int32_t>(Slot(0), 0);
    field.is_signed = type->GetField<uint8_t>(Slot(1), 0) != 0;
    if (field.bit_width != 8 && field.bit_width != 16 && field.bit_width != 32 &&
        field.bit_width != 64) {
      return Status::Corrupt("{}: field '{}' has Int bitWidth {}; expected 8, 16, 32 or 64",
                             source, field.name, field.bit_width);
    }
  } else if (field.type == TypeTag::kFloatingPoint) {
    int16_t precision = type->GetField<int16_t>(Slot(0), 0);
    if (precision < 0 || precision > 2) {
      return Status::Corrupt("{}: field '{}' has FloatingPoint precision {}", source, field.name,
                             precision);
    }
    field.precision = static_cast<Precision>(precision);
  } else if (field.type == TypeTag::kUnion) {
    field.union_mode = type->GetField<int16_t>(Slot(0), 0);
  }

  field.dictionary_encoded = table->GetPointer<const Table*>(Slot(4)) != nullptr;
  if (auto* children = table->GetPointer<const TableVector*>(Slot(5)); children != nullptr) {
    for (flatbuffers::uoffset_t i = 0; i < children->size(); ++i) {
      DF_ASSIGN_OR_RAISE(Field child, ParseField(children->Get(i), source, depth + 1));
      field.children.push_back(std::move(child));
    }
  }
  return field;
}

Result<Schema> ParseSchema(const Table* table, const std::string& source) {
  if (table->GetField<int16_t>(Slot(0), 0) != 0) {
    return Status::Unimplemented(
        "{}: the schema is big-endian; only little-endian Arrow data is supported", source);
  }
  Schema schema;
  if (auto* fields = table->GetPointer<const TableVector*>(Slot(1)); fields != nullptr) {
    for (flatbuffers::uoffset_t i = 0; i < fields->size(); ++i) {
      DF_ASSIGN_OR_RAISE(Field field, ParseField(fields->Get(i), source, 0));
      schema.fields.push_back(std::move(field));
    }
  }
  schema.metadata = ParseKeyValues(table, 2);
  return schema;
}

// ---------------------------------------------------------------------------
// RecordBatch decoding: walks the schema in pre-order, taking FieldNodes and
// Buffers from the batch metadata as each type's layout requires.

class BatchDecoder {
 public:
  BatchDecoder(const Table* batch, const uint8_t* body, int64_t body_size, int16_t version,
               std::string context)
      : body_(body), body_size_(body_size), version_(version), context_(std::move(context)) {
    if (auto* nodes = batch->GetPointer<const flatbuffers::Vector<uint8_t>*>(Slot(1))) {
      nodes_ = nodes->Data();
      num_nodes_ = nodes->size();
    }
    if (auto* buffers = batch->GetPointer<const flatbuffers::Vector<uint8_t>*>(Slot(2))) {
      buffers_ = buffers->Data();
      num_buffers_ = buffers->size();
    }
    if (auto* counts = batch->GetPointer<const flatbuffers::Vector<uint8_t>*>(Slot(4))) {
      variadic_ = counts->Data();
      num_variadic_ = counts->size();
    }
  }

  Status Decode(const Field& field, ArrayData* out, const std::string& path) {
    out->field = &field;
    DF_RETURN_NOT_OK(TakeNode(path, &out->length, &out->null_count));
    if (field.dictionary_encoded) {
      // The batch contains the dictionary indices: validity and an Int buffer.
      return SkipBuffers(2, path);
    }
    switch (field.type) {
      case TypeTag::kInt:
      case TypeTag::kFloatingPoint:
      case TypeTag::kBool:
        return DecodeFixedWidth(field, out, path);
      case TypeTag::kUtf8:
      case TypeTag::kBinary:
      case TypeTag::kLargeUtf8:
      case TypeTag::kLargeBinary:
        return DecodeBinary(field, out, path);
      case TypeTag::kList:
      case TypeTag::kLargeList:
        return DecodeList(field, out, path);
      default:
        return SkipArray(field, out, path);
    }
  }

 private:
  Status TakeNode(const std::string& path, int64_t* length, int64_t* null_count) {
    if (next_node_ >= num_nodes_) {
      return Status::Corrupt("{}: column '{}' needs FieldNode {} but the batch has only {}",
                             context_, path, next_node_, num_nodes_);
    }
    const uint8_t* node = nodes_ + 16 * next_node_++;
    *length = LoadLittleEndian<int64_t>(node);
    *null_count = LoadLittleEndian<int64_t>(node + 8);
    if (*length < 0 || *null_count < 0 || *null_count > *length) {
      return Status::Corrupt("{}: column '{}' has FieldNode length {} and null_count {}",
                             context_, path, *length, *null_count);
    }
    return Status::OK();
  }

  Result<BufferView> TakeBuffer(const std::string& path) {
    if (next_buffer_ >= num_buffers_) {
      return Status::Corrupt("{}: column '{}' needs Buffer {} but the batch has only {}",
                             context_, path, next_buffer_, num_buffers_);
    }
    const uint8_t* entry = buffers_ + 16 * next_buffer_++;
    int64_t offset = LoadLittleEndian<int64_t>(entry);
    int64_t length = LoadLittleEndian<int64_t>(entry + 8);
    if (offset < 0 || length < 0 || offset > body_size_ || length > body_size_ - offset) {
      return Status::Corrupt(
          "{}: column '{}' has Buffer (offset {}, length {}) outside the {}-byte body", context_,
          path, offset, length, body_size_);
    }
    return BufferView{body_ + offset, length};
  }

  Status SkipBuffers(int64_t count, const std::string& path) {
    for (int64_t i = 0; i < count; ++i) {
      DF_ASSIGN_OR_RAISE(BufferView ignored, TakeBuffer(path));
      (void)ignored;
    }
    return Status::OK();
  }

  Status TakeValidity(ArrayData* out, const std::string& path) {
    DF_ASSIGN_OR_RAISE(out->validity, TakeBuffer(path));
    if (out->validity.size == 0) {
      if (out->null_count != 0) {
        return Status::Corrupt("{}: column '{}' has null_count {} but no validity bitmap",
                               context_, path, out->null_count);
      }
      return Status::OK();
    }
    if (out->validity.size < (out->length + 7) / 8) {
      return Status::Corrupt("{}: column '{}' has a {}-byte validity bitmap for {} entries",
                             context_, path, out->validity.size, out->length);
    }
    return Status::OK();
  }

  Status DecodeFixedWidth(const Field& field, ArrayData* out, const std::string& path) {
    DF_RETURN_NOT_OK(TakeValidity(out, path));
    DF_ASSIGN_OR_RAISE(out->values, TakeBuffer(path));
    int64_t needed = 0;
    if (field.type == TypeTag::kBool) {
      needed = (out->length + 7) / 8;
    } else if (field.type == TypeTag::kInt) {
      needed = out->length * (field.bit_width / 8);
    } else {
      static constexpr int64_t kFloatBytes[] = {2, 4, 8};
      needed = out->length * kFloatBytes[static_cast<int>(field.precision)];
    }
    if (out->values.size < needed) {
      return Status::Corrupt("{}: column '{}' ({}) has a {}-byte values buffer for {} entries",
                             context_, path, field.TypeString(), out->values.size, out->length);
    }
    out->decoded = true;
    return Status::OK();
  }

  // Checks offsets[0..length] of a binary or list array: non-negative,
  // non-decreasing and ending at most at `limit`.
  Status CheckOffsets(const ArrayData& array, bool large, int64_t limit, const std::string& path) {
    const int64_t width = large ? 8 : 4;
    if (array.length == 0 && array.offsets.size == 0) return Status::OK();
    if (array.offsets.size < (array.length + 1) * width) {
      return Status::Corrupt("{}: column '{}' has a {}-byte offsets buffer for {} entries",
                             context_, path, array.offsets.size, array.length);
    }
    int64_t previous = 0;
    for (int64_t i = 0; i <= array.length; ++i) {
      const uint8_t* at = array.offsets.data + i * width;
      int64_t value = large ? LoadLittleEndian<int64_t>(at) : LoadLittleEndian<int32_t>(at);
      if (value < previous || value > limit) {
        return Status::Corrupt(
            "{}: column '{}' has offset {} = {} (previous {}, limit {}); offsets must be "
            "non-decreasing and within the child data",
            context_, path, i, value, previous, limit);
      }
      previous = value;
    }
    return Status::OK();
  }

  Status DecodeBinary(const Field& field, ArrayData* out, const std::string& path) {
    DF_RETURN_NOT_OK(TakeValidity(out, path));
    DF_ASSIGN_OR_RAISE(out->offsets, TakeBuffer(path));
    DF_ASSIGN_OR_RAISE(out->values, TakeBuffer(path));
    bool large = field.type == TypeTag::kLargeUtf8 || field.type == TypeTag::kLargeBinary;
    DF_RETURN_NOT_OK(CheckOffsets(*out, large, out->values.size, path));
    out->decoded = true;
    return Status::OK();
  }

  Status DecodeList(const Field& field, ArrayData* out, const std::string& path) {
    if (field.children.size() != 1) {
      return Status::Corrupt("{}: list column '{}' has {} child fields; expected 1", context_,
                             path, field.children.size());
    }
    DF_RETURN_NOT_OK(TakeValidity(out, path));
    DF_ASSIGN_OR_RAISE(out->offsets, TakeBuffer(path));
    out->children.resize(1);
    DF_RETURN_NOT_OK(
        Decode(field.children[0], &out->children[0], path + "." + field.children[0].name));
    DF_RETURN_NOT_OK(CheckOffsets(*out, field.type == TypeTag::kLargeList,
                                  out->children[0].length, path));
    out->decoded = true;
    return Status::OK();
  }

  // Consumes the buffers and child arrays of a type this reader does not
  // decode, following the Arrow columnar layout of each type.
  Status SkipArray(const Field& field, ArrayData* out, const std::string& path) {
    int64_t buffers = 0;
    switch (field.type) {
      case TypeTag::kNull:
      case TypeTag::kRunEndEncoded:
        buffers = 0;
        break;
      case TypeTag::kStruct:
      case TypeTag::kFixedSizeList:
        buffers = 1;
        break;
      case TypeTag::kUnion:
        // V5 unions have no validity bitmap; V4 unions do.
        buffers = (field.union_mode == 1 ? 2 : 1) + (version_ < kMetadataV5 ? 1 : 0);
        break;
      case TypeTag::kList:
      case TypeTag::kLargeList:
      case TypeTag::kMap:
        buffers = 2;
        break;
      case TypeTag::kListView:
      case TypeTag::kLargeListView:
        buffers = 3;
        break;
      case TypeTag::kBinaryView:
      case TypeTag::kUtf8View: {
        if (next_variadic_ >= num_variadic_) {
          return Status::Corrupt(
              "{}: column '{}' is a view type but the batch lists no variadicBufferCounts "
              "entry for it",
              context_, path);
        }
        int64_t variadic = LoadLittleEndian<int64_t>(variadic_ + 8 * next_variadic_++);
        if (variadic < 0) {
          return Status::Corrupt("{}: column '{}' has variadic buffer count {}", context_, path,
                                 variadic);
        }
        buffers = 2 + variadic;
        break;
      }
      default:
        // Decimal, Date, Time, Timestamp, Interval, Duration, FixedSizeBinary
        // and the decoded fixed-width types: validity and values.
        buffers = 2;
        break;
    }
    DF_RETURN_NOT_OK(SkipBuffers(buffers, path));
    out->children.resize(field.children.size());
    for (size_t i = 0; i < field.children.size(); ++i) {
      DF_RETURN_NOT_OK(
          Decode(field.children[i], &out->children[i], path + "." + field.children[i].name));
    }
    return Status::OK();
  }

  const uint8_t* body_;
  int64_t body_size_;
  int16_t version_;
  std::string context_;
  const uint8_t* nodes_ = nullptr;
  const uint8_t* buffers_ = nullptr;
  const uint8_t* variadic_ = nullptr;
  int64_t num_nodes_ = 0;
  int64_t num_buffers_ = 0;
  int64_t num_variadic_ = 0;
  int64_t next_node_ = 0;
  int64_t next_buffer_ = 0;
  int64_t next_variadic_ = 0;
};

float HalfToFloat(uint16_t half) {
  const int sign = (half >> 15) & 1;
  const int exponent = (half >> 10) & 0x1f;
  const int mantissa = half & 0x3ff;
  float value = 0;
  if (exponent == 0) {
    value = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    value = mantissa == 0 ? std::numeric_limits<float>::infinity()
                          : std::numeric_limits<float>::quiet_NaN();
  } else {
    value = std::ldexp(static_cast<float>(mantissa + 1024), exponent - 25);
  }
  return sign ? -value : value;
}

}  // namespace

// ---------------------------------------------------------------------------
// Names and accessors

std::string TypeTagName(TypeTag tag) {
  static constexpr const char* kNames[] = {
      "none",      "null",       "int",        "floating_point", "binary",
      "utf8",      "bool",       "decimal",    "date",           "time",
      "timestamp", "interval",   "list",       "struct",         "union",
      "fixed_size_binary", "fixed_size_list", "map", "duration", "large_binary",
      "large_utf8", "large_list", "run_end_encoded", "binary_view", "utf8_view",
      "list_view", "large_list_view"};
  auto index = static_cast<size_t>(tag);
  return index < std::size(kNames) ? kNames[index] : fmt::format("type_{}", index);
}

std::string Field::TypeString() const {
  std::string type;
  switch (this->type) {
    case TypeTag::kInt:
      type = fmt::format("{}int{}", is_signed ? "" : "u", bit_width);
      break;
    case TypeTag::kFloatingPoint:
      type = precision == Precision::kHalf     ? "halffloat"
             : precision == Precision::kSingle ? "float"
                                               : "double";
      break;
    case TypeTag::kUtf8:
      type = "string";
      break;
    case TypeTag::kLargeUtf8:
      type = "large_string";
      break;
    case TypeTag::kList:
    case TypeTag::kLargeList:
      type = fmt::format("{}list<{}: {}>", this->type == TypeTag::kLargeList ? "large_" : "",
                         children.empty() ? "item" : children[0].name,
                         children.empty() ? "?" : children[0].TypeString());
      break;
    default:
      type = TypeTagName(this->type);
  }
  return dictionary_encoded ? "dictionary<" + type + ">" : type;
}

int Schema::FieldIndex(std::string_view name) const {
  for (size_t i = 0; i < fields.size(); ++i) {
    if (fields[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

const std::string* Schema::FindMetadata(std::string_view key) const {
  for (const auto& [k, v] : metadata) {
    if (k == key) return &v;
  }
  return nullptr;
}

int64_t ArrayData::GetInt(int64_t i) const {
  if (field->type == TypeTag::kBool) return (values.data[i >> 3] >> (i & 7)) & 1;
  const uint8_t* at = values.data + i * (field->bit_width / 8);
  switch (field->bit_width) {
    case 8:
      return field->is_signed ? int64_t{LoadLittleEndian<int8_t>(at)} : int64_t{LoadLittleEndian<uint8_t>(at)};
    case 16:
      return field->is_signed ? int64_t{LoadLittleEndian<int16_t>(at)} : int64_t{LoadLittleEndian<uint16_t>(at)};
    case 32:
      return field->is_signed ? int64_t{LoadLittleEndian<int32_t>(at)} : int64_t{LoadLittleEndian<uint32_t>(at)};
    default:
      return LoadLittleEndian<int64_t>(at);
  }
}

double ArrayData::GetDouble(int64_t i) const {
  if (field->type != TypeTag::kFloatingPoint) {
    if (field->type == TypeTag::kInt && field->bit_width == 64 && !field->is_signed) {
      return static_cast<double>(LoadLittleEndian<uint64_t>(values.data + 8 * i));
    }
    return static_cast<double>(GetInt(i));
  }
  switch (field->precision) {
    case Precision::kHalf:
      return HalfToFloat(LoadLittleEndian<uint16_t>(values.data + 2 * i));
    case Precision::kSingle:
      return LoadLittleEndian<float>(values.data + 4 * i);
    default:
      return LoadLittleEndian<double>(values.data + 8 * i);
  }
}

std::string_view ArrayData::GetString(int64_t i) const {
  auto [begin, end] = GetListRange(i);
  return {reinterpret_cast<const char*>(values.data) + begin, static_cast<size_t>(end - begin)};
}

std::pair<int64_t, int64_t> ArrayData::GetListRange(int64_t i) const {
  bool large = field->type == TypeTag::kLargeList || field->type == TypeTag::kLargeUtf8 ||
               field->type == TypeTag::kLargeBinary;
  if (large) {
    return {LoadLittleEndian<int64_t>(offsets.data + 8 * i), LoadLittleEndian<int64_t>(offsets.data + 8 * (i + 1))};
  }
  return {LoadLittleEndian<int32_t>(offsets.data + 4 * i), LoadLittleEndian<int32_t>(offsets.data + 4 * (i + 1))};
}

int64_t Stream::num_rows() const {
  int64_t rows = 0;
  for (const auto& batch : batches) rows += batch.num_rows;
  return rows;
}

// ---------------------------------------------------------------------------
// Reader

Result<Stream> ReadStream(std::shared_ptr<const void> storage, const uint8_t* data, size_t size,
                          const std::string& source) {
  Stream stream;
  stream.storage = std::move(storage);
  bool have_schema = false;
  size_t pos = 0;
  int message_index = 0;
  std::vector<uint64_t> metadata_copy;  // 8-byte aligned copy for the flatbuffer reads

  while (pos < size) {
    const size_t message_start = pos;
    if (size - pos < 4) {
      return Status::Corrupt("{}: truncated message prefix at byte {} ({} bytes left)", source,
                             pos, size - pos);
    }
    int64_t metadata_size = 0;
    if (LoadLittleEndian<uint32_t>(data + pos) == kContinuation) {
      if (size - pos < 8) {
        return Status::Corrupt("{}: truncated message length at byte {}", source, pos + 4);
      }
      metadata_size = LoadLittleEndian<int32_t>(data + pos + 4);
      pos += 8;
    } else {
      // Legacy (pre-0.15) framing: the length comes first, without the marker.
      metadata_size = LoadLittleEndian<int32_t>(data + pos);
      pos += 4;
    }
    if (metadata_size == 0) break;  // end-of-stream marker
    if (metadata_size < 8 || static_cast<size_t>(metadata_size) > size - pos) {
      return Status::Corrupt(
          "{}: message {} at byte {} declares {} metadata bytes but {} remain in the file",
          source, message_index, message_start, metadata_size, size - pos);
    }

    metadata_copy.assign((metadata_size + 7) / 8, 0);
    auto* metadata = reinterpret_cast<uint8_t*>(metadata_copy.data());
    std::memcpy(metadata, data + pos, metadata_size);
    pos += metadata_size;

    Verifier verifier(metadata, static_cast<size_t>(metadata_size));
    const flatbuffers::uoffset_t root_offset = verifier.VerifyOffset(0);
    const Table* message =
        root_offset == 0 ? nullptr : flatbuffers::GetRoot<Table>(metadata);
    if (message == nullptr || !VerifyMessage(verifier, message)) {
      return Status::Corrupt("{}: message {} at byte {} has invalid flatbuffer metadata", source,
                             message_index, message_start);
    }

    const int16_t version = message->GetField<int16_t>(Slot(0), 0);
    if (version != kMetadataV4 && version != kMetadataV5) {
      return Status::Unimplemented(
          "{}: message {} uses Arrow metadata version V{}; only V4 and V5 are supported", source,
          message_index, version + 1);
    }
    const uint8_t header_type = message->GetField<uint8_t>(Slot(1), 0);
    const Table* header = message->GetPointer<const Table*>(Slot(2));
    const int64_t body_length = message->GetField<int64_t>(Slot(3), 0);
    if (body_length < 0 || static_cast<uint64_t>(body_length) > size - pos) {
      return Status::Corrupt("{}: message {} at byte {} declares a {}-byte body but {} remain",
                             source, message_index, message_start, body_length, size - pos);
    }
    const uint8_t* body = data + pos;
    pos += static_cast<size_t>(body_length);
    if (header == nullptr) {
      return Status::Corrupt("{}: message {} has no header table", source, message_index);
    }

    if (header_type == kHeaderSchema) {
      if (have_schema) {
        return Status::Corrupt("{}: message {} is a second Schema message", source,
                               message_index);
      }
      DF_ASSIGN_OR_RAISE(stream.schema, ParseSchema(header, source));
      stream.metadata_version = version;
      have_schema = true;
    } else if (header_type == kHeaderRecordBatch) {
      if (!have_schema) {
        return Status::Corrupt("{}: RecordBatch before the Schema message", source);
      }
      if (header->GetPointer<const Table*>(Slot(3)) != nullptr) {
        return Status::Unimplemented(
            "{}: record batch {} is compressed (LZ4_FRAME or ZSTD); rewrite the file without "
            "compression",
            source, stream.batches.size());
      }
      RecordBatch batch;
      batch.num_rows = header->GetField<int64_t>(Slot(0), 0);
      if (batch.num_rows < 0) {
        return Status::Corrupt("{}: record batch {} has length {}", source,
                               stream.batches.size(), batch.num_rows);
      }
      BatchDecoder decoder(header, body, body_length, version,
                           fmt::format("{}: record batch {}", source, stream.batches.size()));
      batch.columns.resize(stream.schema.fields.size());
      for (size_t i = 0; i < stream.schema.fields.size(); ++i) {
        const Field& field = stream.schema.fields[i];
        DF_RETURN_NOT_OK(decoder.Decode(field, &batch.columns[i], field.name));
        if (batch.columns[i].length != batch.num_rows) {
          return Status::Corrupt("{}: record batch {} has {} rows but column '{}' has {}", source,
                                 stream.batches.size(), batch.num_rows, field.name,
                                 batch.columns[i].length);
        }
      }
      stream.batches.push_back(std::move(batch));
    } else if (header_type == kHeaderDictionaryBatch) {
      return Status::Unimplemented(
          "{}: the stream contains a DictionaryBatch; dictionary-encoded columns are not "
          "supported, cast them to plain types before saving",
          source);
    } else {
      return Status::Unimplemented("{}: message {} has header type {} (not Schema or RecordBatch)",
                                   source, message_index, header_type);
    }
    ++message_index;
  }
  if (!have_schema) {
    return Status::Corrupt("{}: the Arrow stream contains no Schema message ({} bytes)", source,
                           size);
  }
  return stream;
}

Result<Stream> ReadStreamFile(const std::string& path) {
  DF_ASSIGN_OR_RAISE(std::shared_ptr<MappedFile> file, MappedFile::Open(path));
  const uint8_t* data = file->data();
  size_t size = file->size();
  return ReadStream(std::move(file), data, size, path);
}

// ---------------------------------------------------------------------------
// Writer

namespace {

struct FbStruct16 {
  int64_t first;
  int64_t second;
};

flatbuffers::Offset<void> BuildTypeTable(flatbuffers::FlatBufferBuilder& builder,
                                         const Field& field) {
  auto start = builder.StartTable();
  if (field.type == TypeTag::kInt) {
    builder.AddElement<int32_t>(Slot(0), field.bit_width, 0);
    builder.AddElement<uint8_t>(Slot(1), field.is_signed ? 1 : 0, 0);
  } else if (field.type == TypeTag::kFloatingPoint) {
    builder.AddElement<int16_t>(Slot(0), static_cast<int16_t>(field.precision), 0);
  }
  return flatbuffers::Offset<void>(builder.EndTable(start));
}

flatbuffers::Offset<void> BuildField(flatbuffers::FlatBufferBuilder& builder,
                                     const Field& field) {
  std::vector<flatbuffers::Offset<void>> children;
  for (const auto& child : field.children) children.push_back(BuildField(builder, child));
  auto children_vector = builder.CreateVector(children);
  auto name = builder.CreateString(field.name);
  auto type = BuildTypeTable(builder, field);
  auto start = builder.StartTable();
  builder.AddOffset(Slot(0), name);
  builder.AddElement<uint8_t>(Slot(1), field.nullable ? 1 : 0, 0);
  builder.AddElement<uint8_t>(Slot(2), static_cast<uint8_t>(field.type), 0);
  builder.AddOffset(Slot(3), type);
  builder.AddOffset(Slot(5), children_vector);
  return flatbuffers::Offset<void>(builder.EndTable(start));
}

std::string FinishMessage(flatbuffers::FlatBufferBuilder& builder, int16_t version,
                          uint8_t header_type, flatbuffers::Offset<void> header,
                          int64_t body_length) {
  auto start = builder.StartTable();
  builder.AddElement<int16_t>(Slot(0), version, 0);
  builder.AddElement<uint8_t>(Slot(1), header_type, 0);
  builder.AddOffset(Slot(2), header);
  builder.AddElement<int64_t>(Slot(3), body_length, 0);
  builder.Finish(flatbuffers::Offset<void>(builder.EndTable(start)));
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                     builder.GetSize());
}

bool IsSupportedForWriting(TypeTag type) {
  switch (type) {
    case TypeTag::kInt:
    case TypeTag::kFloatingPoint:
    case TypeTag::kBool:
    case TypeTag::kUtf8:
    case TypeTag::kBinary:
    case TypeTag::kLargeUtf8:
    case TypeTag::kLargeBinary:
    case TypeTag::kList:
    case TypeTag::kLargeList:
      return true;
    default:
      return false;
  }
}

class BodyBuilder {
 public:
  void AddBuffer(const std::string& bytes) {
    buffers_.push_back({static_cast<int64_t>(body_.size()), static_cast<int64_t>(bytes.size())});
    body_ += bytes;
    body_.resize(Pad8(static_cast<int64_t>(body_.size())), '\0');
  }

  Status AddArray(const Field& field, const WriteArray& array, const std::string& path) {
    if (!IsSupportedForWriting(field.type) || field.dictionary_encoded) {
      return Status::Unimplemented("column '{}': writing {} arrays is not supported", path,
                                   field.TypeString());
    }
    const int64_t n = array.length;
    if (n < 0 || array.null_count < 0 || array.null_count > n) {
      return Status::Invalid("column '{}': length {} with null_count {}", path, n,
                             array.null_count);
    }
    if (array.validity.empty() ? array.null_count != 0
                               : static_cast<int64_t>(array.validity.size()) != (n + 7) / 8) {
      return Status::Invalid("column '{}': validity has {} bytes for {} entries and {} nulls",
                             path, array.validity.size(), n, array.null_count);
    }
    nodes_.push_back({n, array.null_count});
    AddBuffer(array.validity);

    const bool large = field.type == TypeTag::kLargeList || field.type == TypeTag::kLargeUtf8 ||
                       field.type == TypeTag::kLargeBinary;
    const int64_t offset_width = large ? 8 : 4;
    switch (field.type) {
      case TypeTag::kInt:
      case TypeTag::kFloatingPoint:
      case TypeTag::kBool: {
        int64_t expected = field.type == TypeTag::kBool ? (n + 7) / 8
                           : field.type == TypeTag::kInt
                               ? n * field.bit_width / 8
                               : n * (field.precision == Precision::kHalf     ? 2
                                      : field.precision == Precision::kSingle ? 4
                                                                              : 8);
        if (static_cast<int64_t>(array.values.size()) != expected) {
          return Status::Invalid("column '{}' ({}): values have {} bytes, expected {}", path,
                                 field.TypeString(), array.values.size(), expected);
        }
        AddBuffer(array.values);
        return Status::OK();
      }
      case TypeTag::kList:
      case TypeTag::kLargeList:
        if (static_cast<int64_t>(array.offsets.size()) != (n + 1) * offset_width ||
            array.children.size() != 1 || field.children.size() != 1) {
          return Status::Invalid(
              "column '{}': a list needs {} offset bytes and one child (got {} and {})", path,
              (n + 1) * offset_width, array.offsets.size(), array.children.size());
        }
        AddBuffer(array.offsets);
        return AddArray(field.children[0], array.children[0], path + "." + field.children[0].name);
      default:  // Utf8, Binary and their Large variants
        if (static_cast<int64_t>(array.offsets.size()) != (n + 1) * offset_width) {
          return Status::Invalid("column '{}': needs {} offset bytes, got {}", path,
                                 (n + 1) * offset_width, array.offsets.size());
        }
        AddBuffer(array.offsets);
        AddBuffer(array.values);
        return Status::OK();
    }
  }

  const std::string& body() const { return body_; }
  const std::vector<FbStruct16>& nodes() const { return nodes_; }
  const std::vector<FbStruct16>& buffers() const { return buffers_; }

 private:
  std::string body_;
  std::vector<FbStruct16> nodes_;
  std::vector<FbStruct16> buffers_;
};

}  // namespace

StreamWriter::StreamWriter(Sink sink, Schema schema, WriteOptions options)
    : sink_(std::move(sink)), schema_(std::move(schema)), options_(options) {}

Status StreamWriter::WriteMessage(const std::string& metadata, const std::string& body) {
  const int64_t prefix = options_.legacy_framing ? 4 : 8;
  const int64_t padded = Pad8(prefix + static_cast<int64_t>(metadata.size())) - prefix;
  std::string frame;
  frame.reserve(prefix + padded);
  if (!options_.legacy_framing) frame.append(4, '\xff');
  const int32_t length = static_cast<int32_t>(padded);
  frame.append(reinterpret_cast<const char*>(&length), 4);
  frame += metadata;
  frame.resize(prefix + padded, '\0');
  DF_RETURN_NOT_OK(sink_(frame));
  if (!body.empty()) DF_RETURN_NOT_OK(sink_(body));
  return Status::OK();
}

Status StreamWriter::Begin() {
  if (began_) return Status::Internal("StreamWriter::Begin called twice");
  for (const auto& field : schema_.fields) {
    if (!IsSupportedForWriting(field.type)) {
      return Status::Unimplemented("column '{}': writing {} columns is not supported",
                                   field.name, field.TypeString());
    }
  }
  flatbuffers::FlatBufferBuilder builder(1024);
  std::vector<flatbuffers::Offset<void>> fields;
  for (const auto& field : schema_.fields) fields.push_back(BuildField(builder, field));
  auto fields_vector = builder.CreateVector(fields);
  std::vector<flatbuffers::Offset<void>> key_values;
  for (const auto& [key, value] : schema_.metadata) {
    auto key_string = builder.CreateString(key);
    auto value_string = builder.CreateString(value);
    auto start = builder.StartTable();
    builder.AddOffset(Slot(0), key_string);
    builder.AddOffset(Slot(1), value_string);
    key_values.push_back(flatbuffers::Offset<void>(builder.EndTable(start)));
  }
  flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<void>>> metadata_vector;
  if (!key_values.empty()) metadata_vector = builder.CreateVector(key_values);
  auto start = builder.StartTable();
  builder.AddOffset(Slot(1), fields_vector);
  if (!key_values.empty()) builder.AddOffset(Slot(2), metadata_vector);
  auto schema = flatbuffers::Offset<void>(builder.EndTable(start));
  began_ = true;
  return WriteMessage(
      FinishMessage(builder, options_.metadata_version, kHeaderSchema, schema, 0), "");
}

Status StreamWriter::WriteBatch(int64_t num_rows, const std::vector<WriteArray>& columns) {
  if (!began_ || finished_) {
    return Status::Internal("StreamWriter::WriteBatch called outside Begin/Finish");
  }
  if (columns.size() != schema_.fields.size()) {
    return Status::Invalid("record batch has {} columns but the schema has {}", columns.size(),
                           schema_.fields.size());
  }
  BodyBuilder body;
  for (size_t i = 0; i < columns.size(); ++i) {
    if (columns[i].length != num_rows) {
      return Status::Invalid("column '{}' has {} rows, expected {}", schema_.fields[i].name,
                             columns[i].length, num_rows);
    }
    DF_RETURN_NOT_OK(body.AddArray(schema_.fields[i], columns[i], schema_.fields[i].name));
  }
  flatbuffers::FlatBufferBuilder builder(1024);
  auto nodes = builder.CreateVectorOfStructs(body.nodes().data(), body.nodes().size());
  auto buffers = builder.CreateVectorOfStructs(body.buffers().data(), body.buffers().size());
  auto start = builder.StartTable();
  builder.AddElement<int64_t>(Slot(0), num_rows, 0);
  builder.AddOffset(Slot(1), nodes);
  builder.AddOffset(Slot(2), buffers);
  auto batch = flatbuffers::Offset<void>(builder.EndTable(start));
  return WriteMessage(FinishMessage(builder, options_.metadata_version, kHeaderRecordBatch, batch,
                                    static_cast<int64_t>(body.body().size())),
                      body.body());
}

Status StreamWriter::Finish() {
  if (!began_ || finished_) return Status::Internal("StreamWriter::Finish called out of order");
  finished_ = true;
  static constexpr char kEndOfStream[8] = {'\xff', '\xff', '\xff', '\xff', 0, 0, 0, 0};
  // Legacy readers stop at a zero length; the continuation form is used either way.
  return sink_(options_.legacy_framing ? std::string_view(kEndOfStream + 4, 4)
                                       : std::string_view(kEndOfStream, 8));
}

Field IntField(std::string name, int32_t bit_width, bool is_signed) {
  Field field;
  field.name = std::move(name);
  field.type = TypeTag::kInt;
  field.bit_width = bit_width;
  field.is_signed = is_signed;
  return field;
}

Field Int64Field(std::string name) { return IntField(std::move(name), 64, true); }

Field BoolField(std::string name) {
  Field field;
  field.name = std::move(name);
  field.type = TypeTag::kBool;
  return field;
}

Field ListField(std::string name, Field item, bool large) {
  Field field;
  field.name = std::move(name);
  field.type = large ? TypeTag::kLargeList : TypeTag::kList;
  field.children.push_back(std::move(item));
  return field;
}

}  // namespace draftforge::io::arrow
