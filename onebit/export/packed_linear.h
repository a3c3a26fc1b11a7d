// A deployed OneBitLinear: packed 1-bit signs (kernels/packed_sign.h) + fp32 g, h (and bias).
// forward runs the packed kernels (CPU: lookup-table GEMV or tile-wise unpack + GEMM; CUDA:
// packed_matvec) and never builds the full ±1 matrix.
#pragma once
#include <torch/types.h>

#include "onebit/nn/onebit_linear.h"

namespace onebit::packed {

// [out, in] float weights → uint8 [out, bytes_per_row(in)] signs (bit 1 = −1, LSB first).
torch::Tensor pack_signs(const torch::Tensor& w);
// Inverse: uint8 [out, bytes_per_row(in)] → fp32 ±1 [out, in] (tests and debugging).
torch::Tensor unpack_signs(const torch::Tensor& packed, int64_t in);

struct PackedLinear {
  int64_t in_features = 0, out_features = 0;
  torch::Tensor signs;  // uint8 [out, bytes_per_row(in)]
  torch::Tensor g, h;   // fp32 [in], [out]
  torch::Tensor bias;   // fp32 [out] or undefined
  bool post_layernorm = true;
  double ln_eps = 1e-5;

  static PackedLinear from(const nn::OneBitLinearImpl& layer);  // on the layer's device
  // x [..., in] fp32 (CPU or CUDA, the signs' device) → [..., out] fp32; no autograd.
  torch::Tensor forward(const torch::Tensor& x) const;
};

}  // namespace onebit::packed
