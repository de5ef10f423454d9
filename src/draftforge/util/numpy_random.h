// NumPy's default random generator, bit for bit: numpy.random.default_rng(seed)
// is SeedSequence(seed) feeding a PCG64 bit generator, and
// Generator.permutation(n) shuffles arange(n) with bounded integers drawn by
// masked rejection. speculators shuffles its multipack sampler this way, so a
// port that reproduces the stream trains on the same batches as speculators
// for the same seed and epoch.
//
// The algorithms follow NumPy's SeedSequence, PCG64 (XSL-RR output) and
// random_interval. The tests compare raw 64-bit outputs and permutations with
// those of NumPy 1.24.
#pragma once

#include <cstdint>
#include <vector>

namespace draftforge::util {

// PCG64 seeded as numpy.random.default_rng(seed) seeds it.
class NumpyPcg64 {
 public:
  explicit NumpyPcg64(uint64_t seed);

  // bit_generator.random_raw(): the next 64-bit output.
  uint64_t Next64();
  // The next 32-bit output. As in NumPy, one 64-bit output serves two calls:
  // first its low half, then its high half.
  uint32_t Next32();
  // A uniform integer in [0, max], as NumPy's random_interval draws it.
  uint64_t Interval(uint64_t max);

 private:
  void Step();

  unsigned __int128 state_ = 0;
  unsigned __int128 increment_ = 0;
  bool has_high_half_ = false;
  uint32_t high_half_ = 0;
};

// numpy.random.default_rng(seed).permutation(n).
std::vector<int64_t> NumpyPermutation(uint64_t seed, int64_t n);

}  // namespace draftforge::util
