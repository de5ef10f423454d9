#include "draftforge/tokenizer/tokenizer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <memory>
#include <thread>

#include "test_support.h"

namespace draftforge::tokenizer {
namespace {

using draftforge::testing::SharedPath;
using draftforge::testing::TempDir;

const std::vector<std::string> kTokenizers = {"qwen3", "llama3_1", "deepseek_v3", "gemma3", "llama2"};

// Loads each fixture tokenizer once per test binary (gemma3's file is 33 MB).
const Tokenizer* LoadShared(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second.get();
  auto path = SharedPath("tokenizers/" + name + "/tokenizer.json");
  if (!path) return nullptr;
  auto tokenizer = Tokenizer::FromFile(path->string());
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();
  if (!tokenizer.ok()) return nullptr;
  return cache.emplace(name, std::make_unique<Tokenizer>(tokenizer.MoveValueUnsafe())).first->second.get();
}

std::vector<nlohmann::json> ReadJsonLines(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  }
  return lines;
}

std::string FormatIds(const std::vector<int32_t>& ids) { return nlohmann::json(ids).dump(); }

// Counts passing cases per tokenizer and lists the first failures.
struct GoldenTally {
  std::map<std::string, std::pair<int, int>> counts;  // name -> (passed, total)
  std::string failures;
  int failure_count = 0;

  void Record(const std::string& name, const std::string& case_id, bool passed, const std::string& detail) {
    auto& [passed_count, total] = counts[name];
    ++total;
    if (passed) {
      ++passed_count;
      return;
    }
    if (failure_count++ < 10) failures += "\n  " + name + " " + case_id + ": " + detail;
  }
  std::string Summary() const {
    std::string summary;
    for (const auto& [name, count] : counts) {
      summary += name + " " + std::to_string(count.first) + "/" + std::to_string(count.second) + "  ";
    }
    return summary + failures;
  }
};

TEST(TokenizerGolden, TokenizeIdsAndOffsets) {
  DF_REQUIRE_SHARED(golden_dir, "golden/tokenize");
  GoldenTally tally;
  for (const std::string& name : kTokenizers) {
    const Tokenizer* tokenizer = LoadShared(name);
    ASSERT_NE(tokenizer, nullptr) << "tokenizer " << name << " is missing from the shared fixtures";
    for (const nlohmann::json& line : ReadJsonLines(golden_dir / (name + ".jsonl"))) {
      const std::string text = line.at("text").get<std::string>();
      const auto expected_ids = line.at("input_ids").get<std::vector<int32_t>>();
      auto encoding = tokenizer->Encode(text);
      auto ids_only = tokenizer->EncodeIds(text);
      if (!encoding.ok() || !ids_only.ok()) {
        tally.Record(name, line.at("case"), false, "error " + encoding.status().ToString());
        continue;
      }
      if (encoding->ids != expected_ids || *ids_only != expected_ids) {
        tally.Record(name, line.at("case"), false,
                     "ids " + FormatIds(encoding->ids) + " expected " + FormatIds(expected_ids));
        continue;
      }
      const auto offsets = ByteToCodePointOffsets(text, encoding->offsets);
      const auto expected_offsets = line.at("offsets").get<std::vector<std::pair<int64_t, int64_t>>>();
      tally.Record(name, line.at("case"), offsets == expected_offsets,
                   "offsets " + nlohmann::json(offsets).dump() + " expected " + nlohmann::json(expected_offsets).dump());
    }
  }
  EXPECT_EQ(tally.failure_count, 0) << tally.Summary();
  EXPECT_EQ(tally.counts.size(), kTokenizers.size()) << tally.Summary();
}

TEST(TokenizerGolden, RenderedChatIds) {
  DF_REQUIRE_SHARED(golden_dir, "golden");
  GoldenTally tally;
  for (const std::string& name : kTokenizers) {
    const Tokenizer* tokenizer = LoadShared(name);
    ASSERT_NE(tokenizer, nullptr) << "tokenizer " << name << " is missing from the shared fixtures";
    for (const std::string folder : {"chat", "chat_custom"}) {
      const auto path = golden_dir / folder / (name + ".jsonl");
      if (!std::filesystem::exists(path)) continue;  // llama2 has no template of its own
      for (const nlohmann::json& line : ReadJsonLines(path)) {
        if (line.contains("error")) continue;  // template errors: no rendered text
        const std::string text = line.at("rendered").get<std::string>();
        const auto expected_ids = line.at("input_ids").get<std::vector<int32_t>>();
        auto ids = tokenizer->EncodeIds(text);
        if (!ids.ok()) {
          tally.Record(name, line.at("case"), false, "error " + ids.status().ToString());
          continue;
        }
        tally.Record(name, folder + ":" + line.at("case").get<std::string>(), *ids == expected_ids,
                     "ids " + FormatIds(*ids) + " expected " + FormatIds(expected_ids));
      }
    }
  }
  EXPECT_EQ(tally.failure_count, 0) << tally.Summary();
  EXPECT_EQ(tally.counts.size(), kTokenizers.size()) << tally.Summary();
}

TEST(Tokenizer, InvalidUtf8NamesOffset) {
  DF_REQUIRE_SHARED(path, "tokenizers/qwen3/tokenizer.json");
  const Tokenizer* tokenizer = LoadShared("qwen3");
  ASSERT_NE(tokenizer, nullptr);
  for (const std::string& text : {std::string("abc\xff"), std::string("abc\xc3"), std::string("abc\xed\xa0\x80"),
                                  std::string("abc\xc0\xaf")}) {
    auto encoding = tokenizer->Encode(text);
    ASSERT_FALSE(encoding.ok());
    EXPECT_NE(encoding.status().message().find("byte offset 3"), std::string::npos) << encoding.status().ToString();
    EXPECT_FALSE(tokenizer->EncodeIds(text).ok());
  }
}

TEST(Tokenizer, MissingFileNamesPath) {
  TempDir dir;
  const std::string path = dir.str() + "/absent/tokenizer.json";
  auto tokenizer = Tokenizer::FromFile(path);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.status().code(), StatusCode::kNotFound);
  EXPECT_NE(tokenizer.status().message().find(path), std::string::npos) << tokenizer.status().ToString();
}

