#include "onebit/export/packed_linear.h"

#include <torch/library.h>
#include <torch/torch.h>

#include <ATen/Dispatch.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <optional>
#include <vector>

#include "kernels/packed_sign.h"
#include "onebit/core/error.h"

#ifdef ONEBIT_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/packed_gemv.h"
#endif

namespace onebit::packed {

namespace {
namespace k = onebit::kernels;
constexpr int64_t kUnpackRows = 256;  // ±1 rows unpacked at a time on the tiled (BLAS) path
constexpr int64_t kGrainRows = 32;  // output rows per parallel task at least
constexpr int64_t kGrainTiles = 8;  // VNNI kernel: tiles per task at least (128 rows, one pass of its tables)

const k::SignBlock* blocks(const torch::Tensor& signs) {
  return reinterpret_cast<const k::SignBlock*>(signs.data_ptr<uint8_t>());
}

CpuKernel resolve(CpuKernel kernel, int64_t n, SignLayout layout) {
  if (kernel != CpuKernel::Auto) return kernel;
  if (layout == SignLayout::Tiles)  // BLAS where the tiles' kernel cannot run (use_layout on another CPU)
    return k::cpu_supports(k::CpuIsa::Avx512Vnni) ? CpuKernel::Avx512Vnni : CpuKernel::Tiled;
  switch (k::best_cpu_isa()) {
    case k::CpuIsa::Avx512Vnni:
    case k::CpuIsa::Avx512: return CpuKernel::Avx512;
    case k::CpuIsa::Avx2: return CpuKernel::Avx2;
    case k::CpuIsa::Generic: break;
  }
  return n == 1 ? CpuKernel::Lut : n <= kMaxGenericRows ? CpuKernel::Generic : CpuKernel::Tiled;
}

// Runtime rows ⇄ runtime tiles of an [out, in] layer (CPU tensors).
torch::Tensor convert_layout(const torch::Tensor& signs, int64_t out, int64_t in, SignLayout to) {
  const int64_t nb = k::blocks_per_row(in), row_bytes = nb * int64_t(sizeof(k::SignBlock));
  const torch::Tensor src = signs.contiguous();
  if (to == SignLayout::Tiles) {
    torch::Tensor tiles = torch::empty({k::tiled_rows(out), row_bytes}, torch::kUInt8);
    k::rows_to_tiles(blocks(src), out, nb, tiles.data_ptr<uint8_t>());
    return tiles;
  }
  torch::Tensor rows = torch::empty({out, row_bytes}, torch::kUInt8);
  k::tiles_to_rows(src.data_ptr<uint8_t>(), out, nb, reinterpret_cast<k::SignBlock*>(rows.data_ptr<uint8_t>()));
  return rows;
}

// One layer of a call: its tensors (a call may hold several layers that read the same input).
struct LayerRef {
  const torch::Tensor& signs;
  const torch::Tensor& g;
  const torch::Tensor& h;
  const torch::Tensor& bias;  // undefined: none
};

// xg = x2 ⊙ g in fp32, rows padded with zeros to `padded` = padded_in(in) (xg: n rows of
// `padded` floats). Written as loops (not zeros + to + mul): at one token a layer call is
// microseconds, and each ATen operator (a tensor view too) costs about one.
void fold_g(const torch::Tensor& x2, const torch::Tensor& g, int64_t in, int64_t padded, float* xp) {
  const int64_t n = x2.size(0);
  const auto dt = x2.scalar_type();
  if (dt != torch::kFloat32 && dt != torch::kBFloat16 && dt != torch::kHalf) {
    torch::Tensor xg = torch::from_blob(xp, {n, padded}, torch::kFloat32);
    xg.zero_();
    torch::Tensor xv = xg.narrow(1, 0, in);
    torch::mul_out(xv, x2.to(torch::kFloat32), g);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dt, "packed_linear_fold", [&] {
    const float* gp = g.const_data_ptr<float>();
    const int64_t xs = x2.stride(0), xi = x2.stride(1);
    at::parallel_for(0, n, std::max<int64_t>(1, 32768 / padded), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const scalar_t* xr = x2.const_data_ptr<scalar_t>() + t * xs;
        float* dst = xp + t * padded;
        if (xi == 1) {
          for (int64_t i = 0; i < in; ++i) dst[i] = static_cast<float>(xr[i]) * gp[i];
        } else {
          for (int64_t i = 0; i < in; ++i) dst[i] = static_cast<float>(xr[i * xi]) * gp[i];
        }
        std::fill(dst + in, dst + padded, 0.f);
      }
    });
  });
}

