#include "draftforge/data/token_dataset.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>

#include "draftforge/data/hf_dataset.h"
#include "draftforge/io/arrow_ipc.h"
#include "draftforge/util/fs.h"
#include "test_support.h"

namespace draftforge::data {
namespace {

using draftforge::testing::TempDir;

TokenDataset SampleDataset(int64_t rows) {
  TokenDataset dataset;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int64_t> ids;
    std::vector<uint8_t> mask;
    for (int64_t t = 0; t <= r % 7; ++t) {
      ids.push_back(r * 100 + t + (int64_t{1} << 40) * (r % 2));
      mask.push_back((r + t) % 3 == 0 ? 1 : 0);
    }
    dataset.AppendRow(ids, mask);
  }
  return dataset;
}

void ExpectSameRows(const TokenDataset& a, const TokenDataset& b) {
  ASSERT_EQ(a.num_rows(), b.num_rows());
  for (int64_t r = 0; r < a.num_rows(); ++r) {
    ASSERT_EQ(std::vector<int64_t>(a.input_ids(r).begin(), a.input_ids(r).end()),
              std::vector<int64_t>(b.input_ids(r).begin(), b.input_ids(r).end()))
        << "row " << r;
    ASSERT_EQ(std::vector<uint8_t>(a.loss_mask(r).begin(), a.loss_mask(r).end()),
              std::vector<uint8_t>(b.loss_mask(r).begin(), b.loss_mask(r).end()))
        << "row " << r;
  }
}

TEST(TokenDataset, WriteThenOpenRoundTrips) {
  TempDir dir;
  TokenDataset written = SampleDataset(2500);
  ASSERT_TRUE(WriteTokenDataset(dir.str(), written).ok());
  auto read = TokenDataset::Open(dir.str());
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  ExpectSameRows(written, *read);
}

TEST(TokenDataset, WrittenLayoutMatchesDatasets) {
  TempDir dir;
  ASSERT_TRUE(WriteTokenDataset(dir.str(), SampleDataset(2500)).ok());
  auto shard = io::arrow::ReadStreamFile(dir.str() + "/data-00000-of-00001.arrow");
  ASSERT_TRUE(shard.ok()) << shard.status().ToString();
  ASSERT_EQ(shard->batches.size(), 3u);
  EXPECT_EQ(shard->batches[0].num_rows, 1000);
  EXPECT_EQ(shard->batches[2].num_rows, 500);
  EXPECT_EQ(shard->schema.fields[1].TypeString(), "list<item: int64>");
  EXPECT_EQ(shard->batches[1].columns[2].GetInt(0), 1000 % 7 + 1);

  std::string state = ReadFileToString(dir.str() + "/state.json").ValueOrDie();
  EXPECT_EQ(state.substr(0, 73),
            "{\n  \"_data_files\": [\n    {\n      \"filename\": \"data-00000-of-00001.arrow\"\n");
  EXPECT_NE(state.find("\"_format_type\": \"torch\""), std::string::npos);
  EXPECT_NE(state.find("\"_format_kwargs\": {},"), std::string::npos);
  EXPECT_NE(state.back(), '\n');
  std::string info = ReadFileToString(dir.str() + "/dataset_info.json").ValueOrDie();
  EXPECT_EQ(info,
            "{\n  \"citation\": \"\",\n  \"description\": \"\",\n  \"features\": {\n"
            "    \"input_ids\": {\n      \"feature\": {\n        \"dtype\": \"int64\",\n"
            "        \"_type\": \"Value\"\n      },\n      \"_type\": \"List\"\n    },\n"
            "    \"loss_mask\": {\n      \"feature\": {\n        \"dtype\": \"int64\",\n"
            "        \"_type\": \"Value\"\n      },\n      \"_type\": \"List\"\n    },\n"
            "    \"seq_len\": {\n      \"dtype\": \"int64\",\n      \"_type\": \"Value\"\n"
            "    }\n  },\n  \"homepage\": \"\",\n  \"license\": \"\"\n}");
}

TEST(TokenDataset, EmptyDatasetWritesOneEmptyShard) {
  TempDir dir;
  ASSERT_TRUE(WriteTokenDataset(dir.str(), TokenDataset()).ok());
  auto read = TokenDataset::Open(dir.str());
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->num_rows(), 0);
}

