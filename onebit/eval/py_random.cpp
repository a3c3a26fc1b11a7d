#include "onebit/eval/py_random.h"

#include <vector>

#include "onebit/core/error.h"

namespace onebit::eval {

// CPython Modules/_randommodule.c: random_seed() turns |seed| into little-endian 32-bit words
// (one zero word for 0) and calls init_by_array.
PyRandom::PyRandom(uint64_t seed) {
  std::vector<uint32_t> key;
  for (uint64_t s = seed; s != 0; s >>= 32) key.push_back(uint32_t(s & 0xffffffffu));
  if (key.empty()) key.push_back(0);

  mt_[0] = 19650218u;
  for (int i = 1; i < N; ++i) mt_[i] = 1812433253u * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + uint32_t(i);
  int i = 1;
  size_t j = 0;
  for (int k = N > int(key.size()) ? N : int(key.size()); k; --k) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525u)) + key[j] + uint32_t(j);
    ++i, ++j;
    if (i >= N) { mt_[0] = mt_[N - 1]; i = 1; }
    if (j >= key.size()) j = 0;
  }
  for (int k = N - 1; k; --k) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941u)) - uint32_t(i);
    ++i;
    if (i >= N) { mt_[0] = mt_[N - 1]; i = 1; }
  }
  mt_[0] = 0x80000000u;
  mti_ = N;
}

uint32_t PyRandom::genrand_uint32() {
  constexpr uint32_t kUpper = 0x80000000u, kLower = 0x7fffffffu, kMatrix = 0x9908b0dfu;
  if (mti_ >= N) {
    int kk = 0;
    for (; kk < N - 397; ++kk) {
      uint32_t y = (mt_[kk] & kUpper) | (mt_[kk + 1] & kLower);
      mt_[kk] = mt_[kk + 397] ^ (y >> 1) ^ ((y & 1u) ? kMatrix : 0u);
    }
    for (; kk < N - 1; ++kk) {
      uint32_t y = (mt_[kk] & kUpper) | (mt_[kk + 1] & kLower);
      mt_[kk] = mt_[kk + (397 - N)] ^ (y >> 1) ^ ((y & 1u) ? kMatrix : 0u);
    }
    uint32_t y = (mt_[N - 1] & kUpper) | (mt_[0] & kLower);
    mt_[N - 1] = mt_[396] ^ (y >> 1) ^ ((y & 1u) ? kMatrix : 0u);
    mti_ = 0;
  }
  uint32_t y = mt_[mti_++];
  y ^= (y >> 11);
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= (y >> 18);
  return y;
}

// CPython: words are filled least-significant first; a partial last word keeps its top bits.
uint64_t PyRandom::getrandbits(int k) {
  OB_CHECK(k >= 1 && k <= 64, "PyRandom::getrandbits: k=", k, " outside [1, 64]");
  uint64_t r = 0;
  for (int shift = 0; k > 0; shift += 32, k -= 32) {
    uint64_t w = genrand_uint32();
    if (k < 32) w >>= (32 - k);
    r |= w << shift;
  }
  return r;
}

uint64_t PyRandom::randbelow(uint64_t n) {
  OB_CHECK(n >= 1, "PyRandom::randbelow: n must be >= 1");
  int k = 0;
  for (uint64_t m = n; m; m >>= 1) ++k;  // n.bit_length()
  uint64_t r = getrandbits(k);
  while (r >= n) r = getrandbits(k);
  return r;
}

int64_t PyRandom::randint(int64_t a, int64_t b) {
  OB_CHECK(a <= b, "PyRandom::randint: empty range [", a, ", ", b, "]");
  return a + int64_t(randbelow(uint64_t(b - a) + 1));
}

}  // namespace onebit::eval
