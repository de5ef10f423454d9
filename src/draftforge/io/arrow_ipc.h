// Arrow IPC *stream* format: a reader for any stream written by pyarrow or
// Arrow JS, and a writer that lays out bytes the way pyarrow's
// RecordBatchStreamWriter does.
//
// Stream = Schema message, RecordBatch messages, end-of-stream marker. Each
// message is [0xFFFFFFFF][i32 metadata length M][flatbuffer Message, padded to
// M][body]; streams older than Arrow 0.15 omit the 0xFFFFFFFF marker. The
// flatbuffer metadata is read and built with the flatbuffers library's generic
// Table API, and every metadata block passes flatbuffers::Verifier before any
// field is read.
//
// Reader contract: accepts metadata V4 and V5, legacy framing, an end marker
// or a clean EOF at a message boundary. Rejects big-endian schemas, compressed
// bodies and DictionaryBatch messages (Unimplemented). Decodes Int (8..64 bit,
// signed and unsigned), Bool, FloatingPoint, Utf8, Binary, LargeUtf8,
// LargeBinary, List and LargeList, with validity bitmaps at any level. Fields
// of any other type are skipped by counting their nodes and buffers from the
// type tree; their arrays are kept with `decoded == false`. Buffer ranges,
// offsets and bitmaps are checked against the body, so a corrupt file gives a
// Corrupt status instead of an out-of-bounds read.
//
// Writer contract: V5 metadata, 8-byte framing and buffer alignment, validity
// buffers written as (offset, 0) when an array has no nulls, body length a
// multiple of 8, the 8-byte end-of-stream marker.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::io::arrow {

// Type union tags of Arrow's Schema.fbs.
enum class TypeTag : uint8_t {
  kNone = 0, kNull = 1, kInt = 2, kFloatingPoint = 3, kBinary = 4, kUtf8 = 5, kBool = 6,
  kDecimal = 7, kDate = 8, kTime = 9, kTimestamp = 10, kInterval = 11, kList = 12,
  kStruct = 13, kUnion = 14, kFixedSizeBinary = 15, kFixedSizeList = 16, kMap = 17,
  kDuration = 18, kLargeBinary = 19, kLargeUtf8 = 20, kLargeList = 21, kRunEndEncoded = 22,
  kBinaryView = 23, kUtf8View = 24, kListView = 25, kLargeListView = 26,
};

// Name of a type tag as Arrow prints it ("int", "list", "large_utf8", ...).
std::string TypeTagName(TypeTag tag);

// FloatingPoint.precision values.
enum class Precision : int16_t { kHalf = 0, kSingle = 1, kDouble = 2 };

struct Field {
  std::string name;
  bool nullable = true;
  TypeTag type = TypeTag::kNull;
  int32_t bit_width = 0;      // Int only
  bool is_signed = false;     // Int only
  Precision precision = Precision::kDouble;  // FloatingPoint only
  int16_t union_mode = 0;     // Union only: 0 sparse, 1 dense
  bool dictionary_encoded = false;
  std::vector<Field> children;

  // Type in Arrow's notation ("int64", "list<item: bool>"), for messages and tests.
  std::string TypeString() const;
};

struct Schema {
  std::vector<Field> fields;
  std::vector<std::pair<std::string, std::string>> metadata;  // custom_metadata, in order

  // Index of the top-level field named `name`, or -1.
  int FieldIndex(std::string_view name) const;
  // Value of a custom_metadata key; nullptr when absent.
  const std::string* FindMetadata(std::string_view key) const;
};

// A byte range inside a message body; valid while the stream's storage lives.
struct BufferView {
  const uint8_t* data = nullptr;
  int64_t size = 0;
};

