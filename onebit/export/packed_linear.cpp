#include "onebit/export/packed_linear.h"

#include <torch/torch.h>

#include "kernels/packed_sign.h"
#include "onebit/core/error.h"

#ifdef ONEBIT_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda/packed_matvec.h"
#endif

namespace onebit::packed {

namespace {
namespace k = onebit::kernels;
// Up to this many rows the LUT GEMV wins; beyond, unpacking a tile of rows and calling BLAS
// does (the table is rebuilt for every row of x, the tile once per call).
constexpr int64_t kLutMaxRows = 4;
constexpr int64_t kTileRows = 256;  // ±1 rows unpacked at a time on the GEMM path

const k::SignBlock* blocks(const torch::Tensor& signs) {
  return reinterpret_cast<const k::SignBlock*>(signs.data_ptr<uint8_t>());
}

torch::Tensor cpu_matmul(const torch::Tensor& xg, const torch::Tensor& signs, const torch::Tensor& h,
                         int64_t in, int64_t out) {
  const int64_t n = xg.size(0);
  const float* hp = h.data_ptr<float>();
  if (n <= kLutMaxRows) {
    torch::Tensor y = torch::empty({n, out}, xg.options());
    std::vector<float> lut(size_t(k::lut_floats(in)));
    for (int64_t t = 0; t < n; ++t) {
      k::build_lut(xg[t].data_ptr<float>(), in, lut.data());
      float* yp = y[t].data_ptr<float>();
      at::parallel_for(0, out, 64, [&](int64_t b, int64_t e) {
        k::gemv_lut_rows(lut.data(), blocks(signs), in, hp, b, e, yp);
      });
    }
    return y;
  }
  torch::Tensor yt = torch::empty({out, n}, xg.options());  // yᵀ: tiles are contiguous row slices
  torch::Tensor tile = torch::empty({std::min(kTileRows, out), in}, xg.options());
  const torch::Tensor xgt = xg.t();
  for (int64_t o = 0; o < out; o += kTileRows) {
    const int64_t rows = std::min(kTileRows, out - o);
    torch::Tensor tl = tile.narrow(0, 0, rows);
    k::unpack_rows(blocks(signs), in, o, o + rows, tl.data_ptr<float>());
    torch::Tensor dst = yt.narrow(0, o, rows);
    torch::mm_out(dst, tl, xgt);
  }
  return yt.t().mul(h);
}
}  // namespace

torch::Tensor pack_signs(const torch::Tensor& w) {
  OB_CHECK(w.dim() == 2 && w.is_floating_point(), "pack_signs: weight must be a 2-D float tensor, got ",
           w.sizes(), " ", w.scalar_type());
  const torch::Tensor wc = w.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  torch::Tensor out = torch::empty({w.size(0), k::bytes_per_row(w.size(1))}, torch::kUInt8);
  k::pack_ref(wc.data_ptr<float>(), w.size(0), w.size(1),
              reinterpret_cast<k::SignBlock*>(out.data_ptr<uint8_t>()));
  return out.to(w.device());
}

torch::Tensor unpack_signs(const torch::Tensor& packed, int64_t in) {
  OB_CHECK(packed.dim() == 2 && packed.scalar_type() == torch::kUInt8 &&
               packed.size(1) == k::bytes_per_row(in),
           "unpack_signs: need uint8 [out, ", k::bytes_per_row(in), "] for in=", in, ", got ",
           packed.sizes(), " ", packed.scalar_type());
  const torch::Tensor p = packed.to(torch::kCPU).contiguous();
  torch::Tensor out = torch::empty({packed.size(0), in});
  k::unpack_ref(blocks(p), packed.size(0), in, out.data_ptr<float>());
  return out.to(packed.device());
}

PackedLinear PackedLinear::from(const nn::OneBitLinearImpl& layer) {
  torch::NoGradGuard no_grad;
  PackedLinear p;
  p.in_features = layer.options.in_features();
  p.out_features = layer.options.out_features();
  p.signs = pack_signs(layer.weight);
  p.g = layer.g.detach().to(torch::kFloat32).contiguous();
  p.h = layer.h.detach().to(torch::kFloat32).contiguous();
  if (layer.bias.defined()) p.bias = layer.bias.detach().to(torch::kFloat32).contiguous();
  p.post_layernorm = layer.options.post_layernorm();
  p.ln_eps = layer.options.ln_eps();
  return p;
}

torch::Tensor PackedLinear::forward(const torch::Tensor& x) const {
  OB_CHECK(x.dim() >= 1 && x.size(-1) == in_features, "PackedLinear: input last dim must be in_features=",
           in_features, ", got input shape ", x.sizes());
  OB_CHECK(x.scalar_type() == torch::kFloat32, "PackedLinear: input must be fp32, got ", x.scalar_type());
  OB_CHECK(x.device() == signs.device(), "PackedLinear: input on ", x.device(), " but weights on ",
           signs.device());
  torch::NoGradGuard no_grad;
  const torch::Tensor xg = (x.reshape({-1, in_features}) * g).contiguous();
  torch::Tensor y;
  if (x.device().is_cpu()) {
    y = cpu_matmul(xg, signs, h, in_features, out_features);
  } else {
#ifdef ONEBIT_WITH_CUDA
    OB_CHECK(x.device().is_cuda(), "PackedLinear: unsupported device ", x.device());
    y = torch::empty({xg.size(0), out_features}, xg.options());
    const char* err = kernels::cuda::packed_matvec(
        xg.data_ptr<float>(), signs.data_ptr<uint8_t>(), h.data_ptr<float>(), y.data_ptr<float>(),
        xg.size(0), in_features, out_features, c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
    OB_CHECK(err == nullptr, "PackedLinear: CUDA kernel failed: ", err ? err : "");
#else
    fail("PackedLinear: ", x.device(), " needs a build with CUDA kernels (nvcc at configure time)");
#endif
  }
  if (bias.defined()) y.add_(bias);
  if (post_layernorm) y = torch::layer_norm(y, {out_features}, {}, {}, ln_eps);
  auto shape = x.sizes().vec();
  shape.back() = out_features;
  return y.view(shape);
}

}  // namespace onebit::packed
