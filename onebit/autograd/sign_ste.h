// sign() with a straight-through gradient (method.md §1). sign(0) = +1 everywhere, so the
// trained forward and the packed model (bit 0 = +1) agree exactly.
#pragma once
#include <torch/csrc/autograd/custom_function.h>
#include <torch/types.h>

#include "onebit/nn/onebit_linear.h"

namespace onebit::autograd {

// ±1 in `dtype` (same device as w): +1 where w >= 0, −1 elsewhere.
torch::Tensor sign_pm1(const torch::Tensor& w, torch::Dtype dtype);

// dL/dW from dL/dsign(W) (any float dtype; result in w's dtype):
// Tanh: grad·(1.001 − tanh(W)²); Identity: grad; Clipped: grad·1{|W| ≤ 1}.
torch::Tensor ste_backward(const torch::Tensor& grad, const torch::Tensor& w, nn::SteKind kind);
// The same in place on `grad` (contiguous, W's shape and dtype), which is returned. For fp32 W
// on CPU it allocates nothing (the layer's backward relies on that).
torch::Tensor ste_backward_(torch::Tensor grad, const torch::Tensor& w, nn::SteKind kind);

// y = sign(W) (in W's dtype); backward = ste_backward(grad, W, kind).
struct SignSTE : public torch::autograd::Function<SignSTE> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& w,
                               nn::SteKind kind);
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads);
};

}  // namespace onebit::autograd
