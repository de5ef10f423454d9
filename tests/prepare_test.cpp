#include "draftforge/data/prepare.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "draftforge/data/token_dataset.h"
#include "draftforge/io/token_freq.h"
#include "draftforge/util/fs.h"
#include "test_support.h"

namespace draftforge::data {
namespace {

using draftforge::testing::TempDir;

std::string WriteInput(const TempDir& dir, const std::string& name, const std::string& text) {
  std::string path = (dir.path() / name).string();
  EXPECT_TRUE(WriteFileAtomic(path, text).ok());
  return path;
}

PrepareOptions Options(const TempDir& dir, std::vector<std::string> data) {
  PrepareOptions options;
  options.data_files = std::move(data);
  options.output_dir = (dir.path() / "out").string();
  options.show_progress = false;
  return options;
}

std::vector<std::vector<int64_t>> RowIds(const TokenDataset& dataset) {
  std::vector<std::vector<int64_t>> rows;
  for (int64_t r = 0; r < dataset.num_rows(); ++r) {
    rows.emplace_back(dataset.input_ids(r).begin(), dataset.input_ids(r).end());
  }
  return rows;
}

TEST(Prepare, JsonlRowsSkipsAndTokenFreq) {
  TempDir dir;
  auto input = WriteInput(dir, "a.jsonl",
                          "{\"input_ids\": [1, 2, 3], \"loss_mask\": [0, 1, 1]}\n"
                          "{\"input_ids\": [4, 2], \"id\": \"x\"}\n"
                          "\n"
                          "{\"input_ids\": [], \"loss_mask\": []}\n"
                          "{\"input_ids\": [6, 7], \"loss_mask\": [1]}\n"
                          "{\"input_ids\": [8], \"loss_mask\": [false]}\n");
  auto summary = RunPrepare(Options(dir, {input}));
  ASSERT_TRUE(summary.ok()) << summary.status().ToString();
  EXPECT_EQ(summary->records_read, 5);
  EXPECT_EQ(summary->rows_kept, 2);
  EXPECT_EQ(summary->tokens, 5);
  EXPECT_EQ(summary->trainable_tokens, 4);
  EXPECT_EQ(summary->skipped.at(kSkipEmpty), 1);
  EXPECT_EQ(summary->skipped.at(kSkipMaskLength), 1);
  EXPECT_EQ(summary->skipped.at(kSkipNoTrainable), 1);
  EXPECT_NE(summary->ToString().find("skipped 3 records"), std::string::npos);

  auto dataset = TokenDataset::Open((dir.path() / "out").string());
  ASSERT_TRUE(dataset.ok()) << dataset.status().ToString();
  EXPECT_EQ(dataset->num_rows(), 2);
  auto freq = io::ReadTokenFreq((dir.path() / "out" / "token_freq.pt").string());
  ASSERT_TRUE(freq.ok()) << freq.status().ToString();
  EXPECT_EQ(*freq, (std::map<int64_t, int64_t>{{2, 2}, {3, 1}, {4, 1}}));
}

TEST(Prepare, JsonArrayWithBoolMask) {
  TempDir dir;
  auto input = WriteInput(dir, "a.json",
                          "[\n  {\"input_ids\": [5, 6], \"loss_mask\": [true, false]},\n"
                          "  {\"input_ids\": [7], \"loss_mask\": [1]}\n]\n");
  auto options = Options(dir, {input});
  options.seed = 3;
  ASSERT_TRUE(RunPrepare(options).ok());
  auto dataset = TokenDataset::Open(options.output_dir).ValueOrDie();
  ASSERT_EQ(dataset.num_rows(), 2);
  int64_t trainable = 0;
  for (int64_t r = 0; r < 2; ++r) {
    for (uint8_t bit : dataset.loss_mask(r)) trainable += bit;
  }
  EXPECT_EQ(trainable, 2);
}

TEST(Prepare, MalformedLineNamesFileAndLine) {
  TempDir dir;
  auto input = WriteInput(dir, "bad.jsonl", "{\"input_ids\": [1]}\n{\"input_ids\": [1, \n");
  auto summary = RunPrepare(Options(dir, {input}));
  ASSERT_FALSE(summary.ok());
  EXPECT_NE(summary.status().message().find("bad.jsonl:2: malformed JSON"), std::string::npos)
      << summary.status().message();
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "out" / "state.json"));
}

