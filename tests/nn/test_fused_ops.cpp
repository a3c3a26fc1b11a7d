// nn::rms_norm and nn::rotary (single passes without autograd) against the formulas in fp64 and
// against the ATen op sequences they replace, on CPU and (when present) on CUDA.
#include <torch/torch.h>

#include "onebit/nn/fused_ops.h"
#include "tests/support.h"

namespace {
// x·cos + rotate_half(x)·sin in fp64, rotate_half(x) = [-x2, x1] along the last dimension.
torch::Tensor rope_fp64(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  auto xd = x.to(torch::kFloat64);
  const int64_t half = x.size(-1) / 2;
  auto rotated = torch::cat({-xd.narrow(-1, half, half), xd.narrow(-1, 0, half)}, -1);
  return xd * cos.to(torch::kFloat64) + rotated * sin.to(torch::kFloat64);
}
// The op sequence, in the tensors' dtype (what the fused pass must equal bit for bit).
torch::Tensor rope_ops(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  return x * cos + torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1) * sin;
}
// w · x / sqrt(mean(x²) + eps) in fp64.
torch::Tensor rms_fp64(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  auto xd = x.to(torch::kFloat64);
  return w.to(torch::kFloat64) * xd * torch::rsqrt(xd.pow(2).mean(-1, true) + eps);
}
// transformers' LlamaRMSNorm op sequence in the tensors' dtype.
torch::Tensor rms_ops(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  auto h = x.to(torch::kFloat32);
  h = h * torch::rsqrt(h.pow(2).mean(-1, true) + eps);
  return w * h.to(x.scalar_type());
}
// The unit in the last place of |v| for dtype dt (bf16: 8 significant bits, fp16: 11, fp32: 24).
torch::Tensor ulp(const torch::Tensor& v, torch::ScalarType dt) {
  const int bits = dt == torch::kBFloat16 ? 8 : dt == torch::kHalf ? 11 : 24;
  auto a = v.to(torch::kFloat64).abs().clamp_min(1e-30);
  return torch::pow(2.0, torch::floor(torch::log2(a)) - (bits - 1));
}

void check_rotary(torch::Device dev) {
  torch::manual_seed(0);
  for (auto dt : {torch::kFloat32, torch::kBFloat16, torch::kHalf}) {
    for (int64_t cos_batch : {int64_t(1), int64_t(3)}) {
      INFO("dtype " << dt << ", cos batch " << cos_batch);
      // q as the model makes it: [B, T, H, D] viewed as [B, H, T, D] (not contiguous).
      auto x = torch::randn({3, 5, 4, 64}).transpose(1, 2).to(dev, dt);
      auto angles = torch::rand({cos_batch, 1, 5, 32}) * 10;
      auto cos = torch::cat({angles.cos(), angles.cos()}, -1).to(dev, dt);
      auto sin = torch::cat({angles.sin(), angles.sin()}, -1).to(dev, dt);
      const auto ref = rope_fp64(x, cos, sin);
      torch::NoGradGuard no_grad;  // the fused pass
      auto y = onebit::nn::rotary(x, cos, sin);
      CHECK(y.is_contiguous());
      CHECK(y.scalar_type() == dt);
      CHECK(y.device() == dev);
      // Three roundings to dt per element: within a few ulps of the exact value of the rounded inputs.
      const double tol = dt == torch::kFloat32 ? 1e-6 : dt == torch::kBFloat16 ? 0.05 : 0.006;
      CHECK((y.to(torch::kFloat64) - ref).abs().max().item<double>() < tol);
      // The op sequence it replaces, bit for bit.
      CHECK(torch::equal(y, rope_ops(x, cos, sin)));
    }
  }
}

