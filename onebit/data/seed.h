// Deterministic seed derivation and shuffling, identical on every platform and standard
// library (std::shuffle and std::uniform_int_distribution are implementation-defined).
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

namespace onebit::data {

// splitmix64 finaliser: a well-mixed 64-bit function of x.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The seed of sub-stream `stream` (an epoch, a batch) of a run seeded with `seed`.
inline uint64_t mix_seed(uint64_t seed, uint64_t stream) { return splitmix64(splitmix64(seed) ^ splitmix64(~stream)); }

// Small counter-based generator: next() is splitmix64 of a running counter.
class SplitMix {
 public:
  explicit SplitMix(uint64_t seed) : state_(seed) {}
  uint64_t next() { return splitmix64(state_++ * 0x9e3779b97f4a7c15ULL + 1); }
  // Uniform in [0, n) without modulo bias (n > 0).
  uint64_t below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do r = next();
    while (r >= limit);
    return r % n;
  }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)

 private:
  uint64_t state_;
};

// A permutation of 0..n-1 determined by (seed, epoch): Fisher-Yates with SplitMix.
inline std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = i;
  SplitMix rng(mix_seed(seed, uint64_t(epoch)));
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[size_t(i)], p[size_t(rng.below(uint64_t(i) + 1))]);
  return p;
}

}  // namespace onebit::data
