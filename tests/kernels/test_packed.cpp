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
// The VNNI kernel's int16 tables: one rounding of ≤ 2^-16 of a block's largest group sum per
// lookup (kernels/cpu/avx512_vnni.cpp); for these O(1) outputs, random-signed, about 1e-5 each.
constexpr double kTablesTol = 5e-4;

// The tolerance of CPU kernel k on a layer in its default layout.
double tol(CpuKernel k) {
  const bool auto_tables =
      k == CpuKernel::Auto && onebit::packed::layout_for(k) == onebit::kernels::SignLayout::Tiles;
  return k == CpuKernel::Avx512Vnni || auto_tables ? kTablesTol : kPackedTol;
}

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
                      CpuKernel::Avx512, CpuKernel::Avx512Vnni, CpuKernel::Tiled})
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
        CHECK(max_err(y, ref) < (dev.is_cpu() ? tol(k) : kPackedTol));
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
  packed->use_layout(onebit::kernels::SignLayout::Rows);
  CHECK(packed->signs.sizes() == torch::IntArrayRef({1, 16}));
  CHECK(torch::equal(packed->signs.slice(1, 0, 2), onebit::packed::pack_signs(layer->weight)));
  CHECK(packed->signs.slice(1, 2).sum().item<int>() == 0);
  CHECK(torch::equal(packed->file_signs(), onebit::packed::pack_signs(layer->weight)));
}

