// nn::rms_norm and nn::rotary (single passes without autograd) against the formulas in fp64 and
// against the ATen op sequences they replace, on CPU and (when present) on CUDA.
#include <torch/torch.h>

#include <limits>
#include <optional>

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

// q's and k's RoPE and the cache writes at device slots: bit for bit rotary + index_copy_.
void check_rotary_store_kv(torch::Device dev) {
  torch::manual_seed(10);
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    INFO("dtype " << dt);
    // k, v as the grouped projection returns them: [B, T, Hkv·D] column ranges, viewed [B, Hkv, T, D].
    auto kv = torch::randn({2, 3, 2 * 4 * 64}).to(dev, dt);
    auto k = kv.narrow(-1, 0, 256).view({2, 3, 4, 64}).transpose(1, 2);
    auto v = kv.narrow(-1, 256, 256).view({2, 3, 4, 64}).transpose(1, 2);
    auto angles = torch::rand({2, 1, 3, 32}) * 10;
    auto cos = torch::cat({angles.cos(), angles.cos()}, -1).to(dev, dt);
    auto sin = torch::cat({angles.sin(), angles.sin()}, -1).to(dev, dt);
    auto slots = torch::tensor({5, 6, 9}, torch::kLong).to(dev);
    auto kc = torch::zeros({2, 4, 16, 64}, torch::TensorOptions().dtype(dt).device(dev)), vc = torch::zeros_like(kc);
    // q: 8 heads (grouped-query over k's 4), strided as the projection returns it.
    auto q = torch::randn({2, 3, 8 * 64}).to(dev, dt).view({2, 3, 8, 64}).transpose(1, 2);
    auto kc_ref = kc.clone(), vc_ref = vc.clone();
    torch::NoGradGuard no_grad;
    auto q_rot = onebit::nn::rotary_store_kv(q, k, v, cos, sin, kc, vc, slots);
    kc_ref.index_copy_(2, slots, rope_ops(k, cos, sin));
    vc_ref.index_copy_(2, slots, v);
    CHECK(torch::equal(kc, kc_ref));
    CHECK(torch::equal(vc, vc_ref));
    CHECK(torch::equal(q_rot, rope_ops(q, cos, sin)));
    CHECK(q_rot.is_contiguous());
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
      // (CUDA's rsqrtf, as ATen's CUDA rsqrt, is within 2 ulp, not correctly rounded: 2 more.)
      const double ulps = dev.is_cuda() && dt == torch::kFloat32 ? 4.0 : 2.0;
      CHECK((err <= ulps * ulp(ref, dt) + 1e-6).all().item<bool>());
      // Against the op sequence: the same roundings; the mean's summation order may move h by an
      // fp32 ulp, which changes a rounding to dt now and then (by one ulp of dt).
      const auto ops = rms_ops(x, w, eps);
      const auto diff = (y.to(torch::kFloat64) - ops.to(torch::kFloat64)).abs();
      CHECK((diff <= ulp(ops, dt) * 2.01 + (dt == torch::kFloat32 ? 1e-6 : 0.0)).all().item<bool>());
      if (dt != torch::kFloat32) CHECK(diff.eq(0).to(torch::kFloat64).mean().item<double>() > 0.98);
    }
  }
}
// x + r, then the norm: h exactly ATen's add; the norm as check_rms_norm allows.
void check_add_rms_norm(torch::Device dev) {
  torch::manual_seed(5);
  for (auto dt : {torch::kFloat32, torch::kBFloat16, torch::kHalf}) {
    for (int64_t dim : {int64_t(77), int64_t(1024)}) {
      INFO("dtype " << dt << ", dim " << dim);
      auto x = (torch::randn({3, 4, dim + 3}) * 2).to(dev, dt).narrow(-1, 0, dim);  // strided rows
      auto r = torch::randn({3, 4, dim}).to(dev, dt);
      auto w = (torch::rand({dim}) + 0.5).to(dev, dt);
      torch::NoGradGuard no_grad;
      auto [h, y] = onebit::nn::add_rms_norm(x, r, w, 1e-6);
      CHECK(torch::equal(h, x + r));
      const auto ops = rms_ops(x + r, w, 1e-6);
      const auto diff = (y.to(torch::kFloat64) - ops.to(torch::kFloat64)).abs();
      CHECK((diff <= ulp(ops, dt) * 2.01 + (dt == torch::kFloat32 ? 1e-6 : 0.0)).all().item<bool>());
      const auto ref = rms_fp64(x + r, w, 1e-6);
      CHECK(((y.to(torch::kFloat64) - ref).abs() <= 2.0 * ulp(ref, dt) + 1e-6).all().item<bool>());
    }
  }
}

