// Native engine for Hugging Face `tokenizer.json` files (the format of the
// Rust `tokenizers` library behind transformers' fast tokenizers).
//
// Encode runs the same stages as the Rust engine: added tokens that are not
// normalized are cut out of the raw text, the rest is normalized, normalized
// added tokens are cut out, then the pre-tokenizer splits the remainder into
// words and the BPE model turns each word into ids. Offsets are [start, end)
// byte ranges of the UTF-8 input. A token made from part of a character gets
// the span of the whole character, as the Rust engine reports it.
//
// Supported components: normalizers NFC, NFD, NFKC, NFKD, Replace, Prepend,
// Lowercase, Strip and Sequence; pre-tokenizers Split, ByteLevel, Metaspace,
// Digits, Punctuation, Whitespace, WhitespaceSplit and Sequence; the BPE model;
// post-processors TemplateProcessing, ByteLevel, BertProcessing,
// RobertaProcessing and Sequence; decoders ByteLevel, Metaspace, ByteFallback,
// Fuse, Strip, Replace and Sequence. FromFile returns Unimplemented, naming
// the component, for anything else.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::tokenizer {

struct Encoding {
  std::vector<int32_t> ids;
  // [start, end) byte offsets into the UTF-8 input; (0, 0) for tokens added by
  // the post-processor.
  std::vector<std::pair<int64_t, int64_t>> offsets;
};

namespace internal {
struct TokenizerState;
}

// Immutable after FromFile, so every const method may run on several threads
// at once. Each thread keeps its own word cache and regex match data.
class Tokenizer {
 public:
  static Result<Tokenizer> FromFile(const std::string& tokenizer_json_path);

  // Encodes `text`. With add_special_tokens the post-processor adds its
  // tokens (BOS/EOS as the file's template says). Invalid UTF-8 yields an
  // Invalid status naming the byte offset.
  Result<Encoding> Encode(std::string_view text, bool add_special_tokens = false) const;

  // Same ids as Encode, without computing offsets (faster).
  Result<std::vector<int32_t>> EncodeIds(std::string_view text,
                                         bool add_special_tokens = false) const;

  // Converts ids to text through the file's decoder. Unknown ids are skipped,
  // as the Rust engine does.
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  // Looks up added tokens first, then the model vocabulary.
  std::optional<int32_t> TokenToId(std::string_view token) const;
  // Returns an empty string for an unknown id.
  std::string IdToToken(int32_t id) const;
  // Model vocabulary plus added tokens: max id + 1.
  int64_t vocab_size() const;

 private:
  explicit Tokenizer(std::shared_ptr<const internal::TokenizerState> state)
      : state_(std::move(state)) {}
  std::shared_ptr<const internal::TokenizerState> state_;
};

// Returns whether `text` is valid UTF-8 (overlong forms, surrogates and code
// points above U+10FFFF are invalid), the check Encode applies.
bool IsValidUtf8(std::string_view text);

// Converts byte offsets of `text` to code point offsets (Python string indices,
// as the Rust engine reports with its default char offsets). A start or end
// inside a multi-byte character maps to that character's index.
std::vector<std::pair<int64_t, int64_t>> ByteToCodePointOffsets(
    std::string_view text, const std::vector<std::pair<int64_t, int64_t>>& byte_offsets);

}  // namespace draftforge::tokenizer