// y_l [n, out_l] fp32 = h_l ⊙ (xg_l · S_lᵀ) (+ bias_l) for each layer l, y_l the columns
// [off_l, off_l + out_l) of y [n, Σ out]; xg [L, n, padded_in] fp32 with zero padding. The
// instruction-set kernels run all layers' rows in one parallel region (a fork-join per call,
// not per layer).
void cpu_product(const torch::Tensor& xg, const std::vector<LayerRef>& layers, int64_t in, SignLayout layout,
                 CpuKernel kernel, torch::Tensor& y) {
  OB_CHECK((kernel == CpuKernel::Tiled) || ((kernel == CpuKernel::Avx512Vnni) == (layout == SignLayout::Tiles)),
           "PackedOneBitLinear: the ", to_string(kernel), " kernel cannot read signs in this layout");
  const int64_t n = xg.size(1);
  std::vector<k::GemmArgs> args;
  std::vector<int64_t> outs;
  int64_t off = 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerRef& L = layers[l];
    k::GemmArgs a;
    a.xg = xg.data_ptr<float>() + int64_t(l) * xg.stride(0);
    a.n = n;
    a.xs = xg.stride(1);
    a.w = blocks(L.signs);
    a.blocks = k::blocks_per_row(in);
    a.h = L.h.data_ptr<float>();
    a.bias = L.bias.defined() ? L.bias.data_ptr<float>() : nullptr;
    a.y = y.data_ptr<float>() + off;
    a.ys = y.stride(0);
    args.push_back(a);
    outs.push_back(L.h.size(0));
    off += L.h.size(0);
  }
  if (kernel == CpuKernel::Tiled || kernel == CpuKernel::Lut) {
    for (size_t l = 0; l < layers.size(); ++l) {
      const k::GemmArgs& a = args[l];
      const int64_t out = outs[l];
      if (kernel == CpuKernel::Tiled) {
        torch::Tensor yt = torch::empty({out, n});  // yᵀ: tiles are contiguous row slices
        torch::Tensor tile = torch::empty({std::min(kUnpackRows, out), in});
        const torch::Tensor xgt = xg[int64_t(l)].narrow(1, 0, in).t();
        for (int64_t o = 0; o < out; o += kUnpackRows) {
          const int64_t rows = std::min(kUnpackRows, out - o);
          torch::Tensor tl = tile.narrow(0, 0, rows);
          if (layout == SignLayout::Tiles) {
            k::unpack_tile_rows(reinterpret_cast<const uint8_t*>(a.w), in, o, o + rows, tl.data_ptr<float>());
          } else {
            k::unpack_rows(a.w, in, o, o + rows, tl.data_ptr<float>());
          }
          torch::Tensor dst = yt.narrow(0, o, rows);
          torch::mm_out(dst, tl, xgt);
        }
        const LayerRef& L = layers[l];
        y.narrow(1, a.y - y.data_ptr<float>(), out)
            .copy_(L.bias.defined() ? torch::addcmul(L.bias, yt.t(), L.h) : yt.t() * L.h);
        continue;
      }
      std::vector<float> lut(size_t(k::lut_floats(a.blocks)));
      for (int64_t t = 0; t < n; ++t) {
        k::GemmArgs row = a;
        row.n = 1;
        row.xg = a.xg + t * a.xs;
        row.y = a.y + t * a.ys;
        k::build_lut(row.xg, a.blocks, lut.data());
        at::parallel_for(0, out, kGrainRows, [&](int64_t b, int64_t e) { k::gemv_lut_rows(lut.data(), row, b, e); });
      }
    }
    return;
  }
  // The row kernels take any row range; the VNNI kernel whole tiles of kTileRows rows.
  const bool tiles = kernel == CpuKernel::Avx512Vnni;
  k::GemmRowsFn fn = k::gemm_rows_ref;
  if (tiles) fn = k::gemm_rows_for(k::CpuIsa::Avx512Vnni);
  if (kernel == CpuKernel::Generic) fn = k::gemm_rows_for(k::CpuIsa::Generic);
  if (kernel == CpuKernel::Avx2) fn = k::gemm_rows_for(k::CpuIsa::Avx2);
  if (kernel == CpuKernel::Avx512) fn = k::gemm_rows_for(k::CpuIsa::Avx512);
  const int64_t unit = tiles ? k::kTileRows : 1;
  std::vector<int64_t> first{0};  // layer l's units are [first[l], first[l + 1])
  for (int64_t out : outs) first.push_back(first.back() + (tiles ? k::tiled_rows(out) / unit : out));
  at::parallel_for(0, first.back(), tiles ? kGrainTiles : kGrainRows, [&](int64_t b, int64_t e) {
    for (size_t l = 0; l < args.size(); ++l) {
      const int64_t lo = std::max(b, first[l]), hi = std::min(e, first[l + 1]);
      if (lo < hi) fn(args[l], (lo - first[l]) * unit, std::min(outs[l], (hi - first[l]) * unit));
    }
  });
}

