// Packed 1-bit signs and every packed kernel against the dense OneBitLinear formula in double.
#include <torch/torch.h>

#include "kernels/packed_sign.h"
#include "onebit/autograd/sign_ste.h"
#include "onebit/core/error.h"
#include "onebit/export/packed_linear.h"
#include "onebit/nn/onebit_linear.h"
#include "tests/support.h"

using onebit::packed::CpuKernel;
using onebit::packed::PackedOneBitLinearImpl;

namespace {
constexpr double kPackedTol = 1e-4;  // fp32 sums in another order than the double reference, O(1) outputs
constexpr double kBf16Tol = 5e-2;    // bf16 inputs and outputs

onebit::nn::OneBitLinear random_layer(int64_t in, int64_t out, bool bias, bool post_ln, uint64_t seed) {
  torch::manual_seed(seed);
  onebit::nn::OneBitLinear layer(onebit::nn::OneBitLinearOptions(in, out).bias(bias).post_layernorm(post_ln));
  torch::NoGradGuard ng;
  layer->weight.copy_(torch::randn({out, in}));
  layer->weight.view(-1).slice(0, 0, std::min<int64_t>(7, in * out)).zero_();  // exact zeros pack as +1
  layer->g.copy_(torch::rand({in}) + 0.5);
  layer->h.copy_((torch::rand({out}) + 0.5) / std::sqrt(double(in)));
  if (bias) layer->bias.copy_(torch::randn({out}) * 0.1);
  return layer;
}

// The layer's formula in double: LayerNorm?(((x ⊙ g) · sign(W)ᵀ) ⊙ h + bias), sign(0) = +1.
torch::Tensor dense_reference(const onebit::nn::OneBitLinearImpl& l, const torch::Tensor& x) {
  const auto d = torch::kFloat64;
  const auto s = torch::where(l.weight >= 0, 1.0, -1.0).to(d);
  auto y = torch::matmul(x.to(d) * l.g.to(d), s.t()) * l.h.to(d);
  if (l.bias.defined()) y = y + l.bias.to(d);
  if (l.options.post_layernorm()) y = torch::layer_norm(y, {l.options.out_features()}, {}, {}, l.options.ln_eps());
  return y;
}

std::vector<CpuKernel> cpu_kernels() {
  std::vector<CpuKernel> ks;
  for (CpuKernel k : {CpuKernel::Auto, CpuKernel::Ref, CpuKernel::Lut, CpuKernel::Generic, CpuKernel::Avx2,
                      CpuKernel::Avx512, CpuKernel::Tiled})
    if (onebit::packed::cpu_kernel_available(k)) ks.push_back(k);
  return ks;
}

double max_err(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

void check_against_dense(const torch::Device& dev, const std::vector<CpuKernel>& kernels) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1},   {7, 3},    {13, 5},  {100, 1},
                                                           {129, 40}, {300, 67}, {11008, 9}};
  int combo = 0;
  for (auto [in, out] : shapes) {
    for (int64_t rows : {1, 2, 3, 5, 8, 16, 17}) {
      const bool bias = combo % 2 == 0, post_ln = combo % 4 < 2 && out > 1;
      ++combo;
      auto layer = random_layer(in, out, bias, post_ln, uint64_t(in * 31 + rows));
      auto x = torch::randn({rows, 1, in});
      const auto ref = dense_reference(*layer, x);
      layer->to(dev);
      auto packed = PackedOneBitLinearImpl::from(*layer);
      for (CpuKernel k : kernels) {
        CAPTURE(in, out, rows, bias, post_ln, onebit::packed::to_string(k));
        auto y = packed->forward(x.to(dev), k).cpu();
        REQUIRE(y.sizes() == ref.sizes());
        REQUIRE(y.scalar_type() == torch::kFloat32);
        CHECK(max_err(y, ref) < kPackedTol);
      }
    }
  }
}
}  // namespace

