// Blocks of the decoder layers as single passes for inference: HF's RMSNorm (alone or with the
// residual add before it), rotate-half RoPE, the gated MLP's silu(gate)·up and the attention of
// one decoded token. Each replaces several ATen operators (on a GPU, as many kernel launches,
// which dominate a 1-bit model's decode step). They run when grad mode is off (NoGradGuard,
// InferenceMode: inference, the teacher's forward); with grad mode on (training), or for inputs
// they do not cover, they run the ATen ops themselves.
#pragma once
#include <torch/types.h>

#include <utility>

namespace onebit::nn {

// Whether the single passes run at all: on by default; ONEBIT_FUSED_OPS=0 turns them off for
// the process (every op then runs its ATen sequence: a fallback should a fused kernel misbehave
// on some GPU), set_fused_ops for a benchmark that times both ways in one run. Another value of
// the variable is an error naming it.
void set_fused_ops(bool on);
bool fused_ops();

// While one lives, this thread runs the ATen sequences. Activation checkpointing holds one
// around a layer's no-grad forward, so that it computes what the recompute for backward (with
// autograd, so unfused) computes, to the bit.
class UnfusedScope {
 public:
  UnfusedScope();
  ~UnfusedScope();
  UnfusedScope(const UnfusedScope&) = delete;
  UnfusedScope& operator=(const UnfusedScope&) = delete;
};

// transformers' LlamaRMSNorm: weight · (x_fp32 · rsqrt(mean(x_fp32²) + eps)).to(x.dtype), over
// the last dimension. One pass on CPU and CUDA for fp32 / bf16 / fp16 when weight has x's
// dtype; the mean's summation order differs from ATen's (a few fp32 ulps before the cast).
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// h = x + residual, and rms_norm(h, weight, eps): the residual add and the norm after it in one
// pass (h rounded to the dtype first, as the add does). Returns {h, normed h}.
std::pair<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x, const torch::Tensor& residual,
                                                     const torch::Tensor& weight, double eps);

// silu(gate) · up, the gated MLP's activation: one pass on CUDA, silu rounded to the dtype
// before the product as the two ATen operators round (its exp may differ from ATen's in the last
// fp32 bit, which changes a bf16 rounding now and then); on the CPU those two operators, whose
// vectorised exp beats a scalar pass.
torch::Tensor silu_mul(const torch::Tensor& gate, const torch::Tensor& up);

// Rotate-half RoPE, transformers' `x·cos + rotate_half(x)·sin`, for x [B, H, T, D] (any strides,
// the last one 1) and cos, sin [B or 1, 1, T, D]; returns a contiguous [B, H, T, D]. One pass on
// CPU and CUDA for fp32 / bf16 / fp16 (cos, sin of x's dtype), with the three roundings per
// element of the op sequence, so bitwise equal to it (on CPU the library is built without an FMA
// target; the CUDA kernel uses non-contracting intrinsics).
torch::Tensor rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// One forward's RoPE and static KV cache writes: returns rotary(q) (contiguous [B, H, T, D]) and
// writes k_cache[b, h, slots[t]] = rotary(k)[b, h, t] and v_cache[b, h, slots[t]] = v[b, h, t]
// for q [B, H, T, D], k, v [B, Hkv, T, D], caches [B, Hkv, capacity, D], slots long [T] on the
// device (nothing is read on the host). One pass (on CUDA one launch instead of two RoPEs and two
// index_copy_), else those four operators.
torch::Tensor rotary_store_kv(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                              const torch::Tensor& cos, const torch::Tensor& sin, torch::Tensor& k_cache,
                              torch::Tensor& v_cache, const torch::Tensor& slots);

// Scaled-dot-product attention, returned as [B, T, H·D] (what the output projection reads):
// q [B, H, T, D]; k, v [B, Hkv, S, D] (H a multiple of Hkv: grouped-query); mask boolean
// [B or 1, 1, T, S] (true = attend) or undefined, with `causal` for the lower-triangular mask.
// One pass on CPU and CUDA for one query token (T = 1: a decode step) in fp32 / bf16 / fp16,
// without autograd, for S <= 8192 and D <= 256: fp32 scores, softmax and sums, one rounding
// at the end (as the fused SDPA kernels do). Otherwise ATen's scaled_dot_product_attention.
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& mask, bool causal, double scale);

}  // namespace onebit::nn