// The layers' products on x2 [n, in], side by side in one [n, Σ out] tensor of x2's dtype.
torch::Tensor packed_group_cpu(const torch::Tensor& x2, const std::vector<LayerRef>& layers, int64_t in,
                               bool post_layernorm, double ln_eps, SignLayout layout, CpuKernel kernel) {
  const int64_t n = x2.size(0), L = int64_t(layers.size());
  int64_t total = 0;
  for (const auto& l : layers) total += l.h.size(0);
  const int64_t padded = k::padded_in(in);
  torch::Tensor xg = torch::empty({L, n, padded});  // g folded into x once per layer
  for (int64_t l = 0; l < L; ++l) fold_g(x2, layers[size_t(l)].g, in, padded, xg.data_ptr<float>() + l * n * padded);
  torch::Tensor y = torch::empty({n, total});
  cpu_product(xg, layers, in, layout, resolve(kernel, n, layout), y);
  if (post_layernorm) {
    int64_t off = 0;
    for (const auto& l : layers) {
      k::layernorm_rows(y.data_ptr<float>() + off, n, l.h.size(0), y.stride(0), ln_eps);
      off += l.h.size(0);
    }
  }
  const auto dt = x2.scalar_type();
  if (dt == torch::kFloat32) return y;
  if (dt != torch::kBFloat16 && dt != torch::kHalf) return y.to(dt);
  torch::Tensor yd = torch::empty({n, total}, x2.options());
  AT_DISPATCH_REDUCED_FLOATING_TYPES(dt, "packed_linear_cast", [&] {
    const float* src = y.const_data_ptr<float>();
    scalar_t* dst = yd.data_ptr<scalar_t>();
    at::parallel_for(0, n * total, 32768, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) dst[i] = static_cast<scalar_t>(src[i]);
    });
  });
  return yd;
}
}  // namespace

torch::Tensor packed_linear_cpu(const torch::Tensor& x2, const torch::Tensor& signs, const torch::Tensor& g,
                                const torch::Tensor& h, const torch::Tensor& bias, int64_t in, bool post_layernorm,
                                double ln_eps, SignLayout layout, CpuKernel kernel) {
  return packed_group_cpu(x2, {LayerRef{signs, g, h, bias}}, in, post_layernorm, ln_eps, layout, kernel);
}

const char* to_string(CudaKernel kernel) {
  switch (kernel) {
    case CudaKernel::Auto: return "auto";
    case CudaKernel::Lanes: return "lanes";
    case CudaKernel::Mma: return "mma";
    case CudaKernel::Unpacked: return "unpacked";
  }
  return "?";
}

CudaKernel parse_cuda_kernel(const std::string& s, const std::string& what) {
  for (CudaKernel k : {CudaKernel::Auto, CudaKernel::Lanes, CudaKernel::Mma, CudaKernel::Unpacked})
    if (s == to_string(k)) return k;
  fail("unknown ", what, " '", s, "' (expected auto, lanes, mma or unpacked)");
}

torch::Tensor unpack_rows(const torch::Tensor& signs, int64_t in, torch::ScalarType dtype) {
  OB_CHECK(signs.dim() == 2 && signs.scalar_type() == torch::kUInt8 && signs.size(1) == k::blocks_per_row(in) * 16,
           "unpack_rows: signs must be uint8 runtime rows [out, ", k::blocks_per_row(in) * 16, "], got ",
           signs.scalar_type(), " ", signs.sizes());
  const int64_t out = signs.size(0), bytes = k::file_row_bytes(in);
  const auto shifts = torch::arange(8, signs.options());
  // Byte j holds inputs 8j..8j+7, least significant bit first; bit 1 = −1.
  const auto bits = signs.narrow(1, 0, bytes).unsqueeze(2).bitwise_right_shift(shifts).bitwise_and_(1);
  return bits.view({out, bytes * 8}).narrow(1, 0, in).to(dtype).mul_(-2).add_(1);
}

torch::Tensor packed_linear_unpacked(const torch::Tensor& x2, const torch::Tensor& signs, const torch::Tensor& g,
                                     const torch::Tensor& h, const torch::Tensor& bias, int64_t in,
                                     bool post_layernorm, double ln_eps) {
  const auto xt = x2.scalar_type();
  const auto dt = xt == torch::kBFloat16 || xt == torch::kHalf ? xt : torch::kFloat32;
  const auto x = x2.to(dt);
  const auto u = torch::mm(x * g.to(dt), unpack_rows(signs, in, dt).t()).to(torch::kFloat32);
  auto y = bias.defined() ? torch::addcmul(bias, u, h) : u * h;
  if (post_layernorm) y = torch::layer_norm(y, {h.size(0)}, {}, {}, ln_eps);
  return y.to(xt);
}

CudaKernel cuda_kernel_from_env() {
  const char* env = std::getenv("ONEBIT_CUDA_KERNEL");
  return env ? parse_cuda_kernel(env, "ONEBIT_CUDA_KERNEL value") : CudaKernel::Auto;
}

