// Running a model for inference: eval mode (its training flag restored afterwards), autograd
// off, and its dense linears and output projection packed for nn::dense_linear
// (nn::DensePackScope: on CPU in fp32, or bf16 where oneDNN has bf16 kernels, memory
// permitting). Evaluation, generation and self-sampling hold one around their loops; scopes
// nest, and an inner one reuses the weights an outer one packed.
#pragma once
#include <torch/utils.h>

#include "onebit/nn/dense_linear.h"

namespace onebit::models {

class CausalLMImpl;

class InferenceScope {
 public:
  explicit InferenceScope(CausalLMImpl& model);
  ~InferenceScope();
  InferenceScope(const InferenceScope&) = delete;
  InferenceScope& operator=(const InferenceScope&) = delete;

 private:
  CausalLMImpl& model_;
  bool was_training_;
  torch::NoGradGuard no_grad_;
  nn::DensePackScope packed_;
};

}  // namespace onebit::models
