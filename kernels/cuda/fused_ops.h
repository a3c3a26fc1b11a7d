// CUDA kernels for blocks of a decoder layer, each one launch instead of the several ATen
// kernels it replaces (plain C++ interface: no torch, no CUDA headers): RMSNorm (alone or after
// the residual add), RoPE and the gated activation, which round where the op sequences round
// (onebit/nn/fused_ops.h says which sequences), and the attention of one decoded token.
#pragma once
#include <cstdint>

#include "kernels/cuda/act.h"

namespace onebit::kernels::cuda {

// y[r, :] = w ⊙ T(x[r, :] · rsqrt(mean(x[r, :]²) + eps)), the mean and scaling in fp32; x, w
// and y of dtype `act`; x rows `x_row_stride` elements apart, y contiguous [rows, dim]. With a
// residual r (rows `r_row_stride` apart), h = T(x + r) is written to h (contiguous [rows, dim])
// and normalised instead of x: the residual add before a norm, in the same launch.
struct RmsNormArgs {
  const void* x = nullptr;
  int64_t x_row_stride = 0;
  const void* r = nullptr;  // optional
  int64_t r_row_stride = 0;
  void* h = nullptr;        // with r
  const void* w = nullptr;
  void* y = nullptr;
  int64_t rows = 0, dim = 0;
  float eps = 1e-6f;
  Act act = Act::F32;
};
// Launches on `stream` (a cudaStream_t); nullptr on success, else the CUDA error string.
const char* rms_norm(const RmsNormArgs& a, void* stream);

// y = T(T(silu(g)) · u) with silu(v) = v / (1 + e^−v) in fp32: the gated MLP's activation, for
// g, u [rows, dim] with row strides, y contiguous.
struct SiluMulArgs {
  const void* g = nullptr;
  int64_t g_row_stride = 0;
  const void* u = nullptr;
  int64_t u_row_stride = 0;
  void* y = nullptr;
  int64_t rows = 0, dim = 0;
  Act act = Act::F32;
};
const char* silu_mul(const SiluMulArgs& a, void* stream);

// Rotate-half RoPE: y = T(T(x·cos) + T(rotate_half(x)·sin)), rotate_half(x) = [−x₂, x₁] along
// the last dimension, for x [B, H, T, D] with strides sb, sh, st (the last one 1), cos and sin
// [B or 1, 1, T, D] contiguous (cos_batch_stride 0 or T·D); all of dtype `act`, D even. y has
// strides y_sb, y_sh, y_st (the last one 1) and its row for token t is slots[t] (a static KV
// cache's slots, long, on the device) or t when slots is null. With v (same shape and strides
// as x), v is copied to v_out at the same rows as well: k's RoPE and both cache writes in one
// launch. With x2 (q: [B, H2, T, D], strides sb2, sh2, st2), its RoPE is written to y2
// (contiguous [B, H2, T, D]) in the same launch: q's and k's RoPE and the cache writes at once.
struct RotaryArgs {
  const void* x = nullptr;
  int64_t B = 0, H = 0, T = 0, D = 0;
  int64_t sb = 0, sh = 0, st = 0;
  const void* cos = nullptr;
  const void* sin = nullptr;
  int64_t cos_batch_stride = 0;
  void* y = nullptr;
  int64_t y_sb = 0, y_sh = 0, y_st = 0;
  const int64_t* slots = nullptr;
  const void* v = nullptr;  // optional
  void* v_out = nullptr;    // with v; strides y_*
  const void* x2 = nullptr;  // optional
  int64_t H2 = 0, sb2 = 0, sh2 = 0, st2 = 0;
  void* y2 = nullptr;  // with x2
  Act act = Act::F32;
};
const char* rotary(const RotaryArgs& a, void* stream);

// y[b, t, h, :] = Σ_j p_j · v[b, h/g, j, :], p = softmax_j(scale · q[b, h, t, :] · k[b, h/g, j, :])
// over the keys j < S that mask[b or 0, t, j] allows (all when mask is null; none allowed: 0),
// g = H / Hkv; fp32 arithmetic, q, k, v and y of dtype `act`. Strides in elements, the last
// dimension contiguous; the mask bool rows of S, `mask_batch_stride` 0 (one mask for every
// row) or T·S; y contiguous [B, T, H, D]. One block per (b, h, t) and split of the keys;
// S <= kMaxDecodeKeys. With splits > 1 (decode_attention_splits: long spans, so that more
// multiprocessors read the cache) each block writes its part's unnormalised row, maximum and
// sum to `workspace` and a second launch combines them (flash-decoding).
struct DecodeAttentionArgs {
  const void* q = nullptr;
  int64_t q_sb = 0, q_sh = 0, q_st = 0;
  const void* k = nullptr;
  int64_t k_sb = 0, k_sh = 0, k_ss = 0;
  const void* v = nullptr;
  int64_t v_sb = 0, v_sh = 0, v_ss = 0;
  const bool* mask = nullptr;
  int64_t mask_batch_stride = 0;
  void* y = nullptr;
  int64_t B = 0, H = 0, Hkv = 0, T = 0, S = 0, D = 0;
  float scale = 1.f;
  Act act = Act::F32;
  int splits = 1;              // 1 to kMaxDecodeSplits
  float* workspace = nullptr;  // decode_attention_workspace_floats(*this) floats when splits > 1
};
constexpr int64_t kMaxDecodeKeys = 8192;  // the scores live in shared memory
constexpr int kMaxDecodeSplits = 64;
// Splits for `rows` = B·H·T rows of S keys on `sms` multiprocessors: 1 up to 512 keys, else
// about two blocks per multiprocessor with at least 256 keys each.
int decode_attention_splits(int64_t rows, int64_t S, int sms);
int64_t decode_attention_workspace_floats(const DecodeAttentionArgs& a);
constexpr int64_t kMaxDecodeHeadDim = 256;
const char* decode_attention(const DecodeAttentionArgs& a, void* stream);

}  // namespace onebit::kernels::cuda