#ifdef ONEBIT_WITH_CUDA
namespace {
kernels::cuda::GemvKernel gemv_kernel(CudaKernel kernel) {
  switch (kernel) {
    case CudaKernel::Lanes: return kernels::cuda::GemvKernel::Lanes;
    case CudaKernel::Mma: return kernels::cuda::GemvKernel::Mma;
    case CudaKernel::Auto:
    case CudaKernel::Unpacked: break;
  }
  return kernels::cuda::GemvKernel::Auto;
}

// The kernels' input: x2 contiguous, in fp32 unless bf16 or fp16; returns its dtype.
kernels::cuda::Act kernel_input(const torch::Tensor& x2, torch::Tensor& x) {
  x = x2.contiguous();
  if (x.scalar_type() == torch::kBFloat16) return kernels::cuda::Act::BF16;
  if (x.scalar_type() == torch::kHalf) return kernels::cuda::Act::F16;
  if (x.scalar_type() != torch::kFloat32) x = x.to(torch::kFloat32);
  return kernels::cuda::Act::F32;
}

// The group on CUDA, one lanes pass for all layers: y [n, Σ out] in x2's dtype (bf16, fp16, fp32).
torch::Tensor packed_group_cuda(const torch::Tensor& x2, const std::vector<LayerRef>& layers, int64_t in,
                                bool post_layernorm, double ln_eps) {
  namespace kc = kernels::cuda;
  const c10::cuda::CUDAGuard guard(x2.device());
  const int64_t n = x2.size(0);
  torch::Tensor x;
  const kernels::cuda::Act act = kernel_input(x2, x);
  kc::GemvGroupArgs a;
  int64_t total = 0;
  for (const auto& l : layers) {
    a.layers[a.count++] = kc::GemvGroupLayer{l.g.data_ptr<float>(), l.signs.data_ptr<uint8_t>(), l.h.data_ptr<float>(),
                                             l.bias.defined() ? l.bias.data_ptr<float>() : nullptr, l.h.size(0)};
    total += l.h.size(0);
  }
  const int splits = kc::choose_splits(in, total, kc::multiprocessors(x2.device().index()));
  torch::Tensor y = torch::empty({n, total}, x.options());
  torch::Tensor ws = torch::empty({kc::workspace_floats(n, total, splits)}, x.options().dtype(torch::kFloat32));
  a.x = x.data_ptr();
  a.act = act;
  a.row_bytes = layers[0].signs.size(1);
  a.post_layernorm = post_layernorm;
  a.ln_eps = float(ln_eps);
  a.y = y.data_ptr();
  a.workspace = ws.data_ptr<float>();
  a.n = n, a.in = in;
  const char* err = kc::packed_gemv_group(a, splits, c10::cuda::getCurrentCUDAStream(x2.device().index()).stream());
  OB_CHECK(err == nullptr, "PackedOneBitLinear: CUDA kernel (lanes", layers.size() > 1 ? ", a group" : "",
           ") failed: ", err ? err : "", err ? kc::programmatic_launch_note() : "");
  return x2.scalar_type() == x.scalar_type() ? y : y.to(x2.scalar_type());
}
}  // namespace

// kernel Auto: ONEBIT_CUDA_KERNEL, else the kernels' default.
torch::Tensor packed_linear_cuda(const torch::Tensor& x2, const torch::Tensor& signs, const torch::Tensor& g,
                                 const torch::Tensor& h, const torch::Tensor& bias, int64_t in, bool post_layernorm,
                                 double ln_eps, CudaKernel kernel) {
  namespace kc = kernels::cuda;
  if (kernel == CudaKernel::Auto) kernel = cuda_kernel_from_env();
  const c10::cuda::CUDAGuard guard(x2.device());  // a tensor on cuda:1 runs on cuda:1
  const int64_t n = x2.size(0), out = h.size(0);
  if (kernel == CudaKernel::Unpacked || (kernel == CudaKernel::Auto && n > kMaxGemvRows))
    return packed_linear_unpacked(x2, signs, g, h, bias, in, post_layernorm, ln_eps);
  if (kc::resolve(gemv_kernel(kernel)) == kc::GemvKernel::Lanes)  // a group of one
    return packed_group_cuda(x2, {LayerRef{signs, g, h, bias}}, in, post_layernorm, ln_eps);
  // The mma kernel.
  torch::Tensor x;
  const kc::Act act = kernel_input(x2, x);
  torch::Tensor y = torch::empty({n, out}, x.options());
  const int sms = kc::multiprocessors(x2.device().index());
  const kc::GemvPlan plan = kc::plan_gemv(gemv_kernel(kernel), n, in, out, post_layernorm, sms);
  torch::Tensor ws;  // split-K partials or pre-LayerNorm sums; none when the kernel needs none
  if (plan.workspace_floats > 0) ws = torch::empty({plan.workspace_floats}, x.options().dtype(torch::kFloat32));
  kc::GemvArgs a;
  a.x = x.data_ptr();
  a.act = act;
  a.g = g.data_ptr<float>();
  a.signs = signs.data_ptr<uint8_t>();
  a.row_bytes = signs.size(1);
  a.h = h.data_ptr<float>();
  a.bias = bias.defined() ? bias.data_ptr<float>() : nullptr;
  a.post_layernorm = post_layernorm;
  a.ln_eps = float(ln_eps);
  a.y = y.data_ptr();
  a.workspace = ws.defined() ? ws.data_ptr<float>() : nullptr;
  a.n = n, a.in = in, a.out = out;
  const char* err = kc::packed_gemv(a, plan, c10::cuda::getCurrentCUDAStream(x2.device().index()).stream());
  OB_CHECK(err == nullptr, "PackedOneBitLinear: CUDA kernel (", kc::to_string(plan.kernel), ") failed: ",
           err ? err : "", err ? kc::programmatic_launch_note() : "");
  return x2.scalar_type() == x.scalar_type() ? y : y.to(x2.scalar_type());
}
#endif