TEST(Prepare, TrailingTextAfterObjectIsMalformed) {
  TempDir dir;
  auto input = WriteInput(dir, "bad.jsonl", "{\"input_ids\": [1]} {\"input_ids\": [2]}\n");
  auto summary = RunPrepare(Options(dir, {input}));
  ASSERT_FALSE(summary.ok());
  EXPECT_NE(summary.status().message().find("bad.jsonl:1: malformed JSON line"),
            std::string::npos)
      << summary.status().message();
}

TEST(Prepare, TokenIdOutsideVocabFails) {
  TempDir dir;
  std::filesystem::create_directories(dir.path() / "model");
  ASSERT_TRUE(WriteFileAtomic((dir.path() / "model" / "config.json").string(),
                              R"({"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
                                  "num_hidden_layers": 2, "num_attention_heads": 2})")
                  .ok());
  auto input = WriteInput(dir, "a.jsonl", "{\"input_ids\": [1, 2]}\n{\"input_ids\": [3, 10]}\n");
  auto options = Options(dir, {input});
  options.model_dir = (dir.path() / "model").string();
  auto summary = RunPrepare(options);
  ASSERT_FALSE(summary.ok());
  EXPECT_NE(summary.status().message().find(
                "a.jsonl:2: field 'input_ids' position 1 has token id 10, outside [0, 10)"),
            std::string::npos)
      << summary.status().message();
}

TEST(Prepare, NegativeOrNonIntegerIdFails) {
  TempDir dir;
  auto negative = WriteInput(dir, "n.jsonl", "{\"input_ids\": [-1]}\n");
  auto summary = RunPrepare(Options(dir, {negative}));
  ASSERT_FALSE(summary.ok());
  EXPECT_NE(summary.status().message().find("token id -1"), std::string::npos);
  auto fraction = WriteInput(dir, "f.jsonl", "{\"input_ids\": [1.5]}\n");
  summary = RunPrepare(Options(dir, {fraction}));
  ASSERT_FALSE(summary.ok());
  EXPECT_NE(summary.status().message().find("position 0 is 1.5, not an integer token id"),
            std::string::npos)
      << summary.status().message();
}

TEST(Prepare, BadLossMaskValueFails) {
  TempDir dir;
  auto input = WriteInput(dir, "a.jsonl", "{\"input_ids\": [1, 2], \"loss_mask\": [1, 2]}\n");
  auto summary = RunPrepare(Options(dir, {input}));
  ASSERT_FALSE(summary.ok());
  EXPECT_NE(summary.status().message().find(
                "a.jsonl:1: field 'loss_mask' position 1 is 2; values must be 0, 1, true or false"),
            std::string::npos)
      << summary.status().message();
}

TEST(Prepare, ChatAfterPreTokenizedFails) {
  TempDir dir;
  auto input = WriteInput(dir, "mixed.jsonl",
                          "{\"input_ids\": [1, 2]}\n"
                          "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n");
  auto summary = RunPrepare(Options(dir, {input}));
  ASSERT_FALSE(summary.ok());
  EXPECT_NE(summary.status().message().find("mixed.jsonl:2: the record has 'messages' (chat data)"),
            std::string::npos)
      << summary.status().message();
}

TEST(Prepare, ChatWithoutModelFails) {
  TempDir dir;
  auto input = WriteInput(dir, "chat.jsonl",
                          "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n");
  auto summary = RunPrepare(Options(dir, {input}));
  ASSERT_FALSE(summary.ok());
  EXPECT_NE(summary.status().message().find("chat data needs --model DIR"), std::string::npos)
      << summary.status().message();
}

TEST(Prepare, RecordWithoutInputIdsFails) {
  TempDir dir;
  auto input = WriteInput(dir, "a.jsonl", "{\"text\": \"hello\"}\n");
  auto summary = RunPrepare(Options(dir, {input}));
  ASSERT_FALSE(summary.ok());
  EXPECT_NE(summary.status().message().find("a.jsonl:1: the record has no 'input_ids'"),
            std::string::npos);
}

