// PackedOneBitLinear: a deployed OneBitLinear. Packed 1-bit signs (kernels/packed_sign.h) and
// fp32 g, h (and bias); forward runs the packed kernels and never builds the full ±1 matrix.
// The model code binds it as it binds Linear and OneBitLinear (models/layers.h: Proj).
#pragma once
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <ostream>

#include "kernels/packed_sign.h"
#include "onebit/nn/onebit_linear.h"

namespace onebit::packed {

// [out, in] float weights → uint8 [out, ⌈in/8⌉] file rows (bit 1 = −1, LSB first, w < 0 → 1).
torch::Tensor pack_signs(const torch::Tensor& w);
// Inverse: uint8 [out, ⌈in/8⌉] → fp32 ±1 [out, in] (tests and debugging).
torch::Tensor unpack_signs(const torch::Tensor& packed, int64_t in);

// Which CPU kernel a forward uses. Auto: the best instruction-set kernel of this CPU
// (kernels::best_cpu_isa) that reads the layer's sign layout, for any number of tokens (the
// lookup-table kernels beat BLAS on unpacked ±1 tiles at every batch measured, up to 128);
// without one, the generic lookup table for one token, the generic kernel up to
// kMaxGenericRows tokens and BLAS on unpacked tiles above. Avx512Vnni reads runtime tiles,
// Tiled either layout, the others rows.
enum class CpuKernel { Auto, Ref, Lut, Generic, Avx2, Avx512, Avx512Vnni, Tiled };
constexpr int64_t kMaxGenericRows = 16;
bool cpu_kernel_available(CpuKernel k);
const char* to_string(CpuKernel k);
using kernels::SignLayout;
// The layout a kernel reads; Auto and Tiled: the layout of this CPU's best kernel.
SignLayout layout_for(CpuKernel k);

// The layer's product on x2 [n, in] (any float dtype; result in x2's dtype), signs in `layout`
// (CUDA: rows): the CPU path, and the CUDA path (builds with CUDA). Both are registered as the
// operator onebit::packed_linear (CPU and CUDA dispatch keys, device guard), which forward calls.
torch::Tensor packed_linear_cpu(const torch::Tensor& x2, const torch::Tensor& signs, const torch::Tensor& g,
                                const torch::Tensor& h, const torch::Tensor& bias, int64_t in, bool post_layernorm,
                                double ln_eps, SignLayout layout, CpuKernel kernel = CpuKernel::Auto);

struct PackedOneBitLinearOptions {
  PackedOneBitLinearOptions(int64_t in_features, int64_t out_features);
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(bool, bias) = false;
  TORCH_ARG(bool, post_layernorm) = true;
  TORCH_ARG(double, ln_eps) = 1e-5;
};

class PackedOneBitLinearImpl : public torch::nn::Cloneable<PackedOneBitLinearImpl> {
 public:
  explicit PackedOneBitLinearImpl(const PackedOneBitLinearOptions& options);
  void reset() override;  // all signs +1, g = h = 1, bias 0
  // The packed form of a trained layer, on the layer's device. Its signs are sign(W) of training.
  static std::shared_ptr<PackedOneBitLinearImpl> from(const nn::OneBitLinearImpl& layer);

  // x [..., in] of any float dtype → [..., out] of x's dtype; sums, h, bias and the
  // LayerNorm in fp32. No autograd.
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor forward(const torch::Tensor& x, CpuKernel kernel);

  // The signs as stored in files, uint8 [out, ⌈in/8⌉], and back (validated: shape, dtype,
  // zero padding bits).
  torch::Tensor file_signs() const;
  void set_file_signs(const torch::Tensor& file_rows, const std::string& where);

  // The layout of `signs`. A layer takes the layout of this CPU's best kernel whenever its signs
  // are set or it moves to the CPU, and rows on CUDA; use_layout changes it (tiles: CPU only).
  SignLayout layout() const { return layout_; }
  void use_layout(SignLayout layout);

  // Parameters are fixed buffers: a dtype change leaves them as they are (uint8 signs, fp32
  // scales; activations of any float dtype are accepted), a device change moves them.
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;

  void pretty_print(std::ostream& stream) const override;

  PackedOneBitLinearOptions options;
  // uint8 [out, 16·blocks_per_row(in)]: runtime rows, or [tiled_rows(out), 16·blocks_per_row(in)]:
  // runtime tiles (kernels/packed_sign.h), as layout() says.
  torch::Tensor signs;
  torch::Tensor g, h;   // fp32 [in], [out]
  torch::Tensor bias;   // fp32 [out] or undefined

 private:
  torch::Tensor signs_as(SignLayout layout) const;  // signs in `layout` (a converted copy if needed)
  void adopt_best_layout();
  SignLayout layout_ = SignLayout::Rows;
};
TORCH_MODULE(PackedOneBitLinear);

}  // namespace onebit::packed
