// Two element-wise blocks of the LLaMA-family decoder layer as single passes for inference:
// HF's RMSNorm and rotate-half RoPE. Each replaces an ATen op sequence of 5–8 operators (on a
// GPU, 5–8 kernel launches per call, which dominate a 1-bit model's decode step) and rounds
// where that sequence rounds. With autograd (training), or for inputs they do not cover, they
// run the op sequence itself.
#pragma once
#include <torch/types.h>

namespace onebit::nn {

// transformers' LlamaRMSNorm: weight · (x_fp32 · rsqrt(mean(x_fp32²) + eps)).to(x.dtype), over
// the last dimension. One pass on CPU and CUDA for fp32 / bf16 / fp16 when weight has x's
// dtype; the mean's summation order differs from ATen's (a few fp32 ulps before the cast).
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// Rotate-half RoPE, transformers' `x·cos + rotate_half(x)·sin`, for x [B, H, T, D] (any strides,
// the last one 1) and cos, sin [B or 1, 1, T, D]; returns a contiguous [B, H, T, D]. One pass on
// CPU and CUDA for fp32 / bf16 / fp16 (cos, sin of x's dtype), with the three roundings per
// element of the op sequence, so bitwise equal to it (on CPU the library is built without an FMA
// target; the CUDA kernel uses non-contracting intrinsics).
torch::Tensor rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

}  // namespace onebit::nn