// One array of a record batch: a view into the body with its decoded layout.
// Accessors require `decoded` and an index below `length`; they do no checks
// because decoding validated every buffer and offset already.
struct ArrayData {
  const Field* field = nullptr;
  bool decoded = false;  // false for types this reader only skips
  int64_t length = 0;
  int64_t null_count = 0;
  BufferView validity;  // size 0: every entry is valid
  BufferView offsets;   // List/LargeList/Utf8/Binary and Large variants
  BufferView values;    // fixed-width values, bit-packed Bool values or string bytes
  std::vector<ArrayData> children;

  bool IsValid(int64_t i) const {
    return validity.size == 0 || ((validity.data[i >> 3] >> (i & 7)) & 1) != 0;
  }
  // Int and Bool values, widened (uint64 values above INT64_MAX wrap).
  int64_t GetInt(int64_t i) const;
  // FloatingPoint values (half and single widened); Int values converted.
  double GetDouble(int64_t i) const;
  // Utf8/Binary/LargeUtf8/LargeBinary values.
  std::string_view GetString(int64_t i) const;
  // List/LargeList: [begin, end) of row i in children[0].
  std::pair<int64_t, int64_t> GetListRange(int64_t i) const;
};

struct RecordBatch {
  int64_t num_rows = 0;
  std::vector<ArrayData> columns;  // one per top-level schema field
};

// A fully read stream. `batches` point into `storage` and into `schema`, so
// the object is move-only and keeps both alive.
struct Stream {
  Schema schema;
  int16_t metadata_version = 4;  // 3 = V4, 4 = V5
  std::vector<RecordBatch> batches;
  std::shared_ptr<const void> storage;

  Stream() = default;
  Stream(Stream&&) = default;
  Stream& operator=(Stream&&) = default;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  int64_t num_rows() const;
};

// Reads a whole stream from memory. `storage` owns [data, data + size) and is
// kept by the returned Stream. `source` names the input in error messages.
Result<Stream> ReadStream(std::shared_ptr<const void> storage, const uint8_t* data, size_t size,
                          const std::string& source);
// Memory-maps `path` and reads it.
Result<Stream> ReadStreamFile(const std::string& path);

// ---------------------------------------------------------------------------
// Writer

// Owned buffers of one array to write. An empty `validity` means no nulls;
// otherwise it must hold ceil(length / 8) bytes and `null_count` the number of
// zero bits. Buffer order follows the field type: Int/FloatingPoint/Bool use
// `values`; List/LargeList use `offsets` and one child; Utf8/Binary and Large
// variants use `offsets` and `values`.
struct WriteArray {
  int64_t length = 0;
  int64_t null_count = 0;
  std::string validity;
  std::string offsets;
  std::string values;
  std::vector<WriteArray> children;
};

// Framing variants, for tests that need the legacy or V4 forms.
struct WriteOptions {
  int16_t metadata_version = 4;  // 4 = V5, 3 = V4
  bool legacy_framing = false;   // omit the 0xFFFFFFFF continuation marker
};

// Serialises a stream message by message into `sink`. Supported field types:
// Int, FloatingPoint, Bool, Utf8, Binary, LargeUtf8, LargeBinary, List and
// LargeList.
class StreamWriter {
 public:
  using Sink = std::function<Status(std::string_view bytes)>;

  StreamWriter(Sink sink, Schema schema, WriteOptions options = {});

  // Writes the Schema message; called once before the first batch.
  Status Begin();
  // Writes one RecordBatch with one WriteArray per schema field.
  Status WriteBatch(int64_t num_rows, const std::vector<WriteArray>& columns);
  // Writes the end-of-stream marker.
  Status Finish();

  const Schema& schema() const { return schema_; }

 private:
  Status WriteMessage(const std::string& metadata, const std::string& body);

  Sink sink_;
  Schema schema_;
  WriteOptions options_;
  bool began_ = false;
  bool finished_ = false;
};

// Builders for the common field shapes.
Field Int64Field(std::string name);
Field IntField(std::string name, int32_t bit_width, bool is_signed);
Field BoolField(std::string name);
Field ListField(std::string name, Field item, bool large = false);

}  // namespace draftforge::io::arrow