TEST(TokenDataset, RewriteRemovesStaleShards) {
  TempDir dir;
  ASSERT_TRUE(WriteFileAtomic(dir.str() + "/data-00001-of-00002.arrow", "old").ok());
  ASSERT_TRUE(WriteTokenDataset(dir.str(), SampleDataset(3)).ok());
  EXPECT_FALSE(std::filesystem::exists(dir.str() + "/data-00001-of-00002.arrow"));
  EXPECT_TRUE(std::filesystem::exists(dir.str() + "/data-00000-of-00001.arrow"));
}

// Writes a save_to_disk directory with the given columns (one batch).
void WriteCustomDataset(const std::string& dir, io::arrow::Schema schema,
                        std::vector<io::arrow::WriteArray> columns, int64_t rows,
                        const std::string& features) {
  std::string bytes;
  io::arrow::StreamWriter writer(
      [&bytes](std::string_view chunk) {
        bytes += chunk;
        return Status::OK();
      },
      std::move(schema));
  ASSERT_TRUE(writer.Begin().ok());
  ASSERT_TRUE(writer.WriteBatch(rows, columns).ok());
  ASSERT_TRUE(writer.Finish().ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/data-00000-of-00001.arrow", bytes).ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/state.json",
                              R"({"_data_files": [{"filename": "data-00000-of-00001.arrow"}],
                                  "_format_type": null, "_split": null})")
                  .ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/dataset_info.json", "{\"features\": " + features + "}").ok());
}

template <typename T>
std::string Raw(std::vector<T> values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

TEST(TokenDataset, OpensBoolMaskInt32IdsAndExtraColumns) {
  namespace arrow = io::arrow;
  TempDir dir;
  arrow::Schema schema;
  schema.fields = {arrow::Int64Field("extra"),
                   arrow::ListField("input_ids", arrow::IntField("item", 32, true)),
                   arrow::ListField("loss_mask", arrow::BoolField("item"))};
  arrow::WriteArray extra{2, 0, "", "", Raw<int64_t>({7, 8}), {}};
  arrow::WriteArray ids{2, 0, "", Raw<int32_t>({0, 3, 5}), "", {}};
  ids.children.push_back({5, 0, "", "", Raw<int32_t>({1, 2, 3, 4, 5}), {}});
  arrow::WriteArray mask{2, 0, "", Raw<int32_t>({0, 3, 5}), "", {}};
  mask.children.push_back({5, 0, "", "", std::string(1, '\x16'), {}});
  WriteCustomDataset(dir.str(), schema, {extra, ids, mask}, 2,
                     R"({"extra": {"dtype": "int64", "_type": "Value"},
                         "input_ids": {"feature": {"dtype": "int32", "_type": "Value"}, "_type": "Sequence"},
                         "loss_mask": {"feature": {"dtype": "bool", "_type": "Value"}, "_type": "List"}})");
  auto read = TokenDataset::Open(dir.str());
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  ExpectSameRows(*read, TokenDataset::FromRows({{{1, 2, 3}, {0, 1, 1}}, {{4, 5}, {0, 1}}}));
}

TEST(TokenDataset, MissingLossMaskTrainsEveryToken) {
  namespace arrow = io::arrow;
  TempDir dir;
  arrow::Schema schema;
  schema.fields = {arrow::ListField("input_ids", arrow::Int64Field("item"))};
  arrow::WriteArray ids{1, 0, "", Raw<int32_t>({0, 2}), "", {}};
  ids.children.push_back({2, 0, "", "", Raw<int64_t>({9, 10}), {}});
  WriteCustomDataset(dir.str(), schema, {ids}, 1,
                     R"({"input_ids": {"feature": {"dtype": "int64", "_type": "Value"}, "_type": "List"}})");
  auto read = TokenDataset::Open(dir.str());
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  ExpectSameRows(*read, TokenDataset::FromRows({{{9, 10}, {1, 1}}}));
}

TEST(TokenDataset, MaskLengthMismatchIsInvalid) {
  namespace arrow = io::arrow;
  TempDir dir;
  arrow::Schema schema;
  schema.fields = {arrow::ListField("input_ids", arrow::Int64Field("item")),
                   arrow::ListField("loss_mask", arrow::IntField("item", 8, false))};
  arrow::WriteArray ids{1, 0, "", Raw<int32_t>({0, 2}), "", {}};
  ids.children.push_back({2, 0, "", "", Raw<int64_t>({9, 10}), {}});
  arrow::WriteArray mask{1, 0, "", Raw<int32_t>({0, 1}), "", {}};
  mask.children.push_back({1, 0, "", "", Raw<uint8_t>({1}), {}});
  WriteCustomDataset(dir.str(), schema, {ids, mask}, 1,
                     R"({"input_ids": {"feature": {"dtype": "int64", "_type": "Value"}, "_type": "List"},
                         "loss_mask": {"feature": {"dtype": "uint8", "_type": "Value"}, "_type": "List"}})");
  auto read = TokenDataset::Open(dir.str());
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find("row 0 has 2 input_ids but 1 loss_mask values"),
            std::string::npos)
      << read.status().message();
}

