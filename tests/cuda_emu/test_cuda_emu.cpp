// The CUDA kernels of kernels/cuda/ (fused decode ops, the lanes GEMV) run by the CPU emulator
// (tests/cuda_emu/emu_runtime.h) against independent references: the ATen op sequences they
// replace, a softmax and a ±1 matrix product in fp64, and the packed format as documented
// (kernels/packed_sign.h). Every barrier and shuffle runs as on a GPU; inputs and outputs sit
// just before an inaccessible page, so a kernel that reads or writes past one crashes the test.
// The [cuda] tests run the same kernels on a GPU; these run everywhere, in CI.
#include <sys/mman.h>
#include <unistd.h>

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "tests/cuda_emu/emu_runtime.h"
#include "tests/support.h"

namespace cuda_emu {
#include "kernels/cuda/fused_ops.h"
#include "kernels/cuda/packed_gemv.h"
}  // namespace cuda_emu

namespace kc = cuda_emu::onebit::kernels::cuda;
namespace emu = onebit::emu;

// Defined in selftest_emu.cpp (kernels written for the emulator's own checks).
namespace cuda_emu_selftest {
float block_sum_of(const std::vector<float>& v, int threads);  // one block, shared memory + shuffles
void diverging_barrier();                                      // __syncthreads in half of the threads
void too_many_threads();                                       // a block of 1025 threads
}  // namespace cuda_emu_selftest

namespace {

// `bytes` at the end of a mapping whose next page is inaccessible (16-byte aligned start).
class Guarded {
 public:
  explicit Guarded(size_t bytes) {
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    const size_t body = (bytes + 15) / 16 * 16;
    map_bytes_ = (body + page - 1) / page * page + page;
    base_ = static_cast<char*>(mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    REQUIRE(base_ != MAP_FAILED);
    REQUIRE(mprotect(base_ + map_bytes_ - page, page, PROT_NONE) == 0);
    data_ = base_ + map_bytes_ - page - body;
  }
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
  ~Guarded() { munmap(base_, map_bytes_); }
  void* data() const { return data_; }

 private:
  char* base_ = nullptr;
  char* data_ = nullptr;
  size_t map_bytes_ = 0;
};

// A contiguous CPU tensor copied into a guarded buffer; `tensor()` views it.
struct Buf {
  explicit Buf(const torch::Tensor& t) : mem(size_t(t.numel()) * t.element_size()), sizes(t.sizes().vec()),
                                         dtype(t.scalar_type()) {
    const auto c = t.contiguous();
    std::memcpy(mem.data(), c.data_ptr(), size_t(c.numel()) * c.element_size());
  }
  Buf(std::vector<int64_t> s, torch::ScalarType dt) : mem(size_t(numel(s)) * torch::elementSize(dt)), sizes(s), dtype(dt) {
    std::memset(mem.data(), 0xFF, size_t(numel(s)) * torch::elementSize(dt));  // NaN until written
  }
  static int64_t numel(const std::vector<int64_t>& s) {
    int64_t n = 1;
    for (auto v : s) n *= v;
    return n;
  }
  torch::Tensor tensor() const { return torch::from_blob(mem.data(), sizes, torch::dtype(dtype)); }
  void* ptr() const { return mem.data(); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(mem.data());
  }
  Guarded mem;
  std::vector<int64_t> sizes;
  torch::ScalarType dtype;
};

kc::Act act_of(torch::ScalarType dt) {
  if (dt == torch::kBFloat16) return kc::Act::BF16;
  if (dt == torch::kHalf) return kc::Act::F16;
  return kc::Act::F32;
}
// One unit in the last place of dt at |ref| (fp64 tensor).
torch::Tensor ulp(const torch::Tensor& ref, torch::ScalarType dt) {
  const int mant = dt == torch::kFloat32 ? 23 : dt == torch::kBFloat16 ? 7 : 10;
  const auto e = torch::floor(torch::log2(ref.abs().clamp_min(1e-30)));
  return torch::pow(2.0, e - mant);
}
void expect_ok(const char* err) {
  INFO((err ? err : ""));
  REQUIRE(err == nullptr);
}

}  // namespace

TEST_CASE("cuda_emu: barriers, shuffles and launch limits behave as on a GPU", "[cuda-emu]") {
  std::vector<float> v(256);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i % 7) - 2.5f;
  double want = 0;
  for (float x : v) want += x;
  CHECK(cuda_emu_selftest::block_sum_of(v, 256) == Approx(want));
  CHECK(cuda_emu_selftest::block_sum_of(std::vector<float>(v.begin(), v.begin() + 96), 96) ==
        Approx(std::accumulate(v.begin(), v.begin() + 96, 0.0)));
  CHECK_THROWS_WITH(cuda_emu_selftest::diverging_barrier(), OB_CONTAINS("deadlock"));
  cuda_emu_selftest::too_many_threads();
  CHECK(emu::get_last_error() == cudaErrorInvalidConfiguration);
  CHECK(emu::get_last_error() == cudaSuccess);  // read once, as cudaGetLastError
}

