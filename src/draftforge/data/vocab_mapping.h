// Draft vocabulary mapping (d2t / t2d) built from token frequencies.
//
// Algorithm: sort token ids by count descending, ties by id ascending; keep the
// first min(Vd, seen) ids; when fewer than Vd ids were seen, add the smallest
// unused ids 0, 1, 2, ...; sort the selection ascending into sel[0..Vd-1].
// Then d2t[i] = sel[i] - i (draft index i stands for target id i + d2t[i]) and
// t2d[t] = 1 iff t is selected. Stored as numpy .npy files d2t.npy (<i8, [Vd])
// and t2d.npy (|b1, [V]).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::data {

struct VocabMapping {
  std::vector<int64_t> d2t;  // [Vd]
  std::vector<uint8_t> t2d;  // [V], 0 or 1

  int64_t draft_vocab_size() const { return static_cast<int64_t>(d2t.size()); }
  int64_t target_vocab_size() const { return static_cast<int64_t>(t2d.size()); }
  // Target id of draft index i.
  int64_t TargetId(int64_t draft_index) const { return draft_index + d2t[draft_index]; }
};

// Builds the mapping; Invalid when Vd > V, Vd < 1 or a counted id is >= V.
Result<VocabMapping> BuildVocabMapping(const std::map<int64_t, int64_t>& token_freq,
                                       int64_t draft_vocab_size, int64_t target_vocab_size);

// Checks len(t2d) == V, sum(t2d) == Vd, and that i + d2t[i] lists the true
// positions of t2d in ascending order.
Status ValidateVocabMapping(const VocabMapping& mapping, int64_t target_vocab_size);

// Reads/writes d2t.npy and t2d.npy in `dir`.
Result<VocabMapping> LoadVocabMapping(const std::string& d2t_path, const std::string& t2d_path);
Status SaveVocabMapping(const VocabMapping& mapping, const std::string& d2t_path,
                        const std::string& t2d_path);

}  // namespace draftforge::data
