// Shared pieces of the evaluators: where a model lives, eval-mode scoping, fp32 token log-probs.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace onebit::models { class CausalLMImpl; }

namespace onebit::eval {

// Device of the model's first parameter (or buffer); CPU for a model with neither.
torch::Device model_device(const models::CausalLMImpl& model);

// Puts the model in eval mode for a scope and restores its training flag afterwards.
class EvalModeGuard {
 public:
  explicit EvalModeGuard(models::CausalLMImpl& model);
  ~EvalModeGuard();
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;

 private:
  models::CausalLMImpl& model_;
  bool was_training_;
};

// log p(targets[t] | row t) for logits [T, V] (any dtype) and targets [T] (int64):
// log-softmax computed in fp32, result [T] in fp64.
torch::Tensor target_logprobs(const torch::Tensor& logits, const torch::Tensor& targets);

// Token ids as an int64 [1, n] tensor on `device`.
torch::Tensor ids_tensor(const std::vector<int64_t>& ids, torch::Device device);

}  // namespace onebit::eval
