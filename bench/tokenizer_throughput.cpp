// Encode throughput of draftforge's tokenizer on ShareGPT conversations.
//
// Usage: tokenizer_throughput TOKENIZER_JSON SHAREGPT_JSON [ROUNDS] [IDS_OUT]
//
// Each conversation's message texts, joined with "\n", are encoded as one
// EncodeIds call (add_special_tokens=false). The first round warms the
// per-thread word cache and is reported apart (cold_tokens_per_s), like the
// reference side in bench/hf_tokenizers/encode.js. Prints one JSON line with
// tokens per second (best and mean over the timed rounds). With IDS_OUT, writes the ids of every
// conversation, one JSON array per line, for comparison with the reference.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "draftforge/tokenizer/tokenizer.h"

namespace {

std::vector<std::string> LoadConversationTexts(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("failed to open " + path);
  const nlohmann::json data = nlohmann::json::parse(in);
  std::vector<std::string> texts;
  for (const auto& record : data) {
    std::string text;
    for (const auto& turn : record.at("conversations")) {
      if (!text.empty()) text += "\n";
      text += turn.at("value").get<std::string>();
    }
    texts.push_back(std::move(text));
  }
  return texts;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " TOKENIZER_JSON SHAREGPT_JSON [ROUNDS] [IDS_OUT]\n";
    return 2;
  }
  const std::string tokenizer_path = argv[1];
  const int rounds = argc > 3 ? std::max(1, std::stoi(argv[3])) : 5;
  const std::string ids_out = argc > 4 ? argv[4] : "";

  auto tokenizer = draftforge::tokenizer::Tokenizer::FromFile(tokenizer_path);
  if (!tokenizer.ok()) {
    std::cerr << tokenizer.status().ToString() << "\n";
    return 1;
  }
  const std::vector<std::string> texts = LoadConversationTexts(argv[2]);
  size_t bytes = 0;
  for (const auto& text : texts) bytes += text.size();

  std::vector<std::vector<int32_t>> all_ids(texts.size());
  std::vector<double> seconds;
  size_t tokens_per_round = 0;
  double cold_seconds = 0;
  for (int round = 0; round <= rounds; ++round) {
    size_t tokens = 0;
    const auto start = std::chrono::steady_clock::now();
    for (size_t i = 0; i < texts.size(); ++i) {
      auto ids = tokenizer->EncodeIds(texts[i]);
      if (!ids.ok()) {
        std::cerr << "conversation " << i << ": " << ids.status().ToString() << "\n";
        return 1;
      }
      tokens += ids->size();
      if (round == 0) all_ids[i] = ids.MoveValueUnsafe();
    }
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (round > 0) seconds.push_back(elapsed);
    if (round == 0) cold_seconds = elapsed;
    tokens_per_round = tokens;
  }
  const double best = *std::min_element(seconds.begin(), seconds.end());
  double total = 0;
  for (double s : seconds) total += s;
  const double mean = total / static_cast<double>(seconds.size());

  if (!ids_out.empty()) {
    std::ofstream out(ids_out);
    for (const auto& ids : all_ids) out << nlohmann::json(ids).dump() << "\n";
  }
  nlohmann::json report = {{"engine", "draftforge"},
                           {"conversations", texts.size()},
                           {"bytes", bytes},
                           {"tokens", tokens_per_round},
                           {"rounds", rounds},
                           {"cold_tokens_per_s", tokens_per_round / cold_seconds},
                           {"best_tokens_per_s", tokens_per_round / best},
                           {"mean_tokens_per_s", tokens_per_round / mean}};
  std::cout << report.dump() << std::endl;
  return 0;
}
