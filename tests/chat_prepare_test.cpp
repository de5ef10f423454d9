// Chat-data prepare: loss masks (generation markers, detected and given
// patterns), the cases met in the field, bad input, and whole runs on
// ShareGPT conversations with real tokenizers.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "draftforge/data/chat_prepare.h"
#include "draftforge/data/loss_mask.h"
#include "draftforge/data/record_index.h"
#include "draftforge/data/token_dataset.h"
#include "draftforge/util/fs.h"
#include "test_support.h"

namespace draftforge::data {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using ::draftforge::testing::TempDir;

std::vector<json> ReadJsonLines(const fs::path& path) {
  std::vector<json> rows;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) rows.push_back(json::parse(line));
  }
  return rows;
}

void WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

json Message(const std::string& role, const std::string& content) {
  json message;
  message["role"] = role;
  message["content"] = content;
  return message;
}

PrepareOptions OptionsFor(const fs::path& model_dir) {
  PrepareOptions options;
  options.model_dir = model_dir.string();
  options.seq_length = 1 << 20;
  options.show_progress = false;
  options.show_sample = false;
  return options;
}

std::unique_ptr<ChatEncoder> MakeEncoder(const PrepareOptions& options) {
  auto encoder = ChatEncoder::Create(options);
  EXPECT_TRUE(encoder.ok()) << encoder.status().ToString();
  if (!encoder.ok()) return nullptr;
  return std::move(*encoder);
}

// Byte position of `needle` in `text` at or after `from`, or npos.
size_t Find(const std::string& text, const std::string& needle, size_t from) {
  return needle.empty() ? std::string::npos : text.find(needle, from);
}

// Token indices whose byte span lies inside [begin, end) of the rendered text.
std::vector<size_t> TokensInside(const tokenizer::Encoding& encoding, size_t begin, size_t end) {
  std::vector<size_t> tokens;
  for (size_t t = 0; t < encoding.offsets.size(); ++t) {
    const auto [token_begin, token_end] = encoding.offsets[t];
    if (token_begin >= static_cast<int64_t>(begin) && token_end <= static_cast<int64_t>(end) && token_end > token_begin) {
      tokens.push_back(t);
    }
  }
  return tokens;
}

TEST(RecordIndex, ArrayElementsAndLines) {
  TempDir temp;
  const fs::path path = temp.path() / "a.json";
  WriteText(path, "\xEF\xBB\xBF [\n {\"a\": \"x],\\\"{\"},\n  [1, [2]] ,\n\"s\"\n]\n");
  auto index = RecordIndex::Build(path.string());
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  EXPECT_TRUE(index->is_json_array());
  ASSERT_EQ(index->size(), 3);
  EXPECT_EQ(index->record(0), R"({"a": "x],\"{"})");
  EXPECT_EQ(index->record(1), "[1, [2]]");
  EXPECT_EQ(index->record(2), "\"s\"");
  EXPECT_EQ(index->line(0), 2);
  EXPECT_EQ(index->line(2), 4);

  auto first = RecordIndex::Build(path.string(), /*max_records=*/1);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->size(), 1);

  WriteText(path, "[{\"a\": 1},\n{\"b\": ");
  auto truncated = RecordIndex::Build(path.string());
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.status().message().find("not closed"), std::string::npos) << truncated.status().message();
}

TEST(RecordIndex, JsonLinesSkipBlankLines) {
  TempDir temp;
  const fs::path path = temp.path() / "a.jsonl";
  WriteText(path, "{\"a\": 1}\r\n\n  \n{\"b\": 2}");
  auto index = RecordIndex::Build(path.string());
  ASSERT_TRUE(index.ok());
  EXPECT_FALSE(index->is_json_array());
  ASSERT_EQ(index->size(), 2);
  EXPECT_EQ(index->record(0), R"({"a": 1})");
  EXPECT_EQ(index->record(1), R"({"b": 2})");
  EXPECT_EQ(index->line(1), 4);
}

