// y = x·Wᵀ + b for the high-precision projections (FP models, the teacher, lm_head).
#pragma once
#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace onebit::nn {

enum class DenseBackend { Aten, OneDnn };

// The backend dense_linear uses where it may choose (fp32 on CPU, no autograd): oneDNN's
// matmul (LibTorch's own mkldnn::_linear_pointwise operator, the kernel PyTorch's compiled CPU
// inference uses for linears) when this LibTorch has it, else ATen's linear (MKL/OpenBLAS
// sgemm). ONEBIT_DENSE_LINEAR=aten|onednn overrides; an unknown value or onednn without
// oneDNN is an error. Read once.
DenseBackend dense_backend();
bool onednn_linear_available();
// Whether this CPU runs oneDNN's bf16 matmul (AVX-512 F/BW/VL/DQ), so that bf16 weights are packed.
bool onednn_bf16_supported();
// Changes dense_backend() for the whole process (benchmarks compare the two in one run).
void set_dense_backend(DenseBackend b);
std::string to_string(DenseBackend b);
// "aten" | "onednn"; anything else is an error naming `what` and the value.
DenseBackend parse_dense_backend(const std::string& s, const std::string& what = "dense matmul backend");

// torch::nn::functional::linear(x, w, b), with the same result to rounding: on CPU, in fp32,
// with autograd off or nothing requiring grad, and CPU autocast off, it runs dense_backend().
// oneDNN does not fall back to MKL's generic code path on AMD CPUs and is 1.1-2.5x faster there
// (docs/BENCHMARKS.md). In bf16 (on AVX-512 CPUs) oneDNN runs only for a weight that a
// DensePackScope packed: 1.7x ATen's bf16 matmul for a decode step's output projection. Elsewhere,
// or for autograd, ATen's linear runs.
torch::Tensor dense_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b = {});
// The same with the backend given (OneDnn where onednn_linear_available() is false: an error).
torch::Tensor dense_linear(DenseBackend backend, const torch::Tensor& x, const torch::Tensor& w,
                           const torch::Tensor& b = {});

// For its lifetime (on the constructing thread), dense_linear multiplies by these weights in
// oneDNN's blocked layout, packed once here, instead of reordering each weight on every call:
// 1.3x faster forwards of a few dozen tokens (docs/BENCHMARKS.md). Only CPU weights in fp32, or
// bf16 on AVX-512 CPUs, are packed, and only when the oneDNN backend is active and the packed
// copies fit in half of the
// memory available now (they are extra copies: the module keeps its own). A weight changed in
// place after packing (its version moved on) runs unpacked. Scopes nest; an inner scope uses
// the weights an outer one packed instead of packing them again.
class DensePackScope {
 public:
  explicit DensePackScope(const std::vector<torch::Tensor>& weights);
  ~DensePackScope();
  DensePackScope(const DensePackScope&) = delete;
  DensePackScope& operator=(const DensePackScope&) = delete;
  int64_t packed_bytes() const { return bytes_; }

  struct Entry {
    torch::Tensor packed;
    torch::Tensor source;  // kept alive, so that no other tensor can take its address
    const void* data;
    int64_t version;
  };
  const Entry* find(const torch::Tensor& w) const;

 private:
  std::unordered_map<const void*, Entry> packed_;
  int64_t bytes_ = 0;
  const DensePackScope* outer_;
};

// The weights of every torch::nn::Linear in `root` (itself included), once each.
std::vector<torch::Tensor> linear_weights(torch::nn::Module& root);

}  // namespace onebit::nn
