// Chat-template render throughput: the ShareGPT sample rendered with each
// tokenizer's own template, on one thread. Reads the fixtures from
// $DRAFTFORGE_TEST_DATA (default ../shared): data/sharegpt/*.json and
// tokenizers/NAME/tokenizer_config.json.
//
//   build/chat_template_render --benchmark_min_time=2
//
// items_per_second counts conversations, bytes_per_second rendered bytes.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "draftforge/chat_template/chat_template.h"

namespace {

namespace fs = std::filesystem;
using draftforge::chat_template::ChatTemplate;
using draftforge::chat_template::LoadTokenizerConfig;
using draftforge::chat_template::NormalizeMessages;
using draftforge::chat_template::RenderOptions;

fs::path SharedDir() {
  const char* env = std::getenv("DRAFTFORGE_TEST_DATA");
  return env != nullptr ? fs::path(env) : fs::path("../shared");
}

// Normalised conversations of the ShareGPT sample; empty when it is missing.
const std::vector<nlohmann::ordered_json>& Conversations() {
  static const std::vector<nlohmann::ordered_json> conversations = [] {
    std::vector<nlohmann::ordered_json> out;
    fs::path path = SharedDir() / "data/sharegpt/dummy_conversation.json";
    std::ifstream in(path);
    if (!in) return out;
    for (const auto& record : nlohmann::ordered_json::parse(in)) {
      auto messages = NormalizeMessages(record["conversations"], nullptr);
      if (messages.ok() && !messages->empty()) out.push_back(*messages);
    }
    return out;
  }();
  return conversations;
}

void RenderShareGpt(benchmark::State& state, const std::string& tokenizer) {
  auto config = LoadTokenizerConfig((SharedDir() / "tokenizers" / tokenizer).string());
  if (!config.ok() || Conversations().empty()) {
    state.SkipWithError("fixtures not found; set DRAFTFORGE_TEST_DATA to the shared fixtures directory");
    return;
  }
  auto compiled = ChatTemplate::Compile(config->chat_template, tokenizer);
  if (!compiled.ok()) {
    state.SkipWithError(compiled.status().ToString().c_str());
    return;
  }
  RenderOptions options;
  int64_t conversations = 0;
  int64_t bytes = 0;
  int64_t failures = 0;
  for (auto _ : state) {
    for (const auto& messages : Conversations()) {
      auto result = compiled->Render(messages, *config, options);
      if (result.ok()) {
        bytes += static_cast<int64_t>(result->text.size());
      } else {
        ++failures;  // gemma3 rejects conversations whose roles do not alternate
      }
      ++conversations;
    }
  }
  state.SetItemsProcessed(conversations);
  state.SetBytesProcessed(bytes);
  state.counters["failed_renders"] = static_cast<double>(failures);
}

BENCHMARK_CAPTURE(RenderShareGpt, qwen3, std::string("qwen3"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(RenderShareGpt, llama3_1, std::string("llama3_1"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(RenderShareGpt, gemma3, std::string("gemma3"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(RenderShareGpt, deepseek_v3, std::string("deepseek_v3"))->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