TEST(LossMask, MaskFromSpansMarksOverlaps) {
  const std::vector<std::pair<int64_t, int64_t>> offsets = {{0, 3}, {3, 5}, {5, 9}, {9, 9}, {9, 12}, {12, 14}};
  const std::vector<ByteSpan> spans = {{4, 6}, {10, 11}};
  const std::vector<uint8_t> expected = {0, 1, 1, 0, 1, 0};
  EXPECT_EQ(MaskFromSpans(offsets, spans), expected);
  // A zero-width token strictly inside a span trains; one on its edge does not.
  EXPECT_EQ(MaskFromSpans({{5, 5}, {4, 4}}, {{4, 6}}), (std::vector<uint8_t>{1, 0}));
  EXPECT_EQ(MaskFromSpans(offsets, {}), std::vector<uint8_t>(offsets.size(), 0));
}

TEST(LossMask, PatternReturnsGroupSpans) {
  auto pattern = AssistantPattern::Compile("<a>(.*?)</a>");
  ASSERT_TRUE(pattern.ok()) << pattern.status().ToString();
  const std::string text = "x<a>one</a>y<a>t\nwo</a><a></a>";
  auto spans = pattern->FindSpans(text);
  ASSERT_TRUE(spans.ok()) << spans.status().ToString();
  ASSERT_EQ(spans->size(), 2u) << "an empty group adds no span";
  EXPECT_EQ(text.substr((*spans)[0].first, (*spans)[0].second - (*spans)[0].first), "one");
  EXPECT_EQ(text.substr((*spans)[1].first, (*spans)[1].second - (*spans)[1].first), "t\nwo") << "'.' matches newlines";
}

TEST(LossMask, PatternErrorsNameTheProblem) {
  auto broken = AssistantPattern::Compile("(abc");
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find("offset"), std::string::npos) << broken.status().message();
  auto no_group = AssistantPattern::Compile("abc");
  ASSERT_FALSE(no_group.ok());
  EXPECT_NE(no_group.status().message().find("capture group"), std::string::npos) << no_group.status().message();
}

TEST(LossMask, PatternHandlesLongReplies) {
  auto pattern = AssistantPattern::Compile(R"(<\|im_start\|>assistant\n((?:(?!<\|im_start\|).)*?)<\|im_end\|>)");
  ASSERT_TRUE(pattern.ok());
  const std::string reply(200000, 'z');
  const std::string text = "<|im_start|>assistant\n" + reply + "<|im_end|>";
  auto spans = pattern->FindSpans(text);
  ASSERT_TRUE(spans.ok()) << spans.status().ToString();
  ASSERT_EQ(spans->size(), 1u);
  EXPECT_EQ((*spans)[0].second - (*spans)[0].first, static_cast<int64_t>(reply.size()));
}

TEST(LossMask, DetectedPatternQwen3) {
  DF_REQUIRE_SHARED(dir, "tokenizers/qwen3");
  auto encoder = MakeEncoder(OptionsFor(dir));
  ASSERT_NE(encoder, nullptr);
  EXPECT_EQ(encoder->method(), MaskMethod::kDetectedPattern);
  ASSERT_TRUE(encoder->pattern().has_value());
  // The empty think block Qwen3 puts before the last reply is not part of the marker.
  EXPECT_EQ(encoder->pattern()->pattern(), R"(<\|im_start\|>assistant\n((?:(?!<\|im_start\|>).)*?)<\|im_end\|>\n(?=\z|<|\[))");
}

