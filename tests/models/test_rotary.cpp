// detail::rotary (fused RoPE without autograd) against transformers' formula in fp64.
#include <torch/torch.h>

#include "onebit/models/layers.h"
#include "tests/support.h"

namespace {
// x·cos + rotate_half(x)·sin in fp64, rotate_half(x) = [-x2, x1] along the last dimension.
torch::Tensor rope_fp64(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  auto xd = x.to(torch::kFloat64);
  const int64_t half = x.size(-1) / 2;
  auto rotated = torch::cat({-xd.narrow(-1, half, half), xd.narrow(-1, 0, half)}, -1);
  return xd * cos.to(torch::kFloat64) + rotated * sin.to(torch::kFloat64);
}
}  // namespace

TEST_CASE("rotary RoPE equals x·cos + rotate_half(x)·sin, fused or not", "[models]") {
  torch::manual_seed(0);
  for (int64_t cos_batch : {int64_t(1), int64_t(3)}) {
    // q as the model makes it: [B, T, H, D] viewed as [B, H, T, D] (not contiguous).
    auto x = torch::randn({3, 5, 4, 64}).transpose(1, 2);
    auto angles = torch::rand({cos_batch, 1, 5, 32}) * 10;
    auto cos = torch::cat({angles.cos(), angles.cos()}, -1), sin = torch::cat({angles.sin(), angles.sin()}, -1);
    const auto ref = rope_fp64(x, cos, sin);
    {
      torch::NoGradGuard no_grad;  // the fused pass
      auto y = onebit::models::detail::rotary(x, cos, sin);
      CHECK(y.is_contiguous());
      CHECK((y.to(torch::kFloat64) - ref).abs().max().item<double>() < 1e-6);
      // The op sequence it replaces, bit for bit with this build's flags (no FMA contraction).
      const int64_t half = 32;
      auto seq = x * cos + torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1) * sin;
      CHECK((y - seq).abs().max().item<float>() <= 1e-6f);
    }
    // With autograd: the op sequence, and gradients flow to x.
    auto xg = x.detach().clone().requires_grad_(true);
    auto y = onebit::models::detail::rotary(xg, cos, sin);
    CHECK((y.detach().to(torch::kFloat64) - ref).abs().max().item<double>() < 1e-6);
    y.sum().backward();
    REQUIRE(xg.grad().defined());
  }
}
