// The pipeline stages of tokenizer.json other than the model: normalizers,
// pre-tokenizers, post-processors and decoders, each built from its JSON
// object by components.cpp. Behaviour follows the Rust tokenizers engine
// (0.2x), including how each stage moves the alignment to the original text.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "draftforge/tokenizer/regex.h"
#include "draftforge/tokenizer/unicode.h"
#include "draftforge/util/status.h"

namespace draftforge::tokenizer::internal {

// A literal string or a regex, as in {"String": ...} / {"Regex": ...}.
class Pattern {
 public:
  static Result<Pattern> FromJson(simdjson::dom::element json, const std::string& context);
  // Every match as [start, end) byte ranges, in order.
  void FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;

 private:
  std::string literal_;
  std::shared_ptr<Regex> regex_;
};

// ---- Normalizers ----

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void Normalize(AlignedText* text) const = 0;
};

// ---- Pre-tokenizers ----

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// The words of one split of the input: byte ranges of `buffer`. `original_start`
// is the split's offset in the original input (Metaspace's "first" scheme
// prepends only at offset 0).
struct PreTokenized {
  AlignedText buffer;
  std::vector<std::pair<uint32_t, uint32_t>> words;
  int64_t original_start = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void Apply(PreTokenized* words) const = 0;
};

// ---- Post-processors ----

// Tokens of an encoding under post-processing; offsets is null when the
// caller does not track them.
struct ProcessedEncoding {
  std::vector<int32_t>* ids;
  std::vector<std::pair<int64_t, int64_t>>* offsets;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // `token_text` returns the token string of an id (for ByteLevel trimming).
  virtual void Process(ProcessedEncoding encoding, bool add_special_tokens,
                       const std::function<std::string(int32_t)>& token_text) const = 0;
};

// ---- Decoders ----

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void DecodeChain(std::vector<std::string>* tokens) const = 0;
};

// Builders. `context` is "<path>: <json location>" for error messages. A
// null JSON value yields a null pointer (no such stage). `token_to_id`
// resolves post-processor special tokens given by name.
Result<std::unique_ptr<Normalizer>> BuildNormalizer(simdjson::dom::element json, const std::string& context);
// `byte_level` is set when the pre-tokenizer ends with ByteLevel, whose byte
// mapping the BPE model then applies.
Result<std::unique_ptr<PreTokenizer>> BuildPreTokenizer(simdjson::dom::element json, const std::string& context,
                                                        bool* byte_level);
Result<std::unique_ptr<PostProcessor>> BuildPostProcessor(
    simdjson::dom::element json, const std::string& context,
    const std::function<std::optional<int32_t>(std::string_view)>& token_to_id);
Result<std::unique_ptr<Decoder>> BuildDecoder(simdjson::dom::element json, const std::string& context);

}  // namespace draftforge::tokenizer::internal