TEST(LossMask, DetectedPatternQwen3WithThinkingOff) {
  DF_REQUIRE_SHARED(dir, "tokenizers/qwen3");
  PrepareOptions options = OptionsFor(dir);
  options.chat_template_kwargs = R"({"enable_thinking": false})";
  auto encoder = MakeEncoder(options);
  ASSERT_NE(encoder, nullptr);
  ASSERT_TRUE(encoder->pattern().has_value());
  EXPECT_EQ(encoder->pattern()->pattern(), R"(<\|im_start\|>assistant\n((?:(?!<\|im_start\|>).)*?)<\|im_end\|>\n(?=\z|<|\[))");
}

TEST(LossMask, DetectedPatternLlama31) {
  DF_REQUIRE_SHARED(dir, "tokenizers/llama3_1");
  auto encoder = MakeEncoder(OptionsFor(dir));
  ASSERT_NE(encoder, nullptr);
  ASSERT_TRUE(encoder->pattern().has_value());
  EXPECT_EQ(encoder->pattern()->pattern(),
            R"(<\|start_header_id\|>assistant<\|end_header_id\|>\n\n((?:(?!<\|start_header_id\|>).)*?)<\|eot_id\|>(?=\z|<|\[))");
}

// Every golden whole-conversation case: the ids equal the reference, each
// assistant message's content trains, each user or system message's content
// does not, and no turn-header token trains.
void CheckGoldenMasks(const std::string& name, const std::string& header) {
  auto golden_optional = ::draftforge::testing::SharedPath("golden/chat/" + name + ".jsonl");
  auto dir_optional = ::draftforge::testing::SharedPath("tokenizers/" + name);
  if (!golden_optional || !dir_optional) GTEST_SKIP() << "golden/chat or tokenizers fixture not found";
  std::map<std::string, std::unique_ptr<ChatEncoder>> encoders;  // per template kwargs
  int checked = 0;
  int id_mismatches = 0;
  for (const json& row : ReadJsonLines(*golden_optional)) {
    if (row.contains("error") || row["add_generation_prompt"].get<bool>()) continue;
    json kwargs = row.value("kwargs", json::object());
    json tools = kwargs.contains("tools") ? kwargs["tools"] : json();
    kwargs.erase("tools");
    const std::string key = kwargs.dump();
    if (!encoders.count(key)) {
      PrepareOptions options = OptionsFor(*dir_optional);
      if (!kwargs.empty()) options.chat_template_kwargs = key;
      encoders[key] = MakeEncoder(options);
      ASSERT_NE(encoders[key], nullptr);
    }
    const std::string where = name + " " + row["case"].get<std::string>();
    auto encoded = encoders[key]->EncodeMessages(row["messages"], tools, where);
    ASSERT_TRUE(encoded.ok()) << where << ": " << encoded.status().ToString();
    if (encoded->skip != nullptr) {
      // DeepSeek-V3 writes the reply after tool outputs without an assistant
      // header, so no detected pattern can find it; prepare skips and counts it.
      if (name == "deepseek_v3" && row["case"] == "adv:tool-call-roundtrip") continue;
      // Only conversations without assistant content may come out untrained.
      bool has_content = false;
      for (const json& message : row["messages"]) {
        has_content |= message["role"] == "assistant" && message["content"].is_string() &&
                       message["content"].get<std::string>().find_first_not_of(" \n\t") != std::string::npos;
      }
      EXPECT_FALSE(has_content) << where << " skipped: " << encoded->detail;
      continue;
    }
    ++checked;
    EXPECT_EQ(encoded->text, row["rendered"].get<std::string>()) << where;
    const auto golden_ids = row["input_ids"].get<std::vector<int64_t>>();
    if (encoded->ids != golden_ids) ++id_mismatches;
    const int64_t header_token = encoders[key]->tokenizer().TokenToId(header).value_or(-1);
    ASSERT_GE(header_token, 0) << header;
    auto encoding = encoders[key]->tokenizer().Encode(encoded->text, false);
    ASSERT_TRUE(encoding.ok());
    size_t position = 0;
    for (const json& message : row["messages"]) {
      if (!message["content"].is_string()) continue;
      std::string content = message["content"].get<std::string>();
      // Templates strip surrounding whitespace from some contents.
      const size_t first = content.find_first_not_of(" \n\t");
      const size_t last = content.find_last_not_of(" \n\t");
      content = first == std::string::npos ? "" : content.substr(first, last - first + 1);
      if (content.size() < 4) continue;
      const size_t at = Find(encoded->text, content, position);
      if (at == std::string::npos) continue;  // the template dropped or rewrote it
      position = at + content.size();
      const bool assistant = message["role"] == "assistant";
      for (size_t t : TokensInside(*encoding, at, at + content.size())) {
        EXPECT_EQ(encoded->mask[t], assistant ? 1 : 0)
            << where << ": token " << t << " inside a " << message["role"].get<std::string>() << " message";
      }
    }
    for (size_t t = 0; t < encoded->ids.size(); ++t) {
      if (encoded->ids[t] == header_token) EXPECT_EQ(encoded->mask[t], 0) << where << ": header token " << t;
    }
  }
  EXPECT_EQ(id_mismatches, 0) << name << ": token ids differ from the golden ids in " << id_mismatches << " of "
                              << checked << " cases";
  EXPECT_GT(checked, 50) << name;
}