TEST(Tokenizer, CorruptFileNamesPath) {
  TempDir dir;
  const std::string truncated = dir.str() + "/truncated.json";
  std::ofstream(truncated) << R"({"model": {"type": "BPE", "vocab": {"a": 0)";
  auto result = Tokenizer::FromFile(truncated);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find(truncated), std::string::npos) << result.status().ToString();

  const std::string bad_merge = dir.str() + "/bad_merge.json";
  std::ofstream(bad_merge) << R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})";
  result = Tokenizer::FromFile(bad_merge);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find(bad_merge), std::string::npos) << result.status().ToString();
  EXPECT_NE(result.status().message().find("merges[0]"), std::string::npos) << result.status().ToString();

  const std::string unsupported = dir.str() + "/unigram.json";
  std::ofstream(unsupported) << R"({"model": {"type": "Unigram", "vocab": []}})";
  result = Tokenizer::FromFile(unsupported);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kUnimplemented) << result.status().ToString();
}

// A character-level BPE with one added token, written to a temp file.
std::string WriteTinyTokenizer(const TempDir& dir, bool lstrip, bool rstrip, bool single_word) {
  nlohmann::ordered_json json = {
      {"added_tokens",
       {{{"id", 5},
         {"content", "<x>"},
         {"single_word", single_word},
         {"lstrip", lstrip},
         {"rstrip", rstrip},
         {"normalized", false},
         {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", nullptr},
      {"post_processor", nullptr},
      {"decoder", nullptr},
      {"model",
       {{"type", "BPE"},
        {"vocab", {{"a", 0}, {"b", 1}, {" ", 2}, {"ab", 3}, {"c", 4}}},
        {"merges", {"a b"}}}}};
  const std::string path = dir.str() + "/tiny.json";
  std::ofstream(path) << json.dump();
  return path;
}

TEST(Tokenizer, AddedTokenLstripRstrip) {
  TempDir dir;
  const std::string text = "ab <x> c";
  {
    auto tokenizer = Tokenizer::FromFile(WriteTinyTokenizer(dir, false, false, false));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();
    auto encoding = tokenizer->Encode(text);
    ASSERT_TRUE(encoding.ok()) << encoding.status().ToString();
    EXPECT_EQ(encoding->ids, (std::vector<int32_t>{3, 2, 5, 2, 4}));
  }
  {
    auto tokenizer = Tokenizer::FromFile(WriteTinyTokenizer(dir, true, true, false));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();
    auto encoding = tokenizer->Encode(text);
    ASSERT_TRUE(encoding.ok()) << encoding.status().ToString();
    EXPECT_EQ(encoding->ids, (std::vector<int32_t>{3, 5, 4}));
    const std::vector<std::pair<int64_t, int64_t>> expected = {{0, 2}, {2, 7}, {7, 8}};
    EXPECT_EQ(encoding->offsets, expected);
  }
  {
    // single_word: "ab<x>" has a word character before the token, so no match.
    auto tokenizer = Tokenizer::FromFile(WriteTinyTokenizer(dir, false, false, true));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();
    auto ids = tokenizer->EncodeIds("ab<x>");
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(std::count(ids->begin(), ids->end(), 5), 0) << FormatIds(*ids);
    ids = tokenizer->EncodeIds("ab <x> c");
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(std::count(ids->begin(), ids->end(), 5), 1) << FormatIds(*ids);
  }
}

TEST(Tokenizer, Llama2ByteFallback) {
  DF_REQUIRE_SHARED(path, "tokenizers/llama2/tokenizer.json");
  const Tokenizer* tokenizer = LoadShared("llama2");
  ASSERT_NE(tokenizer, nullptr);
  const std::string parrot = "\xF0\x9F\xA6\x9C";  // U+1F99C, not in the vocabulary
  ASSERT_FALSE(tokenizer->TokenToId(parrot).has_value());
  auto encoding = tokenizer->Encode(parrot);
  ASSERT_TRUE(encoding.ok()) << encoding.status().ToString();
  std::vector<int32_t> expected = {*tokenizer->TokenToId("\xE2\x96\x81")};  // the prepended U+2581
  for (const char* byte_token : {"<0xF0>", "<0x9F>", "<0xA6>", "<0x9C>"}) {
    ASSERT_TRUE(tokenizer->TokenToId(byte_token).has_value()) << byte_token;
    expected.push_back(*tokenizer->TokenToId(byte_token));
  }
  EXPECT_EQ(encoding->ids, expected);
  for (const auto& offsets : encoding->offsets) EXPECT_EQ(offsets, (std::pair<int64_t, int64_t>{0, 4}));
  EXPECT_EQ(tokenizer->Decode(encoding->ids), parrot);
}

TEST(Tokenizer, Qwen3NfdInputGivesNfcIds) {
  DF_REQUIRE_SHARED(path, "tokenizers/qwen3/tokenizer.json");
  const Tokenizer* tokenizer = LoadShared("qwen3");
  ASSERT_NE(tokenizer, nullptr);
  auto composed = tokenizer->EncodeIds("caf\xC3\xA9 cr\xC3\xA8me");          // NFC
  auto decomposed = tokenizer->EncodeIds("cafe\xCC\x81 cre\xCC\x80me");      // NFD
  ASSERT_TRUE(composed.ok());
  ASSERT_TRUE(decomposed.ok());
  EXPECT_EQ(*composed, *decomposed);
  auto encoding = tokenizer->Encode("e\xCC\x81");
  ASSERT_TRUE(encoding.ok());
  ASSERT_EQ(encoding->ids.size(), 1u);
  // The composed character keeps the span of its first source character.
  EXPECT_EQ(encoding->offsets[0], (std::pair<int64_t, int64_t>{0, 1}));
}

TEST(Tokenizer, Llama3BosInTextIsOneId) {
  DF_REQUIRE_SHARED(path, "tokenizers/llama3_1/tokenizer.json");
  const Tokenizer* tokenizer = LoadShared("llama3_1");
  ASSERT_NE(tokenizer, nullptr);
  const int32_t bos = 128000;
  ASSERT_EQ(tokenizer->TokenToId("<|begin_of_text|>"), bos);
  auto ids = tokenizer->EncodeIds("<|begin_of_text|>Hello");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(std::count(ids->begin(), ids->end(), bos), 1) << FormatIds(*ids);
  EXPECT_EQ(ids->front(), bos);

  auto with_special = tokenizer->Encode("Hello", /*add_special_tokens=*/true);
  ASSERT_TRUE(with_special.ok());
  auto plain = tokenizer->EncodeIds("Hello");
  ASSERT_TRUE(plain.ok());
  ASSERT_EQ(with_special->ids.size(), plain->size() + 1);
  EXPECT_EQ(with_special->ids.front(), bos);
  EXPECT_EQ(with_special->offsets.front(), (std::pair<int64_t, int64_t>{0, 0}));
  EXPECT_EQ(tokenizer->Decode(with_special->ids, /*skip_special_tokens=*/true), "Hello");
  EXPECT_EQ(tokenizer->Decode(with_special->ids), "<|begin_of_text|>Hello");
  EXPECT_EQ(tokenizer->vocab_size(), 128256);
}

TEST(Tokenizer, DecodeRoundTrip) {
  for (const std::string& name : kTokenizers) {
    if (!SharedPath("tokenizers/" + name + "/tokenizer.json")) GTEST_SKIP() << "shared tokenizers missing";
    const Tokenizer* tokenizer = LoadShared(name);
    ASSERT_NE(tokenizer, nullptr);
    for (const std::string text : {"Hello world", "tabs\tand\nnewlines  ", "ünïcödé 漢字 🦜", "x = 12345;"}) {
      auto ids = tokenizer->EncodeIds(text);
      ASSERT_TRUE(ids.ok());
      std::string decoded = tokenizer->Decode(*ids);
      EXPECT_EQ(decoded, text) << name;
    }
  }
}

TEST(Tokenizer, ConcurrentEncodeMatchesSerial) {
  DF_REQUIRE_SHARED(golden, "golden/chat/qwen3.jsonl");
  const Tokenizer* tokenizer = LoadShared("qwen3");
  ASSERT_NE(tokenizer, nullptr);
  std::vector<std::string> texts;
  for (const auto& line : ReadJsonLines(golden)) {
    if (line.contains("rendered")) texts.push_back(line.at("rendered").get<std::string>());
  }
  std::vector<std::vector<int32_t>> serial;
  for (const auto& text : texts) serial.push_back(tokenizer->EncodeIds(text).ValueOrDie());
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = 0; i < texts.size(); ++i) {
        const size_t index = (i + t * 37) % texts.size();
        auto ids = tokenizer->EncodeIds(texts[index]);
        if (!ids.ok() || *ids != serial[index]) ++mismatches[t];
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

}  // namespace
}  // namespace draftforge::tokenizer
