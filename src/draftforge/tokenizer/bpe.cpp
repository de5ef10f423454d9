#include "draftforge/tokenizer/bpe.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>

#include "draftforge/tokenizer/unicode.h"

namespace draftforge::tokenizer::internal {

namespace {

struct ByteLevelTables {
  std::array<std::string, 256> byte_to_char;
  std::unordered_map<char32_t, int> char_to_byte;
  ByteLevelTables() {
    // Printable Latin-1 bytes stand for themselves; the others get 256, 257, ...
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(next++);
      AppendUtf8(cp, &byte_to_char[b]);
      char_to_byte[cp] = b;
    }
  }
};

const ByteLevelTables& ByteTables() {
  static const ByteLevelTables tables;
  return tables;
}

std::atomic<uint64_t> next_instance_id{1};

// Word results cached per thread; keyed by model instance so that several
// tokenizers can share a thread. Words longer than kMaxCachedWordBytes are not
// cached, and a cache that reaches kMaxCacheEntries starts over, which bounds
// its memory.
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kMaxCacheEntries = 200000;

using WordCache = std::unordered_map<std::string, std::vector<BpeToken>, StringHash, std::equal_to<>>;

WordCache& CacheFor(uint64_t instance_id) {
  thread_local std::vector<std::pair<uint64_t, WordCache>> caches;
  for (auto& [id, cache] : caches) {
    if (id == instance_id) return cache;
  }
  if (caches.size() >= 4) caches.erase(caches.begin());
  caches.emplace_back(instance_id, WordCache{});
  return caches.back().second;
}

struct Symbol {
  int32_t id;
  int32_t length;
  int32_t prev;
  int32_t next;
};

struct QueueEntry {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  // Heap order: lowest rank first, then lowest position.
  bool operator<(const QueueEntry& other) const {
    if (rank != other.rank) return rank > other.rank;
    return pos > other.pos;
  }
};

}  // namespace

const std::string& ByteLevelChar(uint8_t byte) { return ByteTables().byte_to_char[byte]; }

int ByteLevelByte(char32_t cp) {
  const auto& map = ByteTables().char_to_byte;
  const auto it = map.find(cp);
  return it == map.end() ? -1 : it->second;
}

void BpeModel::MergeMap::Reserve(size_t count) {
  size_t capacity = 16;
  while (capacity < count * 2) capacity <<= 1;
  entries_.assign(capacity, Entry{});
  mask_ = capacity - 1;
}

void BpeModel::MergeMap::Insert(uint64_t key, Merge merge) {
  size_t slot = Hash(key) & mask_;
  while (entries_[slot].key != kEmpty && entries_[slot].key != key) slot = (slot + 1) & mask_;
  entries_[slot].key = key;
  entries_[slot].merge = merge;
}

Result<BpeModel> BpeModel::Build(Vocab vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                                 BpeOptions options, const std::string& path) {
  BpeModel model;
  int32_t max_id = -1;
  for (const auto& [token, id] : vocab) {
    if (id < 0) return Status::Invalid("{}: model.vocab entry '{}' has negative id {}", path, token, id);
    max_id = std::max(max_id, id);
  }
  model.id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [token, id] : vocab) model.id_to_token_[id] = token;

  const size_t prefix_length =
      options.continuing_subword_prefix ? options.continuing_subword_prefix->size() : 0;
  model.merges_.Reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const auto left_it = vocab.find(left);
    const auto right_it = vocab.find(right);
    if (left_it == vocab.end() || right_it == vocab.end()) {
      return Status::Invalid("{}: model.merges[{}] = '{} {}' uses a token missing from model.vocab", path,
                             rank, left, right);
    }
    // With a continuing_subword_prefix the right part carries the prefix,
    // which the merged token does not repeat.
    std::string merged = left;
    if (prefix_length > 0 && right.compare(0, prefix_length, *options.continuing_subword_prefix) == 0) {
      merged.append(right, prefix_length);
    } else {
      merged.append(right);
    }
    const auto merged_it = vocab.find(merged);
    if (merged_it == vocab.end()) {
      return Status::Invalid("{}: model.merges[{}] = '{} {}' produces '{}', which is missing from model.vocab",
                             path, rank, left, right, merged);
    }
    const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(left_it->second)) << 32) |
                         static_cast<uint32_t>(right_it->second);
    // A repeated merge keeps its last rank, as the Rust engine's map does.
    model.merges_.Insert(key, Merge{static_cast<int32_t>(rank), merged_it->second});
  }

  if (options.unk_token) {
    const auto it = vocab.find(*options.unk_token);
    if (it == vocab.end()) {
      return Status::Invalid("{}: model.unk_token '{}' is not in model.vocab", path, *options.unk_token);
    }
    model.unk_id_ = it->second;
  }
  model.plain_symbols_ = (!options.continuing_subword_prefix || options.continuing_subword_prefix->empty()) &&
                         (!options.end_of_word_suffix || options.end_of_word_suffix->empty());
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab.find(ByteLevelChar(static_cast<uint8_t>(b)));
    model.byte_level_ids_[b] = it == vocab.end() ? -1 : it->second;
  }
  model.vocab_ = std::move(vocab);
  model.options_ = std::move(options);
  model.instance_id_ = next_instance_id.fetch_add(1);
  return model;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) return nullptr;
  // Ids missing from a sparse vocabulary have an empty slot.
  if (id_to_token_[id].empty()) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::Tokenize(std::string_view word, bool byte_level, std::vector<BpeToken>* out) const {
  if (word.empty()) return;
  if (word.size() > kMaxCachedWordBytes) {
    TokenizeUncached(word, byte_level, out);
    return;
  }
  WordCache& cache = CacheFor(instance_id_);
  const auto it = cache.find(word);
  if (it != cache.end()) {
    out->insert(out->end(), it->second.begin(), it->second.end());
    return;
  }
  const size_t before = out->size();
  TokenizeUncached(word, byte_level, out);
  if (cache.size() >= kMaxCacheEntries) cache.clear();
  cache.emplace(std::string(word), std::vector<BpeToken>(out->begin() + before, out->end()));
}