TEST(ChatPrepare, GoldenMasksQwen3) { CheckGoldenMasks("qwen3", "<|im_start|>"); }
TEST(ChatPrepare, GoldenMasksLlama31) { CheckGoldenMasks("llama3_1", "<|start_header_id|>"); }
TEST(ChatPrepare, GoldenMasksGemma3) { CheckGoldenMasks("gemma3", "<start_of_turn>"); }
TEST(ChatPrepare, GoldenMasksDeepSeekV3) { CheckGoldenMasks("deepseek_v3", "<\uFF5CUser\uFF5C>"); }

// Llama 2's [INST] format: user turns open with "<s>[INST]", replies have no
// header of their own, so the detected pattern must stop at the next [INST].
TEST(ChatPrepare, InstTemplateMasksOnlyReplies) {
  DF_REQUIRE_SHARED(dir, "tokenizers/llama2");
  TempDir temp;
  WriteText(temp.path() / "inst.jinja",
            "{% for m in messages %}{% if m.role == 'user' %}{{ bos_token }}[INST] {{ m.content }} [/INST]"
            "{% else %} {{ m.content }} {{ eos_token }}{% endif %}{% endfor %}");
  PrepareOptions options = OptionsFor(dir);
  options.chat_template_path = (temp.path() / "inst.jinja").string();
  auto encoder = MakeEncoder(options);
  ASSERT_NE(encoder, nullptr);
  json messages = json::array({Message("user", "First question"), Message("assistant", "First answer"),
                               Message("user", "Second question"), Message("assistant", "Second answer")});
  auto encoded = encoder->EncodeMessages(messages, json(), "inst");
  ASSERT_TRUE(encoded.ok()) << encoded.status().ToString();
  ASSERT_EQ(encoded->skip, nullptr) << encoded->detail;
  std::string trained;
  for (size_t t = 0; t < encoded->ids.size(); ++t) {
    if (encoded->mask[t]) trained += encoder->tokenizer().IdToToken(static_cast<int32_t>(encoded->ids[t]));
  }
  EXPECT_EQ(trained.find("question"), std::string::npos) << trained;
  EXPECT_NE(trained.find("First"), std::string::npos) << trained;
  EXPECT_NE(trained.find("Second"), std::string::npos) << trained;
}