TEST_CASE("runtime tiles hold word q of sixteen rows in 64 bytes", "[kernels]") {
  // in = 200 (2 blocks, 8 words per row), out = 20 (2 tiles, the second with 4 real rows).
  using onebit::kernels::SignLayout;
  auto layer = random_layer(200, 20, false, false, 8);
  auto packed = PackedOneBitLinearImpl::from(*layer);
  const auto file = packed->file_signs();  // [20, 25]
  packed->use_layout(SignLayout::Tiles);
  REQUIRE(packed->layout() == SignLayout::Tiles);
  REQUIRE(packed->signs.sizes() == torch::IntArrayRef({32, 32}));
  const auto* t = packed->signs.data_ptr<uint8_t>();
  const auto* f = file.data_ptr<uint8_t>();
  for (int64_t o : {0, 5, 15, 16, 19})
    for (int64_t byte : {0, 3, 4, 17, 24}) {  // byte 24: the file row's last
      CAPTURE(o, byte);
      const int64_t q = byte / 4;  // word of the row
      CHECK(t[((o / 16) * 8 + q) * 64 + 4 * (o % 16) + byte % 4] == f[o * 25 + byte]);
    }
  const auto tail = packed->signs.view({2, 8, 16, 4}).select(0, 1).narrow(1, 4, 12);  // rows 20-31
  CHECK(tail.sum().item<int64_t>() == 0);
  CHECK(torch::equal(packed->file_signs(), file));  // and back
  packed->use_layout(SignLayout::Rows);
  CHECK(packed->signs.sizes() == torch::IntArrayRef({20, 32}));
  CHECK(torch::equal(packed->file_signs(), file));
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
  // The kernel contract below the layer: rows [o_begin, o_end) of y, no other element touched.
  // Row kernels: rows [3, 42) of 45 (a start that is not a multiple of 8, as a thread's share
  // may not be). The tiles kernel: whole tiles from o_begin, [16, 42), part of the last tile.
  // Tokens 1-17 so that the token blocks (8 at a time) and input chunks (the tables are split
  // over the input when many tokens share them: from 9 tokens on for the tiles kernel at
  // in = 4224) are all exercised; in = 300 has an odd last block.
  namespace k = onebit::kernels;
  struct Case {
    k::CpuIsa isa;
    int64_t o_begin;
    double tol;  // per √in: sums of ~in terms of size ~1 scaled by h ~1
  };
  const Case cases[] = {{k::CpuIsa::Generic, 3, kPackedTol},
                        {k::CpuIsa::Avx2, 3, kPackedTol},
                        {k::CpuIsa::Avx512, 3, kPackedTol},
                        {k::CpuIsa::Avx512Vnni, 16, kTablesTol}};
  torch::manual_seed(5);
  for (int64_t in : {300, 4096 + 128}) {
    const int64_t out = 45, o_end = 42, nb = k::blocks_per_row(in);
    const auto w = torch::randn({out, in});
    std::vector<k::SignBlock> rows(size_t(out * nb));
    k::pack_ref(w.data_ptr<float>(), out, in, rows.data());
    std::vector<k::SignBlock> tiles(size_t(k::tiled_rows(out) * nb));
    k::rows_to_tiles(rows.data(), out, nb, reinterpret_cast<uint8_t*>(tiles.data()));
    const auto h = torch::rand({out}) + 0.5, bias = torch::randn({out});
    for (int64_t n : {1, 2, 3, 8, 9, 17}) {
      const auto xg = torch::zeros({n, k::padded_in(in)});
      xg.narrow(1, 0, in).copy_(torch::randn({n, in}));
      k::GemmArgs a;
      a.xg = xg.data_ptr<float>(), a.n = n, a.xs = xg.stride(0);
      a.blocks = nb, a.h = h.data_ptr<float>(), a.bias = bias.data_ptr<float>(), a.ys = out;
      for (const Case& c : cases) {
        if (!k::cpu_supports(c.isa)) continue;
        CAPTURE(in, n, k::to_string(c.isa));
        const auto ref = torch::full({n, out}, std::nanf(""));
        a.y = ref.data_ptr<float>(), a.w = rows.data();
        k::gemm_rows_ref(a, c.o_begin, o_end);
        const auto y = torch::full({n, out}, std::nanf(""));
        a.y = y.data_ptr<float>(), a.w = k::layout_for(c.isa) == k::SignLayout::Tiles ? tiles.data() : rows.data();
        k::gemm_rows_for(c.isa)(a, c.o_begin, o_end);
        CHECK(torch::equal(y.isnan(), ref.isnan()));  // the rows outside untouched
        const auto all = torch::indexing::Slice(), inside = torch::indexing::Slice(c.o_begin, o_end);
        CHECK(max_err(y.index({all, inside}), ref.index({all, inside})) < c.tol * std::sqrt(double(in)));
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
    CHECK(max_err(four, ref) < tol(k));
  }
  torch::set_num_threads(before);
}

TEST_CASE("a NaN or infinite input gives non-finite outputs in every CPU kernel", "[kernels]") {
  // Every output row sums every input (signs are ±1), so one bad input spoils every output of
  // its token and none of the other token's; a kernel must not round it away into its tables.
  auto layer = random_layer(300, 40, true, false, 12);
  auto packed = PackedOneBitLinearImpl::from(*layer);
  for (float bad : {std::nanf(""), INFINITY}) {
    auto x = torch::randn({2, 300});
    x[0][137] = bad;
    for (CpuKernel k : cpu_kernels()) {
      CAPTURE(bad, onebit::packed::to_string(k));
      const auto y = packed->forward(x, k);
      CHECK(torch::isfinite(y[0]).sum().item<int64_t>() == 0);
      CHECK(torch::isfinite(y[1]).all().item<bool>());
    }
  }
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
  // The operator's sign layout, and a kernel given signs in the other layout.
  const auto op = c10::Dispatcher::singleton()
                      .findSchemaOrThrow("onebit::packed_linear", "")
                      .typed<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                           const torch::Tensor&, const std::optional<torch::Tensor>&, int64_t, bool,
                                           double, int64_t)>();
  CHECK_THROWS_WITH(op.call(torch::zeros({2, 16}), packed->signs, packed->g, packed->h, std::nullopt, 16, true, 1e-5, 2),
                    OB_CONTAINS("sign_layout must be 0 (rows) or 1 (tiles), got 2"));
  CHECK_THROWS_WITH(onebit::packed::packed_linear_cpu(torch::zeros({2, 16}), packed->signs, packed->g, packed->h, {},
                                                      16, true, 1e-5, onebit::kernels::SignLayout::Rows,
                                                      CpuKernel::Avx512Vnni),
                    OB_CONTAINS("the avx512vnni kernel cannot read signs in this layout"));
  // A dtype change leaves the packed buffers alone.
  odd->to(torch::kBFloat16);
  CHECK(odd->signs.scalar_type() == torch::kUInt8);
  CHECK(odd->h.scalar_type() == torch::kFloat32);
}
