// CUDA packed 1-bit GEMV/small GEMM (plain C++ interface: no torch, no CUDA headers).
// y[t, o] = LayerNorm?(h[o] · Σ_i sign[o, i] · x[t, i] · g[i] + bias[o]) for t < n, o < out.
#pragma once
#include <cstdint>

#include "kernels/cuda/act.h"
#include "kernels/cuda/launch.h"  // multiprocessors

namespace onebit::kernels::cuda {

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
  float* workspace = nullptr;     // GemvPlan::workspace_floats floats (lanes: workspace_floats(n, out, splits))
  int64_t n = 0, in = 0, out = 0;
};

constexpr int kMaxTokensPerPass = 8;  // up to 8 tokens share one pass over the weights

// ---- the lanes kernel (packed_gemv.cu) ----
// Split-K factor for a call on a device with `sms` multiprocessors (fills the GPU when out is small).
int choose_splits(int64_t in, int64_t out, int sms);
int64_t workspace_floats(int64_t n, int64_t out, int splits);
// Launches on `stream` (a cudaStream_t); returns nullptr on success, else the CUDA error string.
const char* packed_gemv(const GemvArgs& a, int splits, void* stream);

// Several layers that read the same x (q/k/v, gate/up) in one lanes pass (two launches for the
// group instead of two per layer): each layer its own signs, g, h and bias, all of one `in`;
// their outputs side by side in y [n, Σ out] (row stride Σ out, layer l at column offset
// Σ_{j<l} out_j); post-LayerNorm per layer. A block of 16 rows never spans two layers.
constexpr int kMaxGroupLayers = 4;
struct GemvGroupLayer {
  const float* g = nullptr;     // [in]
  const void* signs = nullptr;  // [out, row_bytes], 16-byte aligned
  const float* h = nullptr;     // [out]
  const float* bias = nullptr;  // [out] or null
  int64_t out = 0;
};
struct GemvGroupArgs {
  const void* x = nullptr;  // [n, in] row-major, Act
  Act act = Act::F32;
  GemvGroupLayer layers[kMaxGroupLayers];
  int count = 0;
  int64_t row_bytes = 0;
  bool post_layernorm = false;
  float ln_eps = 1e-5f;
  void* y = nullptr;           // [n, Σ out], Act
  float* workspace = nullptr;  // workspace_floats(n, Σ out, splits) floats
  int64_t n = 0, in = 0;
};
// splits: choose_splits(in, Σ out, sms) (or forced, as for one layer).
const char* packed_gemv_group(const GemvGroupArgs& a, int splits, void* stream);

// ---- the kernel choice (packed_gemv_mma.cu) ----
//  Lanes: packed_gemv.cu, the first kernel: 8 lanes per row, fp32 x ⊙ g in shared memory, about 6
//         instructions per weight and token; split-K partials, then an epilogue launch.
//  Mma:   packed_gemv_mma.cu: signs expanded to bf16 ±1 (or 0/1 with a scale) in registers, one
//         logical op per two weights, products on the tensor cores (mma.sync m16n8k16, tokens ×
//         {hi, lo} bf16 halves of x ⊙ g as the N dimension); one launch per call when there is
//         neither split-K nor post-LayerNorm.
//  Auto:  the default: Lanes until the mma kernel has been measured on a GPU (bench-packed-gemv
//         --device cuda prints both); then Auto becomes Mma where it is faster.
enum class GemvKernel { Auto = 0, Lanes = 1, Mma = 2 };
const char* to_string(GemvKernel k);  // "auto" | "lanes" | "mma"
GemvKernel resolve(GemvKernel k);     // Auto → the default kernel; others unchanged

// How a call runs: the kernel, its split-K factor and the workspace it needs (floats; 0: none,
// GemvArgs::workspace may then be null). Plan and launch must see the same n, in, out and
// post_layernorm.
struct GemvPlan {
  GemvKernel kernel = GemvKernel::Lanes;  // resolved: never Auto
  int splits = 1;
  int64_t workspace_floats = 0;
};
// `splits` > 0 forces that split-K factor (tests; clamped to the kernel's tiles or chunks of in); 0 chooses
// it for a device with `sms` multiprocessors.
GemvPlan plan_gemv(GemvKernel kernel, int64_t n, int64_t in, int64_t out, bool post_layernorm, int sms,
                   int splits = 0);
// Launches the planned kernel(s) on `stream`; nullptr on success, else the error string.
const char* packed_gemv(const GemvArgs& a, const GemvPlan& plan, void* stream);

}  // namespace onebit::kernels::cuda
