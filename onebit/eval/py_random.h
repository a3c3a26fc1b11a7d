// PyRandom: Python's `random.Random` integer draws (MT19937 seeded by init_by_array), so that
// the C4 windows are the ones a Python reference gets from `random.seed(s); random.randint(..)`.
#pragma once
#include <cstdint>

namespace onebit::eval {

class PyRandom {
 public:
  explicit PyRandom(uint64_t seed);             // = random.seed(seed) for an int seed
  uint32_t genrand_uint32();
  uint64_t getrandbits(int k);                  // = random.getrandbits(k), 1 <= k <= 64
  uint64_t randbelow(uint64_t n);               // = random._randbelow(n), n >= 1
  int64_t randint(int64_t a, int64_t b);        // = random.randint(a, b), a <= b

 private:
  static constexpr int N = 624;
  uint32_t mt_[N];
  int mti_ = N + 1;
};

}  // namespace onebit::eval
