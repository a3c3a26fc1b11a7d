// Kernels for the emulator's own checks (tests/cuda_emu/test_cuda_emu.cpp), compiled as the
// kernels/cuda files are: with emu_prelude.h.
#include <vector>

#include "tests/cuda_emu/emu_prelude.h"

namespace cuda_emu_selftest {
namespace {

__global__ void block_sum_kernel(const float* x, int n, float* out) {
  __shared__ float partial[32];
  float v = threadIdx.x < unsigned(n) ? x[threadIdx.x] : 0.f;
  for (int m = 16; m > 0; m /= 2) v += __shfl_xor_sync(0xffffffffu, v, m);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.f;
    for (unsigned w = 0; w < (blockDim.x + 31) / 32; ++w) s += partial[w];
    *out = s;
  }
}

__global__ void diverging_kernel() {
  if (threadIdx.x % 2 == 0) __syncthreads();  // half the block waits for threads that never come
  else __syncwarp();
}

__global__ void empty_kernel() {}

}  // namespace

float block_sum_of(const std::vector<float>& v, int threads) {
  float out = 0.f;
  ONEBIT_CUDA_LAUNCH(1, threads, 0, nullptr, block_sum_kernel)(v.data(), int(v.size()), &out);
  return out;
}
void diverging_barrier() { ONEBIT_CUDA_LAUNCH(2, 64, 0, nullptr, diverging_kernel)(); }
void too_many_threads() { ONEBIT_CUDA_LAUNCH(1, 1025, 0, nullptr, empty_kernel)(); }

}  // namespace cuda_emu_selftest