TEST_CASE("cuda_emu: rms_norm and add_rms_norm kernels round as the op sequence does", "[cuda-emu]") {
  torch::manual_seed(3);
  for (auto dt : {torch::kFloat32, torch::kBFloat16, torch::kHalf}) {
    for (int64_t dim : {int64_t(5), int64_t(77), int64_t(1024), int64_t(1500)}) {
      for (bool residual : {false, true}) {
        INFO("dtype " << dt << ", dim " << dim << ", residual " << residual);
        const int64_t rows = 3;
        // x rows strided (dim + 3 apart), as a narrow of a wider tensor.
        Buf xw((torch::randn({rows, dim + 3}) * torch::rand({rows, 1}) * 3).to(dt));
        Buf r(torch::randn({rows, dim}).to(dt));
        Buf w((torch::rand({dim}) + 0.5).to(dt));
        Buf y({rows, dim}, dt), h({rows, dim}, dt);
        kc::RmsNormArgs a;
        a.x = xw.ptr();
        a.x_row_stride = dim + 3;
        if (residual) {
          a.r = r.ptr();
          a.r_row_stride = dim;
          a.h = h.ptr();
        }
        a.w = w.ptr();
        a.y = y.ptr();
        a.rows = rows, a.dim = dim, a.eps = 1e-5f, a.act = act_of(dt);
        expect_ok(kc::rms_norm(a, nullptr));
        auto x = xw.tensor().narrow(1, 0, dim);
        if (residual) {
          x = x + r.tensor();
          CHECK(torch::equal(h.tensor(), x));  // h = T(x + r), ATen's add
        }
        // transformers' LlamaRMSNorm: fp32 statistics, cast back, then the weight.
        const auto hf = x.to(torch::kFloat32);
        const auto ref = w.tensor() * (hf * torch::rsqrt(hf.pow(2).mean(-1, true) + 1e-5)).to(dt);
        const auto diff = (y.tensor().to(torch::kFloat64) - ref.to(torch::kFloat64)).abs();
        // The mean's summation order may move an fp32 ulp, which can change one rounding to dt.
        CHECK((diff <= ulp(ref.to(torch::kFloat64), dt) * 2.01 + (dt == torch::kFloat32 ? 1e-6 : 0.0)).all().item<bool>());
      }
    }
  }
}