void BpeModel::TokenizeUncached(std::string_view word, bool byte_level, std::vector<BpeToken>* out) const {
  thread_local std::string scratch;
  if (options_.ignore_merges) {
    std::string_view whole = word;
    if (byte_level) {
      scratch.clear();
      for (unsigned char b : word) scratch.append(ByteLevelChar(b));
      whole = scratch;
    }
    const auto it = vocab_.find(whole);
    if (it != vocab_.end()) {
      out->push_back(BpeToken{it->second, static_cast<int32_t>(word.size())});
      return;
    }
  }

  // Initial symbols: one per character (per byte with byte_level), as in the
  // Rust engine's merge_word, including its unk and byte_fallback handling.
  thread_local std::vector<Symbol> symbols;
  symbols.clear();
  auto add_symbol = [&](int32_t id, int32_t length) {
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{id, length, index - 1, index + 1});
  };
  std::optional<std::pair<int32_t, int32_t>> pending_unk;  // (id, length)
  size_t pos = 0;
  while (pos < word.size()) {
    const int unit_length = byte_level ? 1 : Utf8Length(static_cast<unsigned char>(word[pos]));
    const bool is_first = pos == 0;
    const bool is_last = pos + unit_length >= word.size();
    int32_t id = -1;
    std::string_view unit = word.substr(pos, unit_length);
    if (byte_level && plain_symbols_) {
      id = byte_level_ids_[static_cast<unsigned char>(word[pos])];
      unit = ByteLevelChar(static_cast<unsigned char>(word[pos]));
    } else {
      scratch.clear();
      if (!is_first && options_.continuing_subword_prefix) scratch.append(*options_.continuing_subword_prefix);
      if (byte_level) {
        scratch.append(ByteLevelChar(static_cast<unsigned char>(word[pos])));
      } else {
        scratch.append(unit);
      }
      if (is_last && options_.end_of_word_suffix) scratch.append(*options_.end_of_word_suffix);
      unit = scratch;
      const auto it = vocab_.find(unit);
      if (it != vocab_.end()) id = it->second;
    }
    pos += unit_length;

    if (id >= 0) {
      if (pending_unk) {
        add_symbol(pending_unk->first, pending_unk->second);
        pending_unk.reset();
      }
      add_symbol(id, unit_length);
      continue;
    }
    if (options_.byte_fallback) {
      std::vector<int32_t> byte_ids;
      for (unsigned char b : unit) {
        const auto it = vocab_.find(fmt::format("<0x{:02X}>", b));
        if (it == vocab_.end()) break;
        byte_ids.push_back(it->second);
      }
      if (byte_ids.size() == unit.size()) {
        // The Rust engine gives each byte token length 1 and does not flush a
        // pending unk first; both are kept for identical output.
        for (int32_t byte_id : byte_ids) add_symbol(byte_id, 1);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk && options_.fuse_unk) {
        pending_unk->second += unit_length;
      } else {
        if (pending_unk) add_symbol(pending_unk->first, pending_unk->second);
        pending_unk = std::make_pair(*unk_id_, static_cast<int32_t>(unit_length));
      }
    }
    // Without an unk token the character is dropped, as in the Rust engine.
  }
  if (pending_unk) add_symbol(pending_unk->first, pending_unk->second);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  const auto count = static_cast<int32_t>(symbols.size());
  if (count > 1) {
    thread_local std::vector<QueueEntry> queue;
    queue.clear();
    for (int32_t i = 0; i + 1 < count; ++i) {
      if (const Merge* merge = FindMerge(symbols[i].id, symbols[i + 1].id)) {
        queue.push_back(QueueEntry{merge->rank, i, merge->new_id});
      }
    }
    std::make_heap(queue.begin(), queue.end());
    while (!queue.empty()) {
      std::pop_heap(queue.begin(), queue.end());
      const QueueEntry top = queue.back();
      queue.pop_back();
      Symbol& current = symbols[top.pos];
      if (current.length == 0 || current.next == -1) continue;
      const int32_t next_pos = current.next;
      const Symbol right = symbols[next_pos];
      // Skip entries made stale by an earlier merge.
      const Merge* merge = FindMerge(current.id, right.id);
      if (merge == nullptr || merge->new_id != top.new_id) continue;

      current.id = top.new_id;
      current.length += right.length;
      current.next = right.next;
      symbols[next_pos].length = 0;
      if (right.next >= 0 && right.next < count) symbols[right.next].prev = top.pos;

      if (current.prev >= 0) {
        if (const Merge* left_merge = FindMerge(symbols[current.prev].id, current.id)) {
          queue.push_back(QueueEntry{left_merge->rank, current.prev, left_merge->new_id});
          std::push_heap(queue.begin(), queue.end());
        }
      }
      if (current.next >= 0 && current.next < count) {
        if (const Merge* right_merge = FindMerge(current.id, symbols[current.next].id)) {
          queue.push_back(QueueEntry{right_merge->rank, top.pos, right_merge->new_id});
          std::push_heap(queue.begin(), queue.end());
        }
      }
    }
  }
  for (const Symbol& symbol : symbols) {
    if (symbol.length != 0) out->push_back(BpeToken{symbol.id, symbol.length});
  }
}

}  // namespace draftforge::tokenizer::internal
