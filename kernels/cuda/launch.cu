// kernels/cuda/launch.h: whether kernels use programmatic dependent launch, and the device
// attributes the launchers ask for.
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

// Attribute A of `device`, asked once per device (threads may ask at once); 0 when unknown.
template <cudaDeviceAttr A>
int cached_attribute(int device) {
  static std::atomic<int> cache[64] = {};  // 0: not asked yet; -1: unknown
  if (device < 0 || device >= 64) return 0;
  int v = cache[device].load(std::memory_order_relaxed);
  if (v == 0) {
    if (cudaDeviceGetAttribute(&v, A, device) != cudaSuccess || v <= 0) v = -1;
    cache[device].store(v, std::memory_order_relaxed);
  }
  return v > 0 ? v : 0;
}
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
  int dev = 0;
  return cudaGetDevice(&dev) == cudaSuccess ? cached_attribute<cudaDevAttrComputeCapabilityMajor>(dev) : 0;
}

int multiprocessors(int device) {
  const int n = cached_attribute<cudaDevAttrMultiProcessorCount>(device);
  return n > 0 ? n : 1;
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