// Qwen3 renders reasoning only in front of the last reply. That reply must
// train on its reasoning and its content, and the earlier reply on what is rendered.
TEST(ChatPrepare, Qwen3ReasoningFollowsTheRendering) {
  DF_REQUIRE_SHARED(dir, "tokenizers/qwen3");
  auto encoder = MakeEncoder(OptionsFor(dir));
  ASSERT_NE(encoder, nullptr);
  json messages = json::array();
  messages.push_back(Message("user", "Why is the sky blue?"));
  json first = Message("assistant", "Rayleigh scattering.");
  first["reasoning_content"] = "Short wavelengths scatter more strongly.";
  messages.push_back(first);
  messages.push_back(Message("user", "And sunsets?"));
  json last = Message("assistant", "Longer path through air scatters away blue.");
  last["reasoning_content"] = "Path length increases at low sun angles.";
  messages.push_back(last);
  auto encoded = encoder->EncodeMessages(messages, json(), "reasoning");
  ASSERT_TRUE(encoded.ok()) << encoded.status().ToString();
  ASSERT_EQ(encoded->skip, nullptr) << encoded->detail;
  const std::string& text = encoded->text;
  EXPECT_EQ(text.find("Short wavelengths"), std::string::npos) << "the template drops earlier reasoning";
  auto encoding = encoder->tokenizer().Encode(text, false);
  ASSERT_TRUE(encoding.ok());
  auto expect_trained = [&](const std::string& piece, bool trained) {
    const size_t at = text.find(piece);
    ASSERT_NE(at, std::string::npos) << piece;
    auto tokens = TokensInside(*encoding, at, at + piece.size());
    ASSERT_FALSE(tokens.empty()) << piece;
    for (size_t t : tokens) EXPECT_EQ(encoded->mask[t], trained ? 1 : 0) << piece << " token " << t;
  };
  expect_trained("Rayleigh scattering.", true);
  expect_trained("Path length increases at low sun angles.", true);
  expect_trained("</think>", true);
  expect_trained("Longer path through air scatters away blue.", true);
  expect_trained("And sunsets?", false);
  expect_trained("Why is the sky blue?", false);
}

constexpr const char* kMarkedTemplate =
    "{% for m in messages %}{% if m.role == 'assistant' %}<|im_start|>assistant\n"
    "{% generation %}{{ m.content }}<|im_end|>{% endgeneration %}\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}";

TEST(ChatPrepare, GenerationMarkersIncludeEndOfTurn) {
  DF_REQUIRE_SHARED(dir, "tokenizers/qwen3");
  TempDir temp;
  WriteText(temp.path() / "marked.jinja", kMarkedTemplate);
  PrepareOptions options = OptionsFor(dir);
  options.chat_template_path = (temp.path() / "marked.jinja").string();
  auto encoder = MakeEncoder(options);
  ASSERT_NE(encoder, nullptr);
  EXPECT_EQ(encoder->method(), MaskMethod::kGenerationMarkers);
  json messages = json::array({Message("user", "Hi there"), Message("assistant", "Hello friend")});
  auto encoded = encoder->EncodeMessages(messages, json(), "markers");
  ASSERT_TRUE(encoded.ok()) << encoded.status().ToString();
  ASSERT_EQ(encoded->skip, nullptr) << encoded->detail;
  EXPECT_FALSE(encoded->fell_back);
  std::string trained;
  for (size_t t = 0; t < encoded->ids.size(); ++t) {
    if (encoded->mask[t]) trained += encoder->tokenizer().Decode({static_cast<int32_t>(encoded->ids[t])});
  }
  EXPECT_EQ(trained, "Hello friend<|im_end|>");
}

TEST(ChatPrepare, EmptyMarkersFallBackToPattern) {
  DF_REQUIRE_SHARED(dir, "tokenizers/qwen3");
  TempDir temp;
  const std::string empty_markers =
      "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
      "{% generation %}{% endgeneration %}{% endfor %}";
  WriteText(temp.path() / "empty.jinja", empty_markers);
  PrepareOptions options = OptionsFor(dir);
  options.chat_template_path = (temp.path() / "empty.jinja").string();
  auto encoder = MakeEncoder(options);
  ASSERT_NE(encoder, nullptr);
  json messages = json::array({Message("user", "Hi there"), Message("assistant", "Hello friend")});
  auto encoded = encoder->EncodeMessages(messages, json(), "fallback");
  ASSERT_TRUE(encoded.ok()) << encoded.status().ToString();
  ASSERT_EQ(encoded->skip, nullptr) << encoded->detail;
  EXPECT_TRUE(encoded->fell_back);
  std::string trained;
  for (size_t t = 0; t < encoded->ids.size(); ++t) {
    if (encoded->mask[t]) trained += encoder->tokenizer().Decode({static_cast<int32_t>(encoded->ids[t])});
  }
  EXPECT_EQ(trained, "Hello friend");
}

