// Timing helpers shared by the bench/ programs.
#pragma once
#include <time.h>

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

// CPU time of the whole process (all threads) in ms: on a machine shared with other jobs it
// varies less than wall time (Python's time.process_time() is the same clock).
inline double process_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

struct Times {
  double wall_ms = 0, cpu_ms = 0;  // medians
};

// Medians of wall and process CPU time of `step` over `iters` runs after `warmup` untimed runs.
inline Times median_times(const std::function<void()>& step, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) step();
  std::vector<double> wall, cpu;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = process_cpu_ms();
    step();
    cpu.push_back(process_cpu_ms() - c0);
    wall.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(wall.begin(), wall.end());
  std::sort(cpu.begin(), cpu.end());
  return {wall[wall.size() / 2], cpu[cpu.size() / 2]};
}

}  // namespace onebit::bench