// silu(g)·u: against fp64 and against ATen's two operators.
void check_silu_mul(torch::Device dev) {
  torch::manual_seed(6);
  for (auto dt : {torch::kFloat32, torch::kBFloat16, torch::kHalf}) {
    INFO("dtype " << dt);
    // gate and up as the grouped projection returns them: column ranges of one buffer.
    auto both = (torch::randn({5, 2, 2 * 300}) * 3).to(dev, dt);
    auto g = both.narrow(-1, 0, 300), u = both.narrow(-1, 300, 300);
    torch::NoGradGuard no_grad;
    auto y = onebit::nn::silu_mul(g, u);
    CHECK(y.sizes() == g.sizes());
    CHECK(y.is_contiguous());
    const auto gd = g.to(torch::kFloat64), ud = u.to(torch::kFloat64);
    const auto ref = gd / (1 + torch::exp(-gd)) * ud;
    // Two roundings to dt (silu, then the product) on exact inputs.
    CHECK(((y.to(torch::kFloat64) - ref).abs() <= 2.0 * ulp(ref, dt) + 1e-6).all().item<bool>());
    const auto ops = torch::silu(g) * u;
    const auto diff = (y.to(torch::kFloat64) - ops.to(torch::kFloat64)).abs();
    CHECK((diff <= ulp(ops, dt) * 2.01 + (dt == torch::kFloat32 ? 1e-6 : 0.0)).all().item<bool>());
    if (dt != torch::kFloat32) CHECK(diff.eq(0).to(torch::kFloat64).mean().item<double>() > 0.98);
  }
}

// softmax(scale·q·kᵀ + mask)·v in fp64, grouped-query by repeating k, v; returned [B, T, H·D].
torch::Tensor attention_fp64(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const torch::Tensor& mask, double scale) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), g = H / k.size(1);
  auto kd = k.to(torch::kFloat64).repeat_interleave(g, 1), vd = v.to(torch::kFloat64).repeat_interleave(g, 1);
  auto s = torch::matmul(q.to(torch::kFloat64), kd.transpose(2, 3)) * scale;
  if (mask.defined()) s = s.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
  return torch::matmul(torch::softmax(s, -1), vd).transpose(1, 2).reshape({B, T, -1});
}

void check_attention(torch::Device dev) {
  torch::manual_seed(3);
  for (auto dt : {torch::kFloat32, torch::kBFloat16, torch::kHalf}) {
    for (int64_t heads : {int64_t(4), int64_t(8)}) {  // 8 over 4 key/value heads: grouped-query
      // (1500 keys: on a GPU split over blocks and combined)
      for (auto [mask_kind, S] : {std::pair<int, int64_t>{0, 37}, {1, 37}, {2, 37}, {2, 1500}}) {
        INFO("dtype " << dt << ", heads " << heads << ", mask " << mask_kind << ", keys " << S);
        const int64_t B = 3, D = 64, cap = S + 27;
        auto q = torch::randn({B, 1, heads, D}).transpose(1, 2).to(dev, dt);  // [B, H, 1, D], strided
        // k, v: the first S slots of a cache with spare capacity (strided along the keys).
        auto kc = torch::randn({B, 4, cap, D}).to(dev, dt), vc = torch::randn({B, 4, cap, D}).to(dev, dt);
        auto k = kc.narrow(2, 0, S), v = vc.narrow(2, 0, S);
        torch::Tensor mask;
        if (mask_kind > 0) {
          mask = torch::rand({mask_kind == 1 ? int64_t(1) : B, 1, 1, S}) > 0.3;
          mask.index_put_({torch::indexing::Ellipsis, S - 1}, true);  // the token itself
          mask = mask.to(dev);
        }
        const double scale = 1.0 / 8.0;
        torch::NoGradGuard no_grad;
        auto y = onebit::nn::attention(q, k, v, mask, false, scale);
        REQUIRE(y.sizes() == torch::IntArrayRef({B, 1, heads * D}));
        CHECK(y.scalar_type() == dt);
        const auto ref = attention_fp64(q, k, v, mask, scale);
        // fp32 arithmetic and one rounding to dt at the end (inputs are exact in dt).
        const double tol = dt == torch::kFloat32 ? 2e-6 : dt == torch::kBFloat16 ? 8e-3 : 1e-3;
        CHECK((y.to(torch::kFloat64) - ref).abs().max().item<double>() < tol);
        // ATen's SDPA (what it replaces) agrees within its own rounding.
        std::optional<torch::Tensor> m;
        if (mask.defined()) m = mask;
        auto sdpa = at::scaled_dot_product_attention(q, k, v, m, 0.0, false, scale, heads != 4)
                        .transpose(1, 2)
                        .reshape({B, 1, -1});
        CHECK((y.to(torch::kFloat64) - sdpa.to(torch::kFloat64)).abs().max().item<double>() < 2 * tol);
      }
    }
  }
}
}  // namespace

TEST_CASE("rotary RoPE equals x·cos + rotate_half(x)·sin bit for bit, fp32/bf16/fp16", "[nn]") {
  check_rotary(torch::kCPU);
}

