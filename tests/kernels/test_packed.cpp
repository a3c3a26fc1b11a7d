// Packed 1-bit signs and every packed kernel against the dense OneBitLinear formula in double.
#include <torch/torch.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <type_traits>

#include "kernels/cuda/packed_gemv_mma_map.h"
#include "kernels/packed_sign.h"
#include "onebit/autograd/sign_ste.h"
#include "onebit/core/error.h"
#include "onebit/export/packed_linear.h"
#include "onebit/nn/onebit_linear.h"
#include "tests/support.h"

#ifdef ONEBIT_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/packed_gemv.h"
#endif

using onebit::packed::CpuKernel;
using onebit::packed::CudaKernel;
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

using Shapes = std::vector<std::pair<int64_t, int64_t>>;

// Every kernel of `kernels` (CpuKernel or CudaKernel) on every shape (in, out) and batch against
// the dense formula; `extra` shapes after the common ones.
template <class Kernel>
void check_against_dense(const torch::Device& dev, const std::vector<Kernel>& kernels, const Shapes& extra = {}) {
  Shapes shapes = {{1, 1}, {7, 3}, {13, 5}, {100, 1}, {129, 40}, {300, 67}, {11008, 9}};
  shapes.insert(shapes.end(), extra.begin(), extra.end());
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
      for (Kernel k : kernels) {
        CAPTURE(in, out, rows, bias, post_ln, onebit::packed::to_string(k));
        auto y = packed->forward(x.to(dev), k).cpu();
        REQUIRE(y.sizes() == ref.sizes());
        REQUIRE(y.scalar_type() == torch::kFloat32);
        if constexpr (std::is_same_v<Kernel, CpuKernel>) {
          CHECK(max_err(y, ref) < tol(k));
        } else {
          CHECK(max_err(y, ref) < kPackedTol);
        }
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

TEST_CASE("packed layer takes bf16, fp16 and fp64 activations, strided too, and returns their dtype", "[kernels]") {
  auto layer = random_layer(200, 50, true, true, 4);
  auto packed = PackedOneBitLinearImpl::from(*layer);
  for (auto dt : {torch::kBFloat16, torch::kHalf, torch::kFloat64}) {
    for (bool strided : {false, true}) {
      CAPTURE(dt, strided);
      // strided: the columns of a transposed tensor (input stride 3, not 1).
      auto x = strided ? torch::randn({200, 3}).to(dt).t() : torch::randn({3, 200}).to(dt);
      const auto ref = dense_reference(*layer, x.to(torch::kFloat32));
      for (CpuKernel k : cpu_kernels()) {
        CAPTURE(onebit::packed::to_string(k));
        const auto y = packed->forward(x, k);
        CHECK(y.scalar_type() == dt);
        CHECK(max_err(y, ref) < (dt == torch::kFloat64 ? 2 * kPackedTol : kBf16Tol));  // fp64: computed in fp32
      }
    }
  }
}

namespace {
// Packed layers of one input width (q/k/v-like: outputs not multiples of 16), the last two
// with bias, post-LN on all.
std::vector<std::shared_ptr<PackedOneBitLinearImpl>> packed_group(int64_t in, const std::vector<int64_t>& outs) {
  std::vector<std::shared_ptr<PackedOneBitLinearImpl>> out;
  for (size_t i = 0; i < outs.size(); ++i)
    out.push_back(PackedOneBitLinearImpl::from(*random_layer(in, outs[i], i > 0, true, 40 + i)));
  return out;
}
std::vector<const PackedOneBitLinearImpl*> raw(const std::vector<std::shared_ptr<PackedOneBitLinearImpl>>& ls) {
  std::vector<const PackedOneBitLinearImpl*> r;
  for (const auto& l : ls) r.push_back(l.get());
  return r;
}
}  // namespace

TEST_CASE("forward_group equals each layer's forward, in every sign layout and dtype", "[kernels]") {
  auto layers = packed_group(300, {50, 33, 17});
  for (auto layout : {onebit::kernels::SignLayout::Rows, onebit::kernels::SignLayout::Tiles}) {
    for (auto& l : layers) l->use_layout(layout);
    for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
      for (int64_t n : {int64_t(1), int64_t(5)}) {
        CAPTURE(int(layout), dt, n);
        torch::manual_seed(7);
        const auto x = torch::randn({n, 2, 300}).to(dt);  // [B, T, in]
        const auto ys = onebit::packed::forward_group(raw(layers), x);
        REQUIRE(ys.has_value());
        REQUIRE(ys->size() == 3);
        for (size_t i = 0; i < 3; ++i) {
          CHECK((*ys)[i].sizes() == torch::IntArrayRef({n, 2, layers[i]->options.out_features()}));
          CHECK(torch::equal((*ys)[i], layers[i]->forward(x)));  // same fold, kernel and epilogue per row
        }
      }
    }
  }
  // Layers that cannot share a call: the caller runs them one by one.
  auto other = PackedOneBitLinearImpl::from(*random_layer(200, 16, false, true, 9));
  CHECK_FALSE(onebit::packed::forward_group({layers[0].get(), other.get()}, torch::randn({1, 300})).has_value());
  auto no_ln = PackedOneBitLinearImpl::from(*random_layer(300, 16, false, false, 9));
  CHECK_FALSE(onebit::packed::forward_group({layers[0].get(), no_ln.get()}, torch::randn({1, 300})).has_value());
  CHECK_THROWS_WITH(onebit::packed::forward_group(raw(layers), torch::randn({1, 299})),
                    Catch::Matchers::Contains("in_features=300"));
}

namespace {
// Round to bf16, nearest even (finite values), as __floats2bfloat162_rn does.
uint32_t bf16_bits(float f) {
  uint32_t u = 0;
  std::memcpy(&u, &f, 4);
  return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}
float bf16_value(uint32_t bits16) {
  const uint32_t u = bits16 << 16;
  float f = 0;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace

TEST_CASE("the mma kernel's k map: expanded signs and staged x ⊙ g give the signed sums", "[kernels]") {
  // A CPU emulation of one chunk (512 inputs) of kernels/cuda/packed_gemv_mma.cu for one m-tile of
  // 16 rows, with the k map it shares (kernels/cuda/packed_gemv_mma_map.h): the staging threads
  // write B (hi and lo bf16 of class_mult·x·g) where the map says, each lane builds its A
  // registers from its own sign words (shift by 4j, one sign_pair per register) and reads its B
  // registers, the mma is summed per the PTX fragment layout of m16n8k16, and hi + lo columns
  // plus T must give Σ_k sign·x·g. Both staging shapes (one warp and one token; 128 threads and
  // up to 8 tokens), every token count's column layout.
  namespace mm = onebit::kernels::cuda::mma_map;
  std::mt19937 rng(17);
  std::normal_distribution<float> normal;
  for (int NT : {1, 2, 3, 4, 5, 7, 8}) {
    const int P = NT == 1 ? 32 : 128, GU = NT == 1 ? 2 : 8, CG = NT <= 4 ? 1 : 2;
    CAPTURE(NT, P);
    for (int p = 0; p < P; ++p) REQUIRE(mm::token_first(p, P) == mm::token_first(p & ~31, P));  // per warp
    std::vector<uint32_t> words(16 * 16);  // row r, block tig, word q: 16 · r + 4 · tig + q
    for (auto& w : words) w = rng();
    std::vector<float> x(size_t(NT) * mm::kChunk), g(mm::kChunk);
    for (auto& v : x) v = normal(rng);
    for (auto& v : g) v = normal(rng) * 0.5f + 1.f;
    auto sign = [&](int r, int k) { return (words[16 * r + k / 32] >> (k % 32)) & 1u ? -1.0 : 1.0; };

    // Staging.
    std::vector<uint32_t> sb(size_t(mm::kSteps) * mm::b_row_units(GU) * CG * 2, 0u);
    std::vector<int> written(sb.size(), 0);
    std::vector<double> T(NT, 0.0);
    for (int p = 0; p < P; ++p)
      for (int it = 0; it < mm::groups_per_thread(P); ++it) {
        const mm::Group m = mm::stage_group(mm::group_of(p, it, P));
        for (int t = mm::token_first(p, P); t < NT; t += mm::token_step(P)) {
          uint32_t hi[4], lo[4];
          for (int c = 0; c < 4; ++c) {
            const int ci = mm::class_of(c);
            float v[2], h[2];
            for (int e = 0; e < 2; ++e) {
              const int k = m.koff + c + 16 * e;
              v[e] = x[size_t(t) * mm::kChunk + k] * (g[k] * mm::class_mult(ci));
              h[e] = bf16_value(bf16_bits(v[e]));
            }
            hi[c] = bf16_bits(v[0]) | (bf16_bits(v[1]) << 16);
            lo[c] = bf16_bits(v[0] - h[0]) | (bf16_bits(v[1] - h[1]) << 16);
            T[t] += double(v[0] + v[1]) * mm::class_t_factor(ci);
          }
          for (int hh = 0; hh < 2; ++hh)
            for (int part = 0; part < 2; ++part)
              for (int r = 0; r < 2; ++r) {
                const int unit = mm::b_unit(GU, m.s0 + hh, 2 * (t % 4) + part, m.tig);
                const size_t word = size_t(unit * CG + t / 4) * 2 + r;
                REQUIRE(word < sb.size());
                sb[word] = (part ? lo : hi)[3 - 2 * hh - r];  // k-step s0: c = 3, 2; s0 + 1: c = 1, 0
                ++written[word];
              }
        }
      }
    for (size_t w = 0; w < sb.size(); ++w) {  // every word of a used column once, no other
      const size_t unit = w / 2 / CG, cg = w / 2 % CG;
      const size_t in_row = unit % mm::b_row_units(GU), g_col = in_row / 4;
      const bool used = in_row < size_t(4 * GU) && 4 * cg + g_col / 2 < size_t(NT);
      CAPTURE(w);
      CHECK(written[w] == (used ? 1 : 0));
    }

    // The mma: A (16 × 16) and B (16 × 8 per column group) of each k-step from the 32 lanes.
    std::vector<double> D(size_t(16) * 8 * CG, 0.0);
    for (int s = 0; s < mm::kSteps; ++s) {
      const int q = s / 8, j = (s / 2) % 4, hh = s % 2;
      double A[16][16] = {}, B[2][16][8] = {};
      for (int lane = 0; lane < 32; ++lane) {
        const int gq = lane / 4, tig = lane % 4;
        const uint32_t sh0 = words[16 * gq + 4 * tig + q] << (4 * j);
        const uint32_t sh8 = words[16 * (gq + 8) + 4 * tig + q] << (4 * j);
        const uint32_t a[4] = {mm::sign_pair(sh0, 2 * hh), mm::sign_pair(sh8, 2 * hh), mm::sign_pair(sh0, 2 * hh + 1),
                               mm::sign_pair(sh8, 2 * hh + 1)};
        for (int i = 0; i < 4; ++i)
          for (int e = 0; e < 2; ++e) {
            const int row = gq + 8 * (i % 2), k = 2 * tig + e + 8 * (i / 2);
            A[row][k] = bf16_value((a[i] >> (16 * e)) & 0xFFFFu);
          }
        const int unit = mm::b_unit(GU, s, gq % GU, tig);
        for (int cg = 0; cg < CG; ++cg)
          for (int r = 0; r < 2; ++r)
            for (int e = 0; e < 2; ++e)
              B[cg][2 * tig + e + 8 * r][gq] = bf16_value((sb[size_t(unit * CG + cg) * 2 + r] >> (16 * e)) & 0xFFFFu);
      }
      for (int cg = 0; cg < CG; ++cg)
        for (int row = 0; row < 16; ++row)
          for (int col = 0; col < 8; ++col)
            for (int k = 0; k < 16; ++k) D[(size_t(cg) * 16 + row) * 8 + col] += A[row][k] * B[cg][k][col];
    }
    for (int t = 0; t < NT; ++t)
      for (int row = 0; row < 16; ++row) {
        double ref = 0, mag = 0;
        for (int k = 0; k < mm::kChunk; ++k) {
          ref += sign(row, k) * double(x[size_t(t) * mm::kChunk + k]) * double(g[k]);
          mag += std::abs(double(x[size_t(t) * mm::kChunk + k]) * double(g[k]));
        }
        const size_t d = (size_t(t / 4) * 16 + row) * 8 + 2 * (t % 4);
        const double got = D[d] + D[d + 1] + T[t];
        CAPTURE(t, row, ref, got);
        CHECK(std::abs(got - ref) < 1e-5 * mag);  // hi + lo keep 16 bits of each product
      }
  }
}

TEST_CASE("ONEBIT_CUDA_KERNEL names a CUDA kernel or fails clearly", "[kernels]") {
  using onebit::packed::parse_cuda_kernel;
  for (CudaKernel k : {CudaKernel::Auto, CudaKernel::Lanes, CudaKernel::Mma, CudaKernel::Unpacked})
    CHECK(parse_cuda_kernel(onebit::packed::to_string(k)) == k);
  CHECK_THROWS_WITH(parse_cuda_kernel("fast"),
                    OB_CONTAINS("unknown CUDA kernel 'fast' (expected auto, lanes, mma or unpacked)"));
  const char* before = std::getenv("ONEBIT_CUDA_KERNEL");
  const std::string saved = before ? before : "";
  ::setenv("ONEBIT_CUDA_KERNEL", "mma", 1);
  CHECK(onebit::packed::cuda_kernel_from_env() == CudaKernel::Mma);
  ::setenv("ONEBIT_CUDA_KERNEL", "Lanes", 1);
  CHECK_THROWS_WITH(onebit::packed::cuda_kernel_from_env(),
                    OB_CONTAINS("unknown ONEBIT_CUDA_KERNEL value 'Lanes' (expected auto, lanes, mma or unpacked)"));
  ::unsetenv("ONEBIT_CUDA_KERNEL");
  CHECK(onebit::packed::cuda_kernel_from_env() == CudaKernel::Auto);
  if (before) ::setenv("ONEBIT_CUDA_KERNEL", saved.c_str(), 1);
}

TEST_CASE("the unpacked path (CUDA's prefill) equals the dense layer", "[kernels]") {
  // Device-independent torch ops: what runs on a GPU above kMaxGemvRows tokens runs here too.
  using onebit::packed::packed_linear_unpacked;
  int combo = 0;
  for (auto [in, out] : Shapes{{1, 1}, {7, 3}, {129, 40}, {300, 67}, {1000, 300}})
    for (int64_t rows : {1, 40}) {
      const bool bias = combo % 2 == 0, post_ln = combo % 4 < 2 && out > 1;
      ++combo;
      auto layer = random_layer(in, out, bias, post_ln, uint64_t(in * 7 + rows));
      const auto x = torch::randn({rows, in});
      const auto ref = dense_reference(*layer, x);
      auto p = PackedOneBitLinearImpl::from(*layer);
      p->use_layout(onebit::kernels::SignLayout::Rows);
      CAPTURE(in, out, rows, bias, post_ln);
      CHECK(torch::equal(onebit::packed::unpack_rows(p->signs, in, torch::kFloat32),
                         torch::where(layer->weight >= 0, 1.0f, -1.0f)));
      const auto b = bias ? p->bias : torch::Tensor();
      const double eps = layer->options.ln_eps();
      CHECK(max_err(packed_linear_unpacked(x, p->signs, p->g, p->h, b, in, post_ln, eps), ref) < kPackedTol);
      const auto y16 = packed_linear_unpacked(x.to(torch::kBFloat16), p->signs, p->g, p->h, b, in, post_ln, eps);
      CHECK(y16.scalar_type() == torch::kBFloat16);
      CHECK(max_err(y16, ref) < kBf16Tol);
    }
  auto p = PackedOneBitLinearImpl::from(*random_layer(200, 3, false, false, 1));
  p->use_layout(onebit::kernels::SignLayout::Rows);
  CHECK_THROWS_WITH(onebit::packed::unpack_rows(p->signs.narrow(1, 0, 16), 200, torch::kFloat32),
                    OB_CONTAINS("signs must be uint8 runtime rows [out, 32]"));
}

namespace {
const std::vector<CudaKernel> kCudaKernels = {CudaKernel::Auto, CudaKernel::Lanes, CudaKernel::Mma,
                                              CudaKernel::Unpacked};
}  // namespace

TEST_CASE("CUDA forward_group (lanes, one pass for the layers) equals each layer's forward", "[kernels][cuda]") {
  OB_REQUIRE_OR_SKIP(torch::cuda::is_available(), "needs a CUDA GPU");
  auto layers = packed_group(4100, {1000, 250, 17});
  for (auto& l : layers) l->to(torch::kCUDA);
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    for (int64_t n : {int64_t(1), int64_t(9)}) {
      CAPTURE(dt, n);
      torch::manual_seed(8);
      const auto x = torch::randn({n, 4100}).to(torch::kCUDA, dt);
      const auto ys = onebit::packed::forward_group(raw(layers), x);
      REQUIRE(ys.has_value());
      for (size_t i = 0; i < 3; ++i) {
        // Split-K follows the group's width, so the sums may add in another order.
        const auto ref = dense_reference(*random_layer(4100, layers[i]->options.out_features(), i > 0, true, 40 + i),
                                         x.cpu().to(torch::kFloat32));
        CHECK(max_err((*ys)[i].cpu(), ref) < (dt == torch::kFloat32 ? kPackedTol : kBf16Tol));
        CHECK(max_err((*ys)[i].cpu(), layers[i]->forward(x).cpu()) < (dt == torch::kFloat32 ? 1e-5 : kBf16Tol));
      }
    }
  }
}

TEST_CASE("CUDA packed kernel equals the dense layer", "[kernels][cuda]") {
  OB_REQUIRE_OR_SKIP(torch::cuda::is_available(), "needs a CUDA GPU");
  // Beyond the common shapes: several blocks of rows (the mma kernel's 32 and 128), in a
  // multiple of 4 with a partial last chunk of 512 (vector loads, then checked ones), in whose
  // last block of signs is short of 512 (clamped loads), 8 + 1 tokens.
  check_against_dense(torch::Device(torch::kCUDA, 0), kCudaKernels, {{1000, 300}, {4100, 130}, {2048, 257}});
}

#ifdef ONEBIT_WITH_CUDA
TEST_CASE("CUDA packed kernels with a forced split-K factor equal the dense layer", "[kernels][cuda]") {
  // forward() chooses the split-K factor from the device's multiprocessors; here the kernels
  // (kernels/cuda/packed_gemv.h) run with 1 (one launch for the mma kernel without post-LN,
  // a group of warps on 2 or more chunks), 2, 3 and 7 splits, post-LN on and off, fp32 and bf16.
  namespace kc = onebit::kernels::cuda;
  const torch::Device dev(torch::kCUDA, 0);
  OB_REQUIRE_OR_SKIP(torch::cuda::is_available(), "needs a CUDA GPU");
  int combo = 0;
  for (auto [in, out] : Shapes{{11008, 67}, {4100, 300}, {129, 33}})
    for (int64_t rows : {1, 2, 8, 9})
      for (bool post_ln : {false, true}) {
        const bool bias = combo++ % 2 == 0;
        auto layer = random_layer(in, out, bias, post_ln, uint64_t(in + rows));
        const auto x = torch::randn({rows, in});
        const auto ref = dense_reference(*layer, x);
        layer->to(dev);
        auto p = PackedOneBitLinearImpl::from(*layer);
        for (auto act : {torch::kFloat32, torch::kBFloat16}) {
          const auto xd = x.to(dev, act).contiguous();
          for (kc::GemvKernel k : {kc::GemvKernel::Lanes, kc::GemvKernel::Mma})
            for (int splits : {1, 2, 3, 7}) {
              CAPTURE(in, out, rows, post_ln, bias, act, kc::to_string(k), splits);
              const kc::GemvPlan plan = kc::plan_gemv(k, rows, in, out, post_ln, kc::multiprocessors(0), splits);
              const auto ws = torch::empty({std::max<int64_t>(plan.workspace_floats, 1)},
                                           torch::TensorOptions().device(dev).dtype(torch::kFloat32));
              auto y = torch::full({rows, out}, std::nanf(""), xd.options());
              kc::GemvArgs a;
              a.x = xd.data_ptr();
              a.act = act == torch::kBFloat16 ? kc::Act::BF16 : kc::Act::F32;
              a.g = p->g.data_ptr<float>();
              a.signs = p->signs.data_ptr<uint8_t>();
              a.row_bytes = p->signs.size(1);
              a.h = p->h.data_ptr<float>();
              a.bias = bias ? p->bias.data_ptr<float>() : nullptr;
              a.post_layernorm = post_ln;
              a.ln_eps = float(layer->options.ln_eps());
              a.y = y.data_ptr();
              a.workspace = plan.workspace_floats > 0 ? ws.data_ptr<float>() : nullptr;
              a.n = rows, a.in = in, a.out = out;
              const char* err = kc::packed_gemv(a, plan, c10::cuda::getCurrentCUDAStream(0).stream());
              REQUIRE(err == nullptr);
              CHECK(max_err(y.cpu(), ref) < (act == torch::kBFloat16 ? kBf16Tol : kPackedTol));
            }
        }
      }
}
#endif

TEST_CASE("CUDA packed kernels take bf16 and fp16 activations and propagate NaN and inf", "[kernels][cuda]") {
  OB_REQUIRE_OR_SKIP(torch::cuda::is_available(), "needs a CUDA GPU");
  const torch::Device dev(torch::kCUDA, 0);
  auto layer = random_layer(1000, 300, true, true, 4);
  auto x = torch::randn({3, 1000});
  const auto ref = dense_reference(*layer, x);
  layer->to(dev);
  auto packed = PackedOneBitLinearImpl::from(*layer);
  for (CudaKernel k : kCudaKernels)
    for (auto act : {torch::kBFloat16, torch::kHalf}) {
      CAPTURE(onebit::packed::to_string(k), act);
      const auto y = packed->forward(x.to(act).to(dev), k);
      CHECK(y.scalar_type() == act);
      CHECK(max_err(y.cpu(), ref) < kBf16Tol);
    }
  auto plain = PackedOneBitLinearImpl::from(*random_layer(300, 40, true, false, 12));
  plain->to(dev);
  for (float bad : {std::nanf(""), INFINITY})
    for (int64_t rows : {2, 9}) {  // 9: a second pass of one token
      auto xb = torch::randn({rows, 300});
      xb[0][137] = bad;
      xb[rows - 1][3] = bad;
      for (CudaKernel k : kCudaKernels) {
        CAPTURE(bad, rows, onebit::packed::to_string(k));
        const auto y = plain->forward(xb.to(dev), k).cpu();
        CHECK(torch::isfinite(y[0]).sum().item<int64_t>() == 0);
        CHECK(torch::isfinite(y[rows - 1]).sum().item<int64_t>() == 0);
        CHECK(torch::isfinite(y.slice(0, 1, rows - 1)).all().item<bool>());
      }
    }
}

TEST_CASE("CUDA Auto takes the unpacked path past kMaxGemvRows tokens", "[kernels][cuda]") {
  OB_REQUIRE_OR_SKIP(torch::cuda::is_available(), "needs a CUDA GPU");
  const torch::Device dev(torch::kCUDA, 0);
  auto layer = random_layer(1000, 300, true, true, 5);
  layer->to(dev);
  auto packed = PackedOneBitLinearImpl::from(*layer);
  layer->to(torch::kCPU);
  for (int64_t rows : {onebit::packed::kMaxGemvRows, onebit::packed::kMaxGemvRows + 1, int64_t(200)}) {
    const auto x = torch::randn({rows, 1000});
    CAPTURE(rows);
    CHECK(max_err(packed->forward(x.to(dev)).cpu(), dense_reference(*layer, x)) < kPackedTol);
  }
}

#ifdef ONEBIT_WITH_CUDA  // kernels/cuda/launch.h
TEST_CASE("ONEBIT_CUDA_PDL is 0 or 1", "[kernels]") {
  namespace kc = onebit::kernels::cuda;
  CHECK(kc::programmatic_launch_env(nullptr));
  CHECK(kc::programmatic_launch_env("1"));
  CHECK_FALSE(kc::programmatic_launch_env("0"));
  CHECK_THROWS_WITH(kc::programmatic_launch_env("yes"), OB_CONTAINS("ONEBIT_CUDA_PDL must be 0 or 1, got 'yes'"));
}

TEST_CASE("CUDA programmatic dependent launch changes no result", "[kernels][cuda]") {
  OB_REQUIRE_OR_SKIP(torch::cuda::is_available(), "needs a CUDA GPU");
  const torch::Device dev(torch::kCUDA, 0);
  auto layer = random_layer(1000, 300, true, true, 7);
  layer->to(dev);
  auto packed = PackedOneBitLinearImpl::from(*layer);
  const auto x = torch::randn({3, 1000}, dev).to(torch::kBFloat16);
  torch::Tensor y[2];
  for (bool on : {false, true}) {
    onebit::kernels::cuda::set_programmatic_launch(on);
    // Kernels back to back in one stream: each must still see the one before it.
    for (const char* name : {"lanes", "mma"}) {
      CAPTURE(on, name);
      const auto kernel = onebit::packed::parse_cuda_kernel(name, "kernel");
      auto h = packed->forward(x, kernel);
      for (int i = 0; i < 20; ++i) h = packed->forward(torch::cat({h, h, h, h}, 1).narrow(1, 0, 1000), kernel);
      y[on] = y[on].defined() ? torch::cat({y[on], h}) : h;
    }
  }
  onebit::kernels::cuda::set_programmatic_launch(true);
  CHECK(torch::equal(y[0], y[1]));
}
#endif

TEST_CASE("ONEBIT_CUDA_KERNEL picks the kernel of a CUDA forward", "[kernels][cuda]") {
  OB_REQUIRE_OR_SKIP(torch::cuda::is_available(), "needs a CUDA GPU");
  const torch::Device dev(torch::kCUDA, 0);
  auto layer = random_layer(700, 50, true, true, 6);
  const auto x = torch::randn({2, 700});
  const auto ref = dense_reference(*layer, x);
  layer->to(dev);
  auto packed = PackedOneBitLinearImpl::from(*layer);
  const char* before = std::getenv("ONEBIT_CUDA_KERNEL");
  const std::string saved = before ? before : "";
  for (const char* name : {"auto", "lanes", "mma", "unpacked"}) {
    CAPTURE(name);
    ::setenv("ONEBIT_CUDA_KERNEL", name, 1);
    CHECK(max_err(packed->forward(x.to(dev)).cpu(), ref) < kPackedTol);
  }
  ::setenv("ONEBIT_CUDA_KERNEL", "fastest", 1);
  CHECK_THROWS_WITH(packed->forward(x.to(dev)), OB_CONTAINS("unknown ONEBIT_CUDA_KERNEL value 'fastest'"));
  if (before) {
    ::setenv("ONEBIT_CUDA_KERNEL", saved.c_str(), 1);
  } else {
    ::unsetenv("ONEBIT_CUDA_KERNEL");
  }
  CHECK_THROWS_WITH(packed->forward(x, CudaKernel::Mma), OB_CONTAINS("input on cpu"));
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
  // Tensors that do not fit the layer are refused by the operator itself (Python may pass any).
  {
    const int64_t lay = packed->layout() == onebit::kernels::SignLayout::Tiles ? 1 : 0;
    const auto x = torch::zeros({2, 16});
    auto call = [&](const torch::Tensor& xx, const torch::Tensor& s, const torch::Tensor& g, const torch::Tensor& h,
                    const std::optional<torch::Tensor>& b) { return op.call(xx, s, g, h, b, 16, true, 1e-5, lay); };
    CHECK(call(x, packed->signs, packed->g, packed->h, std::nullopt).sizes() == torch::IntArrayRef{2, 4});
    CHECK_THROWS_WITH(call(torch::zeros({2, 15}), packed->signs, packed->g, packed->h, std::nullopt),
                      OB_CONTAINS("x must be a float [n, 16], got Float [2, 15]"));
    CHECK_THROWS_WITH(call(x, packed->signs.narrow(1, 0, 8), packed->g, packed->h, std::nullopt),
                      OB_CONTAINS("signs must be uint8 ["));
    CHECK_THROWS_WITH(call(x, packed->signs, torch::ones({15}), packed->h, std::nullopt),
                      OB_CONTAINS("g must be [16], got [15]"));
    CHECK_THROWS_WITH(call(x, packed->signs, torch::ones({16, 2}).select(1, 0), packed->h, std::nullopt),
                      OB_CONTAINS("must be contiguous"));
    CHECK_THROWS_WITH(call(x, packed->signs, packed->g, packed->h.to(torch::kDouble), std::nullopt),
                      OB_CONTAINS("g, h and bias must be float32, got Double"));
    CHECK_THROWS_WITH(call(x, packed->signs, packed->g, packed->h, torch::zeros({3})),
                      OB_CONTAINS("bias must be [4], got [3]"));
  }
  CHECK_THROWS_WITH(onebit::packed::packed_linear_cpu(torch::zeros({2, 16}), packed->signs, packed->g, packed->h, {},
                                                      16, true, 1e-5, onebit::kernels::SignLayout::Rows,
                                                      CpuKernel::Avx512Vnni),
                    OB_CONTAINS("the avx512vnni kernel cannot read signs in this layout"));
  // A dtype change leaves the packed buffers alone.
  odd->to(torch::kBFloat16);
  CHECK(odd->signs.scalar_type() == torch::kUInt8);
  CHECK(odd->h.scalar_type() == torch::kFloat32);
}