TEST(ChatPrepare, SeqLengthCutKeepsInWindowPart) {
  DF_REQUIRE_SHARED(dir, "tokenizers/qwen3");
  PrepareOptions options = OptionsFor(dir);
  options.seq_length = 20;
  auto encoder = MakeEncoder(options);
  ASSERT_NE(encoder, nullptr);
  std::string reply;
  for (int i = 0; i < 40; ++i) reply += "word" + std::to_string(i) + " ";
  json messages = json::array({Message("user", "Count."), Message("assistant", reply)});
  auto encoded = encoder->EncodeMessages(messages, json(), "cut");
  ASSERT_TRUE(encoded.ok());
  ASSERT_EQ(encoded->skip, nullptr) << encoded->detail;
  EXPECT_TRUE(encoded->truncated);
  EXPECT_EQ(encoded->ids.size(), 20u);
  EXPECT_EQ(encoded->mask.size(), 20u);
  EXPECT_EQ(encoded->mask.back(), 1) << "the in-window part of the reply trains";
  EXPECT_EQ(encoded->mask.front(), 0);

  options.seq_length = 3;  // ends inside the user turn
  auto short_encoder = MakeEncoder(options);
  ASSERT_NE(short_encoder, nullptr);
  auto dropped = short_encoder->EncodeMessages(messages, json(), "cut");
  ASSERT_TRUE(dropped.ok());
  EXPECT_STREQ(dropped->skip, kSkipNoTrainable);
}

TEST(ChatPrepare, Llama3HasOneBeginOfText) {
  DF_REQUIRE_SHARED(dir, "tokenizers/llama3_1");
  auto encoder = MakeEncoder(OptionsFor(dir));
  ASSERT_NE(encoder, nullptr);
  json messages = json::array({Message("user", "Hello"), Message("assistant", "Hi!")});
  auto encoded = encoder->EncodeMessages(messages, json(), "bos");
  ASSERT_TRUE(encoded.ok());
  ASSERT_EQ(encoded->skip, nullptr) << encoded->detail;
  ASSERT_FALSE(encoded->ids.empty());
  EXPECT_EQ(encoded->ids[0], 128000);
  EXPECT_EQ(std::count(encoded->ids.begin(), encoded->ids.end(), 128000), 1);
}

TEST(ChatPrepare, TemplateRaiseIsSkipped) {
  DF_REQUIRE_SHARED(dir, "tokenizers/gemma3");
  auto encoder = MakeEncoder(OptionsFor(dir));
  ASSERT_NE(encoder, nullptr);
  json messages = json::array({Message("assistant", "I speak first"), Message("assistant", "twice")});
  auto encoded = encoder->EncodeMessages(messages, json(), "raise");
  ASSERT_TRUE(encoded.ok()) << encoded.status().ToString();
  EXPECT_STREQ(encoded->skip, kSkipTemplateError);
  EXPECT_NE(encoded->detail.find("alternate"), std::string::npos) << encoded->detail;
}

