// PackedOneBitLinear: a deployed OneBitLinear. Packed 1-bit signs (kernels/packed_sign.h) and
// fp32 g, h (and bias); forward runs the packed kernels and never builds the full ±1 matrix.
// The model code binds it as it binds Linear and OneBitLinear (models/layers.h: Proj).
#pragma once
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <optional>
#include <ostream>
#include <string>
#include <vector>

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

// Which CUDA kernel a forward on a GPU uses (kernels/cuda/packed_gemv.h): Lanes, the first kernel
// (8 lanes per row, fp32 x ⊙ g in shared memory, two launches), or Mma (signs expanded in
// registers, products on the tensor cores, one launch without post-LayerNorm or split-K). Auto:
// the environment variable ONEBIT_CUDA_KERNEL (auto | lanes | mma | unpacked), read on every call; unset
// or auto means the kernels' default, which stays lanes until mma has been measured on a GPU.
// Unpacked: the prefill path, any device: sign(W) unpacked to a dense matrix in the activations'
// dtype, one cuBLAS (or CPU BLAS) GEMM, then h, bias and the post-LayerNorm in fp32
// (packed_linear_unpacked). Auto takes it on CUDA above kMaxGemvRows tokens, where the GEMV
// kernels would stream the weights once per 8 tokens (the threshold is a guess until measured).
enum class CudaKernel { Auto, Lanes, Mma, Unpacked };
constexpr int64_t kMaxGemvRows = 32;
const char* to_string(CudaKernel k);
// "auto" | "lanes" | "mma" | "unpacked"; anything else is an error naming `what`, the value and
// the allowed values.
CudaKernel parse_cuda_kernel(const std::string& s, const std::string& what = "CUDA kernel");
// ONEBIT_CUDA_KERNEL parsed, Auto when unset; a bad value is an error naming the variable.
CudaKernel cuda_kernel_from_env();

// The layer's product on x2 [n, in] (any float dtype; result in x2's dtype), signs in `layout`
// (CUDA: rows): the CPU path, and the CUDA path (builds with CUDA). Both are registered as the
// operator onebit::packed_linear (CPU and CUDA dispatch keys, device guard), which forward calls.
torch::Tensor packed_linear_cpu(const torch::Tensor& x2, const torch::Tensor& signs, const torch::Tensor& g,
                                const torch::Tensor& h, const torch::Tensor& bias, int64_t in, bool post_layernorm,
                                double ln_eps, SignLayout layout, CpuKernel kernel = CpuKernel::Auto);

// sign(W) [out, in] in `dtype` (±1) from runtime rows [out, 16·blocks_per_row(in)] on any device.
torch::Tensor unpack_rows(const torch::Tensor& signs, int64_t in, torch::ScalarType dtype);
// The layer on x2 [n, in] through the unpacked signs: x ⊙ g and the GEMM in x's dtype for bf16 and
// fp16 (as the training-time layer computes them), else fp32; h, bias, post-LayerNorm in fp32;
// the result in x2's dtype. Any device; CUDA's prefill path (CudaKernel::Unpacked).
torch::Tensor packed_linear_unpacked(const torch::Tensor& x2, const torch::Tensor& signs, const torch::Tensor& g,
                                     const torch::Tensor& h, const torch::Tensor& bias, int64_t in,
                                     bool post_layernorm, double ln_eps);

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
  // x on a CUDA device, this CUDA kernel (tests, benchmarks; Auto: as forward(x) does).
  torch::Tensor forward(const torch::Tensor& x, CudaKernel kernel);

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

// Several layers that read the same input (q/k/v, gate/up) in one call: on CPU one fold of x
// per layer and one parallel region for all their rows; on CUDA one pass of the lanes kernel
// (two launches for the group instead of two per layer). Returns their outputs [..., out_l],
// views of one [..., Σ out] tensor, equal to each layer's forward; or nothing where they
// cannot share a call: more than 4 layers, different in_features, post-LayerNorm settings,
// devices or sign layouts, and on CUDA a kernel other than lanes (ONEBIT_CUDA_KERNEL) or more
// than kMaxGemvRows tokens. Callers then run each layer.
std::optional<std::vector<torch::Tensor>> forward_group(const std::vector<const PackedOneBitLinearImpl*>& layers,
                                                        const torch::Tensor& x);
// Whether forward_group groups at all (default on; off, it always returns nothing): for the
// process, so that a benchmark can time both ways in one run.
void set_group_calls(bool on);
bool group_calls();

}  // namespace onebit::packed
