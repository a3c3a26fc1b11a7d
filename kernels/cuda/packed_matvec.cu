#include "kernels/cuda/packed_matvec.h"

#include <cuda_runtime.h>

#include "kernels/packed_sign.h"

namespace onebit::kernels::cuda {

namespace {
constexpr int kWarpsPerBlock = 8;

// One warp per (output row, token): lanes stride over the row's 32-bit words (32 signs each;
// little-endian, so word bit p is input 32·word + p), then a shuffle reduction.
__global__ void packed_matvec_kernel(const float* __restrict__ xg,
                                     const uint32_t* __restrict__ packed,
                                     const float* __restrict__ h, float* __restrict__ y, int64_t n,
                                     int64_t in, int64_t out, int64_t words_per_row) {
  const int lane = threadIdx.x % 32;
  const int64_t o = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (o >= out) return;  // whole warps leave together, so the full-mask shuffles stay valid
  const uint32_t* row = packed + o * words_per_row;
  for (int64_t t = blockIdx.y; t < n; t += gridDim.y) {  // grid.y is capped at 65535
    const float* x = xg + t * in;
    float acc = 0.f;
    for (int64_t w = lane; w < words_per_row; w += 32) {
      const uint32_t bits = row[w];
      const int64_t base = w * 32;
      if (base + 32 <= in) {
#pragma unroll
        for (int k = 0; k < 32; ++k) acc += (bits >> k) & 1u ? -x[base + k] : x[base + k];
      } else {
        for (int k = 0; base + k < in; ++k) acc += (bits >> k) & 1u ? -x[base + k] : x[base + k];
      }
    }
    for (int off = 16; off > 0; off /= 2) acc += __shfl_down_sync(0xffffffffu, acc, off);
    if (lane == 0) y[t * out + o] = acc * h[o];
  }
}
}  // namespace

const char* packed_matvec(const float* xg, const void* packed, const float* h, float* y,
                          int64_t n, int64_t in, int64_t out, void* stream) {
  if (n == 0 || out == 0) return nullptr;
  const dim3 grid(unsigned((out + kWarpsPerBlock - 1) / kWarpsPerBlock), unsigned(n < 65535 ? n : 65535));
  packed_matvec_kernel<<<grid, kWarpsPerBlock * 32, 0, static_cast<cudaStream_t>(stream)>>>(
      xg, static_cast<const uint32_t*>(packed), h, y, n, in, out, bytes_per_row(in) / 4);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace onebit::kernels::cuda
