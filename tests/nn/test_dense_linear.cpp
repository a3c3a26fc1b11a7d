// dense_linear (ATen or oneDNN) and DensePackScope against the fp64 formula x·Wᵀ + b.
#include <torch/torch.h>

#include <vector>

#include "onebit/core/autocast.h"
#include "onebit/core/error.h"
#include "onebit/eval/scoring.h"
#include "onebit/nn/dense_linear.h"
#include "tests/support.h"

using onebit::nn::DenseBackend;
using onebit::nn::DensePackScope;
using onebit::nn::dense_linear;

namespace {

// max |y - (x·Wᵀ + b)| over max |x·Wᵀ + b|, the reference in fp64.
double rel_err(const torch::Tensor& y, const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  auto ref = torch::matmul(x.to(torch::kFloat64), w.to(torch::kFloat64).t());
  if (b.defined()) ref = ref + b.to(torch::kFloat64);
  REQUIRE(y.sizes() == ref.sizes());
  return (y.to(torch::kFloat64) - ref).abs().max().item<double>() / ref.abs().max().item<double>();
}

std::vector<DenseBackend> backends() {
  std::vector<DenseBackend> out{DenseBackend::Aten};
  if (onebit::nn::onednn_linear_available()) out.push_back(DenseBackend::OneDnn);
  return out;
}

struct Shape {
  std::vector<int64_t> x;
  int64_t out;
};

}  // namespace

TEST_CASE("dense_linear is x·Wᵀ + b on every backend, shape and bias", "[layer]") {
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;
  // 1-D input, one output, inputs not a multiple of 8, 3-D input, a few hundred rows.
  const std::vector<Shape> shapes{{{37}, 1}, {{5, 37}, 11}, {{2, 3, 64}, 96}, {{300, 576}, 192}, {{1, 576}, 1536}};
  for (auto be : backends())
    for (const auto& s : shapes)
      for (bool bias : {false, true}) {
        INFO(onebit::nn::to_string(be) << " x " << torch::IntArrayRef(s.x) << " out " << s.out << " bias " << bias);
        auto x = torch::randn(s.x), w = torch::randn({s.out, s.x.back()});
        auto b = bias ? torch::randn({s.out}) : torch::Tensor();
        CHECK(rel_err(dense_linear(be, x, w, b), x, w, b) < 1e-5);
        // A non-contiguous input (a transposed view) gives the same.
        auto xt = x.dim() == 2 ? x.t().contiguous().t() : x;
        CHECK(rel_err(dense_linear(be, xt, w, b), xt, w, b) < 1e-5);
      }
}

TEST_CASE("dense_linear keeps autograd: gradients of x, W and b are the formula's", "[layer]") {
  torch::manual_seed(1);
  for (auto be : backends()) {
    auto x = torch::randn({4, 9}, torch::requires_grad());
    auto w = torch::randn({5, 9}, torch::requires_grad());
    auto b = torch::randn({5}, torch::requires_grad());
    auto gy = torch::randn({4, 5});
    dense_linear(be, x, w, b).backward(gy);
    CHECK(torch::allclose(x.grad(), gy.matmul(w.detach()), 1e-5, 1e-5));
    CHECK(torch::allclose(w.grad(), gy.t().matmul(x.detach()), 1e-5, 1e-5));
    CHECK(torch::allclose(b.grad(), gy.sum(0), 1e-5, 1e-5));
  }
}

TEST_CASE("dense_linear under CPU autocast computes in the autocast dtype, as ATen's linear", "[layer]") {
  torch::NoGradGuard no_grad;
  auto x = torch::randn({4, 16}), w = torch::randn({8, 16});
  onebit::AutocastGuard bf16(c10::DeviceType::CPU, torch::kBFloat16);
  for (auto be : backends()) {
    auto y = dense_linear(be, x, w);
    CHECK(y.scalar_type() == torch::kBFloat16);
    CHECK(y.equal(torch::nn::functional::linear(x, w)));
  }
}

TEST_CASE("dense matmul backend names parse, and an unknown one is a clear error", "[layer]") {
  CHECK(onebit::nn::parse_dense_backend("aten") == DenseBackend::Aten);
  CHECK(onebit::nn::parse_dense_backend("onednn") == DenseBackend::OneDnn);
  for (auto be : {DenseBackend::Aten, DenseBackend::OneDnn})
    CHECK(onebit::nn::parse_dense_backend(onebit::nn::to_string(be)) == be);
  REQUIRE_THROWS_WITH(onebit::nn::parse_dense_backend("mkl"),
                      OB_CONTAINS("unknown dense matmul backend 'mkl' (expected aten or onednn)"));
  REQUIRE_THROWS_WITH(onebit::nn::parse_dense_backend("", "ONEBIT_DENSE_LINEAR value"),
                      OB_CONTAINS("unknown ONEBIT_DENSE_LINEAR value '' (expected aten or onednn)"));
}