namespace {
using OptT = std::optional<torch::Tensor>;
SignLayout layout_arg(int64_t layout) {
  OB_CHECK(layout == 0 || layout == 1, "onebit::packed_linear: sign_layout must be 0 (rows) or 1 (tiles), got ", layout);
  return layout == 1 ? SignLayout::Tiles : SignLayout::Rows;
}
// The operator is callable from Python with any tensors: everything the kernels rely on,
// checked once here (the module's own buffers are built right).
void check_op_args(const torch::Tensor& x, const torch::Tensor& signs, const torch::Tensor& g, const torch::Tensor& h,
                   const OptT& bias, int64_t in, double eps, SignLayout layout) {
  const char* what = "onebit::packed_linear: ";
  OB_CHECK(in > 0 && eps > 0, what, "in_features and ln_eps must be positive, got ", in, " and ", eps);
  OB_CHECK(x.dim() == 2 && x.size(1) == in && x.is_floating_point(), what, "x must be a float [n, ", in, "], got ",
           x.scalar_type(), " ", x.sizes());
  OB_CHECK(h.dim() == 1 && h.size(0) > 0, what, "h must be [out], got ", h.sizes());
  const int64_t out = h.size(0);
  const int64_t rows = layout == SignLayout::Tiles ? k::tiled_rows(out) : out;
  OB_CHECK(signs.scalar_type() == torch::kUInt8 && signs.dim() == 2 && signs.size(0) == rows &&
               signs.size(1) == k::blocks_per_row(in) * 16,
           what, "signs must be uint8 [", rows, ", ", k::blocks_per_row(in) * 16, "] (",
           layout == SignLayout::Tiles ? "runtime tiles" : "runtime rows", "), got ", signs.scalar_type(), " ",
           signs.sizes());
  OB_CHECK(g.dim() == 1 && g.size(0) == in, what, "g must be [", in, "], got ", g.sizes());
  if (bias) OB_CHECK(bias->dim() == 1 && bias->size(0) == out, what, "bias must be [", out, "], got ", bias->sizes());
  for (const torch::Tensor* t : {&signs, &g, &h, bias ? &*bias : nullptr}) {
    if (t == nullptr) continue;
    OB_CHECK(t->device() == x.device(), what, "x is on ", x.device(), " but a weight tensor on ", t->device());
    OB_CHECK(t->is_contiguous(), what, "signs, g, h and bias must be contiguous");
    OB_CHECK(t == &signs || t->scalar_type() == torch::kFloat32, what, "g, h and bias must be float32, got ",
             t->scalar_type());
  }
}
torch::Tensor op_cpu(const torch::Tensor& x, const torch::Tensor& signs, const torch::Tensor& g,
                     const torch::Tensor& h, const OptT& bias, int64_t in, bool post_ln, double eps, int64_t layout) {
  check_op_args(x, signs, g, h, bias, in, eps, layout_arg(layout));
  return packed_linear_cpu(x, signs, g, h, bias.value_or(torch::Tensor()), in, post_ln, eps, layout_arg(layout),
                           CpuKernel::Auto);
}
#ifdef ONEBIT_WITH_CUDA
torch::Tensor op_cuda(const torch::Tensor& x, const torch::Tensor& signs, const torch::Tensor& g,
                      const torch::Tensor& h, const OptT& bias, int64_t in, bool post_ln, double eps, int64_t layout) {
  OB_CHECK(layout_arg(layout) == SignLayout::Rows, "onebit::packed_linear: CUDA reads runtime rows, not tiles");
  check_op_args(x, signs, g, h, bias, in, eps, SignLayout::Rows);
  return packed_linear_cuda(x, signs, g, h, bias.value_or(torch::Tensor()), in, post_ln, eps, CudaKernel::Auto);
}
#endif
}  // namespace

// torch.ops.onebit.packed_linear(x [n, in], signs, g, h, bias?, in, post_ln, eps, sign_layout):
// signs in runtime rows (sign_layout 0) or runtime tiles (1, CPU only).
TORCH_LIBRARY_FRAGMENT(onebit, m) {
  m.def("packed_linear(Tensor x, Tensor signs, Tensor g, Tensor h, Tensor? bias, int in_features, "
        "bool post_layernorm, float ln_eps, int sign_layout=0) -> Tensor");
}
TORCH_LIBRARY_IMPL(onebit, CPU, m) { m.impl("packed_linear", &op_cpu); }
#ifdef ONEBIT_WITH_CUDA
TORCH_LIBRARY_IMPL(onebit, CUDA, m) { m.impl("packed_linear", &op_cuda); }
#endif

