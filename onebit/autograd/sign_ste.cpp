#include "onebit/autograd/sign_ste.h"

#include <torch/torch.h>

namespace onebit::autograd {

torch::Tensor sign_pm1(const torch::Tensor& w, torch::Dtype dtype) {
  const auto opts = w.options().dtype(dtype);
  return torch::where(w.ge(0), torch::scalar_tensor(1, opts), torch::scalar_tensor(-1, opts));
}

torch::Tensor ste_backward(const torch::Tensor& grad, const torch::Tensor& w, nn::SteKind kind) {
  const torch::Tensor g = grad.to(w.scalar_type());
  switch (kind) {
    case nn::SteKind::Tanh: {
      // tanh_backward(g, t) = g·(1 − t²) in one fused pass; + 0.001·g keeps it off zero.
      torch::Tensor out = torch::tanh_backward(g, torch::tanh(w));
      return out.add_(g, 0.001);
    }
    case nn::SteKind::Identity:
      return g;
    case nn::SteKind::Clipped:
      return g.masked_fill(w.abs() > 1, 0);
  }
  return g;
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
