// OneBitLinear and SignSTE against independent references: a dense double-precision formula,
// analytic STE factors and central finite differences.
#include <torch/torch.h>

#include "onebit/autograd/sign_ste.h"
#include "onebit/core/autocast.h"
#include "onebit/core/error.h"
#include "onebit/nn/onebit_linear.h"
#include "tests/support.h"

using onebit::nn::OneBitLinear;
using onebit::nn::OneBitLinearImpl;
using onebit::nn::OneBitLinearOptions;
using onebit::nn::SteKind;
namespace F = onebit::nn::functional;

namespace {
constexpr double kFp32Tol = 1e-5;   // fp32 forward vs double dense formula
constexpr double kBf16Tol = 4e-2;   // bf16 activations: 8-bit mantissa through matmul and norm
constexpr double kFp16Tol = 5e-3;   // fp16 activations: 11-bit mantissa
constexpr double kGradTol = 1e-6;   // autograd vs analytic / finite differences, double
constexpr double kMinGradCosine = 0.99;  // autocast gradients vs fp32 gradients
constexpr double kFdStep = 1e-6;
constexpr double kEps = 1e-5;

// The method's formula written out densely: ±1 matrix, g, h, bias, LayerNorm without affine.
torch::Tensor dense_reference(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& g,
                              const torch::Tensor& h, const torch::Tensor& bias, bool post_ln) {
  auto xd = x.to(torch::kFloat64);
  auto S = torch::where(w >= 0, 1.0, -1.0).to(torch::kFloat64);
  auto y = torch::matmul(xd * g.to(torch::kFloat64), S.t()) * h.to(torch::kFloat64);
  if (bias.defined()) y = y + bias.to(torch::kFloat64);
  if (!post_ln) return y;
  auto mean = y.mean(-1, true);
  auto var = (y - mean).pow(2).mean(-1, true);
  return (y - mean) / torch::sqrt(var + kEps);
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

double cosine(const torch::Tensor& a, const torch::Tensor& b) {
  const auto x = a.to(torch::kFloat64).flatten(), y = b.to(torch::kFloat64).flatten();
  return (x.dot(y) / (x.norm() * y.norm())).item<double>();
}

torch::Tensor ste_factor(const torch::Tensor& w, SteKind kind) {
  switch (kind) {
    case SteKind::Tanh: return 1.001 - torch::tanh(w).pow(2);
    case SteKind::Identity: return torch::ones_like(w);
    case SteKind::Clipped: return (w.abs() <= 1).to(w.scalar_type());
  }
  return w;
}

struct Params {
  torch::Tensor x, w, g, h, b;
};
Params random_params(int64_t in, int64_t out, torch::Dtype dt, uint64_t seed) {
  torch::manual_seed(seed);
  auto o = torch::TensorOptions().dtype(dt);
  return {torch::randn({3, 5, in}, o), torch::randn({out, in}, o),
          torch::rand({in}, o) + 0.5, (torch::rand({out}, o) + 0.5) * 0.1,
          torch::randn({out}, o) * 0.1};
}
// Puts p's W, g, h (and b, when the layer has a bias) into the layer.
void load(OneBitLinear& layer, const Params& p) {
  torch::NoGradGuard ng;
  layer->weight.copy_(p.w);
  layer->g.copy_(p.g);
  layer->h.copy_(p.h);
  if (layer->bias.defined()) layer->bias.copy_(p.b);
}
}  // namespace

TEST_CASE("OneBitLinear forward equals the dense formula in fp32", "[layer]") {
  for (bool post_ln : {true, false}) {
    for (bool with_bias : {false, true}) {
      CAPTURE(post_ln, with_bias);
      OneBitLinear layer(OneBitLinearOptions(48, 40).bias(with_bias).post_layernorm(post_ln));
      auto p = random_params(48, 40, torch::kFloat32, 1);
      load(layer, p);
      auto z = layer->forward(p.x);
      REQUIRE(z.sizes() == torch::IntArrayRef({3, 5, 40}));
      REQUIRE(z.scalar_type() == torch::kFloat32);
      auto ref = dense_reference(p.x, p.w, p.g, p.h, with_bias ? p.b : torch::Tensor(), post_ln);
      CHECK(max_abs_diff(z, ref) < kFp32Tol);
    }
  }
}

TEST_CASE("OneBitLinear takes bf16 and fp16 activations with fp32 parameters", "[layer]") {
  auto p = random_params(64, 32, torch::kFloat32, 2);
  OneBitLinear layer(OneBitLinearOptions(64, 32).bias(true));
  load(layer, p);
  auto ref = dense_reference(p.x, p.w, p.g, p.h, p.b, true);
  for (auto [dt, tol] : {std::pair{torch::kBFloat16, kBf16Tol}, std::pair{torch::kHalf, kFp16Tol}}) {
    CAPTURE(dt);
    auto x = p.x.to(dt).requires_grad_();
    auto z = layer->forward(x);
    CHECK(z.scalar_type() == dt);
    CHECK(max_abs_diff(z, ref) < tol);
    z.sum().backward();  // gradients come back in each parameter's own dtype
    CHECK(x.grad().scalar_type() == dt);
    CHECK(layer->weight.grad().scalar_type() == torch::kFloat32);
    CHECK(layer->g.grad().scalar_type() == torch::kFloat32);
    CHECK(torch::isfinite(layer->h.grad()).all().item<bool>());
    layer->zero_grad();
  }
}

TEST_CASE("OneBitLinear under autocast computes in the autocast dtype, fp32 masters get fp32 gradients",
          "[layer][autocast]") {
  auto p = random_params(64, 32, torch::kFloat32, 6);
  OneBitLinear layer(OneBitLinearOptions(64, 32).bias(true));
  load(layer, p);
  const auto up = torch::randn({3, 5, 32});  // a loss whose gradient does not vanish through the norm
  const auto ref = dense_reference(p.x, p.w, p.g, p.h, p.b, true);
  // fp32 gradients without autocast: the reference for the mixed-precision ones.
  auto x32 = p.x.clone().requires_grad_();
  (layer->forward(x32) * up).sum().backward();
  const std::vector<torch::Tensor> ref_grads = {x32.grad(), layer->weight.grad().clone(), layer->g.grad().clone(),
                                                layer->h.grad().clone()};
  layer->zero_grad();
  for (auto [dt, tol] : {std::pair{torch::kBFloat16, kBf16Tol}, std::pair{torch::kHalf, kFp16Tol}}) {
    CAPTURE(dt);
    auto x = p.x.clone().requires_grad_();  // fp32 activations, as a residual stream
    torch::Tensor z;
    {
      onebit::AutocastGuard autocast(torch::kCPU, dt);
      z = layer->forward(x);
    }
    // Like a matmul under autocast: the output is in the autocast dtype, and the node saw x
    // cast once (the same result as feeding x in dt with autocast off).
    CHECK(z.scalar_type() == dt);
    CHECK(max_abs_diff(z, ref) < tol);
    {
      torch::NoGradGuard ng;
      CHECK(torch::equal(z, layer->forward(p.x.to(dt))));
    }
    (z.to(torch::kFloat32) * up).sum().backward();
    const std::vector<torch::Tensor> grads = {x.grad(), layer->weight.grad(), layer->g.grad(), layer->h.grad()};
    const char* names[] = {"x", "weight", "g", "h"};
    for (size_t i = 0; i < grads.size(); ++i) {
      CAPTURE(names[i]);
      CHECK(grads[i].scalar_type() == torch::kFloat32);
      CHECK(cosine(grads[i], ref_grads[i]) > kMinGradCosine);
    }
    layer->zero_grad();
  }
}

TEST_CASE("sign(0) is +1 in SignSTE and in the layer", "[layer]") {
  auto w = torch::tensor({-2.0f, -0.0f, 0.0f, 1e-30f, -1e-30f});
  auto s = onebit::autograd::SignSTE::apply(w, SteKind::Tanh);
  CHECK(torch::equal(s, torch::tensor({-1.0f, 1.0f, 1.0f, 1.0f, -1.0f})));
  for (auto dt : {torch::kBFloat16, torch::kHalf, torch::kFloat64}) {
    CAPTURE(dt);
    CHECK(torch::equal(onebit::autograd::sign_pm1(w, dt), s.to(dt)));
  }

  OneBitLinear layer(OneBitLinearOptions(4, 3).post_layernorm(false));
  {
    torch::NoGradGuard ng;
    layer->weight.zero_();
    layer->h.fill_(1);
  }
  auto z = layer->forward(torch::tensor({{1.0f, 2.0f, 3.0f, 4.0f}}));
  CHECK(torch::allclose(z, torch::full({1, 3}, 10.0f)));  // every sign +1: sum of inputs
}

TEST_CASE("SignSTE backward follows each kind's formula", "[layer]") {
  torch::manual_seed(3);
  auto w0 = torch::randn({7, 9}, torch::kFloat64) * 1.5;
  auto up = torch::randn({7, 9}, torch::kFloat64);
  for (auto kind : {SteKind::Tanh, SteKind::Identity, SteKind::Clipped}) {
    CAPTURE(onebit::nn::to_string(kind));
    auto w = w0.clone().requires_grad_();
    (onebit::autograd::SignSTE::apply(w, kind) * up).sum().backward();
    CHECK(max_abs_diff(w.grad(), up * ste_factor(w0, kind)) < kGradTol);
    // fp32 takes the CPU single-pass loops; compare with the double formula.
    auto wf = w0.to(torch::kFloat32).requires_grad_();
    (onebit::autograd::SignSTE::apply(wf, kind) * up.to(torch::kFloat32)).sum().backward();
    CHECK(max_abs_diff(wf.grad(), up * ste_factor(w0, kind)) < kFp32Tol * 10);
    auto inplace = onebit::autograd::ste_backward_(up.to(torch::kFloat32), wf.detach(), kind);
    CHECK(max_abs_diff(inplace, wf.grad()) == 0);
    // bf16/fp16 gradients of sign(W) with an fp32 master W: fused convert-and-scale.
    for (auto dt : {torch::kBFloat16, torch::kHalf}) {
      auto low = up.to(dt);
      auto got = onebit::autograd::ste_backward(low, wf.detach(), kind);
      CHECK(got.scalar_type() == torch::kFloat32);
      CHECK(max_abs_diff(got, low.to(torch::kFloat64) * ste_factor(w0, kind)) < kFp32Tol * 10);
    }
  }
}

TEST_CASE("SignSTE forward and backward are the same on 1 and 2 threads", "[layer]") {
  // Past the CPU loops' parallel grain (32768 elements) with a ragged end, so that 2 threads
  // split the work; each element is computed alone, so the split must not change a bit.
  torch::manual_seed(4);
  const int before = torch::get_num_threads();
  for (auto dt : {torch::kFloat32, torch::kFloat64}) {
    auto w = torch::randn({3 * 32768 + 7}, dt) * 2;
    auto up = torch::randn_like(w);
    for (auto kind : {SteKind::Tanh, SteKind::Identity, SteKind::Clipped}) {
      CAPTURE(dt, onebit::nn::to_string(kind));
      std::vector<torch::Tensor> out;
      for (int threads : {1, 2}) {
        torch::set_num_threads(threads);
        out.push_back(onebit::autograd::sign_pm1(w, torch::kBFloat16));
        out.push_back(onebit::autograd::sign_pm1(w, dt));
        out.push_back(onebit::autograd::ste_backward(up.to(torch::kBFloat16), w, kind));
        out.push_back(onebit::autograd::ste_backward_(up.clone(), w, kind));
      }
      for (size_t i = 0; i < 4; ++i) CHECK(torch::equal(out[i], out[i + 4]));
    }
  }
  torch::set_num_threads(before);
}

TEST_CASE("fp32 tanh STE factor is accurate over the whole range", "[layer]") {
  // The fp32 CPU path computes 1.001 − tanh² from its own exp; compare with double tanh.
  auto w = torch::cat({torch::linspace(-30, 30, 200001), torch::tensor({0.0f, -0.0f, 1e-30f, 88.0f, -1e4f})});
  auto got = onebit::autograd::ste_backward(torch::ones_like(w), w, SteKind::Tanh).to(torch::kFloat64);
  auto want = 1.001 - torch::tanh(w.to(torch::kFloat64)).pow(2);
  CHECK(((got - want).abs() / want).max().item<double>() < 1e-6);
}

TEST_CASE("OneBitLinear weight gradient is the STE factor times dL/dsign(W)", "[layer]") {
  auto p = random_params(12, 10, torch::kFloat64, 4);
  auto up = torch::randn({3, 5, 10}, torch::kFloat64);
  for (auto kind : {SteKind::Tanh, SteKind::Identity, SteKind::Clipped}) {
    CAPTURE(onebit::nn::to_string(kind));
    // Reference: dL/dS with S = sign(W) as a free leaf in the dense formula.
    auto S = torch::where(p.w >= 0, 1.0, -1.0).to(torch::kFloat64).requires_grad_();
    auto y = torch::matmul(p.x * p.g, S.t()) * p.h + p.b;
    auto mean = y.mean(-1, true);
    auto ref = (y - mean) / torch::sqrt((y - mean).pow(2).mean(-1, true) + kEps);
    (ref * up).sum().backward();
    auto expected = S.grad() * ste_factor(p.w, kind);

    auto w = p.w.clone().requires_grad_();
    (F::onebit_linear(p.x, w, p.g, p.h, p.b, true, kEps, kind) * up).sum().backward();
    CHECK(max_abs_diff(w.grad(), expected) < kGradTol);
  }
}

TEST_CASE("OneBitLinear with a bf16 latent W: the fp32 forward, dW the dense formula's rounded to bf16", "[layer]") {
  // student.latent_dtype=bf16: the forward uses sign(W) only, so it equals the fp32 layer's on
  // the same signs; dW = STE factor (in fp32) times dL/dsign(W), returned in bf16.
  auto p = random_params(12, 10, torch::kFloat32, 5);
  p.w = p.w * 0.01;  // latent init scale: sign(W)·0.01
  const auto up = torch::randn({3, 5, 10});
  const auto w16 = p.w.to(torch::kBFloat16).requires_grad_();
  const auto w32 = w16.detach().to(torch::kFloat32).requires_grad_();  // the same values in fp32
  for (auto kind : {SteKind::Tanh, SteKind::Clipped}) {
    CAPTURE(onebit::nn::to_string(kind));
    const auto y16 = F::onebit_linear(p.x, w16, p.g, p.h, p.b, true, kEps, kind);
    const auto y32 = F::onebit_linear(p.x, w32, p.g, p.h, p.b, true, kEps, kind);
    CHECK(y16.scalar_type() == torch::kFloat32);
    CHECK(torch::equal(y16, y32));
    (y16 * up).sum().backward();
    (y32 * up).sum().backward();
    REQUIRE(w16.grad().scalar_type() == torch::kBFloat16);
    CHECK(torch::equal(w16.grad(), w32.grad().to(torch::kBFloat16)));
    w16.mutable_grad().reset();
    w32.mutable_grad().reset();
  }
}

TEST_CASE("OneBitLinear gradients of x, g, h and bias match central finite differences", "[layer]") {
  for (bool post_ln : {true, false}) {
    CAPTURE(post_ln);
    auto p = random_params(6, 5, torch::kFloat64, 5);
    auto up = torch::randn({3, 5, 5}, torch::kFloat64);
    std::vector<torch::Tensor> leaves = {p.x.clone(), p.g.clone(), p.h.clone(), p.b.clone()};
    auto loss = [&](const std::vector<torch::Tensor>& v) {
      return (F::onebit_linear(v[0], p.w, v[1], v[2], v[3], post_ln, kEps, SteKind::Tanh) * up).sum();
    };
    for (auto& t : leaves) t.requires_grad_();
    loss(leaves).backward();
    const char* names[] = {"x", "g", "h", "bias"};
    for (size_t i = 0; i < leaves.size(); ++i) {
      CAPTURE(names[i]);
      torch::NoGradGuard ng;
      auto flat = leaves[i].detach().clone().view(-1);
      auto fd = torch::zeros_like(flat);
      for (int64_t k = 0; k < flat.numel(); ++k) {
        auto v = leaves;
        for (auto& t : v) t = t.detach();
        auto plus = flat.clone(), minus = flat.clone();
        plus[k] += kFdStep;
        minus[k] -= kFdStep;
        v[i] = plus.view(leaves[i].sizes());
        const double lp = loss(v).item<double>();
        v[i] = minus.view(leaves[i].sizes());
        const double lm = loss(v).item<double>();
        fd[k] = (lp - lm) / (2 * kFdStep);
      }
      CHECK(max_abs_diff(leaves[i].grad().view(-1), fd) < kGradTol * 10);
    }
  }
}

TEST_CASE("OneBitLinear clones deeply and takes 1-D and non-contiguous inputs", "[layer]") {
  torch::manual_seed(8);
  OneBitLinear layer(OneBitLinearOptions(6, 4).bias(true));
  auto copy = std::dynamic_pointer_cast<OneBitLinearImpl>(layer->clone());
  REQUIRE(copy != nullptr);
  CHECK(torch::equal(copy->weight, layer->weight));
  CHECK(copy->weight.data_ptr() != layer->weight.data_ptr());
  CHECK(copy->bias.defined());
  CHECK(copy->named_parameters().size() == 4);  // weight, g, h, bias: members rebound by reset()

  torch::NoGradGuard ng;
  auto x = torch::randn({6, 3}).t();  // [3, 6], not contiguous
  auto batch = layer->forward(x);
  auto row = layer->forward(x[1].contiguous());
  CHECK(row.sizes() == torch::IntArrayRef({4}));
  CHECK(max_abs_diff(row, batch[1]) < kFp32Tol);
}

TEST_CASE("OneBitLinear with a stand-in runs the given full-precision linear and leaves W, g, h alone",
          "[layer]") {
  torch::manual_seed(9);
  OneBitLinear layer(OneBitLinearOptions(6, 4).bias(true));
  const auto w = torch::randn({4, 6}), b = torch::randn({4});
  const auto x = torch::randn({3, 6}, torch::requires_grad());
  const auto before = layer->forward(x.detach());
  layer->set_stand_in(w, b);
  CHECK(layer->has_stand_in());
  const auto y = layer->forward(x);
  // The dense formula x·wᵀ + b, in double.
  const auto ref = torch::matmul(x.detach().to(torch::kFloat64), w.to(torch::kFloat64).t()) + b.to(torch::kFloat64);
  CHECK(max_abs_diff(y, ref) < kFp32Tol);
  const auto dy = torch::randn({3, 4});
  y.backward(dy);
  CHECK(max_abs_diff(x.grad(), torch::matmul(dy.to(torch::kFloat64), w.to(torch::kFloat64))) < kFp32Tol);
  for (const auto& p : layer->parameters()) CHECK_FALSE(p.grad().defined());
  // A bf16 stand-in in an fp32 forward computes in fp32; clearing it restores the 1-bit layer.
  layer->set_stand_in(w.to(torch::kBFloat16), torch::Tensor());
  CHECK(layer->forward(x.detach()).scalar_type() == torch::kFloat32);
  layer->set_stand_in({});
  CHECK_FALSE(layer->has_stand_in());
  CHECK(torch::equal(layer->forward(x.detach()), before));
  CHECK_THROWS_WITH(layer->set_stand_in(torch::randn({6, 4})), OB_CONTAINS("stand-in weight must be [4, 6]"));
  CHECK_THROWS_WITH(layer->set_stand_in(w, torch::randn({6})), OB_CONTAINS("stand-in bias must be [4]"));
}

TEST_CASE("OneBitLinear storage is 1.0073 bits per parameter for 4096x4096", "[layer]") {
  OneBitLinear layer(OneBitLinearOptions(4096, 4096));
  // method.md §8: (4096·4096 + 2·4096·16) / (4096·4096 + 2·4096).
  CHECK(layer->bits_per_parameter() == Approx(16908288.0 / 16785408.0).epsilon(1e-12));
  CHECK(std::round(layer->bits_per_parameter() * 1e4) / 1e4 == Approx(1.0073));
  OneBitLinear with_bias(OneBitLinearOptions(8, 4).bias(true));
  CHECK(with_bias->bits_per_parameter() == Approx((32.0 + 16.0 * 16) / (32 + 16)));
}

TEST_CASE("OneBitLinear from_linear approximates the original layer better than sign·mean|W|", "[layer]") {
  // A weight whose magnitudes have strong row and column structure (as real layers do),
  // so the rank-1 SVID scales differ clearly from per-row means.
  torch::manual_seed(6);
  const int64_t in = 96, out = 80;
  auto rows = torch::exp(torch::randn({out}) * 0.7), cols = torch::exp(torch::randn({in}) * 0.7);
  auto w = torch::randn({out, in}) * torch::outer(rows, cols);
  auto b = torch::randn({out}) * 0.1;
  auto x = torch::randn({256, in});
  auto y = torch::nn::functional::linear(x, w, b);
  // post_layernorm off: the original layer has no norm, so only then are outputs comparable.
  auto rel_err = [&](onebit::nn::SvidMethod m) {
    auto layer = OneBitLinearImpl::from_linear(
        w, b, OneBitLinearOptions(in, out).bias(true).post_layernorm(false).svid(m));
    torch::NoGradGuard ng;
    return ((layer->forward(x) - y).norm() / y.norm()).item<double>();
  };
  const double base = rel_err(onebit::nn::SvidMethod::None);
  const double nmf = rel_err(onebit::nn::SvidMethod::Nmf);
  const double svd = rel_err(onebit::nn::SvidMethod::Svd);
  CAPTURE(base, nmf, svd);
  CHECK(nmf < base);
  CHECK(svd < base);

  auto layer = OneBitLinearImpl::from_linear(w, b, OneBitLinearOptions(in, out));
  CHECK(torch::equal(layer->weight, torch::where(w >= 0, 0.01f, -0.01f)));  // latent 'scaled'
  CHECK(!layer->bias.defined());  // the original bias is dropped unless options.bias()
  CHECK((layer->g >= 0).all().item<bool>());
  auto keep = OneBitLinearImpl::from_linear(
      w, b, OneBitLinearOptions(in, out).latent_init(onebit::nn::LatentInit::Keep));
  CHECK(torch::equal(keep->weight, w));
}

TEST_CASE("OneBitLinear rejects bad input with clear messages", "[layer]") {
  OneBitLinearOptions o(4, 3);
  CHECK_THROWS_WITH(OneBitLinearImpl::from_linear(torch::zeros({3, 4, 1}), {}, o),
                    OB_CONTAINS("weight must be 2-D"));
  CHECK_THROWS_WITH(OneBitLinearImpl::from_linear(torch::zeros({4, 3}), {}, o),
                    OB_CONTAINS("does not match options"));
  CHECK_THROWS_WITH(OneBitLinearImpl::from_linear(torch::zeros({3, 4}), torch::zeros({4}), o),
                    OB_CONTAINS("bias shape [4] does not match out_features=3"));
  auto nan = torch::zeros({3, 4});
  nan[1][2] = std::nan("");
  CHECK_THROWS_WITH(OneBitLinearImpl::from_linear(nan, {}, o), OB_CONTAINS("NaN or inf"));
  auto inf = torch::zeros({3, 4});
  inf[0][0] = INFINITY;
  CHECK_THROWS_WITH(OneBitLinearImpl::from_linear(inf, {}, o), OB_CONTAINS("NaN or inf"));
  OneBitLinear layer(o);
  CHECK_THROWS_WITH(layer->forward(torch::zeros({2, 5})),
                    OB_CONTAINS("input last dim must be in_features=4, got input shape [2, 5]"));
  CHECK_THROWS_WITH(onebit::nn::parse_ste_kind("tahn"), OB_CONTAINS("unknown STE kind 'tahn'"));
  CHECK_THROWS_WITH(onebit::nn::parse_svid_method("pca"), OB_CONTAINS("unknown SVID method"));
  CHECK_THROWS_WITH(onebit::nn::parse_latent_init("x"), OB_CONTAINS("unknown latent init"));
  CHECK_THROWS_WITH(OneBitLinear(OneBitLinearOptions(0, 3)), OB_CONTAINS("must be positive"));
  CHECK(onebit::nn::parse_ste_kind(onebit::nn::to_string(SteKind::Clipped)) == SteKind::Clipped);
}

TEST_CASE("OneBitLinear on CUDA matches the CPU layer, forward and backward", "[layer][cuda]") {
  OB_REQUIRE_OR_SKIP(torch::cuda::is_available(), "needs a CUDA GPU");
  const torch::Device cuda(torch::kCUDA, 0);
  auto p = random_params(64, 48, torch::kFloat32, 9);
  auto up = torch::randn({3, 5, 48});
  std::vector<torch::Tensor> cpu_grads, gpu_grads;
  torch::Tensor cpu_out, gpu_out;
  for (auto dev : {torch::Device(torch::kCPU), cuda}) {
    std::vector<torch::Tensor> leaves = {p.x.to(dev), p.w.to(dev), p.g.to(dev), p.h.to(dev), p.b.to(dev)};
    for (auto& t : leaves) t.requires_grad_();
    auto z = F::onebit_linear(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], true, kEps, SteKind::Tanh);
    (z * up.to(dev)).sum().backward();
    (dev.is_cpu() ? cpu_out : gpu_out) = z.detach().cpu();
    for (auto& t : leaves) (dev.is_cpu() ? cpu_grads : gpu_grads).push_back(t.grad().cpu());
  }
  CHECK(max_abs_diff(cpu_out, gpu_out) < 1e-4);  // TF32 may be off or on: loose on purpose
  for (size_t i = 0; i < cpu_grads.size(); ++i) {
    CAPTURE(i);
    CHECK(max_abs_diff(cpu_grads[i], gpu_grads[i]) < 1e-3 * (1 + cpu_grads[i].abs().max().item<double>()));
  }
}