TEST_CASE("cuda_emu: silu_mul and rotary kernels equal the op sequences", "[cuda-emu]") {
  torch::manual_seed(4);
  for (auto dt : {torch::kFloat32, torch::kBFloat16, torch::kHalf}) {
    INFO("dtype " << dt);
    {  // silu(g) · u, g and u rows of a wider tensor
      const int64_t rows = 4, dim = 300;
      Buf gw((torch::randn({rows, 2 * dim}) * 3).to(dt));
      Buf u(torch::randn({rows, dim}).to(dt));
      Buf y({rows, dim}, dt);
      kc::SiluMulArgs a;
      a.g = gw.ptr();
      a.g_row_stride = 2 * dim;
      a.u = u.ptr();
      a.u_row_stride = dim;
      a.y = y.ptr();
      a.rows = rows, a.dim = dim, a.act = act_of(dt);
      expect_ok(kc::silu_mul(a, nullptr));
      const auto ref = torch::silu(gw.tensor().narrow(1, 0, dim)) * u.tensor();
      // ATen's silu computes in fp32 as x / (1 + exp(-x)); exp may differ in its last bit.
      const auto diff = (y.tensor().to(torch::kFloat64) - ref.to(torch::kFloat64)).abs();
      CHECK((diff <= ulp(ref.to(torch::kFloat64), dt) * 1.01 + 1e-7).all().item<bool>());
    }
    {  // RoPE of x [B, H, T, D] (transposed strides), into a cache at slots, with v copied too
      const int64_t B = 2, H = 3, T = 2, D = 12, cap = 6;
      Buf xs(torch::randn({B, T, H, D}).to(dt));  // stored [B, T, H, D]: x = xs.transpose(1, 2)
      Buf vs(torch::randn({B, T, H, D}).to(dt));
      const auto pos = torch::arange(T).to(torch::kFloat32).unsqueeze(-1) * torch::rand({D / 2});
      const auto emb = torch::cat({pos, pos}, -1);
      Buf cs(emb.cos().to(dt).view({1, 1, T, D}));
      Buf sn(emb.sin().to(dt).view({1, 1, T, D}));
      Buf slots(torch::tensor({4, 1}, torch::kLong));
      Buf ky(torch::zeros({B, H, cap, D}, dt)), vy(torch::zeros({B, H, cap, D}, dt));
      kc::RotaryArgs a;
      a.x = xs.ptr();
      a.B = B, a.H = H, a.T = T, a.D = D;
      a.sb = T * H * D, a.sh = D, a.st = H * D;
      a.cos = cs.ptr(), a.sin = sn.ptr(), a.cos_batch_stride = 0;
      a.y = ky.ptr();
      a.y_sb = H * cap * D, a.y_sh = cap * D, a.y_st = D;
      a.slots = slots.as<int64_t>();
      a.v = vs.ptr(), a.v_out = vy.ptr();
      // q (5 heads, stored [B, T, 5, D]) rotated in the same launch, into a contiguous [B, 5, T, D]
      Buf qs(torch::randn({B, T, 5, D}).to(dt));
      Buf qy({B, 5, T, D}, dt);
      a.x2 = qs.ptr(), a.H2 = 5, a.sb2 = T * 5 * D, a.sh2 = D, a.st2 = 5 * D, a.y2 = qy.ptr();
      a.act = act_of(dt);
      expect_ok(kc::rotary(a, nullptr));
      const auto q = qs.tensor().transpose(1, 2);
      const auto qrot = torch::cat({-q.narrow(-1, D / 2, D / 2), q.narrow(-1, 0, D / 2)}, -1);
      CHECK(torch::equal(qy.tensor(), q * cs.tensor() + qrot * sn.tensor()));
      const auto x = xs.tensor().transpose(1, 2);
      const auto rot = torch::cat({-x.narrow(-1, D / 2, D / 2), x.narrow(-1, 0, D / 2)}, -1);
      const auto ref = x * cs.tensor() + rot * sn.tensor();  // HF's apply_rotary_pos_emb, in dt
      for (int64_t t = 0; t < T; ++t) {
        const int64_t s = slots.as<int64_t>()[t];
        CHECK(torch::equal(ky.tensor().select(2, s), ref.select(2, t)));
        CHECK(torch::equal(vy.tensor().select(2, s), vs.tensor().transpose(1, 2).select(2, t)));
      }
      for (int64_t s : {0, 2, 3, 5}) CHECK(ky.tensor().select(2, s).eq(0).all().item<bool>());  // untouched
    }
  }
}

