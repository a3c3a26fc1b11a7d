// Device helpers shared by the CUDA kernels (packed_gemv*.cu, fused_ops.cu): conversions
// between the activation types and fp32, and block-wide sum and max.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <utility>

#include "kernels/cuda/launch.h"

// Kernel launches and dynamic shared memory through these two macros, so that the kernels also
// compile as plain C++ for tests/cuda_emu (which defines both before including a .cu file and
// runs the kernels' threads on the CPU). ONEBIT_CUDA_LAUNCH(grid, block, smem, stream,
// kernel)(args...) launches with programmatic dependent launch where it is on (launch.h); every
// kernel starts with ONEBIT_PDL_WAIT().
#ifndef ONEBIT_CUDA_LAUNCH
#define ONEBIT_CUDA_LAUNCH(grid, block, smem, stream, ...) \
  ::onebit::kernels::cuda::common::launcher(grid, block, smem, stream, __VA_ARGS__)
#define ONEBIT_CUDA_DYNAMIC_SMEM(type, name) extern __shared__ type name[]
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
// Wait for the previous kernel of the stream (its memory visible), then let the next one start.
#define ONEBIT_PDL_WAIT()                                  \
  do {                                                     \
    asm volatile("griddepcontrol.wait;" ::: "memory");     \
    asm volatile("griddepcontrol.launch_dependents;" ::); \
  } while (0)
#else
#define ONEBIT_PDL_WAIT() \
  do {                    \
  } while (0)
#endif

namespace onebit::kernels::cuda::common {

#ifndef ONEBIT_CUDA_EMU
// A kernel launch through cudaLaunchKernelEx: the programmatic-serialization attribute where
// programmatic_launch() is on, else a plain launch. Errors: cudaGetLastError, as for <<<>>>.
template <typename... Params>
struct Launcher {
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  void (*kernel)(Params...);
  template <typename... Args>
  void operator()(Args&&... args) const {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cfg.attrs = attr;
    cfg.numAttrs = programmatic_launch() ? 1 : 0;
    cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  }
};
template <typename... Params>
Launcher<Params...> launcher(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, void (*kernel)(Params...)) {
  return {grid, block, smem, stream, kernel};
}
#endif

template <typename T>
__device__ __forceinline__ float to_f(T v);
template <>
__device__ __forceinline__ float to_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <>
__device__ __forceinline__ __half from_f<__half>(float v) { return __float2half(v); }

// The sum of v over the block, returned to every thread; red: 32 floats of shared memory. The
// first barrier lets a previous call's readers of red finish.
__device__ __forceinline__ float block_sum(float v, float* red) {
#pragma unroll
  for (int m = 16; m > 0; m /= 2) v += __shfl_xor_sync(0xffffffffu, v, m);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float s = 0.f;
  for (int i = 0; i < warps; ++i) s += red[i];
  return s;
}

// The maximum of v over the block, returned to every thread; red as for block_sum.
__device__ __forceinline__ float block_max(float v, float* red) {
#pragma unroll
  for (int m = 16; m > 0; m /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, m));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float s = red[0];
  for (int i = 1; i < warps; ++i) s = fmaxf(s, red[i]);
  return s;
}

}  // namespace onebit::kernels::cuda::common