bool cpu_kernel_available(CpuKernel kernel) {
  if (kernel == CpuKernel::Avx2) return k::cpu_supports(k::CpuIsa::Avx2);
  if (kernel == CpuKernel::Avx512) return k::cpu_supports(k::CpuIsa::Avx512);
  if (kernel == CpuKernel::Avx512Vnni) return k::cpu_supports(k::CpuIsa::Avx512Vnni);
  return true;
}

SignLayout layout_for(CpuKernel kernel) {
  if (kernel == CpuKernel::Auto || kernel == CpuKernel::Tiled) return k::layout_for(k::best_cpu_isa());
  return kernel == CpuKernel::Avx512Vnni ? SignLayout::Tiles : SignLayout::Rows;
}

const char* to_string(CpuKernel kernel) {
  switch (kernel) {
    case CpuKernel::Auto: return "auto";
    case CpuKernel::Ref: return "ref";
    case CpuKernel::Lut: return "lut";
    case CpuKernel::Generic: return "generic";
    case CpuKernel::Avx2: return "avx2";
    case CpuKernel::Avx512: return "avx512";
    case CpuKernel::Avx512Vnni: return "avx512vnni";
    case CpuKernel::Tiled: return "tiled";
  }
  return "?";
}

torch::Tensor pack_signs(const torch::Tensor& w) {
  OB_CHECK(w.dim() == 2 && w.is_floating_point(), "pack_signs: weight must be a 2-D float tensor, got ",
           w.sizes(), " ", w.scalar_type());
  const int64_t out = w.size(0), in = w.size(1);
  const torch::Tensor wc = w.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  std::vector<k::SignBlock> rows(size_t(out * k::blocks_per_row(in)));
  k::pack_ref(wc.data_ptr<float>(), out, in, rows.data());
  torch::Tensor file = torch::empty({out, k::file_row_bytes(in)}, torch::kUInt8);
  k::blocks_to_file_rows(rows.data(), out, in, file.data_ptr<uint8_t>());
  return file.to(w.device());
}

torch::Tensor unpack_signs(const torch::Tensor& packed, int64_t in) {
  OB_CHECK(packed.dim() == 2 && packed.scalar_type() == torch::kUInt8 && packed.size(1) == k::file_row_bytes(in),
           "unpack_signs: need uint8 [out, ", k::file_row_bytes(in), "] for in=", in, ", got ", packed.sizes(), " ",
           packed.scalar_type());
  const torch::Tensor p = packed.to(torch::kCPU).contiguous();
  const int64_t out = p.size(0);
  std::vector<k::SignBlock> rows(size_t(out * k::blocks_per_row(in)));
  k::file_rows_to_blocks(p.data_ptr<uint8_t>(), out, in, rows.data());
  torch::Tensor dst = torch::empty({out, in});
  k::unpack_rows(rows.data(), in, 0, out, dst.data_ptr<float>());
  return dst.to(packed.device());
}

PackedOneBitLinearOptions::PackedOneBitLinearOptions(int64_t in_features, int64_t out_features)
    : in_features_(in_features), out_features_(out_features) {}

PackedOneBitLinearImpl::PackedOneBitLinearImpl(const PackedOneBitLinearOptions& options_) : options(options_) {
  reset();
}

void PackedOneBitLinearImpl::reset() {
  const int64_t in = options.in_features(), out = options.out_features();
  OB_CHECK(in > 0 && out > 0, "PackedOneBitLinear: in_features and out_features must be positive, got ", in,
           " and ", out);
  OB_CHECK(options.ln_eps() > 0, "PackedOneBitLinear: ln_eps must be positive, got ", options.ln_eps());
  // In the layer's current layout (a clone is reset, then given the original's buffers).
  const int64_t rows = layout_ == SignLayout::Tiles ? k::tiled_rows(out) : out;
  signs = register_buffer("weight_packed",
                          torch::zeros({rows, k::blocks_per_row(in) * int64_t(sizeof(k::SignBlock))}, torch::kUInt8));
  g = register_buffer("g", torch::ones({in}));
  h = register_buffer("h", torch::ones({out}));
  if (options.bias()) {
    bias = register_buffer("bias", torch::zeros({out}));
  } else {
    bias = torch::Tensor();
  }
}

std::shared_ptr<PackedOneBitLinearImpl> PackedOneBitLinearImpl::from(const nn::OneBitLinearImpl& layer) {
  torch::NoGradGuard no_grad;
  const auto& o = layer.options;
  auto p = std::make_shared<PackedOneBitLinearImpl>(PackedOneBitLinearOptions(o.in_features(), o.out_features())
                                                        .bias(o.bias())
                                                        .post_layernorm(o.post_layernorm())
                                                        .ln_eps(o.ln_eps()));
  p->set_file_signs(pack_signs(layer.weight).cpu(), "PackedOneBitLinear::from");
  p->g.copy_(layer.g.detach());
  p->h.copy_(layer.h.detach());
  if (p->bias.defined()) p->bias.copy_(layer.bias.detach());
  p->to(layer.weight.device());
  return p;
}

