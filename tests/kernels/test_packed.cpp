// Packed 1-bit signs and the packed kernels against the dense OneBitLinear formula.
#include <torch/torch.h>

#include "kernels/packed_sign.h"
#include "onebit/autograd/sign_ste.h"
#include "onebit/core/error.h"
#include "onebit/export/packed_linear.h"
#include "onebit/nn/onebit_linear.h"
#include "tests/support.h"

using onebit::packed::PackedLinear;

namespace {
constexpr double kPackedTol = 1e-4;  // fp32 sums in another order than BLAS, O(1) outputs

onebit::nn::OneBitLinear random_layer(int64_t in, int64_t out, bool bias, bool post_ln, uint64_t seed) {
  torch::manual_seed(seed);
  onebit::nn::OneBitLinear layer(onebit::nn::OneBitLinearOptions(in, out).bias(bias).post_layernorm(post_ln));
  torch::NoGradGuard ng;
  layer->weight.copy_(torch::randn({out, in}));
  layer->weight.view(-1).slice(0, 0, 7).zero_();  // exact zeros must pack as +1
  layer->g.copy_(torch::rand({in}) + 0.5);
  layer->h.copy_((torch::rand({out}) + 0.5) / std::sqrt(double(in)));
  if (bias) layer->bias.copy_(torch::randn({out}) * 0.1);
  return layer;
}

void check_against_dense(const torch::Device& dev) {
  for (auto [in, out] : {std::pair<int64_t, int64_t>{100, 300}, {64, 40}, {13, 5}}) {
    for (int64_t rows : {1, 3, 40}) {
      for (bool post_ln : {true, false}) {
        CAPTURE(in, out, rows, post_ln);
        auto layer = random_layer(in, out, !post_ln, post_ln, uint64_t(in * rows));
        auto x = torch::randn({rows, 1, in});
        torch::Tensor ref;
        {
          torch::NoGradGuard ng;
          ref = layer->forward(x);
        }
        layer->to(dev);
        auto packed = PackedLinear::from(*layer);
        auto y = packed.forward(x.to(dev)).cpu();
        REQUIRE(y.sizes() == ref.sizes());
        CHECK((y - ref).abs().max().item<double>() < kPackedTol);
      }
    }
  }
}
}  // namespace

TEST_CASE("packed signs follow the authors' convention", "[kernels]") {
  // bit 1 = −1, 8 signs per byte along the input, least-significant bit first; ±0 → +1.
  auto w = torch::tensor({{-1.0f, 2.0f, -3.0f, 4.0f, 5.0f, -6.0f, 7.0f, 8.0f, -0.0f, 0.0f, -1e-30f}});
  auto p = onebit::packed::pack_signs(w);
  REQUIRE(p.sizes() == torch::IntArrayRef({1, 8}));  // one 64-sign block per row
  CHECK(p[0][0].item<int>() == 0x25);                  // inputs 0, 2, 5
  CHECK(p[0][1].item<int>() == 0x04);                  // input 10 (8 and 9 are ±0)
  CHECK(p.slice(1, 2).sum().item<int>() == 0);         // padding bits are 0
  static_assert(sizeof(onebit::kernels::SignBlock) * 8 == onebit::kernels::kSignsPerBlock);
}

TEST_CASE("pack then unpack gives the training sign(W)", "[kernels]") {
  torch::manual_seed(21);
  for (int64_t in : {1, 7, 8, 64, 100, 130}) {
    CAPTURE(in);
    auto w = torch::randn({9, in});
    w.view(-1)[0] = 0.0f;
    auto back = onebit::packed::unpack_signs(onebit::packed::pack_signs(w), in);
    CHECK(torch::equal(back, onebit::autograd::sign_pm1(w, torch::kFloat32)));
  }
}

TEST_CASE("CPU packed kernels (LUT GEMV and tiled GEMM) equal the dense layer", "[kernels]") {
  check_against_dense(torch::kCPU);
}

TEST_CASE("CUDA packed kernel equals the dense layer", "[kernels][cuda]") {
  OB_REQUIRE_OR_SKIP(torch::cuda::is_available(), "needs a CUDA GPU");
  check_against_dense(torch::Device(torch::kCUDA, 0));
}

TEST_CASE("packed layer rejects bad input with clear messages", "[kernels]") {
  auto layer = random_layer(16, 4, false, true, 1);
  auto packed = PackedLinear::from(*layer);
  CHECK_THROWS_WITH(packed.forward(torch::zeros({2, 15})),
                    OB_CONTAINS("input last dim must be in_features=16"));
  CHECK_THROWS_WITH(packed.forward(torch::zeros({2, 16}, torch::kFloat64)), OB_CONTAINS("must be fp32"));
  CHECK_THROWS_WITH(onebit::packed::pack_signs(torch::zeros({3})), OB_CONTAINS("2-D float"));
  CHECK_THROWS_WITH(onebit::packed::unpack_signs(torch::zeros({2, 8}, torch::kUInt8), 65),
                    OB_CONTAINS("need uint8 [out, 16] for in=65"));
}
