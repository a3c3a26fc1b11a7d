// CUDA packed 1-bit GEMV/small GEMM (plain C++ interface: no torch, no CUDA headers).
// y[t, o] = LayerNorm?(h[o] · Σ_i sign[o, i] · x[t, i] · g[i] + bias[o]) for t < n, o < out.
#pragma once
#include <cstdint>

namespace onebit::kernels::cuda {

enum class Act { F32 = 0, BF16 = 1, F16 = 2 };  // dtype of x and y

struct GemvArgs {
  const void* x = nullptr;  // [n, in] row-major, Act
  Act act = Act::F32;
  const float* g = nullptr;       // [in]
  const void* signs = nullptr;    // [out, row_bytes] runtime rows (kernels/packed_sign.h), 16-byte aligned
  int64_t row_bytes = 0;          // 16·blocks_per_row(in)
  const float* h = nullptr;       // [out]
  const float* bias = nullptr;    // [out] or null
  bool post_layernorm = false;
  float ln_eps = 1e-5f;
  void* y = nullptr;              // [n, out] row-major, Act
  float* workspace = nullptr;     // workspace_floats(n, out, splits) floats
  int64_t n = 0, in = 0, out = 0;
};

constexpr int kMaxTokensPerPass = 8;  // up to 8 tokens share one pass over the weights
// Split-K factor for a call on a device with `sms` multiprocessors (fills the GPU when out is small).
int choose_splits(int64_t in, int64_t out, int sms);
int multiprocessors(int device);  // of a CUDA device (cached per device)
int64_t workspace_floats(int64_t n, int64_t out, int splits);
// Launches on `stream` (a cudaStream_t); returns nullptr on success, else the CUDA error string.
const char* packed_gemv(const GemvArgs& a, int splits, void* stream);

}  // namespace onebit::kernels::cuda
