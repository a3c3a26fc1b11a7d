// kernels/cuda/launch.h: whether kernels use programmatic dependent launch.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cuda/launch.h"

namespace onebit::kernels::cuda {
namespace {
// -1: not decided yet; then 0 or 1 (ONEBIT_CUDA_PDL=0 turns it off).
std::atomic<int> g_switch{-1};
}  // namespace

bool programmatic_launch() {
  int on = g_switch.load(std::memory_order_relaxed);
  if (on < 0) {
    on = programmatic_launch_env(std::getenv("ONEBIT_CUDA_PDL")) ? 1 : 0;
    g_switch.store(on, std::memory_order_relaxed);
  }
  return on == 1 && compute_capability_major() >= 9;
}

int compute_capability_major() {
  static std::atomic<int> major[64] = {};  // per device; -1: unknown (threads may ask at once)
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return 0;
  int m = major[dev].load(std::memory_order_relaxed);
  if (m == 0) {
    cudaDeviceGetAttribute(&m, cudaDevAttrComputeCapabilityMajor, dev);
    m = m > 0 ? m : -1;
    major[dev].store(m, std::memory_order_relaxed);
  }
  return m > 0 ? m : 0;
}

bool programmatic_launch_env(const char* value) {
  if (value == nullptr || std::strcmp(value, "1") == 0) return true;
  if (std::strcmp(value, "0") == 0) return false;
  throw std::invalid_argument(std::string("ONEBIT_CUDA_PDL must be 0 or 1, got '") + value + "'");
}

const char* programmatic_launch_note() {
  return programmatic_launch() ? " (programmatic dependent launch was on: ONEBIT_CUDA_PDL=0 turns it off)" : "";
}

void set_programmatic_launch(bool on) { g_switch.store(on ? 1 : 0, std::memory_order_relaxed); }

}  // namespace onebit::kernels::cuda