TEST_CASE("cuda_emu: decode attention kernel equals softmax(q·kᵀ)·v in fp64", "[cuda-emu]") {
  torch::manual_seed(5);
  struct Case {
    int64_t B, H, Hkv, T, S, D;
    bool mask, batch_mask;
    int splits = 0;  // 0: decode_attention_splits on 8 multiprocessors
  };
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    // Vector loads (D a multiple of 16 bytes' elements) and element loads (D = 10, 12), one to
    // eight key rows per warp at once, S below and above the block's 128 threads.
    for (const Case& c : {Case{1, 2, 2, 1, 1, 8, false, false}, Case{2, 4, 2, 1, 37, 64, true, true},
                          Case{1, 6, 2, 2, 130, 80, true, false}, Case{1, 2, 1, 1, 300, 128, false, false},
                          Case{1, 2, 2, 2, 45, 256, true, false}, Case{1, 3, 1, 1, 200, 10, false, false},
                          Case{2, 2, 1, 1, 17, 12, true, true},
                          // keys split over blocks and combined: chosen (3000 keys: 8), forced
                          // (300 keys in 7 parts; 10 keys in 16 parts, 6 of them empty), masked
                          Case{1, 2, 1, 1, 3000, 64, true, false}, Case{1, 4, 2, 1, 300, 128, true, true, 7},
                          Case{2, 2, 2, 1, 10, 8, false, false, 16}}) {
      INFO("dtype " << dt << ", B " << c.B << " H " << c.H << " Hkv " << c.Hkv << " T " << c.T << " S " << c.S
                    << " D " << c.D << " splits " << c.splits);
      const int64_t cap = c.S + 3;  // a static cache: keys in the first S slots of cap
      Buf q(torch::randn({c.B, c.T, c.H, c.D}).to(dt));  // [B, T, H, D]: q = .transpose(1, 2)
      Buf k(torch::randn({c.B, c.Hkv, cap, c.D}).to(dt));
      Buf v(torch::randn({c.B, c.Hkv, cap, c.D}).to(dt));
      auto m = torch::rand({c.batch_mask ? c.B : 1, c.T, c.S}) > 0.3;
      m.select(-1, 0).fill_(c.mask);  // some rows may mask every key but the first
      if (c.mask && m.size(0) * c.T > 1) m.select(0, 0).select(0, 0).fill_(false);  // one row masks all: zeros
      Buf mask(m);
      Buf y({c.B, c.T, c.H, c.D}, dt);
      kc::DecodeAttentionArgs a;
      a.q = q.ptr(), a.q_sb = c.T * c.H * c.D, a.q_sh = c.D, a.q_st = c.H * c.D;
      a.k = k.ptr(), a.k_sb = c.Hkv * cap * c.D, a.k_sh = cap * c.D, a.k_ss = c.D;
      a.v = v.ptr(), a.v_sb = c.Hkv * cap * c.D, a.v_sh = cap * c.D, a.v_ss = c.D;
      if (c.mask) {
        a.mask = mask.as<bool>();
        a.mask_batch_stride = c.batch_mask ? c.T * c.S : 0;
      }
      a.y = y.ptr();
      a.B = c.B, a.H = c.H, a.Hkv = c.Hkv, a.T = c.T, a.S = c.S, a.D = c.D;
      a.scale = float(1.0 / std::sqrt(double(c.D)));
      a.act = act_of(dt);
      a.splits = c.splits > 0 ? c.splits : kc::decode_attention_splits(c.B * c.H * c.T, c.S, 8);
      if (c.S == 3000) CHECK(a.splits == 8);  // two blocks per multiprocessor: 16 blocks for 2 rows
      Buf ws({std::max<int64_t>(1, kc::decode_attention_workspace_floats(a))}, torch::kFloat32);
      if (a.splits > 1) a.workspace = ws.as<float>();
      expect_ok(kc::decode_attention(a, nullptr));
      // fp64: heads h read key/value head h / (H / Hkv); a fully masked row gives zeros.
      const auto qd = q.tensor().transpose(1, 2).to(torch::kFloat64);
      const auto rep = c.H / c.Hkv;
      const auto kd = k.tensor().narrow(2, 0, c.S).repeat_interleave(rep, 1).to(torch::kFloat64);
      const auto vd = v.tensor().narrow(2, 0, c.S).repeat_interleave(rep, 1).to(torch::kFloat64);
      auto s = torch::matmul(qd, kd.transpose(-1, -2)) * double(a.scale);
      if (c.mask) s = s.masked_fill(~mask.tensor().unsqueeze(1), -INFINITY);
      auto p = torch::softmax(s, -1).nan_to_num(0.0);
      const auto ref = torch::matmul(p, vd).transpose(1, 2);  // [B, T, H, D]
      const double tol = dt == torch::kFloat32 ? 2e-5 : 2e-2;
      CHECK(ref.abs().sum().item<double>() > 0);
      CHECK(torch::allclose(y.tensor().to(torch::kFloat64), ref, tol, tol));
    }
  }
}