TEST_CASE("rotary_store_kv returns RoPE(q), writes RoPE(k) and v at the cache slots, bit for bit the four operators", "[nn]") {
  check_rotary_store_kv(torch::kCPU);
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

TEST_CASE("add_rms_norm is x + r (exactly) and its RMSNorm, strided rows", "[nn]") { check_add_rms_norm(torch::kCPU); }

TEST_CASE("silu_mul equals silu(g)·u, on column ranges of one buffer", "[nn]") { check_silu_mul(torch::kCPU); }

TEST_CASE("add_rms_norm and silu_mul with autograd are the op sequences, and gradients flow", "[nn]") {
  torch::manual_seed(7);
  auto x = torch::randn({3, 40}).requires_grad_(true), r = torch::randn({3, 40});
  auto w = torch::rand({40}) + 0.5;
  auto [h, y] = onebit::nn::add_rms_norm(x, r, w, 1e-6);
  CHECK(torch::equal(h.detach(), x.detach() + r));
  CHECK(torch::equal(y.detach(), rms_ops(x.detach() + r, w, 1e-6)));
  auto g = torch::randn({3, 40}).requires_grad_(true);
  auto s = onebit::nn::silu_mul(g, r);
  CHECK(torch::equal(s.detach(), torch::silu(g.detach()) * r));
  (y.sum() + s.sum()).backward();
  CHECK(x.grad().defined());
  // d/dg of silu(g)·r = r·σ(g)·(1 + g·(1 − σ(g))).
  const auto sg = torch::sigmoid(g.detach());
  CHECK((g.grad() - r * sg * (1 + g.detach() * (1 - sg))).abs().max().item<float>() < 1e-5f);
}

TEST_CASE("attention of one token equals softmax(q·kᵀ)·v: grouped-query, masks, strided cache", "[nn]") {
  check_attention(torch::kCPU);
}

TEST_CASE("attention of several tokens, with autograd or a fully masked row", "[nn]") {
  torch::manual_seed(4);
  auto q = torch::randn({2, 4, 5, 32}), k = torch::randn({2, 2, 5, 32}), v = torch::randn({2, 2, 5, 32});
  // Several query tokens (prefill, causal): ATen's SDPA.
  auto causal = torch::ones({5, 5}, torch::kBool).tril().view({1, 1, 5, 5});
  auto y = onebit::nn::attention(q, k, v, torch::Tensor(), true, 0.25);
  CHECK((y.to(torch::kFloat64) - attention_fp64(q, k, v, causal, 0.25)).abs().max().item<double>() < 1e-5);
  // One token with autograd: SDPA, and gradients flow.
  auto q1 = q.narrow(2, 4, 1).detach().requires_grad_(true);
  auto y1 = onebit::nn::attention(q1, k, v, torch::Tensor(), false, 0.25);
  CHECK((y1.detach().to(torch::kFloat64) - attention_fp64(q1.detach(), k, v, {}, 0.25)).abs().max().item<double>() <
        1e-5);
  y1.sum().backward();
  CHECK(q1.grad().defined());
  // A row whose mask allows no key: zeros (SDPA would give NaN; the models never make one).
  torch::NoGradGuard no_grad;
  auto none = torch::zeros({1, 1, 1, 5}, torch::kBool);
  auto y0 = onebit::nn::attention(q.narrow(2, 0, 1), k, v, none, false, 0.25);
  CHECK(torch::equal(y0, torch::zeros_like(y0)));
}

TEST_CASE("set_fused_ops(false), an UnfusedScope and grad mode make every op its ATen sequence", "[nn]") {
  torch::manual_seed(9);
  auto x = torch::randn({4, 576}).to(torch::kBFloat16), w = (torch::rand({576}) + 0.5).to(torch::kBFloat16);
  auto q = torch::randn({2, 3, 1, 64}), k = torch::randn({2, 3, 9, 64}), v = torch::randn({2, 3, 9, 64});
  const auto sdpa = at::scaled_dot_product_attention(q, k, v, std::nullopt, 0.0, false, 0.125).transpose(1, 2).reshape({2, 1, -1});
  auto all_ops = [&] {
    CHECK(torch::equal(onebit::nn::rms_norm(x, w, 1e-5), rms_ops(x, w, 1e-5)));
    CHECK(torch::equal(onebit::nn::attention(q, k, v, {}, false, 0.125), sdpa));
  };
  {
    torch::NoGradGuard no_grad;
    CHECK(onebit::nn::fused_ops());
    CHECK_FALSE(torch::equal(onebit::nn::attention(q, k, v, {}, false, 0.125), sdpa));  // fused: other roundings
    onebit::nn::set_fused_ops(false);
    all_ops();
    onebit::nn::set_fused_ops(true);
    const onebit::nn::UnfusedScope unfused;
    all_ops();
  }
  all_ops();  // grad mode on: training's ops, even for tensors that need no grad
}

TEST_CASE("CUDA rotary, rms_norm, add_rms_norm, silu_mul and attention equal their references on the GPU", "[nn][cuda]") {
  if (!torch::cuda::is_available()) return onebit::test::skip("no CUDA device");
  check_rotary(torch::kCUDA);
  check_rotary_store_kv(torch::kCUDA);
  check_rms_norm(torch::kCUDA);
  check_attention(torch::kCUDA);
  check_add_rms_norm(torch::kCUDA);
  check_silu_mul(torch::kCUDA);
}