// transformers renders the "tool_use" template of a template list when tools are given.
TEST(ChatPrepare, ToolUseTemplateForToolRecords) {
  DF_REQUIRE_SHARED(dir, "tokenizers/qwen3");
  TempDir temp;
  fs::create_symlink(dir / "tokenizer.json", temp.path() / "tokenizer.json");
  const std::string body =
      "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}";
  json config;
  config["chat_template"] = json::array({json{{"name", "default"}, {"template", body}},
                                         json{{"name", "tool_use"}, {"template", "TOOLS" + body}}});
  WriteText(temp.path() / "tokenizer_config.json", config.dump());
  auto encoder = MakeEncoder(OptionsFor(temp.path()));
  ASSERT_NE(encoder, nullptr);
  json messages = json::array({Message("user", "Weather?"), Message("assistant", "Sunny.")});
  auto plain = encoder->EncodeMessages(messages, json(), "plain");
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_FALSE(plain->text.starts_with("TOOLS")) << plain->text;
  auto with_tools = encoder->EncodeMessages(messages, json::array({json{{"type", "function"}}}), "tools");
  ASSERT_TRUE(with_tools.ok()) << with_tools.status().ToString();
  EXPECT_TRUE(with_tools->text.starts_with("TOOLS")) << with_tools->text;
}

TEST(ChatPrepare, MissingTokenizerFails) {
  TempDir temp;
  auto encoder = ChatEncoder::Create(OptionsFor(temp.path()));
  ASSERT_FALSE(encoder.ok());
  EXPECT_NE(encoder.status().message().find("tokenizer.json"), std::string::npos) << encoder.status().message();
}

TEST(ChatPrepare, UnsupportedJinjaFeatureFails) {
  DF_REQUIRE_SHARED(dir, "tokenizers/qwen3");
  TempDir temp;
  WriteText(temp.path() / "extends.jinja", "{% extends 'base.jinja' %}");
  PrepareOptions options = OptionsFor(dir);
  options.chat_template_path = (temp.path() / "extends.jinja").string();
  auto encoder = ChatEncoder::Create(options);
  ASSERT_FALSE(encoder.ok());
  EXPECT_NE(encoder.status().message().find("extends"), std::string::npos) << encoder.status().message();
}

// Writes the first `count` ShareGPT conversations as JSONL, then one bad
// record of each kind the run must skip and count.
fs::path WriteShareGptSlice(const fs::path& dir, int count) {
  auto source = ::draftforge::testing::SharedPath("data/sharegpt/dummy_conversation.json");
  json all = json::parse(std::ifstream(*source));
  const fs::path path = dir / "chat.jsonl";
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < count; ++i) out << all[i].dump() << "\n";
  out << R"({"conversations": []})" << "\n";
  out << R"({"conversations": [{"from": "human", "value": "only a question"}]})" << "\n";
  out << "{\"conversations\": [{\"from\": \"human\", \"value\": \"bad \xC3\x28 byte\"}, {\"from\": \"gpt\", \"value\": \"x\"}]}\n";
  out << R"({"conversations": [{"from": "narrator", "value": "ignored"}, {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello there"}]})" << "\n";
  out << R"({"other": 1})" << "\n";
  out << R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]})" << "\n";
  return path;
}