namespace {
// Runtime rows of signs S [out, in] (±1) as documented: bit 1 = −1, byte j = inputs 8j..8j+7
// least significant bit first, ⌈in/8⌉ bytes then zeros to 16·⌈in/128⌉ bytes per row.
torch::Tensor runtime_rows(const torch::Tensor& S) {
  const int64_t out = S.size(0), in = S.size(1), row = 16 * ((in + 127) / 128);
  auto b = torch::zeros({out, row}, torch::kUInt8);
  auto bp = b.accessor<uint8_t, 2>();
  auto sp = S.accessor<float, 2>();
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i)
      if (sp[o][i] < 0) bp[o][i / 8] |= uint8_t(1u << (i % 8));
  return b;
}
}  // namespace

namespace {
struct GemvLayer {
  int64_t out;
  bool bias;
};
// Runs the layers (one for mma, a group for lanes) on n random tokens and compares each layer's
// outputs with y_l = LN?(h_l ⊙ ((x ⊙ g_l) · S_lᵀ) + b_l) in fp64.
void check_gemv(kc::GemvKernel kernel, torch::ScalarType dt, int64_t in, const std::vector<GemvLayer>& layers,
                int64_t n, bool post_ln, int forced_splits) {
  const int L = int(layers.size());
  INFO("kernel " << kc::to_string(kernel) << ", dtype " << dt << ", in " << in << ", layers " << L << ", n " << n
                 << ", post_ln " << post_ln << ", splits " << forced_splits);
  const int64_t row = 16 * ((in + 127) / 128);
  std::vector<std::unique_ptr<Buf>> keep;
  auto hold = [&](const torch::Tensor& t) {
    keep.push_back(std::make_unique<Buf>(t));
    return keep.back().get();
  };
  std::vector<torch::Tensor> S, G, Hs, Bs;
  kc::GemvGroupArgs a;
  int64_t total = 0;
  for (int l = 0; l < L; ++l) {
    const int64_t out = layers[size_t(l)].out;
    S.push_back(torch::randint(0, 2, {out, in}).to(torch::kFloat32) * 2 - 1);
    G.push_back(torch::rand({in}) + 0.5);
    Hs.push_back(torch::rand({out}) + 0.5);
    Bs.push_back(layers[size_t(l)].bias ? torch::randn({out}) : torch::Tensor());
    a.layers[l].signs = hold(runtime_rows(S.back()))->ptr();
    a.layers[l].g = hold(G.back())->as<float>();
    a.layers[l].h = hold(Hs.back())->as<float>();
    if (Bs.back().defined()) a.layers[l].bias = hold(Bs.back())->as<float>();
    a.layers[l].out = out;
    total += out;
  }
  Buf x(torch::randn({n, in}).to(dt));
  Buf y({n, total}, dt);
  const char* err = nullptr;
  if (kernel == kc::GemvKernel::Lanes) {
    const int splits = forced_splits > 0 ? forced_splits : kc::choose_splits(in, total, 4);
    Buf ws({std::max<int64_t>(1, kc::workspace_floats(n, total, splits))}, torch::kFloat32);
    a.x = x.ptr(), a.act = act_of(dt), a.count = L, a.row_bytes = row;
    a.post_layernorm = post_ln, a.ln_eps = 1e-5f;
    a.y = y.ptr(), a.workspace = ws.as<float>(), a.n = n, a.in = in;
    err = kc::packed_gemv_group(a, splits, nullptr);
  } else {
    REQUIRE(L == 1);
    const kc::GemvPlan plan = kc::plan_gemv(kernel, n, in, total, post_ln, 4, forced_splits);
    Buf ws({std::max<int64_t>(1, plan.workspace_floats)}, torch::kFloat32);
    kc::GemvArgs g;
    g.x = x.ptr(), g.act = act_of(dt), g.g = a.layers[0].g, g.signs = a.layers[0].signs, g.row_bytes = row;
    g.h = a.layers[0].h, g.bias = a.layers[0].bias, g.post_layernorm = post_ln, g.ln_eps = 1e-5f;
    g.y = y.ptr(), g.workspace = plan.workspace_floats > 0 ? ws.as<float>() : nullptr;
    g.n = n, g.in = in, g.out = total;
    err = kc::packed_gemv(g, plan, nullptr);
  }
  expect_ok(err);
  const auto xd = x.tensor().to(torch::kFloat64);
  int64_t col = 0;
  for (int l = 0; l < L; ++l) {
    auto ref = torch::matmul(xd * G[size_t(l)].to(torch::kFloat64), S[size_t(l)].to(torch::kFloat64).t()) *
               Hs[size_t(l)].to(torch::kFloat64);
    if (Bs[size_t(l)].defined()) ref = ref + Bs[size_t(l)].to(torch::kFloat64);
    if (post_ln) ref = torch::layer_norm(ref, {ref.size(1)}, {}, {}, 1e-5);
    const auto got = y.tensor().narrow(1, col, ref.size(1)).to(torch::kFloat64);
    // fp32: summation order; bf16/fp16: the output's rounding (sums of in terms of O(1)).
    const double tol = dt == torch::kFloat32 ? 1e-4 : dt == torch::kBFloat16 ? 2e-2 : 4e-3;
    CHECK(torch::allclose(got, ref.to(dt).to(torch::kFloat64), tol, tol * (post_ln ? 1 : 1 + in / 100.0)));
    col += ref.size(1);
  }
}
}  // namespace

