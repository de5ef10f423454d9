#include "draftforge/data/vocab_mapping.h"

#include <algorithm>
#include <set>

#include "draftforge/io/npy.h"

namespace draftforge::data {

Result<VocabMapping> BuildVocabMapping(const std::map<int64_t, int64_t>& token_freq,
                                       int64_t draft_vocab_size, int64_t target_vocab_size) {
  if (draft_vocab_size < 1 || draft_vocab_size > target_vocab_size) {
    return Status::Invalid(
        "draft vocab size {} must be between 1 and the target vocab size {}", draft_vocab_size,
        target_vocab_size);
  }
  for (const auto& [id, count] : token_freq) {
    if (id < 0 || id >= target_vocab_size) {
      return Status::Invalid(
          "token_freq counts token id {} ({} times), outside the target vocabulary [0, {}); the "
          "frequencies were computed for a different model",
          id, count, target_vocab_size);
    }
  }

  // Most frequent first; equal counts keep ascending ids.
  std::vector<std::pair<int64_t, int64_t>> by_count(token_freq.begin(), token_freq.end());
  std::stable_sort(by_count.begin(), by_count.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  std::set<int64_t> selected;
  for (const auto& entry : by_count) {
    if (static_cast<int64_t>(selected.size()) == draft_vocab_size) break;
    selected.insert(entry.first);
  }
  // Too few ids were seen: fill with the smallest unused ids.
  for (int64_t id = 0; static_cast<int64_t>(selected.size()) < draft_vocab_size; ++id) {
    selected.insert(id);
  }

  VocabMapping mapping;
  mapping.d2t.reserve(draft_vocab_size);
  mapping.t2d.assign(target_vocab_size, 0);
  int64_t index = 0;
  for (int64_t id : selected) {
    mapping.d2t.push_back(id - index++);
    mapping.t2d[id] = 1;
  }
  return mapping;
}

Status ValidateVocabMapping(const VocabMapping& mapping, int64_t target_vocab_size) {
  if (mapping.target_vocab_size() != target_vocab_size) {
    return Status::Invalid("t2d has {} entries but the target vocab size is {}",
                           mapping.target_vocab_size(), target_vocab_size);
  }
  int64_t selected = 0;
  for (uint8_t flag : mapping.t2d) selected += flag != 0 ? 1 : 0;
  if (selected != mapping.draft_vocab_size()) {
    return Status::Invalid("t2d marks {} target ids but d2t has {} entries; the files belong to "
                           "different mappings",
                           selected, mapping.draft_vocab_size());
  }
  int64_t previous = -1;
  for (int64_t i = 0; i < mapping.draft_vocab_size(); ++i) {
    const int64_t target = mapping.TargetId(i);
    if (target <= previous || target >= target_vocab_size || mapping.t2d[target] == 0) {
      return Status::Invalid(
          "d2t[{}] = {} maps draft index {} to target id {}, which is not the next id marked in "
          "t2d (previous {}); the files belong to different mappings",
          i, mapping.d2t[i], i, target, previous);
    }
    previous = target;
  }
  return Status::OK();
}

Result<VocabMapping> LoadVocabMapping(const std::string& d2t_path, const std::string& t2d_path) {
  VocabMapping mapping;
  DF_ASSIGN_OR_RAISE(mapping.d2t, io::ReadNpyInt64Vector(d2t_path));
  DF_ASSIGN_OR_RAISE(mapping.t2d, io::ReadNpyBoolVector(t2d_path));
  DF_RETURN_NOT_OK(ValidateVocabMapping(mapping, mapping.target_vocab_size())
                       .WithContext(fmt::format("{} and {}", d2t_path, t2d_path)));
  return mapping;
}

Status SaveVocabMapping(const VocabMapping& mapping, const std::string& d2t_path,
                        const std::string& t2d_path) {
  io::NpyArray d2t;
  d2t.descr = "<i8";
  d2t.shape = {mapping.draft_vocab_size()};
  d2t.data.assign(reinterpret_cast<const char*>(mapping.d2t.data()),
                  mapping.d2t.size() * sizeof(int64_t));
  io::NpyArray t2d;
  t2d.descr = "|b1";
  t2d.shape = {mapping.target_vocab_size()};
  t2d.data.assign(mapping.t2d.begin(), mapping.t2d.end());
  DF_RETURN_NOT_OK(io::WriteNpy(d2t_path, d2t));
  return io::WriteNpy(t2d_path, t2d);
}

}  // namespace draftforge::data