TEST(ChatPrepare, RunOnShareGptCountsSkips) {
  DF_REQUIRE_SHARED(dir, "tokenizers/qwen3");
  DF_REQUIRE_SHARED(sharegpt, "data/sharegpt/dummy_conversation.json");
  TempDir temp;
  PrepareOptions options = OptionsFor(dir);
  options.data_files = {WriteShareGptSlice(temp.path(), 40).string()};
  options.output_dir = (temp.path() / "out").string();
  options.seq_length = 4096;
  options.num_workers = 2;
  auto summary = RunPrepare(options);
  ASSERT_TRUE(summary.ok()) << summary.status().ToString();
  EXPECT_EQ(summary->records_read, 46);
  EXPECT_EQ(summary->skipped[kSkipNoMessages], 1);
  EXPECT_EQ(summary->skipped[kSkipNoAssistant], 1);
  EXPECT_EQ(summary->skipped[kSkipInvalidUtf8], 1);
  EXPECT_EQ(summary->skipped[kSkipInvalidRecord], 1);
  EXPECT_EQ(summary->skipped[kSkipEmptyAssistant], 1);
  EXPECT_EQ(summary->unknown_role_turns, 1);
  EXPECT_EQ(summary->rows_kept, 41);
  EXPECT_TRUE(summary->token_freq_written);

  auto dataset = TokenDataset::Open(options.output_dir);
  ASSERT_TRUE(dataset.ok()) << dataset.status().ToString();
  ASSERT_EQ(dataset->num_rows(), 41);
  int64_t trainable = 0;
  for (int64_t r = 0; r < dataset->num_rows(); ++r) {
    EXPECT_LE(dataset->seq_len(r), 4096);
    int64_t row_trainable = 0;
    for (uint8_t flag : dataset->loss_mask(r)) row_trainable += flag;
    EXPECT_GT(row_trainable, 0) << "row " << r;
    trainable += row_trainable;
  }
  EXPECT_EQ(trainable, summary->trainable_tokens);
  EXPECT_FALSE(fs::exists(fs::path(options.output_dir) / ".draftforge-prepare.spool"));
}

TEST(ChatPrepare, OutputIndependentOfWorkerCount) {
  DF_REQUIRE_SHARED(dir, "tokenizers/llama3_1");
  DF_REQUIRE_SHARED(sharegpt, "data/sharegpt/dummy_conversation.json");
  TempDir temp;
  PrepareOptions options = OptionsFor(dir);
  options.data_files = {WriteShareGptSlice(temp.path(), 60).string()};
  options.max_samples = 30;
  options.seed = 7;
  options.turn_dropout = true;
  std::string shards[2];
  for (int workers : {1, 2}) {
    options.num_workers = workers;
    options.output_dir = (temp.path() / ("out" + std::to_string(workers))).string();
    auto summary = RunPrepare(options);
    ASSERT_TRUE(summary.ok()) << summary.status().ToString();
    EXPECT_EQ(summary->rows_kept, 30);
    auto bytes = ReadFileToString((fs::path(options.output_dir) / "data-00000-of-00001.arrow").string());
    ASSERT_TRUE(bytes.ok());
    shards[workers - 1] = *bytes;
  }
  EXPECT_EQ(shards[0], shards[1]);
}

TEST(ChatPrepare, MalformedJsonNamesTheLine) {
  DF_REQUIRE_SHARED(dir, "tokenizers/qwen3");
  TempDir temp;
  const fs::path data = temp.path() / "bad.jsonl";
  WriteText(data, R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})"
                  "\n{\"messages\": [\n");
  PrepareOptions options = OptionsFor(dir);
  options.data_files = {data.string()};
  options.output_dir = (temp.path() / "out").string();
  auto summary = RunPrepare(options);
  ASSERT_FALSE(summary.ok());
  EXPECT_NE(summary.status().message().find("bad.jsonl:2"), std::string::npos) << summary.status().message();
}

TEST(ChatPrepare, CliRunsOnTokenizerOnlyDirectory) {
  DF_REQUIRE_SHARED(dir, "tokenizers/qwen3");
  DF_REQUIRE_SHARED(sharegpt, "data/sharegpt/dummy_conversation.json");
  TempDir temp;
  const fs::path data = WriteShareGptSlice(temp.path(), 10);
  auto run = ::draftforge::testing::RunDraftforge({"prepare", "--model", dir.string(), "--data", data.string(),
                                                   "--output", (temp.path() / "out").string(), "--no-progress"});
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("loss masks came from the assistant pattern detected from the template"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("trained tokens inside [["), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("invalid UTF-8"), std::string::npos) << run.output;
  EXPECT_TRUE(fs::exists(temp.path() / "out" / "token_freq.pt"));
}

}  // namespace
}  // namespace draftforge::data