TEST_CASE("dense_linear rejects a shape mismatch with an error, not a crash", "[layer]") {
  torch::NoGradGuard no_grad;
  for (auto be : backends())
    REQUIRE_THROWS(dense_linear(be, torch::randn({3, 8}), torch::randn({4, 7})));
}

TEST_CASE("DensePackScope: packed weights give the formula, and a weight changed in place is not stale", "[layer]") {
  torch::manual_seed(2);
  torch::NoGradGuard no_grad;
  auto w1 = torch::randn({96, 64}), w2 = torch::randn({32, 64});
  auto x = torch::randn({7, 64});
  {
    DensePackScope outer({w1});
    if (onebit::nn::dense_backend() == DenseBackend::OneDnn) {
      CHECK(outer.packed_bytes() == w1.nbytes());
      CHECK(outer.find(w1) != nullptr);
    }
    CHECK(rel_err(dense_linear(x, w1), x, w1, {}) < 1e-5);
    {
      // Repeats, non-fp32 weights and the outer scope's w1 are not packed again.
      DensePackScope inner({w2, w2, torch::randn({4, 4}, torch::kFloat64), w1});
      if (onebit::nn::dense_backend() == DenseBackend::OneDnn) CHECK(inner.packed_bytes() == w2.nbytes());
      CHECK(rel_err(dense_linear(x, w1), x, w1, {}) < 1e-5);  // the outer scope's weight
      CHECK(rel_err(dense_linear(x, w2), x, w2, {}) < 1e-5);
    }
    w1.mul_(-2);  // an optimizer step or a reload in place
    CHECK(outer.find(w1) == nullptr);
    CHECK(rel_err(dense_linear(x, w1), x, w1, {}) < 1e-5);
  }
  CHECK(rel_err(dense_linear(x, w2), x, w2, {}) < 1e-5);  // no scope left
}

TEST_CASE("DensePackScope in bf16: packed where oneDNN has bf16 kernels, the formula to bf16 rounding", "[layer]") {
  torch::manual_seed(3);
  torch::NoGradGuard no_grad;
  auto w = torch::randn({300, 64}).to(torch::kBFloat16), b = torch::randn({300}).to(torch::kBFloat16);
  for (int64_t rows : {int64_t(1), int64_t(6)}) {
    auto x = torch::randn({rows, 64}).to(torch::kBFloat16);
    const auto plain = dense_linear(x, w, b);  // no scope: ATen's linear
    CHECK(torch::equal(plain, torch::nn::functional::linear(x, w, b)));
    DensePackScope scope({w});
    const bool packs = onebit::nn::dense_backend() == DenseBackend::OneDnn && onebit::nn::onednn_bf16_supported();
    CHECK(scope.packed_bytes() == (packs ? w.nbytes() : 0));
    const auto y = dense_linear(x, w, b);
    CHECK(y.scalar_type() == torch::kBFloat16);
    // fp32 accumulation, one rounding to bf16 (2^-8 relative) at the end.
    CHECK(rel_err(y, x, w, b) < 8e-3);
    CHECK(rel_err(y, x, w, b) < 2 * rel_err(plain, x, w, b) + 4e-3);
  }
}

TEST_CASE("linear_weights lists every Linear's weight once, a shared one too", "[layer]") {
  torch::nn::Sequential seq(torch::nn::Linear(4, 3), torch::nn::ReLU(), torch::nn::Linear(3, 2));
  auto tied = torch::nn::Linear(3, 2);
  tied->weight = seq->ptr<torch::nn::LinearImpl>(2)->weight;
  seq->push_back(tied);
  auto w = onebit::nn::linear_weights(*seq);
  REQUIRE(w.size() == 2);
  CHECK(w[0].is_same(seq->ptr<torch::nn::LinearImpl>(0)->weight));
  CHECK(w[1].is_same(tied->weight));
  torch::nn::Linear lone(2, 2);  // the root itself, not held by a shared_ptr of its own
  const auto own = onebit::nn::linear_weights(*lone);
  REQUIRE(own.size() == 1);
  CHECK(own[0].is_same(lone->weight));
}

TEST_CASE("score_targets_ is the log-softmax's target entry bit for bit, in place, with the argmax check", "[eval]") {
  torch::manual_seed(3);
  auto logits = torch::randn({64, 5003}) * 6;
  auto targets = torch::randint(0, 5003, {64});
  targets.narrow(0, 0, 8).copy_(logits.narrow(0, 0, 8).argmax(-1));  // some greedy rows
  const auto ref = torch::log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1).to(torch::kFloat64);
  auto scratch = logits.clone();
  const auto s = onebit::eval::score_targets_(scratch, targets);
  CHECK(s.logprob.scalar_type() == torch::kFloat64);
  CHECK(s.logprob.equal(ref));
  CHECK(s.greedy.equal(logits.argmax(-1).eq(targets)));
  CHECK(s.greedy.narrow(0, 0, 8).all().item<bool>());
  CHECK_FALSE(scratch.equal(logits));  // it did reuse the logits
  REQUIRE_THROWS_WITH(onebit::eval::score_targets_(logits.to(torch::kFloat64), targets), OB_CONTAINS("fp32 logits"));
}