torch::Tensor PackedOneBitLinearImpl::file_signs() const {
  const int64_t out = options.out_features(), in = options.in_features();
  const torch::Tensor s = signs_as(SignLayout::Rows).to(torch::kCPU).contiguous();
  torch::Tensor file = torch::empty({out, k::file_row_bytes(in)}, torch::kUInt8);
  k::blocks_to_file_rows(blocks(s), out, in, file.data_ptr<uint8_t>());
  return file;
}

void PackedOneBitLinearImpl::set_file_signs(const torch::Tensor& file_rows, const std::string& where) {
  const int64_t out = options.out_features(), in = options.in_features();
  OB_CHECK(file_rows.scalar_type() == torch::kUInt8, where, ": packed signs must be uint8, got ",
           file_rows.scalar_type());
  OB_CHECK(file_rows.dim() == 2 && file_rows.size(0) == out && file_rows.size(1) == k::file_row_bytes(in), where,
           ": packed signs have shape ", file_rows.sizes(), ", expected [", out, ", ", k::file_row_bytes(in),
           "] (", in, " inputs = ", k::file_row_bytes(in), " bytes per row)");
  const torch::Tensor f = file_rows.to(torch::kCPU).contiguous();
  OB_CHECK(k::file_padding_is_zero(f.data_ptr<uint8_t>(), out, in), where,
           ": packed signs have non-zero padding bits past input ", in, " (wrong in_features or bit order?)");
  torch::Tensor rows = torch::empty({out, k::blocks_per_row(in) * int64_t(sizeof(k::SignBlock))}, torch::kUInt8);
  k::file_rows_to_blocks(f.data_ptr<uint8_t>(), out, in, reinterpret_cast<k::SignBlock*>(rows.data_ptr<uint8_t>()));
  torch::NoGradGuard no_grad;
  signs.set_data(rows.to(signs.device()));
  layout_ = SignLayout::Rows;
  adopt_best_layout();
}

torch::Tensor PackedOneBitLinearImpl::signs_as(SignLayout layout) const {
  if (layout == layout_) return signs;
  OB_CHECK(signs.is_cpu(), "PackedOneBitLinear: sign layouts are converted on the CPU only");
  return convert_layout(signs, options.out_features(), options.in_features(), layout);
}

void PackedOneBitLinearImpl::use_layout(SignLayout layout) {
  if (layout == layout_) return;
  torch::NoGradGuard no_grad;
  signs.set_data(signs_as(layout));
  layout_ = layout;
}

void PackedOneBitLinearImpl::adopt_best_layout() {
  use_layout(signs.is_cpu() ? layout_for(CpuKernel::Auto) : SignLayout::Rows);
}

void PackedOneBitLinearImpl::to(torch::Device device, torch::Dtype, bool non_blocking) {
  to(device, non_blocking);
}
void PackedOneBitLinearImpl::to(torch::Dtype, bool) {}
void PackedOneBitLinearImpl::to(torch::Device device, bool non_blocking) {
  if (!device.is_cpu() && layout_ != SignLayout::Rows) use_layout(SignLayout::Rows);  // CUDA reads rows
  torch::nn::Module::to(device, non_blocking);
  adopt_best_layout();
}

torch::Tensor PackedOneBitLinearImpl::forward(const torch::Tensor& x) { return forward(x, CpuKernel::Auto); }

namespace {
// The input checks every forward makes.
void check_input(const PackedOneBitLinearOptions& options, const torch::Tensor& signs, const torch::Tensor& x) {
  const int64_t in = options.in_features();
  OB_CHECK(x.dim() >= 1 && x.size(-1) == in, "PackedOneBitLinear: input last dim must be in_features=", in,
           ", got input shape ", x.sizes());
  OB_CHECK(x.is_floating_point(), "PackedOneBitLinear: input must be floating point, got ", x.scalar_type());
  OB_CHECK(x.device() == signs.device(), "PackedOneBitLinear: input on ", x.device(), " but weights on ",
           signs.device());
}
// y [n, out] in x's shape with its last dimension `out`.
torch::Tensor shaped_like_input(const torch::Tensor& y, const torch::Tensor& x, int64_t out) {
  auto shape = x.sizes().vec();
  shape.back() = out;
  return y.view(shape);
}
}  // namespace

