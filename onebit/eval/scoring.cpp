#include "onebit/eval/scoring.h"

#include "onebit/core/error.h"
#include "onebit/models/causal_lm.h"

namespace onebit::eval {

torch::Device model_device(const models::CausalLMImpl& model) {
  for (const auto& p : model.parameters()) return p.device();
  for (const auto& b : model.buffers()) return b.device();
  return torch::kCPU;
}

namespace {
std::vector<torch::Tensor> dense_weights(models::CausalLMImpl& model) {
  auto w = nn::linear_weights(model);
  w.push_back(model.lm_head_weight());
  return w;
}
}  // namespace

InferenceScope::InferenceScope(models::CausalLMImpl& model)
    : model_(model), was_training_(model.is_training()), packed_(dense_weights(model)) {
  model_.eval();
}

InferenceScope::~InferenceScope() {
  if (was_training_) model_.train();
}

torch::Tensor target_logprobs(const torch::Tensor& logits, const torch::Tensor& targets) {
  auto lp = torch::log_softmax(logits.to(torch::kFloat32), -1);
  return lp.gather(-1, targets.to(lp.device()).unsqueeze(-1)).squeeze(-1).to(torch::kFloat64);
}

TargetScores score_targets_(torch::Tensor logits, const torch::Tensor& targets) {
  OB_CHECK(logits.dim() == 2 && logits.scalar_type() == torch::kFloat32 && targets.dim() == 1 &&
               targets.size(0) == logits.size(0),
           "score_targets_: expected fp32 logits [T, V] and targets [T], got ", logits.sizes(), " ",
           logits.scalar_type(), " and ", targets.sizes());
  auto t = targets.to(logits.device()).unsqueeze(-1);
  TargetScores s;
  s.greedy = logits.argmax(-1, /*keepdim=*/true).eq(t).squeeze(-1);
  // ATen's log-softmax kernel reads each row fully before writing it, so it runs in place; the
  // result is bitwise target_logprobs' (the test checks), whose rounding lm-eval shares.
  at::_log_softmax_out(logits, logits, -1, /*half_to_float=*/false);
  s.logprob = logits.gather(-1, t).squeeze(-1).to(torch::kFloat64);
  return s;
}

torch::Tensor ids_tensor(const std::vector<int64_t>& ids, torch::Device device) {
  return torch::tensor(ids, torch::kInt64).unsqueeze(0).to(device);
}

}  // namespace onebit::eval