TEST_CASE("cuda_emu: lanes and mma GEMV kernels equal the ±1 product in fp64", "[cuda-emu]") {
  torch::manual_seed(6);
  emu::set_multiprocessors(4);
  struct Case {
    int64_t in;
    std::vector<GemvLayer> layers;
    std::vector<int64_t> ns;
    std::vector<int> splits;  // 0: the kernel's own choice
  };
  const std::vector<Case> cases = {
      {1, {{1, false}}, {1}, {0}},
      {7, {{17, true}}, {1, 3}, {0}},
      {100, {{33, true}, {1, false}, {20, true}}, {1, 9}, {0}},
      {1000, {{50, false}}, {1, 8}, {1, 2, 7}},
      {1025, {{16, true}, {30, false}}, {2}, {0, 3}},
      {4100, {{40, true}}, {1, 9}, {0, 2}},
  };
  for (auto dt : {torch::kFloat32, torch::kBFloat16, torch::kHalf})
    for (const Case& c : cases)
      for (bool post_ln : {false, true})
        for (int64_t n : c.ns)
          for (int splits : c.splits) {
            check_gemv(kc::GemvKernel::Lanes, dt, c.in, c.layers, n, post_ln, splits);
            if (c.layers.size() == 1) check_gemv(kc::GemvKernel::Mma, dt, c.in, c.layers, n, post_ln, splits);
          }
  // The launcher's own checks: signs not 16-byte aligned, rows too short, no splits.
  Buf x(torch::randn({1, 300})), y({1, 8}, torch::kFloat32), ws({64}, torch::kFloat32);
  Buf s(torch::zeros({8 * 48 + 8}, torch::kUInt8)), g(torch::ones({300})), h(torch::ones({8}));
  kc::GemvArgs a;
  a.x = x.ptr(), a.g = g.as<float>(), a.h = h.as<float>(), a.y = y.ptr(), a.workspace = ws.as<float>();
  a.n = 1, a.in = 300, a.out = 8, a.row_bytes = 48;
  a.signs = s.as<uint8_t>() + 8;
  CHECK(std::string(kc::packed_gemv(a, 1, nullptr)) == "packed_gemv: signs must be 16-byte aligned");
  a.signs = s.as<uint8_t>() + 16;
  a.row_bytes = 32;
  CHECK(std::string(kc::packed_gemv(a, 1, nullptr)) == "packed_gemv: row_bytes must be 16·⌈in/128⌉ (runtime rows)");
  a.row_bytes = 48;
  CHECK(std::string(kc::packed_gemv(a, 0, nullptr)) == "packed_gemv: splits must be in [1, 65535]");
  CHECK(kc::packed_gemv(a, 1, nullptr) == nullptr);
  emu::set_multiprocessors(8);
}