TEST_CASE("packed signs follow the authors' convention", "[kernels]") {
  // bit 1 = −1, 8 signs per byte along the input, least-significant bit first; ±0 → +1.
  auto w = torch::tensor({{-1.0f, 2.0f, -3.0f, 4.0f, 5.0f, -6.0f, 7.0f, 8.0f, -0.0f, 0.0f, -1e-30f}});
  auto p = onebit::packed::pack_signs(w);
  REQUIRE(p.sizes() == torch::IntArrayRef({1, 2}));  // ⌈11/8⌉ bytes per row in files
  CHECK(p[0][0].item<int>() == 0x25);                  // inputs 0, 2, 5
  CHECK(p[0][1].item<int>() == 0x04);                  // input 10 (8 and 9 are ±0); padding bits 0
  static_assert(sizeof(onebit::kernels::SignBlock) * 8 == onebit::kernels::kSignsPerBlock);
  // Runtime rows: the same bytes, zero-padded to 16-byte blocks.
  auto layer = random_layer(11, 1, false, false, 3);
  auto packed = PackedOneBitLinearImpl::from(*layer);
  CHECK(packed->signs.sizes() == torch::IntArrayRef({1, 16}));
  CHECK(torch::equal(packed->signs.slice(1, 0, 2), onebit::packed::pack_signs(layer->weight)));
  CHECK(packed->signs.slice(1, 2).sum().item<int>() == 0);
  CHECK(torch::equal(packed->file_signs(), onebit::packed::pack_signs(layer->weight)));
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

TEST_CASE("every CPU packed kernel equals the dense layer (odd shapes, batch 1-17, bias, post-LN)", "[kernels]") {
  INFO("best ISA here: " << onebit::kernels::to_string(onebit::kernels::best_cpu_isa()));
  check_against_dense(torch::kCPU, cpu_kernels());
}

TEST_CASE("each instruction-set kernel computes exactly its rows, any row range and token count", "[kernels]") {
  // The kernel contract below the layer: rows [o_begin, o_end) of y (a range that does not start
  // on a multiple of 8, as a thread's share may not), no other element touched; tokens 1-17 so
  // that the AVX2 kernel's token blocks (8 at a time) and input chunks (its tables are split over
  // the input when many tokens share them) are all exercised; in = 300 has an odd last block.
  namespace k = onebit::kernels;
  torch::manual_seed(5);
  for (int64_t in : {300, 4096 + 128}) {
    const int64_t out = 45, nb = k::blocks_per_row(in);
    const auto w = torch::randn({out, in});
    std::vector<k::SignBlock> signs(size_t(out * nb));
    k::pack_ref(w.data_ptr<float>(), out, in, signs.data());
    const auto h = torch::rand({out}) + 0.5, bias = torch::randn({out});
    for (int64_t n : {1, 2, 3, 8, 9, 17}) {
      const auto xg = torch::zeros({n, k::padded_in(in)});
      xg.narrow(1, 0, in).copy_(torch::randn({n, in}));
      k::GemmArgs a;
      a.xg = xg.data_ptr<float>(), a.n = n, a.xs = xg.stride(0);
      a.w = signs.data(), a.blocks = nb, a.h = h.data_ptr<float>(), a.bias = bias.data_ptr<float>();
      const auto ref = torch::full({n, out}, std::nanf(""));
      a.y = ref.data_ptr<float>(), a.ys = out;
      k::gemm_rows_ref(a, 3, 42);
      for (k::CpuIsa isa : {k::CpuIsa::Generic, k::CpuIsa::Avx2, k::CpuIsa::Avx512}) {
        if (!k::cpu_supports(isa)) continue;
        CAPTURE(in, n, k::to_string(isa));
        const auto y = torch::full({n, out}, std::nanf(""));
        a.y = y.data_ptr<float>();
        k::gemm_rows_for(isa)(a, 3, 42);
        CHECK(torch::equal(y.isnan(), ref.isnan()));  // rows 0-2 and 42-44 untouched
        const auto inside = torch::indexing::Slice(3, 42);
        // Sums of ~in terms of size ~1 scaled by h ~1: fp32 rounding in another order.
        CHECK(max_err(y.index({torch::indexing::Slice(), inside}), ref.index({torch::indexing::Slice(), inside})) <
              kPackedTol * std::sqrt(double(in)));
      }
    }
  }
}

TEST_CASE("CPU packed kernels give the same result on several threads", "[kernels]") {
  const int before = torch::get_num_threads();
  auto layer = random_layer(1000, 333, true, true, 9);
  auto x = torch::randn({5, 1000});
  const auto ref = dense_reference(*layer, x);
  auto packed = PackedOneBitLinearImpl::from(*layer);
  for (CpuKernel k : cpu_kernels()) {
    CAPTURE(onebit::packed::to_string(k));
    torch::set_num_threads(1);
    const auto one = packed->forward(x, k);
    torch::set_num_threads(4);
    const auto four = packed->forward(x, k);
    CHECK(torch::equal(one, four));  // rows are independent: the split must not change a bit
    CHECK(max_err(four, ref) < kPackedTol);
  }
  torch::set_num_threads(before);
}

TEST_CASE("packed layer takes bf16 activations and returns bf16", "[kernels]") {
  auto layer = random_layer(200, 50, true, true, 4);
  auto x = torch::randn({3, 200}).to(torch::kBFloat16);
  const auto ref = dense_reference(*layer, x.to(torch::kFloat32));
  auto packed = PackedOneBitLinearImpl::from(*layer);
  for (CpuKernel k : cpu_kernels()) {
    CAPTURE(onebit::packed::to_string(k));
    const auto y = packed->forward(x, k);
    CHECK(y.scalar_type() == torch::kBFloat16);
    CHECK(max_err(y, ref) < kBf16Tol);
  }
}

TEST_CASE("CUDA packed kernel equals the dense layer", "[kernels][cuda]") {
  OB_REQUIRE_OR_SKIP(torch::cuda::is_available(), "needs a CUDA GPU");
  check_against_dense(torch::Device(torch::kCUDA, 0), {CpuKernel::Auto});
}

TEST_CASE("packed layer rejects bad input with clear messages", "[kernels]") {
  auto layer = random_layer(16, 4, false, true, 1);
  auto packed = PackedOneBitLinearImpl::from(*layer);
  CHECK_THROWS_WITH(packed->forward(torch::zeros({2, 15})), OB_CONTAINS("input last dim must be in_features=16"));
  CHECK_THROWS_WITH(packed->forward(torch::zeros({2, 16}, torch::kLong)), OB_CONTAINS("must be floating point"));
  CHECK_THROWS_WITH(onebit::packed::pack_signs(torch::zeros({3})), OB_CONTAINS("2-D float"));
  CHECK_THROWS_WITH(onebit::packed::unpack_signs(torch::zeros({2, 8}, torch::kUInt8), 65),
                    OB_CONTAINS("need uint8 [out, 9] for in=65"));
  CHECK_THROWS_WITH(packed->set_file_signs(torch::zeros({4, 3}, torch::kUInt8), "t"),
                    OB_CONTAINS("t: packed signs have shape [4, 3], expected [4, 2]"));
  CHECK_THROWS_WITH(packed->set_file_signs(torch::zeros({4, 2}), "t"), OB_CONTAINS("must be uint8"));
  auto odd = PackedOneBitLinearImpl::from(*random_layer(13, 2, false, true, 2));
  auto bad = torch::zeros({2, 2}, torch::kUInt8);
  bad[1][1] = 0x20;  // bit 13 of the row: past in = 13
  CHECK_THROWS_WITH(odd->set_file_signs(bad, "t"), OB_CONTAINS("non-zero padding bits past input 13"));
  // A dtype change leaves the packed buffers alone.
  odd->to(torch::kBFloat16);
  CHECK(odd->signs.scalar_type() == torch::kUInt8);
  CHECK(odd->h.scalar_type() == torch::kFloat32);
}
