#include "draftforge/util/numpy_random.h"

#include <array>
#include <cstddef>
#include <numeric>
#include <utility>

namespace draftforge::util {
namespace {

// Hash and mix constants of NumPy's SeedSequence.
constexpr uint32_t kInitA = 0x43b0d7e5;
constexpr uint32_t kMultA = 0x931e8875;
constexpr uint32_t kInitB = 0x8b51f9dd;
constexpr uint32_t kMultB = 0x58f38ded;
constexpr uint32_t kMixMultL = 0xca01f9dd;
constexpr uint32_t kMixMultR = 0x4973f715;
constexpr int kXShift = 16;
constexpr size_t kPoolSize = 4;

// Hashes one 32-bit word with the running constant, which advances per call.
uint32_t HashMix(uint32_t value, uint32_t& hash_constant) {
  value ^= hash_constant;
  hash_constant *= kMultA;
  value *= hash_constant;
  value ^= value >> kXShift;
  return value;
}

uint32_t Mix(uint32_t x, uint32_t y) {
  uint32_t result = kMixMultL * x - kMixMultR * y;
  result ^= result >> kXShift;
  return result;
}

// SeedSequence(seed).generate_state(4, uint64): the entropy is the seed's
// 32-bit words, least significant first (one word 0 for seed 0), mixed into a
// pool of four words that is then hashed into the output words.
std::array<uint64_t, 4> SeedSequenceState(uint64_t seed) {
  std::vector<uint32_t> entropy;
  do {
    entropy.push_back(static_cast<uint32_t>(seed & 0xffffffffu));
    seed >>= 32;
  } while (seed != 0);

  std::array<uint32_t, kPoolSize> pool{};
  uint32_t hash_constant = kInitA;
  for (size_t i = 0; i < kPoolSize; ++i) {
    pool[i] = HashMix(i < entropy.size() ? entropy[i] : 0u, hash_constant);
  }
  for (size_t source = 0; source < kPoolSize; ++source) {
    for (size_t target = 0; target < kPoolSize; ++target) {
      if (source != target) pool[target] = Mix(pool[target], HashMix(pool[source], hash_constant));
    }
  }
  for (size_t source = kPoolSize; source < entropy.size(); ++source) {
    for (size_t target = 0; target < kPoolSize; ++target) {
      pool[target] = Mix(pool[target], HashMix(entropy[source], hash_constant));
    }
  }

  // Eight 32-bit words, read in pairs (low, high) as four uint64 values.
  std::array<uint64_t, 4> state{};
  uint32_t output_constant = kInitB;
  for (size_t word = 0; word < 8; ++word) {
    uint32_t value = pool[word % kPoolSize];
    value ^= output_constant;
    output_constant *= kMultB;
    value *= output_constant;
    value ^= value >> kXShift;
    state[word / 2] |= static_cast<uint64_t>(value) << (32 * (word % 2));
  }
  return state;
}

unsigned __int128 Make128(uint64_t high, uint64_t low) {
  return (static_cast<unsigned __int128>(high) << 64) | low;
}

// PCG's default 128-bit LCG multiplier.
const unsigned __int128 kPcgMultiplier = Make128(2549297995355413924ULL, 4865540595714422341ULL);

}  // namespace

NumpyPcg64::NumpyPcg64(uint64_t seed) {
  const std::array<uint64_t, 4> words = SeedSequenceState(seed);
  const unsigned __int128 initial_state = Make128(words[0], words[1]);
  const unsigned __int128 sequence = Make128(words[2], words[3]);
  // pcg_setseq_128_srandom_r.
  state_ = 0;
  increment_ = (sequence << 1) | 1u;
  Step();
  state_ += initial_state;
  Step();
}

void NumpyPcg64::Step() { state_ = state_ * kPcgMultiplier + increment_; }

uint64_t NumpyPcg64::Next64() {
  // Step, then the XSL-RR output of the new state: xor of the two halves,
  // rotated right by the top 6 bits.
  Step();
  const uint64_t folded = static_cast<uint64_t>(state_ >> 64) ^ static_cast<uint64_t>(state_);
  const unsigned rotation = static_cast<unsigned>(state_ >> 122);
  return (folded >> rotation) | (folded << ((64 - rotation) & 63));
}

uint32_t NumpyPcg64::Next32() {
  if (has_high_half_) {
    has_high_half_ = false;
    return high_half_;
  }
  const uint64_t next = Next64();
  has_high_half_ = true;
  high_half_ = static_cast<uint32_t>(next >> 32);
  return static_cast<uint32_t>(next & 0xffffffffu);
}

uint64_t NumpyPcg64::Interval(uint64_t max) {
  if (max == 0) return 0;
  // Smallest all-ones mask >= max, then rejection of values above max.
  uint64_t mask = max;
  for (int shift = 1; shift <= 32; shift *= 2) mask |= mask >> shift;
  uint64_t value;
  if (max <= 0xffffffffu) {
    do {
      value = Next32() & mask;
    } while (value > max);
  } else {
    do {
      value = Next64() & mask;
    } while (value > max);
  }
  return value;
}

std::vector<int64_t> NumpyPermutation(uint64_t seed, int64_t n) {
  std::vector<int64_t> values(static_cast<size_t>(n));
  std::iota(values.begin(), values.end(), int64_t{0});
  NumpyPcg64 generator(seed);
  // Fisher-Yates from the end, as Generator.shuffle does for one axis.
  for (int64_t i = n - 1; i >= 1; --i) {
    const int64_t j = static_cast<int64_t>(generator.Interval(static_cast<uint64_t>(i)));
    std::swap(values[i], values[j]);
  }
  return values;
}

}  // namespace draftforge::util
