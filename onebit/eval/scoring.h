// Shared pieces of the evaluators: where a model lives, fp32 token log-probs (their inference
// scope is models::InferenceScope).
#pragma once
#include <torch/types.h>
#include <torch/utils.h>

#include "onebit/models/inference_scope.h"

#include <cstdint>
#include <vector>

namespace onebit::models { class CausalLMImpl; }

namespace onebit::eval {

// Device of the model's first parameter (or buffer); CPU for a model with neither.
torch::Device model_device(const models::CausalLMImpl& model);

// log p(targets[t] | row t) for fp32 logits [T, V] that the caller no longer needs, as fp64 —
// bit for bit log_softmax(logits)[t, targets[t]], whose rounding lm-eval shares — computed in
// place (`logits` is overwritten: no second [T, V] tensor), and whether each target is its
// row's argmax (greedy).
struct TargetScores {
  torch::Tensor logprob;  // [T] fp64
  torch::Tensor greedy;   // [T] bool
};
TargetScores score_targets_(torch::Tensor logits, const torch::Tensor& targets);

// score_targets_ of the logits hidden · Wᵀ (W: the model's lm_head_weight) for hidden [n, H]
// and targets [n], projected `slice_rows` rows at a time, so that the largest temporary is one
// [slice_rows, V] fp32 slice, however many rows are scored. Results on the CPU.
TargetScores score_hidden(const torch::Tensor& hidden, const torch::Tensor& W, const torch::Tensor& targets,
                          int64_t slice_rows = 512);

// Token ids as an int64 [1, n] tensor on `device`.
torch::Tensor ids_tensor(const std::vector<int64_t>& ids, torch::Device device);

}  // namespace onebit::eval
