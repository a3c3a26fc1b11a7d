#include "onebit/autograd/sign_ste.h"

#include <torch/torch.h>

#include <cstring>

#include "onebit/core/error.h"

namespace onebit::autograd {

// These run on every training step over every weight: on CPU, single-pass loops (the generic
// torch::where / masked_fill paths take 10-15x longer there); elsewhere, ATen ops.
namespace {
constexpr int64_t kGrain = 1 << 15;

bool cpu_flat(const torch::Tensor& t) {
  return t.device().is_cpu() && t.is_contiguous() &&
         (t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kFloat64);
}

// g[i] = f(w[i], g[i]) in place over same-dtype contiguous CPU tensors.
template <class F>
void cpu_update(const torch::Tensor& w, torch::Tensor& g, F f) {
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "onebit_ste", [&] {
    const scalar_t* pw = w.data_ptr<scalar_t>();
    scalar_t* pg = g.data_ptr<scalar_t>();
    at::parallel_for(0, w.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) pg[i] = f(pw[i], pg[i]);
    });
  });
}

// 1.001 − tanh²(w) = 0.001 + 4e/(1+e)² with e = exp(−2|w|). exp by range reduction
// (x = n·ln2 + r, |r| ≤ ln2/2) and a degree-7 Taylor polynomial (relative error < 1e-8), with
// integer rounding and bit-built 2ⁿ only: branch-free, so the loop vectorises, and no tanh buffer.
inline float tanh_ste_factor(float w) {
  // |w| clamped to 40 (e underflows past ≈ 43) on the bit pattern: integer and/min keep the
  // loop free of float compares, which GCC would not if-convert (no vectorising then).
  uint32_t bits_w;
  std::memcpy(&bits_w, &w, sizeof(bits_w));
  bits_w &= 0x7fffffffu;
  constexpr uint32_t kForty = 0x42200000u;  // 40.0f
  bits_w = bits_w < kForty ? bits_w : kForty;
  float a;
  std::memcpy(&a, &bits_w, sizeof(a));
  const float x = -2.0f * a;
  const int32_t n = -static_cast<int32_t>(-x * 1.44269504f + 0.5f);  // round(x / ln2), x ≤ 0
  const float nf = static_cast<float>(n);
  const float r = (x - nf * 0.693359375f) + nf * 2.12194440e-4f;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const float e = p * scale;
  const float d = 1.0f + e;
  return 0.001f + 4.0f * e / (d * d);
}
}  // namespace

torch::Tensor sign_pm1(const torch::Tensor& w, torch::Dtype dtype) {
  if (!cpu_flat(w)) {
    const auto opts = w.options().dtype(dtype);
    return torch::where(w.ge(0), torch::scalar_tensor(1, opts), torch::scalar_tensor(-1, opts));
  }
  torch::Tensor out = torch::empty(w.sizes(), w.options().dtype(dtype));
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "sign_pm1", [&] {
    using in_t = scalar_t;
    const in_t* src = w.data_ptr<in_t>();
    AT_DISPATCH_FLOATING_TYPES_AND2(torch::kHalf, torch::kBFloat16, dtype, "sign_pm1_out", [&] {
      const scalar_t pos(1), neg(-1);
      if constexpr (sizeof(scalar_t) == 2) {
        // bf16/fp16: set the sign bit of +1's bits (a select on the 2-byte structs compiles to
        // a branch, mispredicted half the time on random signs: 4x slower).
        uint16_t one;
        std::memcpy(&one, &pos, sizeof(one));
        auto* dst = reinterpret_cast<uint16_t*>(out.data_ptr<scalar_t>());
        at::parallel_for(0, w.numel(), kGrain, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) dst[i] = uint16_t(one | (uint16_t(src[i] < 0) << 15));
        });
      } else {
        scalar_t* dst = out.data_ptr<scalar_t>();
        at::parallel_for(0, w.numel(), kGrain, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) dst[i] = src[i] >= 0 ? pos : neg;
        });
      }
    });
  });
  return out;
}

torch::Tensor ste_backward(const torch::Tensor& grad, const torch::Tensor& w, nn::SteKind kind) {
  // A converting copy then the in-place pass: both vectorised (a fused convert-and-scale loop
  // did not vectorise and took 4x longer on bf16).
  torch::Tensor g = grad.to(w.scalar_type(), /*non_blocking=*/false, /*copy=*/true).contiguous();
  return ste_backward_(g, w, kind);
}

torch::Tensor ste_backward_(torch::Tensor grad, const torch::Tensor& w, nn::SteKind kind) {
  OB_CHECK(grad.scalar_type() == w.scalar_type() && grad.sizes() == w.sizes() && grad.is_contiguous(),
           "ste_backward_: grad must be contiguous with W's shape ", w.sizes(), " and dtype ",
           w.scalar_type(), ", got ", grad.sizes(), " ", grad.scalar_type());
  const bool fast = cpu_flat(w) && w.is_contiguous();
  switch (kind) {
    case nn::SteKind::Tanh: {
      if (fast && w.scalar_type() == torch::kFloat32) {
        const float* pw = w.data_ptr<float>();
        float* pg = grad.data_ptr<float>();
        at::parallel_for(0, w.numel(), kGrain, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) pg[i] *= tanh_ste_factor(pw[i]);
        });
        return grad;
      }
      torch::Tensor t = torch::tanh(w);  // fp64 and non-CPU: ATen's vectorised tanh
      if (fast) {
        cpu_update(t, grad, [](auto ti, auto gi) { return gi * (decltype(ti)(1.001) - ti * ti); });
        return grad;
      }
      return grad.mul_(t.mul_(t).neg_().add_(1.001));
    }
    case nn::SteKind::Identity:
      return grad;
    case nn::SteKind::Clipped:
      if (fast) {
        cpu_update(w, grad, [](auto wi, auto gi) {
          return (wi <= 1 && wi >= -1) ? gi : decltype(gi)(0);
        });
        return grad;
      }
      return grad.masked_fill_(w.abs() > 1, 0);
  }
  return grad;
}

torch::Tensor SignSTE::forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& w,
                               nn::SteKind kind) {
  ctx->save_for_backward({w});
  ctx->saved_data["kind"] = static_cast<int64_t>(kind);
  return sign_pm1(w, w.scalar_type());
}

torch::autograd::variable_list SignSTE::backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
  const auto w = ctx->get_saved_variables()[0];
  const auto kind = static_cast<nn::SteKind>(ctx->saved_data["kind"].toInt());
  return {ste_backward(grads[0], w, kind), torch::Tensor()};
}

}  // namespace onebit::autograd
