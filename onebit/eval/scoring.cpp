#include "onebit/eval/scoring.h"

#include "onebit/models/causal_lm.h"

namespace onebit::eval {

torch::Device model_device(const models::CausalLMImpl& model) {
  for (const auto& p : model.parameters()) return p.device();
  for (const auto& b : model.buffers()) return b.device();
  return torch::kCPU;
}

EvalModeGuard::EvalModeGuard(models::CausalLMImpl& model)
    : model_(model), was_training_(model.is_training()) {
  model_.eval();
}

EvalModeGuard::~EvalModeGuard() {
  if (was_training_) model_.train();
}

torch::Tensor target_logprobs(const torch::Tensor& logits, const torch::Tensor& targets) {
  auto lp = torch::log_softmax(logits.to(torch::kFloat32), -1);
  return lp.gather(-1, targets.to(lp.device()).unsqueeze(-1)).squeeze(-1).to(torch::kFloat64);
}

torch::Tensor ids_tensor(const std::vector<int64_t>& ids, torch::Device device) {
  return torch::tensor(ids, torch::kInt64).unsqueeze(0).to(device);
}

}  // namespace onebit::eval