TEST(Prepare, NoRowsLeftFails) {
  TempDir dir;
  auto input = WriteInput(dir, "a.jsonl", "{\"input_ids\": []}\n");
  auto summary = RunPrepare(Options(dir, {input}));
  ASSERT_FALSE(summary.ok());
  EXPECT_NE(summary.status().message().find("no rows left"), std::string::npos);
}

TEST(Prepare, TruncatesToSeqLength) {
  TempDir dir;
  auto input = WriteInput(dir, "a.jsonl",
                          "{\"input_ids\": [1, 2, 3, 4], \"loss_mask\": [1, 1, 1, 1]}\n"
                          "{\"input_ids\": [5, 6, 7], \"loss_mask\": [0, 0, 1]}\n");
  auto options = Options(dir, {input});
  options.seq_length = 2;
  auto summary = RunPrepare(options);
  ASSERT_TRUE(summary.ok()) << summary.status().ToString();
  // Both rows are cut, but the second loses its only trainable token and is
  // skipped, so only the kept first row counts as truncated.
  EXPECT_EQ(summary->truncated_rows, 1);
  EXPECT_EQ(summary->skipped.at(kSkipNoTrainable), 1);
  auto dataset = TokenDataset::Open(options.output_dir).ValueOrDie();
  EXPECT_EQ(RowIds(dataset), (std::vector<std::vector<int64_t>>{{1, 2}}));
}

TEST(Prepare, MaxSamplesAndSeedAreDeterministic) {
  TempDir dir;
  std::string first, second;
  for (int i = 0; i < 20; ++i) first += fmt::format("{{\"input_ids\": [{}]}}\n", i);
  for (int i = 100; i < 105; ++i) second += fmt::format("{{\"input_ids\": [{}]}}\n", i);
  auto a = WriteInput(dir, "a.jsonl", first);
  auto b = WriteInput(dir, "b.jsonl", second);

  auto run = [&](uint64_t seed, int64_t max_samples, const std::string& out) {
    auto options = Options(dir, {a, b});
    options.output_dir = (dir.path() / out).string();
    options.seed = seed;
    if (max_samples > 0) options.max_samples = max_samples;
    EXPECT_TRUE(RunPrepare(options).ok());
    return RowIds(TokenDataset::Open(options.output_dir).ValueOrDie());
  };
  auto seed0 = run(0, 5, "s0");
  EXPECT_EQ(seed0.size(), 5u);
  EXPECT_EQ(run(0, 5, "s0_again"), seed0);
  EXPECT_NE(run(1, 5, "s1"), seed0);
  for (const auto& row : seed0) EXPECT_LT(row[0], 20);  // all from the first source

  // Without a cut, both sources are kept in command-line order.
  auto all = run(0, 0, "all");
  ASSERT_EQ(all.size(), 25u);
  for (size_t i = 20; i < 25; ++i) EXPECT_GE(all[i][0], 100);
  EXPECT_EQ(std::vector<std::vector<int64_t>>(all.begin(), all.begin() + 5), seed0);
}

TEST(Prepare, RowOrderMatchesDatasetsShuffle) {
  // 11 records, the one at index 4 empty (skipped). datasets' shuffle(seed=0)
  // orders the raw records as numpy.random.default_rng(0).permutation(11) =
  // [4, 6, 7, 2, 0, 3, 5, 10, 9, 8, 1] (NumPy 1.24), and the skipped record
  // leaves its place without shifting the others.
  TempDir dir;
  std::string text;
  for (int i = 0; i < 11; ++i) {
    text += i == 4 ? std::string("{\"input_ids\": []}\n") : fmt::format("{{\"input_ids\": [{}]}}\n", 10 + i);
  }
  auto input = WriteInput(dir, "a.jsonl", text);
  auto options = Options(dir, {input});
  ASSERT_TRUE(RunPrepare(options).ok());
  EXPECT_EQ(RowIds(TokenDataset::Open(options.output_dir).ValueOrDie()),
            (std::vector<std::vector<int64_t>>{{16}, {17}, {12}, {10}, {13}, {15}, {20}, {19}, {18}, {11}}));

  // --max-samples 2 processes the first 3 x 2 shuffled records and keeps the
  // first 2 rows among them.
  options.output_dir = (dir.path() / "cut").string();
  options.max_samples = 2;
  ASSERT_TRUE(RunPrepare(options).ok());
  EXPECT_EQ(RowIds(TokenDataset::Open(options.output_dir).ValueOrDie()),
            (std::vector<std::vector<int64_t>>{{16}, {17}}));

  // A --max-samples near the int64 limit keeps every row (3 x max must not
  // overflow).
  options.output_dir = (dir.path() / "huge").string();
  options.max_samples = int64_t{4000000000000000000};
  auto huge = RunPrepare(options);
  ASSERT_TRUE(huge.ok()) << huge.status().ToString();
  EXPECT_EQ(TokenDataset::Open(options.output_dir).ValueOrDie().num_rows(), 10);
}

