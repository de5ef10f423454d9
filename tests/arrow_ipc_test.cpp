#include "draftforge/io/arrow_ipc.h"

#include <flatbuffers/flatbuffers.h>
#include <gtest/gtest.h>

#include <cstring>

#include "draftforge/util/fs.h"
#include "test_support.h"

namespace draftforge::io::arrow {
namespace {

template <typename T>
std::string Bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

Result<Stream> ReadString(const std::string& bytes) {
  auto owner = std::make_shared<std::string>(bytes);
  return ReadStream(owner, reinterpret_cast<const uint8_t*>(owner->data()), owner->size(), "mem");
}

// The worked example: ids [[1,2,3],[4,5]], bool mask [[F,T,T],[F,T]], seq_len [3,2].
std::string WriteWorkedExample(WriteOptions options = {}) {
  Schema schema;
  schema.fields = {ListField("input_ids", Int64Field("item")),
                   ListField("loss_mask", BoolField("item")), Int64Field("seq_len")};
  schema.metadata = {{"huggingface", "{}"}};
  std::string out;
  StreamWriter writer(
      [&out](std::string_view bytes) {
        out += bytes;
        return Status::OK();
      },
      schema, options);
  EXPECT_TRUE(writer.Begin().ok());
  WriteArray ids{2, 0, "", Bytes(std::vector<int32_t>{0, 3, 5}), "", {}};
  ids.children.push_back({5, 0, "", "", Bytes(std::vector<int64_t>{1, 2, 3, 4, 5}), {}});
  WriteArray mask{2, 0, "", Bytes(std::vector<int32_t>{0, 3, 5}), "", {}};
  mask.children.push_back({5, 0, "", "", std::string(1, '\x16'), {}});
  WriteArray seq_len{2, 0, "", "", Bytes(std::vector<int64_t>{3, 2}), {}};
  EXPECT_TRUE(writer.WriteBatch(2, {ids, mask, seq_len}).ok());
  EXPECT_TRUE(writer.Finish().ok());
  return out;
}

void ExpectWorkedExample(const Stream& stream) {
  ASSERT_EQ(stream.schema.fields.size(), 3u);
  EXPECT_EQ(stream.schema.fields[0].TypeString(), "list<item: int64>");
  EXPECT_EQ(stream.schema.fields[1].TypeString(), "list<item: bool>");
  EXPECT_EQ(stream.schema.fields[2].TypeString(), "int64");
  EXPECT_TRUE(stream.schema.fields[0].nullable);
  EXPECT_TRUE(stream.schema.fields[0].children[0].nullable);
  ASSERT_EQ(stream.batches.size(), 1u);
  const RecordBatch& batch = stream.batches[0];
  ASSERT_EQ(batch.num_rows, 2);
  const ArrayData& ids = batch.columns[0];
  EXPECT_EQ(ids.GetListRange(0), (std::pair<int64_t, int64_t>(0, 3)));
  EXPECT_EQ(ids.GetListRange(1), (std::pair<int64_t, int64_t>(3, 5)));
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(ids.children[0].GetInt(i), i + 1);
  const std::vector<int64_t> mask = {0, 1, 1, 0, 1};
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(batch.columns[1].children[0].GetInt(i), mask[i]);
  EXPECT_EQ(batch.columns[2].GetInt(0), 3);
  EXPECT_EQ(batch.columns[2].GetInt(1), 2);
}

TEST(ArrowIpc, SpecExampleStreamDecodes) {
  DF_REQUIRE_SHARED(path, "spec/testvectors/example_stream.arrow");
  auto stream = ReadStreamFile(path.string());
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  ExpectWorkedExample(*stream);
  const std::string* metadata = stream->schema.FindMetadata("huggingface");
  ASSERT_NE(metadata, nullptr);
  EXPECT_EQ(*metadata,
            R"({"info": {"features": {"input_ids": {"feature": {"dtype": "int64", "_type": "Value"}, "_type": "List"}, "loss_mask": {"feature": {"dtype": "bool", "_type": "Value"}, "_type": "List"}, "seq_len": {"dtype": "int64", "_type": "Value"}}}})");
  // Body offsets of the worked example: ids values at 16, mask bits at 72.
  const ArrayData& ids = stream->batches[0].columns[0];
  const ArrayData& mask = stream->batches[0].columns[1];
  EXPECT_EQ(ids.children[0].values.data - ids.offsets.data, 16);
  EXPECT_EQ(mask.children[0].values.data - ids.offsets.data, 72);
  EXPECT_EQ(mask.children[0].values.size, 1);
}

TEST(ArrowIpc, WriterMatchesSpecBodyLayout) {
  std::string bytes = WriteWorkedExample();
  auto stream = ReadString(bytes);
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  ExpectWorkedExample(*stream);
  EXPECT_EQ(stream->metadata_version, 4);

  // Walk the framing: every message 8-aligned, body of 96 bytes, EOS last.
  ASSERT_EQ(bytes.size() % 8, 0u);
  size_t pos = 0;
  std::vector<int32_t> lengths;
  while (true) {
    uint32_t marker = 0;
    int32_t length = 0;
    std::memcpy(&marker, bytes.data() + pos, 4);
    std::memcpy(&length, bytes.data() + pos + 4, 4);
    ASSERT_EQ(marker, 0xFFFFFFFFu);
    ASSERT_EQ((8 + length) % 8, 0);
    pos += 8 + length;
    if (length == 0) break;
    lengths.push_back(length);
    if (lengths.size() == 2) pos += 96;  // the batch body
  }
  EXPECT_EQ(pos, bytes.size());
  EXPECT_EQ(lengths.size(), 2u);
  // The batch body equals the spec's listing.
  const std::string body = bytes.substr(bytes.size() - 8 - 96, 96);
  std::string expected(96, '\0');
  const int32_t offsets[] = {0, 3, 5};
  const int64_t ids[] = {1, 2, 3, 4, 5};
  const int64_t seq_len[] = {3, 2};
  std::memcpy(expected.data(), offsets, 12);
  std::memcpy(expected.data() + 16, ids, 40);
  std::memcpy(expected.data() + 56, offsets, 12);
  expected[72] = '\x16';
  std::memcpy(expected.data() + 80, seq_len, 16);
  EXPECT_EQ(body, expected);
}

TEST(ArrowIpc, ReadsLegacyFramingAndV4) {
  WriteOptions options;
  options.legacy_framing = true;
  options.metadata_version = 3;
  std::string bytes = WriteWorkedExample(options);
  uint32_t first = 0;
  std::memcpy(&first, bytes.data(), 4);
  EXPECT_NE(first, 0xFFFFFFFFu);
  auto stream = ReadString(bytes);
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  EXPECT_EQ(stream->metadata_version, 3);
  ExpectWorkedExample(*stream);
}

TEST(ArrowIpc, EofWithoutEndMarkerEndsStream) {
  std::string bytes = WriteWorkedExample();
  bytes.resize(bytes.size() - 8);
  auto stream = ReadString(bytes);
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  ExpectWorkedExample(*stream);
}

TEST(ArrowIpc, TruncatedBodyIsCorrupt) {
  std::string bytes = WriteWorkedExample();
  bytes.resize(bytes.size() - 8 - 40);
  auto stream = ReadString(bytes);
  ASSERT_FALSE(stream.ok());
  EXPECT_EQ(stream.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(stream.status().message().find("body"), std::string::npos)
      << stream.status().message();
}

TEST(ArrowIpc, DamagedMetadataFailsVerification) {
  std::string bytes = WriteWorkedExample();
  // Point the root table offset of the schema flatbuffer far outside it.
  bytes[8] = '\x7f';
  bytes[9] = '\x7f';
  auto stream = ReadString(bytes);
  ASSERT_FALSE(stream.ok());
  EXPECT_NE(stream.status().message().find("invalid flatbuffer metadata"), std::string::npos)
      << stream.status().message();
}

TEST(ArrowIpc, OffsetsBeyondChildAreCorrupt) {
  std::string bytes = WriteWorkedExample();
  // ids offsets start right after the batch metadata: body offset 0.
  const size_t body = bytes.size() - 8 - 96;
  const int32_t bad = 9;
  std::memcpy(bytes.data() + body + 8, &bad, 4);  // offsets[2] = 9 > 5 children
  auto stream = ReadString(bytes);
  ASSERT_FALSE(stream.ok());
  EXPECT_NE(stream.status().message().find("offset 2 = 9"), std::string::npos)
      << stream.status().message();
}

// Builds a minimal stream whose Schema message is assembled by hand, to test
// what our writer never produces.
std::string HandBuiltSchemaStream(bool big_endian, bool dictionary_field) {
  flatbuffers::FlatBufferBuilder builder;
  auto name = builder.CreateString("x");
  auto int_start = builder.StartTable();
  builder.AddElement<int32_t>(4, 32, 0);
  builder.AddElement<uint8_t>(6, 1, 0);
  auto int_type = builder.EndTable(int_start);
  flatbuffers::uoffset_t dictionary = 0;
  if (dictionary_field) {
    auto dict_start = builder.StartTable();
    builder.AddElement<int64_t>(4, 0, -1);
    builder.AddOffset(6, flatbuffers::Offset<void>(int_type));
    dictionary = builder.EndTable(dict_start);
  }
  auto children = builder.CreateVector(std::vector<flatbuffers::Offset<void>>{});
  auto field_start = builder.StartTable();
  builder.AddOffset(4, name);
  builder.AddElement<uint8_t>(6, 1, 0);
  builder.AddElement<uint8_t>(8, 2, 0);  // Int
  builder.AddOffset(10, flatbuffers::Offset<void>(int_type));
  if (dictionary_field) builder.AddOffset(12, flatbuffers::Offset<void>(dictionary));
  builder.AddOffset(14, children);
  auto field = builder.EndTable(field_start);
  auto fields = builder.CreateVector(std::vector<flatbuffers::Offset<void>>{field});
  auto schema_start = builder.StartTable();
  if (big_endian) builder.AddElement<int16_t>(4, 1, 0);
  builder.AddOffset(6, fields);
  auto schema = builder.EndTable(schema_start);
  auto message_start = builder.StartTable();
  builder.AddElement<int16_t>(4, 4, 0);
  builder.AddElement<uint8_t>(6, 1, 0);
  builder.AddOffset(8, flatbuffers::Offset<void>(schema));
  builder.Finish(flatbuffers::Offset<void>(builder.EndTable(message_start)));
  std::string metadata(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                       builder.GetSize());
  metadata.resize((metadata.size() + 7) / 8 * 8, '\0');
  std::string out(4, '\xff');
  int32_t length = static_cast<int32_t>(metadata.size());
  out.append(reinterpret_cast<const char*>(&length), 4);
  out += metadata;
  return out;
}

TEST(ArrowIpc, RejectsBigEndianSchema) {
  ASSERT_TRUE(ReadString(HandBuiltSchemaStream(false, false)).ok());
  auto stream = ReadString(HandBuiltSchemaStream(true, false));
  ASSERT_FALSE(stream.ok());
  EXPECT_EQ(stream.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(stream.status().message().find("big-endian"), std::string::npos);
}

TEST(ArrowIpc, DictionaryFieldIsMarkedAndBatchRejected) {
  auto stream = ReadString(HandBuiltSchemaStream(false, true));
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  EXPECT_TRUE(stream->schema.fields[0].dictionary_encoded);
  EXPECT_EQ(stream->schema.fields[0].TypeString(), "dictionary<int32>");

  // A DictionaryBatch message (header type 2) is rejected.
  flatbuffers::FlatBufferBuilder builder;
  auto batch_start = builder.StartTable();
  auto batch = builder.EndTable(batch_start);
  auto message_start = builder.StartTable();
  builder.AddElement<int16_t>(4, 4, 0);
  builder.AddElement<uint8_t>(6, 2, 0);
  builder.AddOffset(8, flatbuffers::Offset<void>(batch));
  builder.Finish(flatbuffers::Offset<void>(builder.EndTable(message_start)));
  std::string metadata(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                       builder.GetSize());
  metadata.resize((metadata.size() + 7) / 8 * 8, '\0');
  std::string bytes = HandBuiltSchemaStream(false, true) + std::string(4, '\xff');
  int32_t length = static_cast<int32_t>(metadata.size());
  bytes.append(reinterpret_cast<const char*>(&length), 4);
  bytes += metadata;
  auto with_dictionary = ReadString(bytes);
  ASSERT_FALSE(with_dictionary.ok());
  EXPECT_NE(with_dictionary.status().message().find("DictionaryBatch"), std::string::npos);
}

TEST(ArrowIpc, RejectsCompressedBatch) {
  std::string bytes = HandBuiltSchemaStream(false, false);
  flatbuffers::FlatBufferBuilder builder;
  auto compression_start = builder.StartTable();
  builder.AddElement<int8_t>(4, 1, 0);  // ZSTD
  auto compression = builder.EndTable(compression_start);
  std::vector<std::pair<int64_t, int64_t>> none;
  auto batch_start = builder.StartTable();
  builder.AddOffset(10, flatbuffers::Offset<void>(compression));
  auto batch = builder.EndTable(batch_start);
  auto message_start = builder.StartTable();
  builder.AddElement<int16_t>(4, 4, 0);
  builder.AddElement<uint8_t>(6, 3, 0);
  builder.AddOffset(8, flatbuffers::Offset<void>(batch));
  builder.Finish(flatbuffers::Offset<void>(builder.EndTable(message_start)));
  std::string metadata(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                       builder.GetSize());
  metadata.resize((metadata.size() + 7) / 8 * 8, '\0');
  bytes += std::string(4, '\xff');
  int32_t length = static_cast<int32_t>(metadata.size());
  bytes.append(reinterpret_cast<const char*>(&length), 4);
  bytes += metadata;
  auto stream = ReadString(bytes);
  ASSERT_FALSE(stream.ok());
  EXPECT_EQ(stream.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(stream.status().message().find("compressed"), std::string::npos);
}

TEST(ArrowIpc, RoundTripsStringsLargeListsAndNulls) {
  Field text;
  text.name = "text";
  text.type = TypeTag::kLargeUtf8;
  Field values = ListField("values", IntField("item", 16, false), /*large=*/true);
  Field scores = ListField("scores", [] {
    Field item;
    item.name = "item";
    item.type = TypeTag::kFloatingPoint;
    item.precision = Precision::kSingle;
    return item;
  }());
  Schema schema;
  schema.fields = {text, values, scores};
  std::string out;
  StreamWriter writer(
      [&out](std::string_view bytes) {
        out += bytes;
        return Status::OK();
      },
      schema);
  ASSERT_TRUE(writer.Begin().ok());
  WriteArray text_array{3, 1, std::string(1, '\x05'), Bytes(std::vector<int64_t>{0, 5, 5, 8}),
                        "helloabc", {}};
  WriteArray values_array{3, 0, "", Bytes(std::vector<int64_t>{0, 2, 2, 3}), "", {}};
  // Item 1 is null: bits 0b101.
  values_array.children.push_back(
      {3, 1, std::string(1, '\x05'), "", Bytes(std::vector<uint16_t>{7, 0, 65535}), {}});
  WriteArray scores_array{3, 0, "", Bytes(std::vector<int32_t>{0, 1, 1, 2}), "", {}};
  scores_array.children.push_back({2, 0, "", "", Bytes(std::vector<float>{0.5f, -2.0f}), {}});
  ASSERT_TRUE(writer.WriteBatch(3, {text_array, values_array, scores_array}).ok());
  ASSERT_TRUE(writer.WriteBatch(0, {WriteArray{0, 0, "", Bytes(std::vector<int64_t>{0}), "", {}},
                                    [] {
                                      WriteArray a{0, 0, "", Bytes(std::vector<int64_t>{0}), "", {}};
                                      a.children.push_back({});
                                      return a;
                                    }(),
                                    [] {
                                      WriteArray a{0, 0, "", Bytes(std::vector<int32_t>{0}), "", {}};
                                      a.children.push_back({});
                                      return a;
                                    }()})
                  .ok());
  ASSERT_TRUE(writer.Finish().ok());

  auto stream = ReadString(out);
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  EXPECT_EQ(stream->schema.fields[0].TypeString(), "large_string");
  EXPECT_EQ(stream->schema.fields[1].TypeString(), "large_list<item: uint16>");
  EXPECT_EQ(stream->schema.fields[2].TypeString(), "list<item: float>");
  ASSERT_EQ(stream->batches.size(), 2u);
  EXPECT_EQ(stream->num_rows(), 3);
  const RecordBatch& batch = stream->batches[0];
  EXPECT_EQ(batch.columns[0].GetString(0), "hello");
  EXPECT_FALSE(batch.columns[0].IsValid(1));
  EXPECT_EQ(batch.columns[0].GetString(2), "abc");
  const ArrayData& items = batch.columns[1].children[0];
  EXPECT_EQ(items.GetInt(0), 7);
  EXPECT_FALSE(items.IsValid(1));
  EXPECT_EQ(items.GetInt(2), 65535);
  EXPECT_DOUBLE_EQ(batch.columns[2].children[0].GetDouble(1), -2.0);
}

TEST(ArrowIpc, EmptyInputIsCorrupt) {
  auto stream = ReadString("");
  ASSERT_FALSE(stream.ok());
  EXPECT_NE(stream.status().message().find("no Schema"), std::string::npos);
}

}  // namespace
}  // namespace draftforge::io::arrow
