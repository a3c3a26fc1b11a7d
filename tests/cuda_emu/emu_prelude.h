// Included before a kernels/cuda/*.cu file to compile it as plain C++ for the CPU emulator
// (emu_runtime.h): the CUDA headers' host parts, then the built-ins, barriers, shuffles,
// intrinsics and launches mapped onto onebit::emu. The wrapper includes the .cu file inside a
// namespace of its own, so its functions do not clash with the real CUDA build's.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "tests/cuda_emu/emu_runtime.h"

#define ONEBIT_CUDA_EMU 1  // kernels/cuda: the inline PTX's C++ or emulator equivalents
#define ONEBIT_CUDA_LAUNCH(grid, block, smem, stream, ...) \
  ::onebit::emu::launch(grid, block, smem, stream, __VA_ARGS__)
#define ONEBIT_CUDA_DYNAMIC_SMEM(type, name) type* name = static_cast<type*>(::onebit::emu::dynamic_smem())

#define threadIdx (::onebit::emu::thread_idx())
#define blockIdx (::onebit::emu::block_idx())
#define blockDim (::onebit::emu::block_dim())
#define gridDim (::onebit::emu::grid_dim())
// One block runs at a time, so a function-local static is the block's shared memory.
#undef __shared__
#define __shared__ static
#define __launch_bounds__(...)
#define __syncthreads() ::onebit::emu::sync_block()
#define __syncwarp(...) ::onebit::emu::sync_warp()
#define cudaGetLastError ::onebit::emu::get_last_error
#define cudaGetErrorString ::onebit::emu::error_string
#define cudaDeviceGetAttribute ::onebit::emu::device_get_attribute
#define cudaGetDevice ::onebit::emu::get_device

template <typename T>
inline T __shfl_xor_sync(unsigned /*mask: all lanes take part*/, T v, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= 16, "shuffle of a value over 16 bytes");
  const uint3 t = threadIdx;
  const dim3 b = blockDim;
  const int lane = int((t.x + b.x * (t.y + b.y * t.z)) % 32);
  T r;
  ::onebit::emu::warp_exchange(&v, &r, sizeof(T), (lane ^ lane_mask) % width + lane / width * width);
  return r;
}
inline int min(int a, int b) { return a < b ? a : b; }  // CUDA's integer min and max
inline int max(int a, int b) { return a > b ? a : b; }
template <typename T>
inline T __ldcs(const T* p) {  // a streaming load: a load
  return *p;
}
// The _rn intrinsics: one rounding each (these files build with -ffp-contract=off).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