TEST(Prepare, ShuffleIsAPermutation) {
  auto order = ShuffledIndices(1000, 7);
  std::vector<int64_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_NE(order, sorted);
  EXPECT_EQ(ShuffledIndices(1000, 7), order);
}

TEST(Prepare, ExistingOutputKeptUnlessOverwrite) {
  TempDir dir;
  auto input = WriteInput(dir, "a.jsonl", "{\"input_ids\": [1, 2]}\n");
  auto options = Options(dir, {input});
  ASSERT_TRUE(RunPrepare(options).ok());
  const std::string freq_path = options.output_dir + "/token_freq.pt";
  ASSERT_TRUE(io::WriteTokenFreq(freq_path, {{42, 1}}).ok());

  WriteInput(dir, "a.jsonl", "{\"input_ids\": [3]}\n{\"input_ids\": [4]}\n");
  auto again = RunPrepare(options);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->output_existed);
  EXPECT_EQ(TokenDataset::Open(options.output_dir).ValueOrDie().num_rows(), 1);

  // --overwrite replaces the rows and what derives from them in OUTPUT: the
  // token frequencies and a cached vocabulary mapping.
  for (const char* name : {"d2t.npy", "t2d.npy"}) {
    std::ofstream(options.output_dir + "/" + name) << "stale";
  }
  options.overwrite = true;
  auto rewritten = RunPrepare(options);
  ASSERT_TRUE(rewritten.ok()) << rewritten.status().ToString();
  EXPECT_TRUE(rewritten->token_freq_written);
  EXPECT_EQ(TokenDataset::Open(options.output_dir).ValueOrDie().num_rows(), 2);
  EXPECT_EQ(io::ReadTokenFreq(freq_path).ValueOrDie(), (std::map<int64_t, int64_t>{{3, 1}, {4, 1}}));
  EXPECT_FALSE(std::filesystem::exists(options.output_dir + "/d2t.npy"));
  EXPECT_FALSE(std::filesystem::exists(options.output_dir + "/t2d.npy"));

  // A file named by --token-freq-path is the user's and stays.
  const std::string own_freq = (dir.path() / "own_freq.pt").string();
  ASSERT_TRUE(io::WriteTokenFreq(own_freq, {{42, 1}}).ok());
  options.token_freq_path = own_freq;
  auto with_own = RunPrepare(options);
  ASSERT_TRUE(with_own.ok()) << with_own.status().ToString();
  EXPECT_FALSE(with_own->token_freq_written);
  EXPECT_EQ(io::ReadTokenFreq(own_freq).ValueOrDie(), (std::map<int64_t, int64_t>{{42, 1}}));
}

TEST(Prepare, CliRejectsSeedOutsideRange) {
  TempDir dir;
  auto input = WriteInput(dir, "a.jsonl", "{\"input_ids\": [1, 2]}\n");
  for (const char* seed : {"-1", "18446744073709551616", "1.5", "abc"}) {
    SCOPED_TRACE(seed);
    auto result = draftforge::testing::RunDraftforge(
        {"prepare", "--data", input, "--output", (dir.path() / "out").string(), "--seed", seed});
    EXPECT_NE(result.exit_code, 0) << result.output;
    EXPECT_NE(result.output.find("must be an integer in 0..18446744073709551615"), std::string::npos)
        << result.output;
  }
  auto largest = draftforge::testing::RunDraftforge(
      {"prepare", "--data", input, "--output", (dir.path() / "out").string(), "--seed", "18446744073709551615"});
  EXPECT_EQ(largest.exit_code, 0) << largest.output;
}

