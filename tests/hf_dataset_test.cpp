#include "draftforge/data/hf_dataset.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "test_support.h"

namespace draftforge::data {
namespace {

constexpr const char* kRoot = "data/hf_datasets/";

TEST(HfDataset, ForbetterDatasetDict) {
  DF_REQUIRE_SHARED(dir, std::string(kRoot) + "hahababa123_forbetter_tokenized_data");
  auto dict = OpenHfDatasetDict(dir.string());
  ASSERT_TRUE(dict.ok()) << dict.status().ToString();
  EXPECT_EQ(dict->split_names, (std::vector<std::string>{"train", "val"}));
  const HfDataset& train = dict->splits.at("train");
  EXPECT_EQ(train.num_rows(), 160);
  EXPECT_EQ(dict->splits.at("val").num_rows(), 40);
  EXPECT_EQ(train.format_type(), "torch");
  EXPECT_EQ(train.column_names(),
            (std::vector<std::string>{"labels", "input_ids", "token_type_ids", "attention_mask"}));
  EXPECT_EQ(train.schema().fields[0].TypeString(), "list<item: double>");
  auto labels = train.GetColumn("labels").ValueOrDie();
  auto ids = train.GetColumn("input_ids").ValueOrDie();
  auto mask = train.GetColumn("attention_mask").ValueOrDie();
  for (int64_t row : {0, 159}) {
    EXPECT_EQ(labels.GetDoubleList(row).ValueOrDie().size(), 3u);
    auto row_ids = ids.GetIntList(row).ValueOrDie();
    ASSERT_EQ(row_ids.size(), 512u);
    EXPECT_EQ(row_ids[0], 101);  // bert-base-chinese [CLS]
    auto row_mask = mask.GetIntList(row).ValueOrDie();
    EXPECT_EQ(row_mask[0], 1);
  }
}

TEST(HfDataset, ErvinDatasetDictWithNullsInsideLists) {
  DF_REQUIRE_SHARED(dir, std::string(kRoot) + "ervin007_POC_L_root");
  auto dict = OpenHfDatasetDict(dir.string());
  ASSERT_TRUE(dict.ok()) << dict.status().ToString();
  EXPECT_EQ(dict->split_names, (std::vector<std::string>{"train", "validation"}));
  EXPECT_EQ(dict->splits.at("train").num_rows(), 177);
  EXPECT_EQ(dict->splits.at("validation").num_rows(), 18);
  EXPECT_FALSE(dict->splits.at("train").format_type().has_value());

  for (const auto& [name, expected_nulls] :
       std::vector<std::pair<std::string, int64_t>>{{"train", 368}, {"validation", 31}}) {
    const HfDataset& split = dict->splits.at(name);
    auto word_ids = split.GetColumn("word_ids").ValueOrDie();
    auto labels = split.GetColumn("labels").ValueOrDie();
    auto input_ids = split.GetColumn("input_ids").ValueOrDie();
    int64_t nulls = 0;
    for (const auto* chunk : word_ids.chunks()) nulls += chunk->children[0].null_count;
    EXPECT_EQ(nulls, expected_nulls) << name;
    // labels equal input_ids in every row.
    for (int64_t row = 0; row < split.num_rows(); ++row) {
      ASSERT_EQ(labels.GetIntList(row).ValueOrDie(), input_ids.GetIntList(row).ValueOrDie())
          << name << " row " << row;
      ASSERT_EQ(input_ids.GetIntList(row).ValueOrDie().size(), 128u);
    }
  }
}

TEST(HfDataset, FazTRPlainDataset) {
  DF_REQUIRE_SHARED(dir, std::string(kRoot) + "FazTR_PythonAsistan_tokenized_dataset");
  EXPECT_FALSE(IsHfDatasetDict(dir.string()));
  auto dataset = HfDataset::Open(dir.string());
  ASSERT_TRUE(dataset.ok()) << dataset.status().ToString();
  EXPECT_EQ(dataset->num_rows(), 38);
  auto label = dataset->GetColumn("label").ValueOrDie();
  EXPECT_EQ(label.field().TypeString(), "int64");
  auto ids = dataset->GetColumn("input_ids").ValueOrDie();
  auto row = ids.GetIntList(0).ValueOrDie();
  ASSERT_EQ(row.size(), 64u);
  EXPECT_EQ(row.back(), 0);  // right-padded with 0
  EXPECT_GE(label.GetInt(0).ValueOrDie(), 0);
}

TEST(HfDataset, MgsmRowCountComesFromArrow) {
  DF_REQUIRE_SHARED(dir, std::string(kRoot) + "ryota1993_mergekit_slice_math_50");
  auto dict = OpenHfDatasetDict(dir.string());
  ASSERT_TRUE(dict.ok()) << dict.status().ToString();
  const HfDataset& test = dict->splits.at("test");
  EXPECT_EQ(test.num_rows(), 50);
  EXPECT_EQ(test.info()["splits"]["test"]["num_examples"], 250);
  EXPECT_EQ(test.split(), "test");
  auto question = test.GetColumn("question").ValueOrDie();
  auto answer = test.GetColumn("answer_number").ValueOrDie();
  EXPECT_EQ(answer.field().TypeString(), "int32");
  std::string text = question.GetString(0).ValueOrDie();
  EXPECT_FALSE(text.empty());
  // Japanese UTF-8 text: multi-byte lead bytes occur.
  EXPECT_NE(std::count_if(text.begin(), text.end(), [](char c) { return (c & 0x80) != 0; }), 0);
  EXPECT_TRUE(answer.GetInt(49).ok());
}

TEST(HfDataset, PatoisListAndSequenceReadAlike) {
  DF_REQUIRE_SHARED(list_dir, std::string(kRoot) + "Kenrick14_Patois_tokenized_val_list");
  DF_REQUIRE_SHARED(sequence_dir, std::string(kRoot) + "Kenrick14_Patois_tokenized_val_sequence");
  auto list = HfDataset::Open(list_dir.string());
  auto sequence = HfDataset::Open(sequence_dir.string());
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_TRUE(sequence.ok()) << sequence.status().ToString();
  EXPECT_EQ(list->num_rows(), 15);
  EXPECT_EQ(sequence->num_rows(), 15);
  EXPECT_EQ(list->info()["features"]["input_ids"]["_type"], "List");
  EXPECT_EQ(sequence->info()["features"]["input_ids"]["_type"], "Sequence");
  EXPECT_EQ(list->schema().fields[3].TypeString(), "bool");
  for (const std::string column : {"input_text", "target_text", "domain"}) {
    auto a = list->GetColumn(column).ValueOrDie();
    auto b = sequence->GetColumn(column).ValueOrDie();
    for (int64_t row = 0; row < 15; ++row) {
      EXPECT_EQ(a.GetString(row).ValueOrDie(), b.GetString(row).ValueOrDie());
    }
  }
  for (const std::string column : {"contains_slang", "input_ids", "attention_mask", "labels"}) {
    auto a = list->GetColumn(column).ValueOrDie();
    auto b = sequence->GetColumn(column).ValueOrDie();
    for (int64_t row = 0; row < 15; ++row) {
      if (column == "contains_slang") {
        EXPECT_EQ(a.GetInt(row).ValueOrDie(), b.GetInt(row).ValueOrDie());
      } else {
        EXPECT_EQ(a.GetIntList(row).ValueOrDie(), b.GetIntList(row).ValueOrDie());
      }
    }
  }
  auto labels = list->GetColumn("labels").ValueOrDie().GetIntList(0).ValueOrDie();
  ASSERT_EQ(labels.size(), 128u);
  EXPECT_EQ(labels.back(), -100);  // padding
}

TEST(HfDataset, DatasetDictNeedsSplitFolder) {
  DF_REQUIRE_SHARED(dir, std::string(kRoot) + "ervin007_POC_L_root");
  auto dataset = HfDataset::Open(dir.string());
  ASSERT_FALSE(dataset.ok());
  EXPECT_NE(dataset.status().message().find("is a DatasetDict"), std::string::npos)
      << dataset.status().message();
}

TEST(HfDataset, UnknownColumnListsColumns) {
  DF_REQUIRE_SHARED(dir, std::string(kRoot) + "FazTR_PythonAsistan_tokenized_dataset");
  auto dataset = HfDataset::Open(dir.string()).ValueOrDie();
  auto column = dataset.GetColumn("loss_mask");
  ASSERT_FALSE(column.ok());
  EXPECT_EQ(column.status().code(), StatusCode::kNotFound);
  EXPECT_NE(column.status().message().find("input_ids, token_type_ids"), std::string::npos);
  auto label = dataset.GetColumn("label").ValueOrDie();
  EXPECT_FALSE(label.GetString(0).ok());
  EXPECT_FALSE(label.GetIntList(0).ok());
}

}  // namespace
}  // namespace draftforge::data
