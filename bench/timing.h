// Timing helper shared by the bench/ programs.
#pragma once
#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace onebit::bench {

// Median wall time in ms of `step` over `iters` runs after `warmup` untimed runs.
inline double median_ms(const std::function<void()>& step, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) step();
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace onebit::bench