TEST(Prepare, CliPrintsSummary) {
  TempDir dir;
  auto input = WriteInput(dir, "a.jsonl",
                          "{\"input_ids\": [1, 2], \"loss_mask\": [0, 1]}\n{\"input_ids\": []}\n");
  const std::string freq = (dir.path() / "freq" / "tf.pt").string();
  auto result = draftforge::testing::RunDraftforge(
      {"prepare", "--data", input, "--output", (dir.path() / "out").string(),
       "--token-freq-path", freq, "--no-progress"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("kept 1 rows with 2 tokens (1 trainable)"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("skipped (empty input_ids): 1"), std::string::npos);
  EXPECT_EQ(io::ReadTokenFreq(freq).ValueOrDie(), (std::map<int64_t, int64_t>{{2, 1}}));

  auto existing = draftforge::testing::RunDraftforge(
      {"prepare", "--data", input, "--output", (dir.path() / "out").string()});
  EXPECT_EQ(existing.exit_code, 0);
  EXPECT_NE(existing.output.find("already contains *.arrow shards"), std::string::npos);

  auto failed = draftforge::testing::RunDraftforge(
      {"prepare", "--data", (dir.path() / "missing.jsonl").string(), "--output",
       (dir.path() / "out2").string()});
  EXPECT_EQ(failed.exit_code, 1);
  EXPECT_NE(failed.output.find("missing.jsonl"), std::string::npos);
}

TEST(Prepare, TruncatedCountCoversKeptRowsOnly) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 20; ++i) text += "{\"input_ids\": [1, 2, 3], \"loss_mask\": [1, 1, 1]}\n";
  auto options = Options(dir, {WriteInput(dir, "a.jsonl", text)});
  options.seq_length = 1;
  options.max_samples = 5;
  auto summary = RunPrepare(options);
  ASSERT_TRUE(summary.ok()) << summary.status().ToString();
  EXPECT_EQ(summary->records_read, 20);
  EXPECT_EQ(summary->rows_kept, 5);
  EXPECT_EQ(summary->truncated_rows, 5);
  EXPECT_NE(summary->ToString().find("5 of the kept rows truncated"), std::string::npos)
      << summary->ToString();
}

TEST(Prepare, SkipsUtf8ByteOrderMark) {
  TempDir dir;
  const std::string bom = "\xEF\xBB\xBF";
  auto jsonl = Options(dir, {WriteInput(dir, "a.jsonl",
                                        bom + "{\"input_ids\": [1, 2]}\n{\"input_ids\": [3]}\n")});
  auto jsonl_summary = RunPrepare(jsonl);
  ASSERT_TRUE(jsonl_summary.ok()) << jsonl_summary.status().ToString();
  EXPECT_EQ(jsonl_summary->rows_kept, 2);

  TempDir array_dir;
  auto array = Options(array_dir, {WriteInput(array_dir, "a.json",
                                              bom + "[{\"input_ids\": [1, 2]}, "
                                                    "{\"input_ids\": [3]}]\n")});
  auto array_summary = RunPrepare(array);
  ASSERT_TRUE(array_summary.ok()) << array_summary.status().ToString();
  EXPECT_EQ(array_summary->rows_kept, 2);
}

TEST(Prepare, CliRejectsNegativeMaxSamples) {
  TempDir dir;
  auto input = WriteInput(dir, "a.jsonl", "{\"input_ids\": [1, 2]}\n");
  auto result = draftforge::testing::RunDraftforge(
      {"prepare", "--data", input, "--output", (dir.path() / "out").string(), "--max-samples",
       "-3"});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("--max-samples"), std::string::npos) << result.output;
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "out"));
}

TEST(Prepare, ProgressReportsBytesRead) {
  TempDir dir;
  auto input = WriteInput(dir, "a.jsonl", "{\"input_ids\": [1, 2]}\n");
  auto result = draftforge::testing::RunDraftforge(
      {"prepare", "--data", input, "--output", (dir.path() / "out").string()});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("GB read"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("GB written"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace draftforge::data
