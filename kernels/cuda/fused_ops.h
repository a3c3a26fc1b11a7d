// CUDA kernels for two element-wise blocks of a decoder layer, each one launch instead of the
// 5–8 ATen kernels it replaces (plain C++ interface: no torch, no CUDA headers). Both round
// where the op sequence rounds (onebit/nn/fused_ops.h says which sequence).
#pragma once
#include <cstdint>

#include "kernels/cuda/act.h"

namespace onebit::kernels::cuda {

// y[r, :] = w ⊙ T(x[r, :] · rsqrt(mean(x[r, :]²) + eps)), the mean and scaling in fp32; x, w
// and y of dtype `act`; x rows `x_row_stride` elements apart, y contiguous [rows, dim].
struct RmsNormArgs {
  const void* x = nullptr;
  int64_t x_row_stride = 0;
  const void* w = nullptr;
  void* y = nullptr;
  int64_t rows = 0, dim = 0;
  float eps = 1e-6f;
  Act act = Act::F32;
};
// Launches on `stream` (a cudaStream_t); nullptr on success, else the CUDA error string.
const char* rms_norm(const RmsNormArgs& a, void* stream);

// Rotate-half RoPE: y = T(T(x·cos) + T(rotate_half(x)·sin)), rotate_half(x) = [−x₂, x₁] along
// the last dimension, for x [B, H, T, D] with strides sb, sh, st (the last one 1), cos and sin
// [B or 1, 1, T, D] contiguous (cos_batch_stride 0 or T·D), y contiguous [B, H, T, D]; all of
// dtype `act`, D even.
struct RotaryArgs {
  const void* x = nullptr;
  int64_t B = 0, H = 0, T = 0, D = 0;
  int64_t sb = 0, sh = 0, st = 0;
  const void* cos = nullptr;
  const void* sin = nullptr;
  int64_t cos_batch_stride = 0;
  void* y = nullptr;
  Act act = Act::F32;
};
const char* rotary(const RotaryArgs& a, void* stream);

}  // namespace onebit::kernels::cuda