torch::Tensor PackedOneBitLinearImpl::forward(const torch::Tensor& x, CudaKernel kernel) {
  check_input(options, signs, x);
  OB_CHECK(x.device().is_cuda(), "PackedOneBitLinear: kernel '", to_string(kernel), "' is a CUDA kernel, input on ",
           x.device());
#ifdef ONEBIT_WITH_CUDA
  const int64_t in = options.in_features(), out = options.out_features();
  OB_CHECK(layout_ == SignLayout::Rows, "PackedOneBitLinear: CUDA reads runtime rows, not tiles");
  torch::NoGradGuard no_grad;
  const torch::Tensor y = packed_linear_cuda(x.reshape({-1, in}), signs, g, h, bias, in, options.post_layernorm(),
                                             options.ln_eps(), kernel);
  return shaped_like_input(y, x, out);
#else
  fail("PackedOneBitLinear: this build has no CUDA kernels (ONEBIT_WITH_CUDA)");
#endif
}

torch::Tensor PackedOneBitLinearImpl::forward(const torch::Tensor& x, CpuKernel kernel) {
  const int64_t in = options.in_features(), out = options.out_features();
  check_input(options, signs, x);
  OB_CHECK(cpu_kernel_available(kernel), "PackedOneBitLinear: the ", to_string(kernel),
           " kernel is not supported by this CPU or build");
  torch::NoGradGuard no_grad;
  const torch::Tensor x2 = x.reshape({-1, in});
  torch::Tensor y;
  if (kernel == CpuKernel::Auto) {
    // Through the registered operator (device dispatch and guard), as torch.ops.onebit would.
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("onebit::packed_linear", "")
                               .typed<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                                    const torch::Tensor&, const std::optional<torch::Tensor>&,
                                                    int64_t, bool, double, int64_t)>();
    y = op.call(x2, signs, g, h, bias.defined() ? std::optional<torch::Tensor>(bias) : std::nullopt, in,
                options.post_layernorm(), options.ln_eps(), layout_ == SignLayout::Tiles ? 1 : 0);
  } else {
    OB_CHECK(x.device().is_cpu(), "PackedOneBitLinear: kernel '", to_string(kernel), "' is a CPU kernel, input on ",
             x.device());
    // A kernel of the other layout (tests, benchmarks) runs on a converted copy.
    const SignLayout layout = kernel == CpuKernel::Tiled ? layout_ : layout_for(kernel);
    y = packed_linear_cpu(x2, signs_as(layout), g, h, bias, in, options.post_layernorm(), options.ln_eps(), layout,
                          kernel);
  }
  return shaped_like_input(y, x, out);
}

namespace {
std::atomic<bool> grouping{true};
}  // namespace
void set_group_calls(bool on) { grouping = on; }
bool group_calls() { return grouping; }

std::optional<std::vector<torch::Tensor>> forward_group(const std::vector<const PackedOneBitLinearImpl*>& layers,
                                                        const torch::Tensor& x) {
  if (!grouping || layers.empty() || layers.size() > 4) return std::nullopt;
  const auto& o0 = layers[0]->options;
  const int64_t in = o0.in_features();
  for (const auto* l : layers) {
    const auto& o = l->options;
    if (o.in_features() != in || o.post_layernorm() != o0.post_layernorm() || o.ln_eps() != o0.ln_eps() ||
        l->signs.device() != layers[0]->signs.device() || l->layout() != layers[0]->layout())
      return std::nullopt;
  }
  check_input(o0, layers[0]->signs, x);
  RECORD_FUNCTION("onebit::packed_linear_group", std::vector<c10::IValue>());
  torch::NoGradGuard no_grad;
  const torch::Tensor x2 = x.reshape({-1, in});
  std::vector<LayerRef> refs;
  for (const auto* l : layers) refs.push_back(LayerRef{l->signs, l->g, l->h, l->bias});
  torch::Tensor y;
  if (x.device().is_cuda()) {
#ifdef ONEBIT_WITH_CUDA
    const CudaKernel k = cuda_kernel_from_env();
    const bool lanes = k == CudaKernel::Lanes ||
                       (k == CudaKernel::Auto && kernels::cuda::resolve(kernels::cuda::GemvKernel::Auto) ==
                                                     kernels::cuda::GemvKernel::Lanes);
    if (!lanes || x2.size(0) > kMaxGemvRows) return std::nullopt;
    y = packed_group_cuda(x2, refs, in, o0.post_layernorm(), o0.ln_eps());
#else
    return std::nullopt;
#endif
  } else {
    OB_CHECK(x.device().is_cpu(), "PackedOneBitLinear: input on ", x.device(), ", which has no packed kernels");
    y = packed_group_cpu(x2, refs, in, o0.post_layernorm(), o0.ln_eps(), layers[0]->layout(), CpuKernel::Auto);
  }
  std::vector<torch::Tensor> out;
  int64_t off = 0;
  for (const auto* l : layers) {
    const int64_t n_out = l->options.out_features();
    out.push_back(shaped_like_input(y.narrow(1, off, n_out), x, n_out));
    off += n_out;
  }
  return out;
}

void PackedOneBitLinearImpl::pretty_print(std::ostream& os) const {
  os << "onebit::packed::PackedOneBitLinear(in_features=" << options.in_features()
     << ", out_features=" << options.out_features() << ", bias=" << options.bias()
     << ", post_layernorm=" << options.post_layernorm() << ")";
}

}  // namespace onebit::packed
