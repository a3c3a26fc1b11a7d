// OneBitLinear: y = LayerNorm_noaffine(((x ⊙ g) · sign(W)ᵀ) ⊙ h) [+ bias], method.md §1.
#pragma once
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <optional>
#include <ostream>
#include <string>

namespace onebit::nn {

enum class SteKind { Tanh, Identity, Clipped };   // gradient of sign(): 1.001-tanh²(W) | 1 | 1{|W|<=1}
enum class SvidMethod { Nmf, Svd, None };         // None: g = 1, h = mean|W| per row (naive sign)
enum class LatentInit { Scaled, Keep };           // W = sign(W_fp)·latent_scale | W = W_fp

SteKind parse_ste_kind(const std::string& s);        // "tanh" | "identity" | "clipped"
SvidMethod parse_svid_method(const std::string& s);  // "nmf" | "svd" | "none"
LatentInit parse_latent_init(const std::string& s);  // "scaled" | "keep"
std::string to_string(SteKind k);
std::string to_string(SvidMethod m);
std::string to_string(LatentInit l);

struct OneBitLinearOptions {
  OneBitLinearOptions(int64_t in_features, int64_t out_features);
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(bool, bias) = false;
  TORCH_ARG(bool, post_layernorm) = true;
  TORCH_ARG(double, ln_eps) = 1e-5;
  TORCH_ARG(SteKind, ste) = SteKind::Tanh;
  TORCH_ARG(SvidMethod, svid) = SvidMethod::Nmf;
  TORCH_ARG(LatentInit, latent_init) = LatentInit::Scaled;
  TORCH_ARG(double, latent_scale) = 0.01;
};

class OneBitLinearImpl : public torch::nn::Cloneable<OneBitLinearImpl> {
 public:
  explicit OneBitLinearImpl(const OneBitLinearOptions& options);
  // Tensors allocated with `where` (latent dtype, device) and left uninitialised, to be filled
  // by the caller (from_linear): no init pass, no CPU detour for a layer built on a GPU.
  OneBitLinearImpl(const OneBitLinearOptions& options, const torch::TensorOptions& where);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);

  // SVID initialisation from a full-precision weight [out, in] (and optional bias [out]).
  static std::shared_ptr<OneBitLinearImpl> from_linear(const torch::Tensor& weight,
                                                       const torch::Tensor& bias,
                                                       OneBitLinearOptions options);
  // Storage cost when deployed: 1 bit per weight + 16-bit g, h (and bias): method.md §8.
  double bits_per_parameter() const;

  // Progressive replacement (student.progressive_steps): while a stand-in is set, forward is
  // the full-precision linear x·weightᵀ (+ bias) of the given frozen tensors (the teacher's
  // layer), and W, g, h take no part in it (no gradient). An undefined weight clears it.
  // The tensors are shared, not copied, and are neither parameters nor saved.
  void set_stand_in(torch::Tensor weight, torch::Tensor bias = {});
  bool has_stand_in() const { return stand_in_weight_.defined(); }

  OneBitLinearOptions options;
  torch::Tensor weight;  // latent [out, in], fp32 master (or bf16: models::set_latent_dtype)
  torch::Tensor g;       // [in]
  torch::Tensor h;       // [out]
  torch::Tensor bias;    // [out] or undefined

  void pretty_print(std::ostream& stream) const override;

 private:
  std::optional<torch::TensorOptions> uninitialised_;  // set: reset() allocates without init
  torch::Tensor stand_in_weight_, stand_in_bias_;       // set_stand_in
};
TORCH_MODULE(OneBitLinear);

namespace functional {
// The layer's math on x [..., in] (fp32/fp64, or bf16/fp16 activations with fp32 parameters;
// W may be bf16 whatever x is, its gradient then bf16 with the STE factor computed in fp32):
// sign(W), g, h are cast to x's dtype; h, bias and the LayerNorm run in fp32 for bf16/fp16
// inputs; the result has x's dtype. One fused autograd node: gradients reach x, weight (through
// the STE `ste`), g, h and bias; sign(W) is recomputed in backward rather than stored.
// Under autocast (onebit/core/autocast.h) x is first cast to the autocast dtype, like a matmul.
torch::Tensor onebit_linear(const torch::Tensor& x, const torch::Tensor& weight,
                            const torch::Tensor& g, const torch::Tensor& h,
                            const torch::Tensor& bias,  // undefined: none
                            bool post_layernorm, double ln_eps, SteKind ste);
}  // namespace functional

}  // namespace onebit::nn