void check_rms_norm(torch::Device dev) {
  torch::manual_seed(1);
  for (auto dt : {torch::kFloat32, torch::kBFloat16, torch::kHalf}) {
    for (int64_t dim : {int64_t(77), int64_t(576), int64_t(4096)}) {
      INFO("dtype " << dt << ", dim " << dim);
      // Rows of a wider tensor (row stride > dim), values of mixed scale, eps of LLaMA.
      auto wide = (torch::randn({2, 7, dim + 5}) * torch::rand({2, 7, 1}) * 4).to(dev, dt);
      auto x = wide.narrow(-1, 0, dim);
      auto w = (torch::rand({dim}) + 0.5).to(dev, dt);
      const double eps = 1e-5;
      torch::NoGradGuard no_grad;
      auto y = onebit::nn::rms_norm(x, w, eps);
      CHECK(y.sizes() == x.sizes());
      CHECK(y.scalar_type() == dt);
      // fp64 formula: two roundings to dt (h, then w·h), and the fp32 statistics.
      const auto ref = rms_fp64(x, w, eps);
      const auto err = (y.to(torch::kFloat64) - ref).abs();
      CHECK((err <= 2.0 * ulp(ref, dt) + 1e-6).all().item<bool>());
      // Against the op sequence: the same roundings; the mean's summation order may move h by an
      // fp32 ulp, which changes a rounding to dt now and then (by one ulp of dt).
      const auto ops = rms_ops(x, w, eps);
      const auto diff = (y.to(torch::kFloat64) - ops.to(torch::kFloat64)).abs();
      CHECK((diff <= ulp(ops, dt) * 2.01 + (dt == torch::kFloat32 ? 1e-6 : 0.0)).all().item<bool>());
      if (dt != torch::kFloat32) CHECK(diff.eq(0).to(torch::kFloat64).mean().item<double>() > 0.98);
    }
  }
}
}  // namespace

TEST_CASE("rotary RoPE equals x·cos + rotate_half(x)·sin bit for bit, fp32/bf16/fp16", "[nn]") {
  check_rotary(torch::kCPU);
}

TEST_CASE("rotary with autograd is the op sequence, and gradients flow", "[nn]") {
  torch::manual_seed(0);
  auto x = torch::randn({2, 5, 3, 64}).transpose(1, 2).requires_grad_(true);
  auto angles = torch::rand({1, 1, 5, 32}) * 10;
  auto cos = torch::cat({angles.cos(), angles.cos()}, -1), sin = torch::cat({angles.sin(), angles.sin()}, -1);
  auto y = onebit::nn::rotary(x, cos, sin);
  CHECK((y.detach().to(torch::kFloat64) - rope_fp64(x.detach(), cos, sin)).abs().max().item<double>() < 1e-6);
  // d/dx of sum(x·cos + rotate_half(x)·sin) = cos + (sin's halves swapped, first negated): at
  // element i < D/2, x_i enters out_i (·cos_i) and out_{i+D/2} (·sin_{i+D/2}); at i ≥ D/2, out_i
  // (·cos_i) and out_{i-D/2} (·−sin_{i-D/2}).
  y.sum().backward();
  REQUIRE(x.grad().defined());
  auto expect = cos + torch::cat({sin.narrow(-1, 32, 32), -sin.narrow(-1, 0, 32)}, -1);
  CHECK((x.grad() - expect.expand_as(x)).abs().max().item<float>() < 1e-6f);
}

TEST_CASE("rms_norm equals transformers' RMSNorm in fp32/bf16/fp16, odd widths, strided rows", "[nn]") {
  check_rms_norm(torch::kCPU);
}

TEST_CASE("rms_norm with autograd or a weight of another dtype is the op sequence", "[nn]") {
  torch::manual_seed(2);
  auto x = torch::randn({4, 96});
  auto w = (torch::rand({96}) + 0.5).requires_grad_(true);
  auto y = onebit::nn::rms_norm(x, w, 1e-6);
  CHECK(torch::equal(y.detach(), rms_ops(x, w.detach(), 1e-6)));
  y.sum().backward();
  REQUIRE(w.grad().defined());
  // d/dw_j of Σ w_j·h_ij = Σ_i h_ij.
  CHECK((w.grad() - rms_fp64(x, torch::ones({96}), 1e-6).sum(0).to(torch::kFloat32)).abs().max().item<float>() <
        1e-5f);
  torch::NoGradGuard no_grad;
  auto xb = x.to(torch::kBFloat16);  // fp32 weight, bf16 x: promotes to fp32 (the op sequence's result)
  auto yb = onebit::nn::rms_norm(xb, w.detach(), 1e-6);
  CHECK(yb.scalar_type() == torch::kFloat32);
  CHECK(torch::equal(yb, rms_ops(xb, w.detach(), 1e-6)));
}

TEST_CASE("CUDA rotary and rms_norm equal the op sequences on the GPU", "[nn][cuda]") {
  if (!torch::cuda::is_available()) return onebit::test::skip("no CUDA device");
  check_rotary(torch::kCUDA);
  check_rms_norm(torch::kCUDA);
}
