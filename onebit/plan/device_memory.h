// Memory of the device a run uses: its size (the planner's budget) and the peak a run
// reached (logged next to the plan in metrics.jsonl).
#pragma once
#include <torch/types.h>

#include <cstdint>

namespace onebit::plan {

// CUDA: the GPU's total memory; CPU: MemTotal of /proc/meminfo (0 when unreadable).
int64_t device_total_bytes(torch::Device device);
// CUDA: the caching allocator's peak allocated bytes since the process started;
// CPU: the process's resident high-water mark (VmHWM).
int64_t device_peak_bytes(torch::Device device);
// CPU: the process's resident set now (VmRSS); CUDA: allocated bytes now.
int64_t device_current_bytes(torch::Device device);

}  // namespace onebit::plan
