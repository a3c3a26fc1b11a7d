#include "onebit/plan/device_memory.h"

#ifdef ONEBIT_WITH_CUDA
#include <ATen/cuda/CUDAContextLight.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <fstream>
#include <string>

#include "onebit/core/error.h"

namespace onebit::plan {

namespace {
// A "Key:  123 kB" line of a /proc file, in bytes; 0 when absent.
int64_t proc_kb_line(const char* file, const std::string& key) {
  std::ifstream f(file);
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1)) * 1024;
  return 0;
}

#ifdef ONEBIT_WITH_CUDA
c10::DeviceIndex index_of(torch::Device d) { return d.has_index() ? d.index() : c10::DeviceIndex(0); }
c10::CachingAllocator::Stat allocated(torch::Device d) {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index_of(d));
  return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
}
#else
[[noreturn]] void no_cuda() { fail("device memory: this build has no CUDA support (ONEBIT_WITH_CUDA)"); }
struct NoStat {
  int64_t peak = 0, current = 0;
};
NoStat allocated(torch::Device) { no_cuda(); }
#endif
}  // namespace

int64_t device_total_bytes(torch::Device d) {
#ifdef ONEBIT_WITH_CUDA
  if (d.is_cuda()) return static_cast<int64_t>(at::cuda::getDeviceProperties(index_of(d))->totalGlobalMem);
#else
  if (d.is_cuda()) no_cuda();
#endif
  return proc_kb_line("/proc/meminfo", "MemTotal");
}

int64_t device_peak_bytes(torch::Device d) {
  if (d.is_cuda()) return allocated(d).peak;
  return proc_kb_line("/proc/self/status", "VmHWM");
}

int64_t device_current_bytes(torch::Device d) {
  if (d.is_cuda()) return allocated(d).current;
  return proc_kb_line("/proc/self/status", "VmRSS");
}

}  // namespace onebit::plan
