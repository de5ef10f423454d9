// Byte-pair-encoding model of tokenizer.json ("model": {"type": "BPE"}), with
// the Rust engine's merge order (lowest merge rank first, leftmost first on
// ties), byte_fallback, unk with fuse_unk, ignore_merges, and the
// continuing_subword_prefix / end_of_word_suffix options.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::tokenizer::internal {

// GPT-2's reversible byte-to-character map used by ByteLevel: the UTF-8 text
// of the character standing for each byte.
const std::string& ByteLevelChar(uint8_t byte);
// Inverse of ByteLevelChar; -1 for a code point that stands for no byte.
int ByteLevelByte(char32_t cp);

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using Vocab = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// One output token of a word: its id and its length in bytes of the word.
struct BpeToken {
  int32_t id;
  int32_t length;
};

struct BpeOptions {
  std::optional<std::string> unk_token;
  std::optional<std::string> continuing_subword_prefix;
  std::optional<std::string> end_of_word_suffix;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
};

class BpeModel {
 public:
  // `merges` are (left, right) token pairs in rank order. Invalid when a merge
  // names a token, or produces a token, that is not in the vocabulary.
  static Result<BpeModel> Build(Vocab vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                                BpeOptions options, const std::string& path);

  // Appends the tokens of `word`. With byte_level, `word` is raw text and each
  // byte stands for its ByteLevelChar, as after the ByteLevel pre-tokenizer.
  // Results are cached per thread.
  void Tokenize(std::string_view word, bool byte_level, std::vector<BpeToken>* out) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  const std::string* IdToToken(int32_t id) const;
  int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  // Open-addressing hash map from a (left id, right id) pair to its merge.
  class MergeMap {
   public:
    void Reserve(size_t count);
    void Insert(uint64_t key, Merge merge);
    const Merge* Find(uint64_t key) const {
      size_t slot = Hash(key) & mask_;
      while (true) {
        const Entry& entry = entries_[slot];
        if (entry.key == key) return &entry.merge;
        if (entry.key == kEmpty) return nullptr;
        slot = (slot + 1) & mask_;
      }
    }

   private:
    static constexpr uint64_t kEmpty = ~0ULL;
    struct Entry {
      uint64_t key = kEmpty;
      Merge merge{};
    };
    static size_t Hash(uint64_t key) { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ULL) >> 17); }
    std::vector<Entry> entries_;
    size_t mask_ = 0;
  };

  void TokenizeUncached(std::string_view word, bool byte_level, std::vector<BpeToken>* out) const;
  const Merge* FindMerge(int32_t left, int32_t right) const {
    return merges_.Find((static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right));
  }

  Vocab vocab_;
  std::vector<std::string> id_to_token_;
  MergeMap merges_;
  BpeOptions options_;
  std::optional<int32_t> unk_id_;
  // Ids of the 256 byte-level characters (-1 when absent); usable when no
  // prefix or suffix changes the symbol strings.
  int32_t byte_level_ids_[256];
  bool plain_symbols_ = true;
  uint64_t instance_id_ = 0;  // unique per model, keys the per-thread caches
};

}  // namespace draftforge::tokenizer::internal