TEST(TokenDataset, FeatureMismatchIsInvalid) {
  namespace arrow = io::arrow;
  TempDir dir;
  arrow::Schema schema;
  schema.fields = {arrow::ListField("input_ids", arrow::Int64Field("item"))};
  arrow::WriteArray ids{1, 0, "", Raw<int32_t>({0, 1}), "", {}};
  ids.children.push_back({1, 0, "", "", Raw<int64_t>({9}), {}});
  WriteCustomDataset(dir.str(), schema, {ids}, 1,
                     R"({"input_ids": {"feature": {"dtype": "bool", "_type": "Value"}, "_type": "List"}})");
  auto read = TokenDataset::Open(dir.str());
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find("does not belong to these shards"), std::string::npos)
      << read.status().message();
}

TEST(TokenDataset, MissingDirectoryIsNotFound) {
  auto read = TokenDataset::Open("/nonexistent/draftforge/dataset");
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), StatusCode::kNotFound);
}

TEST(TokenDataset, OpensPythonWrittenInt32Dataset) {
  DF_REQUIRE_SHARED(dir, "data/hf_datasets/FazTR_PythonAsistan_tokenized_dataset");
  auto read = TokenDataset::Open(dir.string());
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->num_rows(), 38);
  EXPECT_EQ(read->seq_len(0), 64);
  EXPECT_EQ(read->loss_mask(0)[0], 1);  // no loss_mask column: all ones
}

// Cross-checks the writer with Apache Arrow JS (tests/interop).
TEST(TokenDataset, ArrowJsReadsWrittenDataset) {
  const std::filesystem::path interop = std::filesystem::path(DRAFTFORGE_SOURCE_DIR) / "tests" / "interop";
  if (!std::filesystem::exists(interop / "node_modules" / "apache-arrow")) {
    GTEST_SKIP() << "run npm ci --prefix tests/interop";
  }
  if (std::system("node --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "node is not installed";
  TempDir dir;
  TokenDataset written = SampleDataset(1200);  // two record batches
  ASSERT_TRUE(WriteTokenDataset(dir.str(), written).ok());
  std::string command =
      "node '" + (interop / "read_prepared.mjs").string() + "' '" + dir.str() + "' 2>&1";
  std::FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[65536];
  size_t count = 0;
  while ((count = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, count);
  ASSERT_EQ(::pclose(pipe), 0) << output;
  auto json = nlohmann::json::parse(output, nullptr, false);
  ASSERT_FALSE(json.is_discarded()) << output.substr(0, 500);

  const auto& fields = json["schema"]["fields"];
  ASSERT_EQ(fields.size(), 3u);
  EXPECT_EQ(fields[0]["name"], "input_ids");
  EXPECT_EQ(fields[0]["type"], "List<Int64>");
  EXPECT_EQ(fields[0]["children"], nlohmann::json::array({"item"}));
  EXPECT_EQ(fields[1]["name"], "loss_mask");
  EXPECT_EQ(fields[1]["type"], "List<Int64>");
  EXPECT_EQ(fields[2]["name"], "seq_len");
  EXPECT_EQ(fields[2]["type"], "Int64");
  EXPECT_EQ(fields[2]["nullable"], true);
  EXPECT_NE(json["schema"]["metadata"]["huggingface"].get<std::string>().find("\"seq_len\""),
            std::string::npos);

  const auto& rows = json["rows"];
  ASSERT_EQ(rows["input_ids"].size(), 1200u);
  for (int64_t r = 0; r < written.num_rows(); ++r) {
    auto ids = written.input_ids(r);
    auto mask = written.loss_mask(r);
    ASSERT_EQ(rows["input_ids"][r].get<std::vector<int64_t>>(),
              std::vector<int64_t>(ids.begin(), ids.end()))
        << "row " << r;
    ASSERT_EQ(rows["loss_mask"][r].get<std::vector<int64_t>>(),
              std::vector<int64_t>(mask.begin(), mask.end()))
        << "row " << r;
    ASSERT_EQ(rows["seq_len"][r].get<int64_t>(), written.seq_len(r)) << "row " << r;
  }
}

}  // namespace
}  // namespace draftforge::data
